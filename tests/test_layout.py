"""The layout's rules (README, architecture): small modules, no project import hidden inside a function, no
import cycle between project modules. Read from the source with `ast`, so a violation names the file and line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gsi", "grading", "experiments", "bench")
PROJECT = ("gsi", "grading", "experiments")
# Third-party packages that cost seconds or hundreds of MB to import: a project import may wait inside a function
# only when the module it imports pulls one of these in (a grading worker's sympy, an engine's vllm).
HEAVY = {"vllm", "torch", "transformers", "datasets", "wandb", "sympy", "math_verify", "latex2sympy2_extended",
         "matplotlib", "scipy", "submitit", "hydra", "omegaconf"}
# run.py is re-imported by every grading worker (forkserver's main-module fixup): its imports wait in main() so a
# worker under its memory cap does not load the run's modules.
ENTRY_SCRIPTS = {"run.py"}
MAX_LINES = 450
# The ported reference graders keep the shape of the code they port (their docstrings name it).
PORTED = {"grading/graders/prm800k.py", "grading/graders/qwen.py"}


def _sources() -> list[Path]:
    files = [ROOT / "run.py"]
    for pkg in PACKAGES:
        files += sorted((ROOT / pkg).rglob("*.py"))
    return [f for f in files if "__pycache__" not in f.parts]


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_imports(tree: ast.AST, module: str):
    """(node, imported module name) for every import of a project module in `tree`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PROJECT:
                    yield node, a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in PROJECT:
                for a in node.names:  # `from gsi.data import arith` imports the module gsi.data.arith
                    yield node, f"{node.module}.{a.name}"


def _top_level_nodes(tree: ast.Module) -> set[int]:
    """ids of the import nodes that run when the module is imported (module level, incl. if/try at that level)."""
    out, todo = set(), list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.add(id(node))
        elif isinstance(node, (ast.If, ast.Try)):
            todo += node.body + node.orelse + getattr(node, "finalbody", []) + [
                n for h in getattr(node, "handlers", []) for n in h.body]
    return out


def test_no_source_module_is_over_the_limit():
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in _sources()
            if str(p.relative_to(ROOT)) not in PORTED and (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def _heavy_modules(modules: dict[str, Path]) -> set[str]:
    """The project modules whose import, at module level and transitively, loads a HEAVY package."""
    direct: dict[str, bool] = {}
    deps: dict[str, set[str]] = {}
    for name, p in modules.items():
        tree = ast.parse(p.read_text(), filename=str(p))
        top = _top_level_nodes(tree)
        roots = set()
        for node in ast.walk(tree):
            if id(node) in top and isinstance(node, ast.Import):
                roots |= {a.name.split(".")[0] for a in node.names}
            elif id(node) in top and isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots.add(node.module.split(".")[0])
        direct[name] = bool(roots & HEAVY)
        deps[name] = {_resolve(imported, modules) for node, imported in _project_imports(tree, name) if id(node) in top}
    heavy = {n for n, h in direct.items() if h}
    changed = True
    while changed:
        changed = False
        for n, ds in deps.items():
            if n not in heavy and ds & heavy:
                heavy.add(n)
                changed = True
    return heavy


def _resolve(imported: str, modules) -> str:
    while imported and imported not in modules:  # `from pkg import name` where name is not a module
        imported = imported.rpartition(".")[0]
    return imported


def test_no_project_import_is_hidden_in_a_function():
    modules = {_module(p): p for p in _sources()}
    heavy = _heavy_modules(modules)
    hidden = []
    for p in _sources():
        if str(p.relative_to(ROOT)) in ENTRY_SCRIPTS:
            continue
        tree = ast.parse(p.read_text(), filename=str(p))
        top = _top_level_nodes(tree)
        for node, name in _project_imports(tree, _module(p)):
            if id(node) not in top and _resolve(name, modules) not in heavy:
                hidden.append(f"{p.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not hidden, "project imports inside functions of modules that load nothing heavy: " + \
        "; ".join(hidden)


def test_no_import_cycle_between_project_modules():
    modules = {_module(p): p for p in _sources()}
    graph: dict[str, set[str]] = {}
    for name, p in modules.items():
        tree = ast.parse(p.read_text(), filename=str(p))
        deps = set()
        for _, imported in _project_imports(tree, name):
            imported = _resolve(imported, modules)
            if imported and imported != name and not name.startswith(imported + "."):
                deps.add(imported)  # a package's own __init__ is imported first by its submodules: not a cycle
        graph[name] = deps
    state: dict[str, int] = {}
    cycles = []

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(path[path.index(d):] + [d]) if d in path else f"{n} -> {d}")
            elif d not in state:
                visit(d, path + [d])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("rule", ["ROLES = ", "def parse_shard(", "def find_run_dirs("])
def test_each_rule_is_defined_once(rule):
    homes = [f"{p.relative_to(ROOT)}:{i + 1}" for p in _sources()
             for i, line in enumerate(p.read_text().splitlines()) if line.startswith(rule)]
    assert len(homes) == 1, (rule, homes)
