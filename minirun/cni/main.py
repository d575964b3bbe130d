"""`minirun-cni`: the executable a runtime finds on CNI_PATH. Result or error JSON on stdout, logs on stderr.

Imports only what the command needs: VERSION and every validation error answer before the net code (and
pyroute2's message classes) is loaded.
"""

from __future__ import annotations

import json
import os
import sys

from minirun.cni import protocol
from minirun.cni.protocol import ERR_PLUGIN, CniError

DEBUG_ENV = "MINIRUN_DEBUG"


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj))
    sys.stdout.write("\n")
    sys.stdout.flush()


def _lenient_version(data: bytes) -> dict | None:
    """For an error's cniVersion only: the configuration, if it decodes."""
    try:
        config = json.loads(data)
    except ValueError:
        return None
    return config if isinstance(config, dict) else None


def run(environ: dict[str, str], data: bytes) -> dict | None:
    """One invocation: the JSON to print (None: nothing, as for a successful DEL), or raise CniError."""
    params = protocol.parse_env(environ)
    if params.command == "VERSION":
        return protocol.version_answer(protocol.load_config(data) if data.strip() else {})
    config = protocol.load_config(data)
    version = protocol.check_version(config, params.command)
    from minirun.cni import config as cniconfig

    conf = cniconfig.parse(config, params)
    from minirun.cni import plugin

    if params.command == "ADD":
        return protocol.render_result(plugin.cmd_add(conf, params), version)
    if params.command == "DEL":
        plugin.cmd_del(conf, params, config)
    elif params.command == "CHECK":
        plugin.cmd_check(conf, params, config)
    elif params.command == "GC":
        plugin.cmd_gc(conf, config)
    elif params.command == "STATUS":
        plugin.cmd_status(conf)
    return None


# Beyond the network lock's own timeout, the whole command gets this long before it answers "try again":
# the firewall and ports locks it may also wait for are shared with minirun and other networks.
SPARE_SECONDS = 3.0


def _deadline() -> None:
    import signal

    from minirun.cni.protocol import ERR_TRY_AGAIN, lock_timeout

    def expired(signum, frame) -> None:
        # Raised wherever the command is: a half-done ADD rolls back through its undo stack.
        raise CniError(ERR_TRY_AGAIN, "timed out waiting for a lock (another minirun or CNI call holds it)")

    signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, lock_timeout() + SPARE_SECONDS)


def main() -> None:
    data = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
    try:
        if os.environ.get("CNI_COMMAND") != "VERSION":
            _deadline()  # in the plugin's own process only (run() is also called by tests)
        answer = run(dict(os.environ), data)
    except CniError as exc:
        version = protocol.error_version(_lenient_version(data))
        print(f"minirun-cni: {os.environ.get('CNI_COMMAND', '?')}: error {exc.code}: {exc.msg}", file=sys.stderr)
        _emit(exc.as_json(version))
        sys.exit(1)
    except Exception as exc:  # a bug: still a CNI error on stdout, the traceback on stderr with MINIRUN_DEBUG
        if os.environ.get(DEBUG_ENV):
            import traceback

            traceback.print_exc(file=sys.stderr)
        msg = f"internal error: {type(exc).__name__}: {exc}"
        print(f"minirun-cni: {msg}", file=sys.stderr)
        _emit(CniError(ERR_PLUGIN, msg).as_json(protocol.error_version(_lenient_version(data))))
        sys.exit(1)
    if answer is not None:
        _emit(answer)


if __name__ == "__main__":
    main()
