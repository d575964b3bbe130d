"""Import graph of the `minirun` package, counting imports inside functions (issue 14; DESIGN.md "Layers").

Every `import` / `from ... import` anywhere in a module (module level, function or class body, `try`, `if`)
is an edge, and so is `importlib.import_module("minirun.x")` / `__import__("minirun.x")` with a literal
name. Imports under `if TYPE_CHECKING:` are kept but marked `type_only`: they never run, so they do not
count for cycles (they do count for layers: a type is a dependency too). Only what is written counts: the
implicit load of a submodule's parent package (`minirun.cli.app` runs `minirun/cli/__init__.py` first) is
not an edge, so a package's `__init__` that imports its own submodules lazily is not a cycle with them.

Four rules, each reported as one stable line per violation (so a test can keep a shrinking list of allowed
ones; `locate()` gives the file:line behind a line):
  cycle: a, b, c          modules that import each other, directly or through others (Tarjan SCC)
  up: src -> dst          an import against LAYERS (upwards, or between the siblings runtime and cni)
  private: src -> dst     a module reaching past a layer's front door (PRIVATE), e.g. cni -> net.links
  layer: module           a module in a top-level package that LAYERS does not place

Plus `namespace_calls()`: where unshare/setns/SCM_RIGHTS are called outside the modules meant to (the one
fork-into-namespaces helper of DESIGN.md's kernel layer), counted per file, for a second shrinking list.

tests/unit/test_import_graph.py holds the lists. As a script it prints the graph, the cycles (with the
edges to cut) and the violations:
    python tests/importgraph.py [PACKAGE_DIR] [--graph] [--allow FILE] [--calls]
Exit status 1 when a violation is not in the --allow file. No dependency beyond the standard library.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

# DESIGN.md revision 2, lowest first: a module may import its own layer or a lower one. Equal rank and a
# different name are siblings (runtime, cni), which may not import each other. minirun/*.py (errors, spec,
# plan, paths, filelock, jsonstore) is the base layer.
LAYERS: dict[str, int] = {
    "": 0,
    "kernel": 1,
    "security": 2,
    "fs": 3,
    "net": 4,
    "runtime": 5,
    "cni": 5,
    "cli": 6,
    "__main__": 7,
}

# Front doors: a module matching a key may be imported only by modules matching one of its prefixes.
# Target of issue 14: net combines links + ipam + firewall in ONE place (net.attachment); IPAM's files have
# one reader (net.ipam); nothing outside net drives netlink, sysctls or nft by hand.
PRIVATE: dict[str, tuple[str, ...]] = {
    "minirun.net.ipam": ("minirun.net.",),
    "minirun.net.links": ("minirun.net.",),
    "minirun.net.rtnl": ("minirun.net.",),
    "minirun.net.sysctl": ("minirun.net.",),
    "minirun.net.localnet": ("minirun.net.",),
    "minirun.net.netns": ("minirun.net.",),
    "minirun.net.firewall": ("minirun.net.",),
    "minirun.net.firewall.nft": ("minirun.net.",),
    "minirun.net.firewall.nft_ports": ("minirun.net.",),
    "minirun.net.firewall.nftcmd": ("minirun.net.",),
    "minirun.net.firewall.none": ("minirun.net.",),
}

# Calls that only the one fork-into-namespaces helper (kernel/nsfork.py, issue 14) and the syscall wrappers
# may make. runtime/supervisor/logrelay.py passes a log file descriptor over SCM_RIGHTS: a different job,
# by design.
NAMESPACE_CALLS = ("unshare", "setns", "send_fds", "recv_fds")
NAMESPACE_CALL_HOMES = (
    "minirun/kernel/syscalls.py",
    "minirun/kernel/nsfork.py",
    "minirun/runtime/supervisor/logrelay.py",  # the supervisor's hand-offs: a container's output pipe,
    "minirun/runtime/supervisor/spare.py",  # and a client's connection to the spare worker
)

_DYNAMIC_IMPORTS = ("import_module", "__import__")


class Edge(NamedTuple):
    src: str  # importing module, dotted (minirun.runtime.pod); a package is its __init__.py
    dst: str  # imported module, dotted
    path: str  # file of src, relative to the package's parent
    line: int
    lazy: bool  # inside a function body: runs when the function is called, not when the module loads
    type_only: bool  # under `if TYPE_CHECKING:`

    def __str__(self) -> str:
        how = "type-only" if self.type_only else ("lazy" if self.lazy else "top")
        return f"{self.src} -> {self.dst}  ({self.path}:{self.line}, {how})"


def discover(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under package_dir."""
    modules: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _dynamic_import_name(node: ast.Call) -> str | None:
    """The name in `importlib.import_module("minirun.x")` or `__import__("minirun.x")`, else None."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name in _DYNAMIC_IMPORTS and node.args:
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


ImportNode = ast.Import | ast.ImportFrom | ast.Call


def _imports(tree: ast.AST) -> Iterator[tuple[ImportNode, bool, bool]]:
    """(statement or dynamic-import call, lazy, type_only) for every import in the tree. A class body runs
    when its module loads, so only function bodies make an import lazy."""

    def walk(node: ast.AST, lazy: bool, type_only: bool) -> Iterator[tuple[ImportNode, bool, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, lazy, type_only
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                # decorators, defaults and annotations run at definition time; the body when called
                for part in (*getattr(child, "decorator_list", ()), child.args):
                    yield from walk(part, lazy, type_only)
                for stmt in child.body if isinstance(child.body, list) else [child.body]:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), True, type_only)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), lazy, True)
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), lazy, type_only)
            else:
                if isinstance(child, ast.Call) and _dynamic_import_name(child):
                    yield child, lazy, type_only
                yield from walk(child, lazy, type_only)

    yield from walk(tree, False, False)


def _longest_known(name: str, known: Mapping[str, Path]) -> str:
    parts = name.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts) or name


def _targets(module: str, is_package: bool, node: ImportNode, known: Mapping[str, Path]) -> Iterator[str]:
    """The internal modules one import loads (the most specific known module per name)."""
    package = module.split(".")[0]

    def internal(name: str) -> bool:
        return name == package or name.startswith(package + ".")

    if isinstance(node, ast.Call):
        name = _dynamic_import_name(node) or ""
        if internal(name):
            yield _longest_known(name, known)
        return
    if isinstance(node, ast.Import):
        for alias in node.names:
            if internal(alias.name):
                yield _longest_known(alias.name, known)
        return
    if node.level:  # relative: from . import x, from ..net import y
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not internal(target):
        return
    for alias in node.names:
        candidate = f"{target}.{alias.name}"
        # `from minirun.net import ipam` loads the submodule; `from minirun.errors import X` the module
        yield candidate if candidate in known else _longest_known(target, known)


def build_graph(package_dir: Path) -> dict[str, list[Edge]]:
    """Module -> its internal import edges, one per (imported module, line)."""
    known = discover(package_dir)
    graph: dict[str, list[Edge]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        relative = str(path.relative_to(package_dir.parent))
        edges: dict[tuple[str, int], Edge] = {}
        for node, lazy, type_only in _imports(tree):
            for dst in _targets(module, path.name == "__init__.py", node, known):
                if dst != module:
                    edges.setdefault((dst, node.lineno), Edge(module, dst, relative, node.lineno, lazy, type_only))
        graph[module] = sorted(edges.values(), key=lambda e: (e.line, e.dst))
    return graph


def find_cycles(graph: Mapping[str, list[Edge]]) -> list[list[str]]:
    """Strongly connected components of more than one module, over edges that run (Tarjan).

    Any two modules of a component lie on a common cycle; cutting the edges listed by cycle_edges() until
    the component falls apart removes it. Largest first."""
    adjacency = {m: sorted({e.dst for e in es if not e.type_only and e.dst in graph}) for m, es in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:  # recursion depth <= number of modules (< 150)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in adjacency[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(adjacency):
        if v not in index:
            connect(v)
    return sorted(components, key=lambda c: (-len(c), c))


def cycle_edges(graph: Mapping[str, list[Edge]], component: Iterable[str]) -> list[Edge]:
    """The running edges inside one component: the candidates to cut."""
    members = set(component)
    return [e for m in sorted(members) for e in graph[m] if e.dst in members and not e.type_only]


def shortest_cycle(
    graph: Mapping[str, list[Edge]], component: Iterable[str], known: Iterable[Iterable[str]] = ()
) -> list[Edge]:
    """One shortest loop inside a component, as edges: the concrete story of a cycle (cycle_edges() lists
    every candidate to cut). The loop goes through an edge that no `known` (already allowed) cycle holds,
    when there is one, so that a cycle grown from an old one shows what is new."""
    members = set(component)
    inside = {m: [e for e in graph[m] if e.dst in members and not e.type_only] for m in sorted(members)}
    old = [set(c) for c in known]
    edges = [e for es in inside.values() for e in es]
    fresh = [e for e in edges if not any(e.src in c and e.dst in c for c in old)] or edges
    best: list[Edge] = []
    for first in fresh:  # breadth-first from first.dst back to first.src
        came_by: dict[str, Edge] = {}
        frontier = [first.dst]
        while frontier and first.src not in came_by and first.src != first.dst:
            following = []
            for module in frontier:
                for edge in inside[module]:
                    if edge.dst not in came_by and edge.dst != first.dst:
                        came_by[edge.dst] = edge
                        following.append(edge.dst)
            frontier = following
        if first.src in came_by:
            loop = [came_by[first.src]]
            while loop[-1].src != first.dst:
                loop.append(came_by[loop[-1].src])
            if not best or len(loop) + 1 < len(best):
                best = [first, *loop[::-1]]
    return best


def layer_of(module: str) -> str:
    """The LAYERS key of a module: its top-level package under minirun; "" (the base layer) for minirun
    itself and minirun/*.py. A top-level package LAYERS does not name gives its own name (unplaced)."""
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and parts[1] not in LAYERS):
        return ""
    return parts[1]


def unplaced_modules(graph: Mapping[str, list[Edge]], layers: Mapping[str, int] = LAYERS) -> list[str]:
    """Modules of a top-level package (minirun/<pkg>/) that LAYERS does not place."""
    return sorted(m for m in graph if layer_of(m) not in layers)


def layer_violations(graph: Mapping[str, list[Edge]], layers: Mapping[str, int] = LAYERS) -> list[Edge]:
    """Edges up the layer order, or sideways between sibling layers (runtime <-> cni). Modules LAYERS does
    not place are reported by unplaced_modules() instead."""
    bad = []
    for edges in graph.values():
        for edge in edges:
            src, dst = layer_of(edge.src), layer_of(edge.dst)
            if src != dst and src in layers and dst in layers and layers[dst] >= layers[src]:
                bad.append(edge)
    return bad


def private_violations(graph: Mapping[str, list[Edge]], private: Mapping[str, tuple[str, ...]] = PRIVATE) -> list[Edge]:
    """Edges to a module behind a front door from a module the door does not let in (a package's own
    __init__ is inside it: minirun.net may import minirun.net.ipam)."""
    bad = []
    for edges in graph.values():
        for edge in edges:
            allowed = private.get(edge.dst)
            if allowed is not None and not (edge.src + ".").startswith(allowed):
                bad.append(edge)
    return bad


def _lines(graph: Mapping[str, list[Edge]], allowed: Iterable[str] = ()) -> dict[str, list[Edge]]:
    """Violation line -> the edges behind it: a shortest loop for a cycle (through an edge no allowed
    cycle holds, when it can), none for an unplaced module."""
    known = [line.removeprefix("cycle: ").split(", ") for line in allowed if line.startswith("cycle: ")]
    found: dict[str, list[Edge]] = {}
    for component in find_cycles(graph):
        found[f"cycle: {', '.join(component)}"] = shortest_cycle(graph, component, known)
    for kind, edges in (("up", layer_violations(graph)), ("private", private_violations(graph))):
        for edge in sorted(edges, key=lambda e: (e.src, e.dst, e.line)):
            found.setdefault(f"{kind}: {edge.src} -> {edge.dst}", []).append(edge)
    for module in unplaced_modules(graph):
        found[f"layer: {module}"] = []
    return found


def violations(package_dir: Path, allowed: Iterable[str] = ()) -> list[str]:
    """Every cycle, upward import, front-door bypass and unplaced module as one line, minus `allowed`."""
    allowed = set(allowed)
    return [line for line in _lines(build_graph(package_dir)) if line not in allowed]


def stale_allowances(package_dir: Path, allowed: Iterable[str]) -> list[str]:
    """Allowed entries that no longer occur: delete them, so the list only ever shrinks."""
    return sorted(set(allowed) - set(violations(package_dir)))


def locate(package_dir: Path, lines: Iterable[str], allowed: Iterable[str] = ()) -> str:
    """The edges (file:line) behind violation lines, for a failure message (`allowed`: what is not new)."""
    found = _lines(build_graph(package_dir), allowed)
    out = []
    for line in lines:
        out.append(line)
        out += [f"    {edge}" for edge in found.get(line, [])]
        if line.startswith("cycle: "):
            out.append("    (one shortest loop; `python tests/importgraph.py` lists every edge to cut)")
        if line.startswith("layer: "):
            out.append("    add its top-level package to LAYERS (DESIGN.md names the layers)")
    return "\n".join(out)


def call_sites(package_dir: Path, names: Iterable[str] = NAMESPACE_CALLS) -> list[tuple[str, int, str]]:
    """(file, line, name) of every call of a function or method called one of `names` (k.setns(...),
    socket.send_fds(...)): for the test that kernel/nsfork.py is the only fork-into-namespaces sequence."""
    wanted = set(names)
    found = []
    for path in discover(package_dir).values():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if name in wanted:
                    found.append((str(path.relative_to(package_dir.parent)), node.lineno, name))
    return sorted(found)


def namespace_calls(package_dir: Path, homes: Iterable[str] = NAMESPACE_CALL_HOMES) -> list[str]:
    """A line `file: name xN` for every file outside `homes` that calls unshare/setns/send_fds/recv_fds. Counted
    per file, not per line, so edits elsewhere in the file do not change the line; one more call does."""
    homes = set(homes)
    counts = Counter((path, name) for path, _, name in call_sites(package_dir) if path not in homes)
    return [f"{path}: {name} x{n}" for (path, name), n in sorted(counts.items())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("package_dir", nargs="?", default=Path("minirun"), type=Path)
    parser.add_argument("--graph", action="store_true", help="print every edge")
    parser.add_argument("--calls", action="store_true", help="print the namespace call sites (nsfork)")
    parser.add_argument("--allow", type=Path, help="file of allowed violations, one per line")
    args = parser.parse_args(argv)
    package_dir = args.package_dir.resolve()
    graph = build_graph(package_dir)
    edges = [e for es in graph.values() for e in es]
    statements = {(e.path, e.line) for e in edges}
    lazy_statements = {(e.path, e.line) for e in edges if e.lazy}
    print(
        f"{len(graph)} modules; {len(statements)} internal imports ({len(lazy_statements)} inside functions), "
        f"{len(edges)} module edges ({sum(e.type_only for e in edges)} type-only)"
    )
    if args.graph:
        for module in sorted(graph):
            for edge in graph[module]:
                print(f"  {edge}")
    found = _lines(graph)
    print(f"\n{len(found)} violation(s); layers {' < '.join(sorted(LAYERS, key=LAYERS.__getitem__)[1:])}:")
    print(locate(package_dir, found))
    for component in find_cycles(graph):
        print(f"\nedges inside cycle: {', '.join(component)}")
        for edge in cycle_edges(graph, component):
            print(f"    {edge}")
    if args.calls:
        print("\nnamespace call sites:")
        for path, line, name in call_sites(package_dir):
            print(f"- {path}:{line} {name}")
    allowed = [a.strip() for a in args.allow.read_text().splitlines()] if args.allow else []
    remaining = [line for line in found if line not in {a for a in allowed if a and not a.startswith("#")}]
    if args.allow:
        print(f"\n{len(remaining)} violation(s) not in {args.allow}")
        for line in remaining:
            print(f"- {line}")
    return 1 if remaining else 0


if __name__ == "__main__":
    sys.exit(main())
