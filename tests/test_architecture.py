"""The package layering, read from the import statements of every .py file (issue 8).

    configs  <-  data, models  <-  optimizers  <-  training      mols imports none of them;
                 models and optimizers may import mols; optimizers read model facts from models

Every `import` / `from ... import` counts, also those inside functions (lazy imports still tie
the packages together) and relative ones.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("configs", "data", "models", "mols", "optimizers", "training")
ALLOWED = {
    "configs": set(),
    "mols": set(),
    "data": {"configs"},
    "models": {"configs", "mols"},
    "optimizers": {"configs", "mols", "models"},
    "training": {"configs", "data", "models", "mols", "optimizers"},
}


def imported_packages(path: Path, package: str) -> dict[str, list[str]]:
    """{imported project package: ["file:line", ...]} for one source file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module_parts = path.relative_to(ROOT).with_suffix("").parts  # e.g. ("data", "stream")
    found: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from this module's package (an __init__'s own), `level - 1` up
                base = list(module_parts[:-1])
                base = base[: len(base) - (node.level - 1)]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES and top != package:
                found.setdefault(top, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def package_graph() -> dict[str, dict[str, list[str]]]:
    graph: dict[str, dict[str, list[str]]] = {p: {} for p in PACKAGES}
    for package in PACKAGES:
        files = sorted((ROOT / package).rglob("*.py"))
        assert files, f"no sources under {package}/"
        for path in files:
            for target, where in imported_packages(path, package).items():
                graph[package].setdefault(target, []).extend(where)
    return graph


def find_cycle(graph: dict[str, dict]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in PACKAGES:
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_import_scanner_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    probe = tmp_path / "mols" / "probe.py"
    probe.parent.mkdir()
    probe.write_text("import os\nfrom ..data import x\nfrom . import groups\n\n"
                     "def f():\n    import training.state\n    from configs import y\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    found = imported_packages(probe, "mols")
    assert set(found) == {"data", "training", "configs"}
    assert found["training"] == ["mols/probe.py:6"]


def test_no_import_cycle_between_the_project_packages():
    graph = package_graph()
    cycle = find_cycle(graph)
    if cycle:
        edges = [f"{a} -> {b} ({', '.join(graph[a][b][:3])})" for a, b in zip(cycle, cycle[1:])]
        raise AssertionError("import cycle: " + "; ".join(edges))


def test_mols_and_configs_import_none_of_the_other_packages():
    graph = package_graph()
    for package in ("mols", "configs"):
        assert graph[package] == {}, f"{package} imports {graph[package]}"


def test_every_package_imports_only_what_its_layer_allows():
    graph = package_graph()
    problems = [f"{package} -> {target}: {', '.join(where)}"
                for package, targets in graph.items() for target, where in sorted(targets.items())
                if target not in ALLOWED[package]]
    assert not problems, "imports against the layering:\n" + "\n".join(problems)
