"""The import rules of docs/ARCHITECTURE.md, checked on the source (ast, nothing imported).

- No import cycle among workbench modules. Imports at module level and inside functions both count (a
  function-level import hides a cycle from Python, not from the reader); imports under ``if TYPE_CHECKING:``
  do not (they never run).
- No private name (``_x``) crosses a module boundary in workbench/ or widgets/: neither ``from .m import _x``
  nor ``m._x`` on an imported module.
- The library never imports the front end: nothing in workbench/ imports ``widgets``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("workbench", "widgets")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources(package: str) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


MODULES = {name: path for package in PACKAGES for name, path in _sources(package).items()}


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute name of what ``from <node.module> import ...`` reads, inside ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of import nodes under ``if TYPE_CHECKING:``."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in ``module`` that runs."""
    tree = ast.parse(MODULES[module].read_text())
    skip = _type_checking_only(tree)
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (source, alias.name, node.lineno))
    return out


def _graph(package: str) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES if m.split(".")[0] == package}
    for module in graph:
        for target, _, _ in _imports(module):
            if target in graph and target != module:
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_workbench_modules():
    graph = _graph("workbench")
    cycles = _cycles(graph)
    described = [" <-> ".join(c) + ": " + "; ".join(f"{m} imports {sorted(graph[m] & set(c))}" for m in c)
                 for c in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(described)


def _private_crossings(module: str) -> list[str]:
    tree = ast.parse(MODULES[module].read_text())
    found = []
    aliases = {}  # local name -> imported workbench/widgets module
    for target, name, line in _imports(module):
        if target.split(".")[0] not in PACKAGES or target == module:
            continue
        if name is not None and name.startswith("_") and not name.startswith("__"):
            found.append(f"{module}:{line} imports {name} from {target}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{module}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_private_name_crosses_a_module_boundary(package):
    found = [f for m in MODULES if m.split(".")[0] == package for f in _private_crossings(m)]
    assert not found, "\n".join(found)


def test_the_library_never_imports_the_front_end():
    found = [f"{m}:{line} imports {target}" for m in MODULES if m.split(".")[0] == "workbench"
             for target, _, line in _imports(m) if target.split(".")[0] == "widgets"]
    assert not found, "\n".join(found)


MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60
# What is still over the limits, at its size now: an entry may only shrink or go (the test fails when an entry is
# stale, so the list cannot keep a file that no longer needs it).
STILL_TOO_LONG: dict[str, int] = {}


def _sizes() -> dict[str, int]:
    """Every file over MAX_FILE_LINES and every function over MAX_FUNCTION_LINES, with its length in lines."""
    found = {}
    for path in MODULES.values():
        name = str(path.relative_to(ROOT))
        text = path.read_text()
        if len(text.splitlines()) > MAX_FILE_LINES:
            found[name] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found[f"{name}:{node.name}"] = length
    return found


def test_no_file_or_function_is_longer_than_a_reader_holds():
    found = _sizes()
    grown = {k: v for k, v in found.items() if v > STILL_TOO_LONG.get(k, 0)}
    assert not grown, f"over {MAX_FILE_LINES} lines a file or {MAX_FUNCTION_LINES} a function: {grown}"
    stale = {k: v for k, v in STILL_TOO_LONG.items() if found.get(k, 0) < v}
    assert not stale, f"shrunk or gone, lower or remove these entries of STILL_TOO_LONG: {stale} (now {found})"


# A result's JSON keys, spelled only by the class that writes and reads them (the CLI, widgets, notebooks and the GPU
# kit ask the class).
RESULT_KEYS = {
    "workbench/search/results.py": ("wins_vs_", "gain_vs_"),
    "workbench/progressive_results.py": ("stage2_at_L2_over_stage1_at_L1", "recovery_vs_original_at_L0"),
}


def _code_text(path: Path) -> str:
    if path.suffix == ".ipynb":
        import json

        return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    return path.read_text()


def test_no_result_key_is_spelled_outside_its_class():
    files = [*MODULES.values(), *sorted((ROOT / "notebooks").glob("*.ipynb"))]
    found = []
    for owner, keys in RESULT_KEYS.items():
        for path in files:
            name = str(path.relative_to(ROOT))
            if name == owner:
                continue
            text = _code_text(path)
            found += [f"{name} spells {key!r} (a key of {owner})" for key in keys if key in text]
    assert not found, "\n".join(found)
