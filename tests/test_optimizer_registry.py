"""The registry (optimizers/registry.py) is the one list of methods, filled where each method is
defined: the paper's method overlays name methods of it, every method builds and steps, its state
cost (what the dry run prices) is the state the real optimizer holds after one step, and FSDP's
refusal reads its registration. A method added in one module (here: in a test) reaches the config
check, the builder, the dry run's estimate (measured, having no formula) and FSDP's refusal.

The model is llama_micro with a 2,000-token vocabulary: embedding and head (64K elements each)
reach bitsandbytes' 8-bit threshold and SOAP's preconditioner limit (the vocab side, 2,000 <=
10,000, is preconditioned: a 2000 x 2000 GG and Q each), the hidden matrices are 32 x 32 and
64 x 32, and GaLore/APOLLO project them at the default rank (8).
"""
import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from models import build_model
from mols.groups import param_groups
from optimizers import (METHOD_OPTIONS, METHODS, REGISTRY, OptimizerConfig, build_optimizer, estimate_state_bytes,
                        optimizer_state_bytes, register, state_basis)
from optimizers.groups import make_group
from optimizers.low_rank import default_rank
from training.fsdp import method_problem

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 2000

# Where the estimate is not exact, and why: the 0-d step counters (4 bytes per tensor; NAdam and
# LAMB keep two or three) and APOLLO's norm-growth limiter's last norm (4 bytes per matrix) are
# left out; Adam-mini's second moment is counted per row (its q/k keep one per head) and a norm
# weight's at full size (it keeps one value). Everything else is exact.
TOLERANCE = {"adamw": 1e-3, "adam": 1e-3, "nadam": 1e-3, "lamb": 1e-3, "muon": 1e-3, "apollo": 1e-3,
             "adam_mini": 5e-3}


def overlay_methods() -> dict[str, str]:
    names = {}
    for overlay in sorted((ROOT / "configs/paper/methods").glob("*.yaml")):
        optimizer = (yaml.safe_load(overlay.read_text()) or {}).get("optimizer", {})
        if "name" in optimizer:
            names[overlay.stem] = optimizer["name"]
    return names


def test_every_method_overlay_names_a_registered_method():
    names = overlay_methods()
    assert len(names) >= 11
    unknown = {overlay: name for overlay, name in names.items() if name not in REGISTRY}
    assert not unknown


def test_the_method_lists_derive_from_the_registry():
    assert METHODS == tuple(REGISTRY)
    assert METHOD_OPTIONS == {name: method.options for name, method in REGISTRY.items()}
    for name, method in REGISTRY.items():
        assert method.name == name and dataclasses.is_dataclass(method.options)
        assert callable(method.build) and callable(method.state_bytes)  # every built-in method has a formula
        cfg = OptimizerConfig(name=name)
        assert cfg.validate() == [] and isinstance(cfg.options, method.options)
        # FSDP runs exactly the methods registered as sharded, and refuses the others with their reason
        problem = method_problem(name)
        assert (problem is None) == method.sharded
        assert method.sharded or method.why_not_sharded in problem
    assert [n for n, m in REGISTRY.items() if m.sharded] == ["adamw", "adam", "nadam"]
    assert state_basis(OptimizerConfig(name="adamw")) == "formula"
    assert state_basis(OptimizerConfig(name="adam_mini")) == "bound"


def stepped(method: str, dtype=None):
    """llama_micro (vocab 2000), optionally cast, with `method` built and stepped once."""
    torch.manual_seed(0)
    model = build_model("llama_micro", vocab_size=VOCAB)
    if dtype is not None:
        model.to(dtype)
    cfg = OptimizerConfig(name=method, lr=1e-3)
    optimizer = build_optimizer(cfg, model, param_groups(model))
    batch = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    return cfg, model, optimizer


def meta_model():
    with torch.device("meta"):
        return build_model("llama_micro", vocab_size=VOCAB)


@pytest.mark.parametrize("method", METHODS)
def test_the_state_estimate_is_the_state_after_one_step(method):
    cfg, model, optimizer = stepped(method)
    real = optimizer_state_bytes(optimizer)
    estimate = estimate_state_bytes(cfg, model)
    assert estimate == pytest.approx(real, rel=TOLERANCE.get(method, 0), abs=0), (method, estimate, real)
    if REGISTRY[method].state_is_bound:
        assert estimate >= real
    # the dry run prices a meta-device model: the same bytes
    assert estimate_state_bytes(cfg, meta_model()) == estimate


@pytest.mark.parametrize("method", ["adamw", "galore", "adam8bit"])
def test_the_estimate_follows_bf16_parameters(method):
    """bf16-pure: moments in bf16, GaLore's projector a bf16 copy of its rank rows (fp32: a view that
    keeps the SVD factor whole), bitsandbytes' state 8-bit or fp32 whatever the parameter's dtype."""
    cfg, model, optimizer = stepped(method, torch.bfloat16)
    real = optimizer_state_bytes(optimizer)
    assert estimate_state_bytes(cfg, meta_model(), torch.bfloat16) == pytest.approx(
        real, rel=TOLERANCE.get(method, 0), abs=0)


def test_low_rank_estimates_use_the_builders_rank():
    model = meta_model()
    assert default_rank(model) == 8
    default = OptimizerConfig(name="galore")
    explicit = OptimizerConfig(name="galore", options={"rank": 8})
    smaller = OptimizerConfig(name="galore", options={"rank": 4})
    assert estimate_state_bytes(default, model) == estimate_state_bytes(explicit, model)
    assert estimate_state_bytes(smaller, model) < estimate_state_bytes(default, model)


def test_soap_counts_each_preconditioned_side():
    """SOAP's GG and Q are side x side for each side up to max_precondition_dim: with the vocab side
    excluded (64 < 2000; the hidden matrices' sides are 32 and 64) the embedding and head keep only
    32 x 32 ones."""
    model = meta_model()
    full = estimate_state_bytes(OptimizerConfig(name="soap"), model)
    capped = estimate_state_bytes(OptimizerConfig(name="soap", options={"max_precondition_dim": 64}), model)
    vocab_side = 2 * 2 * VOCAB * VOCAB * 4  # GG and Q of embedding and head, fp32
    assert full - capped == vocab_side


# ---------------------------------------------------------------------------------------------
# A new method, in one place
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def restored_registry():
    saved = dict(REGISTRY)
    yield
    REGISTRY.clear()
    REGISTRY.update(saved)


@dataclasses.dataclass
class SignSGDOptions:
    momentum: float = 0.9


class SignSGD(torch.optim.Optimizer):
    """The sign of a momentum buffer (one state tensor per parameter, shaped like it)."""

    def __init__(self, params, lr=1e-3, momentum=0.9):
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buffer = self.state[p].setdefault("buffer", torch.zeros_like(p))
                buffer.mul_(group["momentum"]).add_(p.grad)
                p.add_(buffer.sign(), alpha=-group["lr"])


def test_a_method_registered_in_one_place_reaches_every_list(restored_registry):
    """What a new module of optimizers/ does: one register() call, no formula; nothing else edited."""
    @register("sign_sgd", options=SignSGDOptions)
    def build_sign_sgd(cfg, options, model, groups):
        return SignSGD([make_group(g, cfg.lr, "sign sgd") for g in groups], lr=cfg.lr, momentum=options.momentum)

    cfg = OptimizerConfig(name="sign_sgd", options={"momentum": 0.5})
    assert cfg.validate() == [] and cfg.options == SignSGDOptions(0.5)
    (problem,) = OptimizerConfig(name="sign_sgd", options={"momentun": 0.5}).validate()
    assert "did you mean 'momentum'" in problem
    assert "is not among the methods tested on shards" in method_problem("sign_sgd")
    assert state_basis(cfg) == "measured after one step on a stand-in"
    # no formula: measured on a stand-in (each side cut to 256; the 2000-row embedding and head
    # scaled back), exact for state shaped like its parameter, on the real model and the meta one
    model = build_model("llama_micro", vocab_size=VOCAB)
    optimizer = build_optimizer(cfg, model, param_groups(model))
    assert optimizer.param_groups[0]["momentum"] == 0.5
    batch = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    real = optimizer_state_bytes(optimizer)
    assert estimate_state_bytes(cfg, model) == estimate_state_bytes(cfg, meta_model()) == real
    with pytest.raises(ValueError, match="taken"):
        register("sign_sgd")(build_sign_sgd)


def test_a_measured_estimate_scales_to_the_paper_sizes():
    """A class path has no formula either: on the 60M model (sides up to 32,000, cut to 256 in the
    stand-in) AdamW by class path is measured at the adamw formula's bytes plus its step counters."""
    with torch.device("meta"):
        model = build_model("llama_60m", vocab_size=32000)
    tensors = sum(1 for p in model.parameters() if p.requires_grad)
    by_formula = estimate_state_bytes(OptimizerConfig(name="adamw"), model)
    cfg = OptimizerConfig(name="torch.optim.AdamW")
    assert state_basis(cfg) == "measured after one step on a stand-in"
    assert estimate_state_bytes(cfg, model) == by_formula + 4 * tensors
    in_bf16 = estimate_state_bytes(OptimizerConfig(name="adamw"), model, torch.bfloat16)
    assert estimate_state_bytes(cfg, model, torch.bfloat16) == in_bf16 + 4 * tensors  # fp32 step counters
