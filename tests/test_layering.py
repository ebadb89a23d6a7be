"""The project's shape: imports go downwards only, no module imports itself round a cycle, and the run folder's
file names are spelled in one place.

Layers, bottom up (docs/architecture.md):
    diagnose.core                      errors, manifest, request logs, run folder, progress, result types
    collectors, profilers, reports, fixtures   each imports only diagnose.core and itself
    diagnose (orchestration)           anything below it
    app                                anything
Imports inside functions count too: a lazy import still ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("diagnose", "collectors", "profilers", "reports", "fixtures", "app")
# what each layer may import besides itself (a package always may import its own modules)
ALLOWED = {
    "core": {"core"},
    "collectors": {"core"},
    "profilers": {"core"},
    "reports": {"core"},
    "fixtures": {"core"},
    "orchestration": {"core", "collectors", "profilers", "reports", "fixtures"},
    "app": {"core", "collectors", "profilers", "reports", "fixtures", "orchestration"},
}


def layer(module: str) -> str | None:
    top = module.split(".")[0]
    if top not in PACKAGES:
        return None  # the standard library or a third-party package
    if top == "diagnose":
        return "core" if module == "diagnose.core" or module.startswith("diagnose.core.") else "orchestration"
    return top


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """Every project module `path` imports, at module level or inside a function."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod when there is one
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import a.b.c` of a module a.b with attribute c
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    files = {module_name(p, root): p for pkg in packages if (root / pkg).is_dir() for p in (root / pkg).rglob("*.py")
             if "registry" not in p.relative_to(root).parts}  # the embedded registry's model files are data
    known = set(files)
    return {module: imports_of(path, module, known) for module, path in files.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(graph.items()):
        own = layer(module)
        for target in sorted(targets):
            theirs = layer(target)
            if theirs is not None and theirs != own and theirs not in ALLOWED[own]:
                bad.append(f"{module} ({own}) imports {target} ({theirs})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_goes_up_a_layer():
    assert upward_imports(import_graph(ROOT)) == []


def test_no_import_cycles():
    assert cycles(import_graph(ROOT)) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.mark.parametrize("files, expected", [
    ({"collectors/x.py": "from diagnose.compare import run_compare\n"}, "collectors.x (collectors) imports diagnose"),
    ({"diagnose/core/y.py": "def f():\n    from diagnose import analysis\n"},
     "diagnose.core.y (core) imports diagnose.analysis (orchestration)"),
    ({"reports/z.py": "import profilers.harness\n"}, "reports.z (reports) imports profilers.harness (profilers)"),
])
def test_the_checker_sees_an_upward_import(tmp_path, files, expected):
    base = {"diagnose/__init__.py": "", "diagnose/core/__init__.py": "", "diagnose/compare.py": "", "diagnose/analysis.py": "",
            "collectors/__init__.py": "", "reports/__init__.py": "", "profilers/__init__.py": "", "profilers/harness.py": ""}
    _write(tmp_path, base | files)
    bad = upward_imports(import_graph(tmp_path))
    assert len(bad) == 1 and bad[0].startswith(expected), bad


def test_the_checker_sees_a_cycle_through_a_lazy_import(tmp_path):
    _write(tmp_path, {"profilers/__init__.py": "", "profilers/a.py": "from profilers.b import g\n",
                      "profilers/b.py": "def g():\n    from profilers import a\n"})
    assert cycles(import_graph(tmp_path)) == [["profilers.a", "profilers.b"]]


def test_run_folder_file_names_are_spelled_only_by_the_run_folder():
    """No module but diagnose/core/runfolder.py spells a path inside a run folder (report files are named by the
    format registry, reports/__init__.py)."""
    from diagnose.core.runfolder import RunFolder

    names = {RunFolder.RUN, RunFolder.SAMPLES, RunFolder.VARIANT_SAMPLES, RunFolder.REQUEST_SIZES, RunFolder.INCOMPLETE,
             RunFolder.FIX_JSON, RunFolder.FIX_MD, RunFolder.DRIFT_MD, RunFolder.OP_DIFF, RunFolder.LOAD_SAMPLES,
             RunFolder.LOADTEST_MD, RunFolder.GRAFANA, "report.json", "report.md"}
    allowed = {ROOT / "diagnose" / "core" / "runfolder.py", ROOT / "reports" / "__init__.py"}
    offenders = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if path in allowed:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and not any(c.isspace() for c in node.value):
                    if node.value in names or node.value.startswith("evidence/"):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert offenders == []
