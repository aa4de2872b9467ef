"""The `model` section: a named size (models.SIZES) and what may change about it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from configs import check_range, did_you_mean
from models.build import SIZES


@dataclass
class ModelConfig:
    size: str = "llama_60m"          # a key of models.SIZES
    vocab_size: Optional[int] = None # default: the size's own (32000 for LLaMA), else the tokenizer's
    gradient_checkpointing: bool = False
    # Initial weights: transformers' own (one generator in construction order), or by_name
    # (models/init.py: each parameter from (run.seed, its name), the same sharded or not);
    # auto: by_name under train.parallel: fsdp, which builds on the meta device, else transformers.
    init: Literal["auto", "transformers", "by_name"] = "auto"
    attn_implementation: str = "sdpa"
    overrides: dict = field(default_factory=dict)  # extra fields for the transformers config

    def validate(self) -> list[str]:
        problems: list[str] = []
        if isinstance(self.size, str) and self.size not in SIZES:
            problems.append(f"model.size: unknown size {self.size!r}"
                            + (did_you_mean(self.size, SIZES) or f" (known: {', '.join(SIZES)})"))
        check_range(problems, "model.vocab_size", self.vocab_size, low=0, low_open=True, optional=True)
        return problems

    def vocabulary(self, tokenizer_size: int) -> int:
        """Embedding rows: model.vocab_size, else the size's own (LLaMA: 32000), else the tokenizer's."""
        return self.vocab_size or SIZES[self.size].vocab or tokenizer_size
