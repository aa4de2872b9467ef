"""optimizers/methods.py REGISTRY is the one list of methods: the paper's method overlays name
methods of it, every method builds and steps, and its state cost (what the dry run prices) is the
state the real optimizer holds after one step.

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
                        optimizer_state_bytes)
from optimizers.shapes import default_rank

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
        assert callable(method.build) and callable(method.state_bytes)
        cfg = OptimizerConfig(name=name)
        assert cfg.validate() == [] and isinstance(cfg.options, method.options)


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
