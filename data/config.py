"""The `data` section: where documents come from, the tokenizer, and how they become sequences;
or, for fine-tuning (`source: instructions`), the instruction records and their prompt format."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from configs import check_range


@dataclass
class DataConfig:
    source: Literal["embedded", "c4", "openwebtext", "local", "tokens", "instructions"] = "embedded"
    path: Optional[str] = None       # local: a file, directory or glob of training files; tokens: a shard directory;
                                     # instructions: a .jsonl/.json file of records, or shipped-synthetic
    val_path: Optional[str] = None   # local: the validation files; tokens: the validation shard directory;
                                     # instructions: a .jsonl/.json file (shipped-synthetic: its test split)
    format: Literal["auto", "c4", "jsonl", "json", "parquet", "text"] = "auto"
    text_field: str = "text"
    tokenizer: str = "embedded-32k"  # "embedded-<N>k", a Hugging Face name (t5-base) or a local path
    seq_len: int = 256
    packing: bool = False            # False: the reference harness's truncate+pad per document
    pack_window: int = 1024          # packing: sequences shuffled within windows of this many (0: in order)
    shuffle_seed: int = 42           # data order, independent of run.seed (paper: 42)
    shuffle_buffer: int = 10000      # streamed sources only
    num_workers: int = 1             # tokenizer worker processes for streamed sources
    prefetch: int = 2                # training micro-batches made ahead in a thread (pinned on a GPU); 0: none
    val_tokens: int = 10_000_000     # fixed validation budget (non-pad tokens)
    # Hyper-parameters chosen on the data a result is reported on are chosen optimistically: true
    # deals the validation documents alternately to the reported split (even positions: every
    # `val` record) and a selection split (odd positions: `val_selection`, at the end of the run),
    # each up to half of data.val_tokens. `reproduce results` picks learning rates on the latter.
    val_selection: bool = False
    # instructions (data/instructions.py): Alpaca-style records, the loss on the response (or every token)
    cutoff_len: int = 2048           # instructions: prompt + response truncated to this many tokens
    chat_template: Optional[bool] = None  # instructions: the tokenizer's chat template (null: where it has one,
                                          # else the Alpaca prompt; false: always the Alpaca prompt)
    # instructions: the loss on the prompt too (LLM-Adapters' train_on_inputs default, Table 4);
    # false: on the response only
    train_on_inputs: bool = False

    @property
    def instructions(self) -> bool:
        return self.source == "instructions"

    @property
    def sequence_tokens(self) -> int:
        """The longest sequence: data.seq_len, or data.cutoff_len for instruction data (whose
        micro-batches are padded to their longest example only)."""
        return self.cutoff_len if self.instructions else self.seq_len

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "data.seq_len", self.seq_len, low=2)
        check_range(problems, "data.val_tokens", self.val_tokens, low=0, low_open=True)
        check_range(problems, "data.shuffle_buffer", self.shuffle_buffer, low=0, low_open=True)
        check_range(problems, "data.shuffle_seed", self.shuffle_seed, low=0)
        check_range(problems, "data.num_workers", self.num_workers, low=0)
        check_range(problems, "data.prefetch", self.prefetch, low=0)
        check_range(problems, "data.pack_window", self.pack_window, low=0)
        check_range(problems, "data.cutoff_len", self.cutoff_len, low=2)
        if self.instructions:
            problems.extend(self._instruction_problems())
        else:
            if self.chat_template is not None:
                problems.append("data.chat_template: only used with data.source: instructions")
            if self.train_on_inputs:
                problems.append("data.train_on_inputs: only used with data.source: instructions (documents are "
                                "trained on every token)")
        if self.source == "local" and not self.path:
            problems.append("data.path: required when data.source is 'local' (a file, directory or glob)")
        if self.source == "tokens":
            for key in ("path", "val_path"):
                if not getattr(self, key):
                    problems.append(f"data.{key}: required when data.source is 'tokens' (a directory of token "
                                    f"shards from scripts/pretokenize.py)")
        elif self.source not in ("local", "instructions") and self.path:
            problems.append(f"data.path: only used with data.source: local or tokens (source is {self.source!r})")
        return problems

    def _instruction_problems(self) -> list[str]:
        problems: list[str] = []
        if not self.path:
            problems.append(f"data.path: required when data.source is 'instructions' (a .jsonl or .json file of "
                            f"instruction/input/output records, or {SHIPPED_SYNTHETIC})")
        elif isinstance(self.path, str) and self.path != SHIPPED_SYNTHETIC \
                and not self.path.endswith((".json", ".jsonl")):
            problems.append(f"data.path: an instruction file ends in .jsonl or .json (or is {SHIPPED_SYNTHETIC}), "
                            f"got {self.path!r}")
        if not self.val_path and self.path != SHIPPED_SYNTHETIC:
            problems.append("data.val_path: required when data.source is 'instructions' (a .jsonl or .json file "
                            "of validation records)")
        elif isinstance(self.val_path, str) and self.val_path != SHIPPED_SYNTHETIC \
                and not self.val_path.endswith((".json", ".jsonl")):
            problems.append(f"data.val_path: an instruction file ends in .jsonl or .json (or is {SHIPPED_SYNTHETIC}), "
                            f"got {self.val_path!r}")
        if self.val_selection:
            problems.append("data.val_selection: not available for instruction records (their validation file is "
                            "reported whole)")
        if self.packing:
            problems.append("data.packing: instruction records are never packed (each is one sequence, the loss "
                            "on its response); set data.packing: false")
        if self.format not in ("auto", "json", "jsonl"):
            problems.append(f"data.format: instruction files are json or jsonl (auto: by the suffix), got {self.format!r}")
        return problems


SHIPPED_SYNTHETIC = "shipped-synthetic"   # data/assets/synthetic_instructions.jsonl: 320 train / 80 test records
