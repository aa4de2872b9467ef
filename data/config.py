"""The `data` section: where documents come from, the tokenizer, and how they become sequences."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from configs import check_range


@dataclass
class DataConfig:
    source: Literal["embedded", "c4", "openwebtext", "local", "tokens"] = "embedded"
    path: Optional[str] = None       # local: a file, directory or glob of training files; tokens: a shard directory
    val_path: Optional[str] = None   # local: the validation files; tokens: the validation shard directory
    format: Literal["auto", "c4", "jsonl", "json", "parquet", "text"] = "auto"
    text_field: str = "text"
    tokenizer: str = "embedded-32k"  # "embedded-<N>k", a Hugging Face name (t5-base) or a local path
    seq_len: int = 256
    packing: bool = False            # False: the reference harness's truncate+pad per document
    pack_window: int = 1024          # packing: sequences shuffled within windows of this many (0: in order)
    shuffle_seed: int = 42           # data order, independent of run.seed (paper: 42)
    shuffle_buffer: int = 10000      # streamed sources only
    num_workers: int = 1             # tokenizer worker processes for streamed sources
    val_tokens: int = 10_000_000     # fixed validation budget (non-pad tokens)

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "data.seq_len", self.seq_len, low=2)
        check_range(problems, "data.val_tokens", self.val_tokens, low=0, low_open=True)
        check_range(problems, "data.shuffle_buffer", self.shuffle_buffer, low=0, low_open=True)
        check_range(problems, "data.shuffle_seed", self.shuffle_seed, low=0)
        check_range(problems, "data.num_workers", self.num_workers, low=0)
        check_range(problems, "data.pack_window", self.pack_window, low=0)
        if self.source == "local" and not self.path:
            problems.append("data.path: required when data.source is 'local' (a file, directory or glob)")
        if self.source == "tokens":
            for key in ("path", "val_path"):
                if not getattr(self, key):
                    problems.append(f"data.{key}: required when data.source is 'tokens' (a directory of token "
                                    f"shards from scripts/pretokenize.py)")
        elif self.source != "local" and self.path:
            problems.append(f"data.path: only used with data.source: local or tokens (source is {self.source!r})")
        return problems
