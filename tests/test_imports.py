"""Static import checks: no import cycle between the project's modules, and `ardm/` free of Ray and MLflow.

Every module of `ardm/` and `orchestrator/` is parsed with `ast` (nothing is imported or run). An
import counts wherever it stands: at module level, under `if TYPE_CHECKING:` (a cycle that only type
checkers see is still two modules that need each other) and inside functions (a deferred import
hides a cycle from the interpreter, not from a reader).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

# The folder holding the packages, found without running them (and wherever this test file lives).
ROOT = Path(importlib.util.find_spec("ardm").origin).parents[1]
PACKAGES = ("ardm", "orchestrator")
# Libraries of the distributed layer: the model library must run without them.
ORCHESTRATION_LIBRARIES = ("ray", "mlflow")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages (a package is its __init__)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported_names(module: str, path: Path) -> list[str]:
    """Every dotted name `module` imports, relative imports resolved: `import a.b` gives a.b and
    `from a import b, c` gives a.b and a.c (b may be a submodule or a name defined in a)."""
    is_package = path.name == "__init__.py"
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # Level 1 is the package holding the module; a package's __init__ is its own anchor.
                parts = module.split(".")
                base = ".".join(parts[: len(parts) - node.level + is_package] + ([base] if base else []))
            names.extend(f"{base}.{alias.name}" if base else alias.name for alias in node.names)
    return names


def _import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports. A name points at its longest prefix that is a project
    module (`from a import b` at a.b when b is a submodule, else at a); a module's parent packages are not
    edges, since Python runs them before the module whatever it imports."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in _imported_names(module, path):
            parts = name.split(".")
            prefixes = (".".join(parts[:n]) for n in range(len(parts), 0, -1))
            target = next((prefix for prefix in prefixes if prefix in modules), None)
            if target is not None and target != module:
                targets.add(target)
        graph[module] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (first module repeated at the end) for each strongly connected component with more
    than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_cycle(graph, set(component)) for component in components]


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")  # Tarjan said there is one


def test_the_cycle_finder_names_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


def test_imports_are_found_resolved_and_under_type_checking_too(tmp_path: Path) -> None:
    package = tmp_path / "__init__.py"
    package.write_text("from . import config\nfrom .unet import Net\n")
    assert _imported_names("pkg", package) == ["pkg.config", "pkg.unet.Net"]
    module = tmp_path / "unet.py"
    module.write_text("from .config import C\nfrom .. import other\nimport torch.nn\n"
                      "if TYPE_CHECKING:\n    from .presets import P\n"
                      "def f():\n    import ray\n")
    assert sorted(_imported_names("pkg.unet", module)) == ["other", "pkg.config.C", "pkg.presets.P", "ray", "torch.nn"]


def test_no_import_cycles() -> None:
    graph = _import_graph()
    assert "ardm.networks.unet" in graph and "orchestrator.cli" in graph  # the walk found the packages
    cycles = _cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_ardm_imports_neither_ray_nor_mlflow() -> None:
    found = sorted(
        f"{module} imports {name}"
        for module, path in _modules().items()
        for name in _imported_names(module, path) if name.split(".")[0] in ORCHESTRATION_LIBRARIES
    )
    assert any(line.startswith("orchestrator.") for line in found)  # the walk sees them where they are
    inside = [line for line in found if line.startswith("ardm.")]
    assert not inside, "; ".join(inside)
