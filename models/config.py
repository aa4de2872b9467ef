"""The `model` section: a named size (models.SIZES) and what may change about it, or a pretrained
model to fine-tune (`model.pretrained`, optionally with LoRA adapters, `model.lora`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from configs import check_range, did_you_mean
from models.build import SIZES


@dataclass
class LoRAConfig:
    """LoRA adapters (peft) on a pretrained model; rank 0 is off (full fine-tuning). The paper's
    Table 11 gives the ranks only (4, 8, 8 on all linear layers); alpha (default 2 x rank) and
    dropout (0) are LlamaFactory's defaults, our choice where the paper is silent."""
    rank: int = 0                                     # 0: no adapters, every parameter trains
    alpha: Optional[float] = None                     # default: 2 x rank
    dropout: float = 0.0
    target_modules: Any = "all-linear"               # peft's names: "all-linear" or a list of module names

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "model.lora.rank", self.rank, low=0)
        check_range(problems, "model.lora.alpha", self.alpha, low=0, low_open=True, optional=True)
        check_range(problems, "model.lora.dropout", self.dropout, low=0, high=1, high_open=True)
        targets = self.target_modules
        if isinstance(targets, list):
            if not targets or not all(isinstance(t, str) and t for t in targets):
                problems.append(f"model.lora.target_modules: a list of module names (e.g. [q_proj, v_proj]) "
                                f"or 'all-linear', got {targets!r}")
        elif not isinstance(targets, str) or not targets:
            problems.append(f"model.lora.target_modules: 'all-linear' or a list of module names, got {targets!r}")
        return problems

    @property
    def enabled(self) -> bool:
        return isinstance(self.rank, int) and self.rank > 0


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
    # Fine-tuning: a pretrained causal LM (a local directory or a Hugging Face hub name) is loaded
    # instead of building `size`; its own tokenizer is used unless data.tokenizer names another.
    pretrained: Optional[str] = None
    lora: LoRAConfig = field(default_factory=LoRAConfig)

    def validate(self) -> list[str]:
        problems: list[str] = []
        if isinstance(self.size, str) and self.size not in SIZES:
            problems.append(f"model.size: unknown size {self.size!r}"
                            + (did_you_mean(self.size, SIZES) or f" (known: {', '.join(SIZES)})"))
        check_range(problems, "model.vocab_size", self.vocab_size, low=0, low_open=True, optional=True)
        if self.pretrained is not None:
            if not isinstance(self.pretrained, str) or not self.pretrained.strip():
                problems.append(f"model.pretrained: a local directory or a hub name, got {self.pretrained!r}")
            if self.vocab_size is not None:
                problems.append("model.vocab_size: a pretrained model keeps its own vocabulary (model.pretrained "
                                "is set); remove model.vocab_size")
            if self.overrides:
                problems.append("model.overrides: a pretrained model keeps its own config (model.pretrained "
                                "is set); remove model.overrides")
            if self.init != "auto":
                problems.append(f"model.init: {self.init!r} re-initialises weights, but model.pretrained loads "
                                f"them; remove model.init")
        elif self.lora.enabled:
            problems.append(f"model.lora.rank: {self.lora.rank} needs a pretrained model to adapt "
                            f"(set model.pretrained, or model.lora.rank: 0)")
        return problems

    @property
    def finetuning(self) -> bool:
        return bool(self.pretrained)

    def vocabulary(self, tokenizer_size: int) -> int:
        """Embedding rows: model.vocab_size, else the size's own (LLaMA: 32000), else the tokenizer's;
        a pretrained model's own (its config.json's vocab_size)."""
        if self.pretrained:
            from models.pretrained import pretrained_vocabulary
            return pretrained_vocabulary(self.pretrained)
        return self.vocab_size or SIZES[self.size].vocab or tokenizer_size
