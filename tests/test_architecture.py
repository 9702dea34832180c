"""Package structure: no import cycles between modules of ``src/diswot``, no module over 600 lines.

The import graph is read with :mod:`ast` (nothing is imported), so the test sees what a reader sees:

* every ``import`` and ``from ... import``, at module level *and* inside functions or methods (a
  lazy import still ties the two modules together, it only hides the cycle until run time);
* relative imports resolved against the importing module's package;
* ``from pkg import name`` is an edge to the submodule ``pkg.name`` when that file exists, otherwise
  to ``pkg`` itself, whose ``__init__.py`` *is* the package: so an ``__init__`` that imports a
  submodule which imports back from the package is a cycle, as it is at run time;
* ``importlib.import_module`` registries: in a module that calls it, a string constant naming a
  module of the package (``_BUILTIN_MODULES = ("diswot.spaces.s1", ...)``) is an import too;
* imports under ``if TYPE_CHECKING:`` are left out: they never run, and they are how an annotation
  names a type without depending on its module.

``pytest tests/test_architecture.py -v`` lists every cycle (one concrete loop per strongly
connected group of modules) and every oversized module with its line count.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "diswot"
#: A module longer than this holds more than one concept: split it.
MAX_LINES = 600


# -- the import graph ----------------------------------------------------------------------------
def module_files(src: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``src/package`` (``__init__`` = package)."""
    out: dict[str, Path] = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        elif ".".join(parts) in out:
            continue  # x/__init__.py beside x.py: the package is what ``import x`` loads
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (their ``else`` stays)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _calls_import_module(nodes: list[ast.AST]) -> bool:
    for node in nodes:
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name == "import_module":
                return True
    return False


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules of ``known`` that ``module`` (the file ``path``) imports, as described above."""
    tree = ast.parse(path.read_text(), filename=str(path))
    # The package a relative import starts from: the module itself for an __init__.
    here = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = list(_runtime_nodes(tree))
    targets: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                if node.module:
                    base.append(node.module)
                source = ".".join(base)
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                targets.add(sub if sub in known else source)
    if _calls_import_module(nodes):
        targets.update(
            node.value
            for node in nodes
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        )
    return {t for t in targets if t in known and t != module}


def import_graph(src: Path = SRC, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    files = module_files(src, package)
    known = set(files)
    return {m: imports_of(m, p, known) for m, p in files.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, in a fixed order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    group.append(top)
                    if top == node:
                        break
                groups.append(sorted(group))
    return sorted(groups)


def one_cycle(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """A shortest loop through the group's first module, staying inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    return [*paths[node], start]
                if child not in paths:
                    paths[child] = [*paths[node], child]
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"{group} is not strongly connected")  # pragma: no cover


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle per group of mutually importing modules."""
    return [one_cycle(graph, g) for g in strongly_connected(graph) if len(g) > 1]


# -- the package ---------------------------------------------------------------------------------
def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 20 and "diswot.spaces" in graph  # the whole package was read
    cycles = import_cycles(graph)
    groups = [g for g in strongly_connected(graph) if len(g) > 1]
    report = "\n".join(
        f"  {' -> '.join(c)}   (group of {len(g)}: {', '.join(g)})" for c, g in zip(cycles, groups)
    )
    assert not cycles, f"{len(cycles)} import cycle(s) in src/{PACKAGE}:\n{report}"


def test_no_module_over_600_lines() -> None:
    sizes = {m: len(p.read_text().splitlines()) for m, p in module_files(SRC, PACKAGE).items()}
    over = sorted((n, m) for m, n in sizes.items() if n > MAX_LINES)
    listing = "\n".join(f"  {m}: {n} lines" for n, m in reversed(over))
    assert not over, f"{len(over)} module(s) over {MAX_LINES} lines:\n{listing}"


# -- the graph code on packages with known answers -------------------------------------------------
def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_graph_resolves_every_import_form(tmp_path: Path) -> None:
    src = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.errors import E\n",
            "pkg/errors.py": "",
            "pkg/a.py": "import pkg.errors\nfrom . import b\nfrom .sub import thing\n",
            "pkg/b.py": "def f():\n    from pkg.sub.deep import g\n",
            "pkg/sub/__init__.py": "thing = 1\n",
            "pkg/sub/deep.py": "from ..errors import E\nfrom .. import a\n",
            "pkg/typed.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import x\n"
                "else:\n    from pkg.b import f\n"
            ),
            "pkg/reg.py": (
                "import importlib\nMODS = ('pkg.a', 'not.a.module')\n"
                "for m in MODS:\n    importlib.import_module(m)\n"
            ),
            "pkg/plain_string.py": "NAME = 'pkg.a'\n",
        },
    )
    graph = import_graph(src, "pkg")
    assert graph == {
        "pkg": {"pkg.errors"},
        "pkg.errors": set(),
        "pkg.a": {"pkg.errors", "pkg.b", "pkg.sub"},  # absolute, 'from . import mod', package
        "pkg.b": {"pkg.sub.deep"},  # function-level
        "pkg.sub": set(),
        "pkg.sub.deep": {"pkg.errors", "pkg.a"},  # two levels up
        "pkg.typed": {"pkg.b"},  # TYPE_CHECKING left out, its else kept
        "pkg.reg": {"pkg.a"},  # importlib registry of names
        "pkg.plain_string": set(),  # a string is not an import without import_module
    }
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.deep", "pkg.a"]]


def test_package_init_importing_a_submodule_that_imports_it_back_is_a_cycle(
    tmp_path: Path,
) -> None:
    src = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/spaces/__init__.py": (
                "import importlib\nREGISTRY = {}\n"
                "for m in ('pkg.spaces.s1',):\n    importlib.import_module(m)\n"
            ),
            "pkg/spaces/s1.py": "from pkg.spaces import REGISTRY\n",
            "pkg/spaces/base.py": "",
            "pkg/spaces/ok.py": "from pkg.spaces import base\n",  # the submodule, not the package
        },
    )
    graph = import_graph(src, "pkg")
    assert graph["pkg.spaces.ok"] == {"pkg.spaces.base"}
    assert import_cycles(graph) == [["pkg.spaces", "pkg.spaces.s1", "pkg.spaces"]]


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b", "a"]]),
        (
            {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}},
            [["a", "b", "c", "a"], ["d", "e", "d"]],
        ),
    ],
)
def test_cycles_are_found_and_named(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert import_cycles(edges) == expected
