"""The paper's data, read in one place: configs/paper/experiments.yaml (every table and figure: what
it is, how its grid runs, the paper's numbers; see the file's header) and
configs/paper/learning_rates.yaml (Tables 8/9 and the search grid).

An experiment is named by its key in experiments.yaml: "1" ... "14" for tables, "figure1" ...,
"lr_search", ...; "table7" is accepted for "7".
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "paper"
EXPERIMENTS_FILE = PAPER / "experiments.yaml"
LEARNING_RATES_FILE = PAPER / "learning_rates.yaml"
BASE_CONFIG = PAPER / "base.yaml"
MOLS_OVERLAY = PAPER / "mols.yaml"


@functools.lru_cache(maxsize=None)
def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def experiments() -> dict[str, dict]:
    """Every entry of experiments.yaml, in the paper's order (a copy: callers may change it)."""
    return copy.deepcopy(_load(EXPERIMENTS_FILE)["experiments"])


def resolve(name: str) -> str:
    """An experiment's key: `name` itself, or "7" for "table7"."""
    known = _load(EXPERIMENTS_FILE)["experiments"]
    if name in known:
        return name
    if name.startswith("table") and name[len("table"):] in known:
        return name[len("table"):]
    raise KeyError(f"no experiment {name!r} in {EXPERIMENTS_FILE.name} (known: {', '.join(known)})")


def experiment(name: str) -> dict:
    return experiments()[resolve(name)]


def tables() -> dict[str, dict]:
    """The experiments whose runs are compared with the paper's numbers: those with rows."""
    return {key: entry for key, entry in experiments().items() if "rows" in entry}


def table(name: str) -> dict:
    spec = experiment(name)
    if "rows" not in spec:
        raise KeyError(f"experiment {name!r} has no rows (known tables: {', '.join(tables())})")
    return spec


def runnable() -> dict[str, dict]:
    """The experiments `python -m reproduce run ID` runs: those with a grid."""
    return {key: entry for key, entry in experiments().items() if "grid" in entry}


@dataclass(frozen=True)
class Preset:
    """How an experiment's grid runs: its models and rows (its own, or `rows_of`'s), seeds,
    learning rates ("paper", "grid", a list, or a mapping model -> rate), nodes per job and GPUs
    per node (8, or the grid's `gpus_per_node`: one for the fine-tuning tables), the
    sweep's name and the overlays added to every job; the first config of every job (`base`,
    default base.yaml) and the folder of the model overlays (`models_dir`, default models/): the
    fine-tuning tables use finetune/base.yaml and finetune/models/."""
    key: str
    name: str
    models: list
    rows: list
    seeds: list
    lrs: object
    nodes: int
    configs: list
    gpus_per_node: int = 8
    base: Path = BASE_CONFIG
    models_dir: Path = PAPER / "models"


def preset(name: str) -> Preset:
    key = resolve(name)
    entry = experiments()[key]
    if "grid" not in entry:
        raise KeyError(f"experiment {name!r} has no grid to run (runnable: {', '.join(runnable())})")
    grid = entry["grid"]
    source = experiments()[grid.get("rows_of", key)]
    return Preset(key=key, name=grid.get("name") or (f"table{key}" if key.isdigit() else key),
                  models=list(source["models"]), rows=list(source["rows"]), seeds=list(grid.get("seeds", [0])),
                  lrs=grid.get("lrs", "paper"), nodes=int(grid.get("nodes", 1)),
                  gpus_per_node=int(grid.get("gpus_per_node", 8)),
                  configs=[PAPER / f"{c}.yaml" for c in grid.get("configs", [])],
                  base=PAPER / f"{grid['base']}.yaml" if grid.get("base") else BASE_CONFIG,
                  models_dir=PAPER / grid.get("models_dir", "models"))


# ------------------------------------------------------------------------------------------------
# Learning rates (Tables 8/9)
# ------------------------------------------------------------------------------------------------

def learning_rates_file() -> dict:
    """learning_rates.yaml as written: {"search_grid": [...], "learning_rates": {...}}."""
    return copy.deepcopy(_load(LEARNING_RATES_FILE))


def learning_rates() -> dict[str, dict[str, float]]:
    """method[+mols] -> model size -> the paper's peak learning rate."""
    return learning_rates_file()["learning_rates"]


def search_grid() -> list[float]:
    return list(_load(LEARNING_RATES_FILE)["search_grid"])


def paper_lr(key: str, model: str) -> Optional[float]:
    """The paper's learning rate of a method key ("adam", "adam+mols") at a model size, or None."""
    return _load(LEARNING_RATES_FILE)["learning_rates"].get(key, {}).get(model)


def row_key(row: dict) -> str:
    return row["method"] + ("+mols" if row["mols"] else "")


def row_learning_rate(row: dict, model: str, grid_lrs=None):
    """The paper's rate(s) of a table row at a model size: the row's own `lrs` (a list), else the
    grid's rate for the model (a mapping, as the fine-tuning tables give Table 11's), else
    learning_rates.yaml's (a float), else None."""
    if row.get("lrs"):
        return list(row["lrs"])
    if isinstance(grid_lrs, dict):
        return grid_lrs.get(model)
    return paper_lr(row_key(row), model)
