"""The prose says what the code does: every file it names exists, and the numbers it quotes
(memory, sizes) are what the code computes."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import train
from models import build_model

ROOT = Path(__file__).resolve().parents[1]
TOP = ("configs", "data", "docs", "models", "mols", "optimizers", "reproduce", "scripts", "tests", "tools", "training")
PROSE = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "configs").rglob("*.yaml")),
         *sorted(p for p in ROOT.glob("*/README.md") if not p.parent.name.startswith("."))]
# a repository path: one of the top folders, then path characters, ending in a file extension or "/"
PATH = re.compile(rf"(?<![\w/.-])((?:{'|'.join(TOP)})/[\w./-]*\w(?:\.(?:py|md|yaml|sh|txt|json|png))?/?)")


def named_paths(text: str) -> set[str]:
    found = set()
    for match in PATH.finditer(text):
        path = match.group(1).rstrip("/.")
        if any(ch in path for ch in "*{}<>") or "..." in path or re.search(r"\b[A-Z]{3,}\b", path):
            continue  # a pattern or a placeholder (SIZE, NNN), not a file
        found.add(path)
    return found


@pytest.mark.parametrize("doc", PROSE, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_the_prose_names_exists(doc):
    text = doc.read_text(encoding="utf-8")
    missing = sorted(p for p in named_paths(text)  # from the root, or from the document's own folder
                     if "." in Path(p).name and not (ROOT / p).exists() and not (doc.parent / p).exists())
    assert not missing, f"{doc.relative_to(ROOT)} names files that do not exist: {missing}"


def dry_run(capsys, *configs: str) -> str:
    args = [a for c in configs for a in ("--config", str(ROOT / c))]
    assert train.main([*args, "--dry-run", "--gpus", "16"]) == 0
    return capsys.readouterr().out


def test_the_7b_memory_figures_in_the_prose_are_the_dry_runs(capsys):
    out = dry_run(capsys, "configs/paper/base.yaml", "configs/paper/models/llama_7b.yaml",
                  "configs/paper/methods/adam8bit.yaml", "configs/paper/mols.yaml")
    per_gpu = re.search(r"estimated memory per GPU .*: ([\d.,]+) GiB", out).group(1)
    per_rank, per_node = re.search(r"host memory for its statistics: ([\d.,]+) GiB per rank, ([\d.,]+) GiB per node",
                                   out).groups()
    assert f"(train.py --dry-run: {per_gpu} GiB per GPU)" in (ROOT / "configs/paper/models/llama_7b.yaml").read_text()
    performance = " ".join((ROOT / "docs" / "performance.md").read_text().split())
    assert f"{per_rank} GiB for 7B per rank, so {per_node} GiB per 8-GPU node" in performance
    assert f"| {per_rank} / {per_node} |" in (ROOT / "docs" / "fsdp.md").read_text()  # the DDP/FSDP memory table


def test_the_memory_table_in_the_fsdp_doc_is_the_dry_runs():
    from scripts.memory_table import table
    assert table() in (ROOT / "docs" / "fsdp.md").read_text()


def parameters_m(size: str, vocab: int | None = None) -> str:
    return f"{sum(p.numel() for p in build_model(size, vocab, device='meta').parameters()) / 1e6:.2f}"


def test_the_model_sizes_in_the_prose_are_the_built_models():
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"{parameters_m('llama_tiny', 8000)}M parameters" in readme  # the quickstart (embedded-8k)
    reproducing = " ".join((ROOT / "docs" / "reproducing.md").read_text().split())
    gpt2 = f"{float(parameters_m('gpt2_125m')):.1f}M / {float(parameters_m('gpt2_355m')):.1f}M"
    assert gpt2 in reproducing
    assert f"({float(parameters_m('qwen2_350m', 32000)):.1f}M parameters)" in reproducing
