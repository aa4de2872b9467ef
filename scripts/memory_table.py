#!/usr/bin/env python3
"""The memory table of docs/fsdp.md: the dry run's estimate per GPU, by part, for the paper's 1B,
3B and 7B configs with MoLS under DDP and FSDP on Table 3's 16 GPUs (8 per node), and 7B with
AdamW under FSDP with each gradient-sync choice. Computed from the meta-device model
(training/dry_run.py), no GPU needed; tests/test_docs.py keeps docs/fsdp.md equal to it.

    python scripts/memory_table.py            # the markdown table
"""
from __future__ import annotations

import argparse
from pathlib import Path

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

from training.config import load_config
from training.dry_run import GIB, _tokenizer_size, build_meta_model, memory_estimate, mols_statistics_bytes

GPUS, PER_NODE = 16, 8
ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper"
# column -> (model overlay, method overlay or None, overrides)
COLUMNS = {
    "1B ddp": ("llama_1b", None, []),
    "1B fsdp": ("llama_1b", None, ["train.parallel=fsdp"]),
    "3B ddp": ("llama_3b", "adam8bit", []),
    "3B fsdp": ("llama_3b", None, ["train.parallel=fsdp"]),
    "7B ddp": ("llama_7b", "adam8bit", []),
    "7B fsdp": ("llama_7b", None, ["train.parallel=fsdp"]),
    "7B fsdp, sync last": ("llama_7b", None, ["train.parallel=fsdp", "train.fsdp_gradient_sync=last_micro_batch"]),
}


def column(model: str, method: str | None, overrides: list[str]):
    paths = [f"{PAPER}/base.yaml", f"{PAPER}/models/{model}.yaml", f"{PAPER}/mols.yaml"]
    if method:
        paths.insert(2, f"{PAPER}/methods/{method}.yaml")
    cfg = load_config(paths, overrides)
    vocab = cfg.model.vocabulary(_tokenizer_size(cfg.data.tokenizer))
    meta = build_meta_model(cfg, vocab)
    precision = cfg.train.precision if cfg.train.precision != "auto" else "bf16-mixed"
    memory = memory_estimate(cfg, meta, vocab, precision, GPUS)
    host = mols_statistics_bytes(cfg, sum(p.numel() for p in meta.parameters()), GPUS)
    return cfg, precision, memory, host


def table() -> str:
    columns = {name: column(*spec) for name, spec in COLUMNS.items()}
    parts = list(dict.fromkeys(part for _, _, memory, _ in columns.values() for part in memory))
    lines = ["| GiB per GPU | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|",
             "| optimizer, precision | " + " | ".join(f"{cfg.optimizer.name}, {precision}"
                                                      for cfg, precision, _, _ in columns.values()) + " |"]
    for part in parts:
        lines.append(f"| {part} | " + " | ".join(f"{memory[part] / GIB:.2f}" if part in memory else "-"
                                                  for _, _, memory, _ in columns.values()) + " |")
    lines.append("| **total per GPU** | " + " | ".join(f"**{sum(memory.values()) / GIB:.1f}**"
                                                        for _, _, memory, _ in columns.values()) + " |")
    lines.append("| MoLS statistics, host, per rank / per node | " + " | ".join(
        f"{host / GIB:.1f} / {host * PER_NODE / GIB:.1f}" for _, _, _, host in columns.values()) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    print(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
