"""The supervisor process's entry point (`python -m minirun.cli.supervise`, started by runtime/supervisor/client.py).

It lives in the CLI layer to hand the supervisor the CLI's own check of a `run -d` spec
(cli/run_request.py): the runtime layer never imports the CLI's parser.
"""

from __future__ import annotations

from typing import Any

from minirun.spec import ContainerSpec


def decode_spec(raw: Any) -> ContainerSpec:
    # Imported on the first request, in a worker: the supervisor itself stays small.
    from minirun.cli import run_request

    return run_request.decode_spec(raw)


if __name__ == "__main__":
    from minirun.runtime.supervisor import daemon

    daemon.main(decode_spec)
