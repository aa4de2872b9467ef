"""The package layering and the module graph, read from the import statements of every .py file
of the packages (issues 8 and 18).

    configs  <-  data, models  <-  optimizers  <-  training  <-  tools, reproduce
    mols imports none of them; models and optimizers may import mols; optimizers read model facts
    from models; tools (what the commands around a run use) and reproduce (the paper's sweeps and
    tables) sit on top: they may import every package below them, and none below imports them

train.py, scripts/ and tests/ are outside the layering (they may import any package). Every
`import` / `from ... import` counts, also those inside functions (lazy imports still tie the
modules together) and relative ones. Two checks:

- packages: no package imports one its layer does not allow (so no cycle between packages);
- modules: no cycle between the files of the packages, within one package or across packages
  (`data/stream.py` importing `data/shards.py` while `data/shards.py` imports `data/stream.py`,
  even lazily, fails). A package's `__init__.py` is the module named like the package.

A package that does not exist (yet) counts as empty: OPTIONAL lists those that may be missing.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("configs", "data", "models", "mols", "optimizers", "training", "tools", "reproduce")
OPTIONAL = {"reproduce"}  # being created; until then an empty package
ALLOWED = {
    "configs": set(),
    "mols": set(),
    "data": {"configs"},
    "models": {"configs", "mols"},
    "optimizers": {"configs", "mols", "models"},
    "training": {"configs", "data", "models", "mols", "optimizers"},
    "tools": {"configs", "data", "models", "mols", "optimizers", "training"},
    "reproduce": {"configs", "data", "models", "mols", "optimizers", "training", "tools"},
}


def source_files(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files or package in OPTIONAL, f"no sources under {package}/"
    return files


def module_name(path: Path) -> str:
    """data/stream.py -> data.stream; data/__init__.py -> data."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_statements(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module name, the names imported from it: [] for `import x`) for every
    import statement of one source file, lazy and relative ones included, in line order."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module_parts = path.relative_to(ROOT).with_suffix("").parts  # e.g. ("data", "stream")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from this module's package (an __init__'s own), `level - 1` up
                base = list(module_parts[:-1])
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name, [alias.name for alias in node.names]))
    return sorted(found, key=lambda item: item[0])


def imported_packages(path: Path, package: str) -> dict[str, list[str]]:
    """{imported project package: ["file:line", ...]} for one source file."""
    found: dict[str, list[str]] = {}
    for line, name, _ in import_statements(path):
        top = name.split(".")[0]
        if top in PACKAGES and top != package:
            found.setdefault(top, []).append(f"{path.relative_to(ROOT)}:{line}")
    return found


def package_graph() -> dict[str, dict[str, list[str]]]:
    graph: dict[str, dict[str, list[str]]] = {p: {} for p in PACKAGES}
    for package in PACKAGES:
        for path in source_files(package):
            for target, where in imported_packages(path, package).items():
                graph[package].setdefault(target, []).extend(where)
    return graph


def module_graph() -> tuple[dict[str, dict[str, list[str]]], dict[str, Path]]:
    """({module: {module it imports: ["file:line", ...]}}, {module: its file}) over every file of
    the packages. `from p import x` is an edge to the module p.x when that is a file, else to p;
    a name that is not a file is the longest prefix that is one (`import a.b.f` -> a.b). The
    parent packages Python initialises on the way (`data` for `from data.stream import x`) are
    not edges: every submodule would be in a cycle with an __init__ that imports it."""
    files = {module_name(path): path for package in PACKAGES for path in source_files(package)}

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in files:
                return ".".join(parts[:end])
        return None

    graph: dict[str, dict[str, list[str]]] = {m: {} for m in files}
    for module, path in files.items():
        for line, name, names in import_statements(path):
            targets = {f"{name}.{n}" if f"{name}.{n}" in files else resolve(name) for n in names or [""]}
            for target in targets - {None, module}:
                graph[module].setdefault(target, []).append(f"{path.relative_to(ROOT)}:{line}")
    return graph, files


def find_cycle(graph: dict[str, dict]) -> list[str] | None:
    """One cycle [a, b, ..., a] of a directed graph ({node: {successor: ...}}), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def describe_cycle(cycle: list[str], graph: dict[str, dict[str, list[str]]], files: dict | None = None) -> str:
    def show(node):
        return str(files[node].relative_to(ROOT)) if files else node

    return "; ".join(f"{show(a)} -> {show(b)} ({', '.join(graph[a][b][:3])})" for a, b in zip(cycle, cycle[1:]))


def test_the_import_scanner_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    probe = tmp_path / "mols" / "probe.py"
    probe.parent.mkdir()
    probe.write_text("import os\nfrom ..data import x\nfrom . import groups\n\n"
                     "def f():\n    import training.state\n    from configs import y\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    found = imported_packages(probe, "mols")
    assert set(found) == {"data", "training", "configs"}
    assert found["training"] == ["mols/probe.py:6"]


def test_the_module_graph_finds_a_cycle_through_lazy_and_relative_imports(tmp_path, monkeypatch):
    sources = {
        "data/__init__.py": "from data.stream import run\n",
        "data/stream.py": "import numpy\nfrom . import shards\nfrom data.cache import atomic\n",
        "data/shards.py": "from configs import y\n\ndef f():\n    from .stream import epoch_seed\n",
        "data/cache.py": "import os\n",
        "configs/__init__.py": "",
    }
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(globals(), "PACKAGES", ("configs", "data", "reproduce"))  # reproduce: missing
    graph, files = module_graph()
    assert graph["data"] == {"data.stream": ["data/__init__.py:1"]}
    assert graph["data.stream"] == {"data.shards": ["data/stream.py:2"], "data.cache": ["data/stream.py:3"]}
    assert graph["data.shards"] == {"configs": ["data/shards.py:1"], "data.stream": ["data/shards.py:4"]}
    cycle = find_cycle(graph)
    assert cycle == ["data.stream", "data.shards", "data.stream"]
    assert describe_cycle(cycle, graph, files) == ("data/stream.py -> data/shards.py (data/stream.py:2); "
                                                   "data/shards.py -> data/stream.py (data/shards.py:4)")
    (tmp_path / "data/shards.py").write_text("from configs import y\n")
    assert find_cycle(module_graph()[0]) is None


def test_no_import_cycle_between_the_project_packages():
    graph = package_graph()
    cycle = find_cycle(graph)
    if cycle:
        raise AssertionError("import cycle: " + describe_cycle(cycle, graph))


def test_no_import_cycle_between_the_modules_of_the_packages():
    graph, files = module_graph()
    cycle = find_cycle(graph)
    if cycle:
        raise AssertionError("import cycle between files: " + describe_cycle(cycle, graph, files))


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


def test_no_script_imports_another_script():
    """scripts/ holds standalone tools: what two of them share lives in a package."""
    scripts = ROOT / "scripts"
    names = {p.stem for p in scripts.glob("*.py")} - {"__init__", "_repo_root"}
    offenders = []
    for path in sorted(scripts.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""] + ([f"{node.module}.{a.name}" for a in node.names]
                                                 if node.module == "scripts" else [])
                if node.level:  # from . import x
                    modules = [f"scripts.{a.name}" for a in node.names]
            for module in modules:
                head, _, rest = module.partition(".")
                if (head == "scripts" and rest.split(".")[0] in names) or head in names:
                    offenders.append(f"{path.name}:{node.lineno} imports {module}")
    assert not offenders, offenders


# ------------------------------------------------------------------------------------------------
# Collectives: one rule for where their tensors live (issue 29)
# ------------------------------------------------------------------------------------------------

# torch.distributed's collectives and object collectives: each takes tensors on the backend's
# device (NCCL: CUDA only), which gloo on a CPU never checks.
COLLECTIVES = {"all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "all_to_all",
               "all_to_all_single", "barrier", "broadcast", "broadcast_object_list", "gather", "gather_object",
               "reduce", "reduce_scatter", "reduce_scatter_tensor", "scatter", "scatter_object_list", "send",
               "recv", "isend", "irecv", "monitored_barrier"}
COLLECTIVES_HOME = "mols/collectives.py"


def direct_collective_calls(path: Path) -> list[str]:
    """`file:line name` of every call of a torch.distributed collective in one file: through the
    module (`dist.all_reduce(...)`, `torch.distributed.all_reduce(...)`) or a name imported from it
    (`from torch.distributed import all_reduce`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module_aliases = {"torch.distributed"}
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            module_aliases |= {a.asname for a in node.names if a.name == "torch.distributed" and a.asname}
        elif isinstance(node, ast.ImportFrom) and node.module == "torch.distributed":
            imported |= {a.asname or a.name for a in node.names if a.name in COLLECTIVES}
        elif isinstance(node, ast.ImportFrom) and node.module == "torch":
            module_aliases |= {a.asname or a.name for a in node.names if a.name == "distributed"}

    def dotted(expr) -> str:
        if isinstance(expr, ast.Name):
            return expr.id
        if isinstance(expr, ast.Attribute):
            return f"{dotted(expr.value)}.{expr.attr}"
        return ""

    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        owner, _, attr = name.rpartition(".")
        if (attr in COLLECTIVES and owner in module_aliases) or (not owner and name in imported):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return found


def project_sources() -> list[Path]:
    files = [path for package in PACKAGES for path in source_files(package)]
    return files + [ROOT / "train.py", *sorted((ROOT / "scripts").glob("*.py"))]


def test_the_collective_scanner_sees_every_spelling(tmp_path, monkeypatch):
    probe = tmp_path / "probe.py"
    probe.write_text("import torch\nimport torch.distributed as dist\nfrom torch.distributed import all_reduce as ar\n"
                     "from torch import distributed\n\n"
                     "def f(t):\n    dist.all_reduce(t)\n    torch.distributed.barrier()\n    ar(t)\n"
                     "    distributed.all_gather_object([], 1)\n    dist.get_rank()\n    t.all_reduce()\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert direct_collective_calls(probe) == ["probe.py:7 dist.all_reduce", "probe.py:8 torch.distributed.barrier",
                                              "probe.py:9 ar", "probe.py:10 distributed.all_gather_object"]


def test_every_collective_goes_through_mols_collectives():
    """mols/collectives.py moves a collective's tensors to the backend's device (NCCL: the GPU). A
    collective called anywhere else could hand NCCL a host tensor, which gloo, and so every CPU
    test, accepts: the first multi-GPU MoLS calibration crashed that way."""
    offenders = [call for path in project_sources() if path.relative_to(ROOT).as_posix() != COLLECTIVES_HOME
                 for call in direct_collective_calls(path)]
    assert not offenders, ("call these through mols.collectives (or training.distributed), which applies the "
                           "device rule:\n" + "\n".join(offenders))
