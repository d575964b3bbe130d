"""The supervisor's request validation (issue 12, hole 3): it takes exactly what `minirun run -d` sends.

The integration tests (tests/integration/test_supervisor_socket.py) send forged requests to a real
supervisor; these check that every request the CLI can make still gets through, option by option, so a
new `run` option cannot be forgotten by the supervisor's check.
"""

from __future__ import annotations

import json

import pytest

from minirun.cli import run_args, run_request
from minirun.errors import ConfigError
from minirun.runtime.supervisor import protocol

SAMPLES = [
    ["-d", "sleep", "1"],
    [
        "-d",
        "-i",
        "--name",
        "web",
        "--hostname",
        "h.example",
        "-e",
        "A=b=c",
        "-e",
        "EMPTY=",
        "-w",
        "/srv",
        "--mtu",
        "1400",
        "-p",
        "127.0.0.1:8080:80/udp",
        "-p",
        "9090:90",
        "-u",
        "1000:1000",
        "--dns",
        "10.0.0.2",
        "--add-host",
        "db:10.1.1.1",
        "--add-host",
        "six=::1",
        "--cap-add",
        "NET_ADMIN",
        "--cap-drop",
        "ALL",
        "--privileged",
        "--security-opt",
        "seccomp=unconfined",
        "--init",
        "--rm",
        "-v",
        "--timings",
        "--debug",
        "--",
        "sh",
        "-c",
        "echo -x --name=y",
    ],
    ["-d", "--pod", "p1", "sleep", "1"],
    ["-d", "--log-opt", "max-size=1m", "--log-opt", "max-file=2", "sleep", "1"],
    ["-d", "--network", "net-a", "--restart", "on-failure:3", "sleep", "1"],
    ["-d", "--image", "busybox", "--read-only", "--entrypoint", "", "--network", "none"],
]
NEVER_SENT = {"dry_run", "explain", "tty"}  # the CLI keeps these runs to itself, or refuses them with -d


def round_trip(spec):
    payload = protocol.parse_line(protocol.encode(protocol.run_request(spec)).rstrip(b"\n"))
    return run_request.decode_spec(payload["spec"])


@pytest.mark.parametrize("args", SAMPLES)
def test_what_the_cli_sends_is_accepted_unchanged(args):
    spec = run_args.parse(args, host_env={})
    assert round_trip(spec) == spec


def test_every_run_option_is_covered():
    """A new `run` option must be carried (and checked) by the supervisor too: add it to SAMPLES."""
    specs = [run_args.parse(args, host_env={}) for args in SAMPLES]
    fields = {run_request.spec_field(option.dest) for option in run_args.OPTIONS} - {None} - NEVER_SENT
    exercised = {f for f in fields for spec in specs if getattr(spec, f) != spec._field_defaults.get(f)}
    assert fields - exercised == set()


def test_a_spec_the_cli_normalizes_differently_is_refused():
    spec = run_args.parse(["-d", "--dns", "10.0.0.2", "sleep", "1"], host_env={})
    payload = json.loads(protocol.encode(protocol.run_request(spec)))
    payload["spec"]["dns"] = ["0:0::1"]  # a valid address, but the CLI writes it "::1"
    with pytest.raises(ConfigError, match="'dns' is not what the CLI makes of it"):
        run_request.decode_spec(protocol.parse_line(json.dumps(payload).encode())["spec"])


def test_env_var_from_the_clis_environment_round_trips():
    spec = run_args.parse(["-d", "-e", "HOME_DIR", "sleep", "1"], host_env={"HOME_DIR": "/x"})
    assert round_trip(spec).env == (("HOME_DIR", "/x"),)
