"""Imported first by the four modules a supervisor older than runtime/supervisor/jobs.py imports lazily
(cli.run_request; runtime.container, now a package; runtime.gc and runtime.launch, now forwarders): makes
an outdated supervisor load the new code whole.

A supervisor outlives upgrades. One started before supervisor/jobs.py existed imports those modules from the
disk after an upgrade - `launch` in itself when a container ends, `gc` in its teardown child, `run_request`
then `container` in its `run -d` worker - on top of the old modules it loaded at start, and the new code's
imports of names the old modules lack fail (`ImportError`: the container is never torn down, `run -d` is
refused). In such a process this module drops every minirun module that is not being imported right now from
sys.modules, so what the importing module imports next is the new code, coherent with itself. The old code
still running keeps its references to the old module objects, which go on working for it. A supervisor that
has supervisor/jobs.py does this itself (supervisor.jobs.fresh_code) and is left alone, as is every other
process. This and the forwarders it protects can go once issue 15's version exchange replaces outdated
supervisors. How sys.modules and a package's attributes take part in an import:
https://docs.python.org/3/reference/import.html#submodules
"""

from __future__ import annotations

import sys

SUPERVISOR_ENTRY = "minirun.cli.supervise"
KNOWS_ITS_JOBS = "minirun.runtime.supervisor.jobs"


def _older_supervisor() -> bool:
    main = sys.modules.get("__main__")
    entry = getattr(getattr(main, "__spec__", None), "name", None)
    return entry == SUPERVISOR_ENTRY and KNOWS_ITS_JOBS not in sys.modules


def _being_imported(module: object) -> bool:
    # importlib marks a module whose body is executing (the one that imported us, and its importers).
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


if _older_supervisor():
    # The packages above whatever is being imported right now stay (importlib sets the module on them when
    # it is done; their __init__ holds no code), but not their attributes naming old submodules: `from
    # minirun.runtime import model` takes the package's attribute before it looks in sys.modules.
    importing = [name for name, module in sys.modules.items() if _being_imported(module)]
    kept = {__name__, *(name.rsplit(".", depth)[0] for name in importing for depth in range(name.count(".") + 1))}
    for name, module in list(sys.modules.items()):
        if name.startswith("minirun.") and name not in kept:
            del sys.modules[name]
            parent, _, child = name.rpartition(".")
            if parent in kept and getattr(sys.modules.get(parent), child, None) is module:
                delattr(sys.modules[parent], child)
