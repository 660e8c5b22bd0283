"""The layout the docs promise: launcher -> orchestrator -> engine, no import circles (benchmarks
included), and no file in engine/ or orchestrator/ over ~300 lines."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "orchestrator", "benchmarks")
MAX_LINES = 300


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources():
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")] + [ROOT / "launcher.py"]
    return {_module_name(p): p for p in files}


def _imports(path: Path, module: str):
    """(imported module, at module level) for every import in the file, lazy ones too."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            yield name, id(node) in top


def _graph(level_only: bool):
    sources = _sources()
    graph = {m: set() for m in sources}
    for module, path in sources.items():
        for name, at_top in _imports(path, module):
            if level_only and not at_top:
                continue
            if name in sources and name != module and not module.startswith(name + "."):
                graph[module].add(name)   # a child importing its own package (the registry) is not a circle
    return graph


def test_engine_never_imports_ray_the_orchestrator_or_the_launcher():
    bad = [(m, name) for m, p in _sources().items() if m.split(".")[0] == "engine"
           for name, _ in _imports(p, m) if name.split(".")[0] in ("ray", "orchestrator", "launcher", "wandb")]
    assert bad == []


def test_the_orchestrator_never_imports_the_launcher_or_benchmarks():
    bad = [(m, name) for m, p in _sources().items() if m.split(".")[0] == "orchestrator"
           for name, _ in _imports(p, m) if name.split(".")[0] in ("launcher", "benchmarks")]
    assert bad == []


@pytest.mark.parametrize("level_only", [True, False], ids=["module-level imports", "lazy imports too"])
def test_no_import_circles(level_only):
    graph = _graph(level_only)
    circles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_no_file_in_engine_or_orchestrator_is_over_300_lines():
    long = {str(p.relative_to(ROOT)): n for pkg in ("engine", "orchestrator") for p in (ROOT / pkg).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
