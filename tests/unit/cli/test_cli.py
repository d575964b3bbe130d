"""Argument parsing and the CLI's error contract, without root (typer's CliRunner)."""

import pytest
from typer.testing import CliRunner

from minirun.cli import run_args
from minirun.cli.app import app
from minirun.errors import ConfigError

runner = CliRunner()


def test_options_stop_at_the_command():
    spec = run_args.parse(
        ["--name", "web", "-e", "A=1", "-eB=2", "--env=C", "-w", "/tmp", "--rm", "ls", "-l", "--name", "x"],
        host_env={"C": "3"},
    )
    assert spec.command == ("ls", "-l", "--name", "x")
    assert spec.name == "web" and spec.workdir == "/tmp" and spec.remove
    assert spec.env == (("A", "1"), ("B", "2"), ("C", "3"))
    assert spec.network == "bridge" and spec.mtu is None


def test_double_dash_and_host_env_missing():
    spec = run_args.parse(["-e", "UNSET", "--", "-weird-command"], host_env={})
    assert spec.command == ("-weird-command",) and spec.env == ()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--network", "No Such", "true"], 'unknown network "No Such"'),
        (["--mtu", "1400", "--network", "none", "true"], "--mtu has no effect with --network none"),
        (["--rm=yes", "true"], "flag --rm takes no value"),
        (["-e", " A=1", "true"], "invalid environment variable"),
        (["--hostname", "a" * 65, "true"], "invalid hostname"),
        (["--name", "_x", "true"], 'invalid container name "_x"'),
    ],
)
def test_parse_errors(args, message):
    with pytest.raises(ConfigError, match=message):
        run_args.parse(args, host_env={})


def test_cli_run_bad_flag_is_one_line_and_125():
    result = runner.invoke(app, ["run", "--network", "Bo/gus", "true"])
    assert result.exit_code == 125
    assert result.output == 'minirun: error: unknown network "Bo/gus"; use --network bridge|none|host|NAME\n'


def test_cli_run_help_lists_every_option():
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    for option in run_args.OPTIONS:
        assert option.flags[-1] in result.output


COMMANDS = [
    "run",
    "create",
    "exec",
    "ps",
    "inspect",
    "logs",
    "port",
    "stop",
    "start",
    "restart",
    "kill",
    "rm",
    "wait",
    "gc",
    "doctor",
    "topology",
    "version",
    "pod",
    "network",
    "image",
]


def test_cli_top_level_help_lists_every_command():
    """Was `"run" in output`: true of any help text ("minirun" is in the usage line). Now the Commands
    section must list exactly minirun's commands, in order: a lost, renamed or extra command fails."""
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    listed = result.output.split("\nCommands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listed if line.startswith("  ") and line[2] != " "] == COMMANDS


def test_cli_unknown_command_is_a_usage_error():
    result = runner.invoke(app, ["frobnicate"])
    assert result.exit_code == 2 and result.output.endswith("Error: No such command 'frobnicate'.\n")
