"""optimizers/: every method trains, covers every parameter once, resumes exactly, and reports bad settings.

A tiny LLaMA (llama_micro: hidden 32, 2 layers) on a fixed set of random-token batches drawn from
the first 32 ids of a 256-token vocabulary, so even one update direction (the unigram) lowers the
loss well below ln(256).
"""
import io

import pytest
import torch

from configs import ConfigError
from optimizers.config import OptimizerConfig
from training.config import validate
from models import build_model
from mols.groups import param_groups
from optimizers import (METHODS, CombinedOptimizer, build_optimizer, describe_groups,
                        export_state, import_state, model_problems, optimizer_state_bytes)

VOCAB = 256
SEQ_LEN = 32
BATCH = 8
LEARNING_RATES = {"lion": 3e-3, "lamb": 2e-2}  # others: 1e-2


def make_batches(count: int = 4, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 32, (BATCH, SEQ_LEN), generator=generator) for _ in range(count)]


def make_model(size: str = "llama_micro", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(size, vocab_size=VOCAB)


def config(method: str, **options) -> OptimizerConfig:
    return OptimizerConfig(name=method, lr=LEARNING_RATES.get(method, 1e-2), options=options)


def make_optimizer(model, method: str, **options):
    return build_optimizer(config(method, **options), model, param_groups(model))


def train(model, optimizer, batches, steps: int, start: int = 0) -> list[float]:
    losses = []
    for step in range(start, start + steps):
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"]
        batch = batches[step % len(batches)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


# ---------------------------------------------------------------------------------------------
# Training and group structure
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_loss_falls(method):
    model = make_model()
    optimizer = make_optimizer(model, method)
    assert isinstance(optimizer, torch.optim.Optimizer)
    losses = train(model, optimizer, make_batches(), steps=30)
    assert losses[-1] < 0.9 * losses[0], f"{method}: {losses[0]:.3f} -> {losses[-1]:.3f}"


@pytest.mark.parametrize("method", METHODS)
def test_mols_variant_trains_and_scales_every_method(method):
    """`mols.enabled: true` on top of any method: calibrate, ramp, and the loss still falls."""
    from mols import MoLS

    model = make_model()
    optimizer = make_optimizer(model, method)
    mols = MoLS(model, optimizer, estimate_step=2, warmup_steps=6, reference="max")
    batches = make_batches()
    seen = []
    optimizer.register_step_pre_hook(lambda opt, a, k: seen.append(
        {g["module_class"]: g["lr"] / g["base_lr"] for g in opt.param_groups}))
    losses = []
    for step in range(30):
        if mols.calibration_due(step):
            mols.calibrate(model, [{"input_ids": b, "labels": b} for b in batches])
        losses += train(model, optimizer, batches, steps=1, start=step)
    assert losses[-1] < 0.9 * losses[0], f"{method}+MoLS: {losses[0]:.3f} -> {losses[-1]:.3f}"
    alphas = mols.calibrations[0].alphas
    # the multiplier reached every group of its class (hooks registered before ours ran first)
    for cls, alpha in alphas.items():
        if cls in seen[-1] and cls != "other":
            assert seen[-1][cls] == pytest.approx(alpha), (cls, seen[-1][cls], alpha)


def assert_groups_cover_model(model, optimizer, input_groups):
    class_of = {id(p): g["module_class"] for g in input_groups for p in g["params"]}
    placed: dict[int, int] = {}
    for group in optimizer.param_groups:
        assert isinstance(group["base_lr"], float) and group["base_lr"] > 0
        assert len(group["param_names"]) == len(group["params"])
        for param in group["params"]:
            placed[id(param)] = placed.get(id(param), 0) + 1
            assert group["module_class"] == class_of[id(param)]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sorted(placed) == sorted(id(p) for p in trainable)
    assert set(placed.values()) == {1}


@pytest.mark.parametrize("method", METHODS)
def test_every_parameter_in_exactly_one_group(method):
    model = make_model()
    input_groups = param_groups(model)
    optimizer = build_optimizer(config(method), model, input_groups)
    assert_groups_cover_model(model, optimizer, input_groups)


@pytest.mark.parametrize("size", ["gpt2_micro", "qwen2_micro"])
@pytest.mark.parametrize("method", ["adamw", "muon", "galore", "apollo", "adam_mini", "adam8bit"])
def test_other_architectures(size, method):
    model = make_model(size)
    input_groups = param_groups(model)
    optimizer = build_optimizer(config(method), model, input_groups)
    assert_groups_cover_model(model, optimizer, input_groups)
    losses = train(model, optimizer, make_batches(), steps=3)
    assert all(torch.isfinite(torch.tensor(losses)))


def test_grouping_by_layers_splits_per_class():
    model = make_model()
    input_groups = param_groups(model, "layers")
    optimizer = build_optimizer(config("galore"), model, input_groups)
    assert_groups_cover_model(model, optimizer, input_groups)
    low_rank = {g["module_class"] for g in optimizer.param_groups if "rank" in g}
    assert low_rank == {f"layer{i}.{c}" for i in range(2) for c in ("qk", "vo", "mlp")}


def test_muon_takes_hidden_matrices_and_adamw_the_rest():
    model = make_model()
    optimizer = make_optimizer(model, "muon")
    assert isinstance(optimizer, CombinedOptimizer)
    muon, adamw = optimizer.parts["muon"], optimizer.parts["adamw"]
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    muon_names = {n for g in muon.param_groups for n in g["param_names"]}
    assert muon_names and all(".self_attn." in n or ".mlp." in n for n in muon_names)
    assert all(p.ndim == 2 for g in muon.param_groups for p in g["params"])
    adamw_classes = {g["module_class"] for g in adamw.param_groups}
    assert {"emb", "head", "other"} <= adamw_classes
    # the combined groups are the parts' own dicts: an lr written here is the lr the part uses
    assert all(any(g is h for h in optimizer.param_groups) for part in optimizer.parts.values()
               for g in part.param_groups)
    assert muon.param_groups[0]["adjust_lr_fn"] == "match_rms_adamw"


@pytest.mark.parametrize("method", ["adamw", "muon", "adam_mini", "galore"])
def test_step_hooks_fire_once_and_see_every_group(method):
    model = make_model()
    optimizer = make_optimizer(model, method)
    calls = []

    def zero_lr(opt, args, kwargs):  # what MoLS does: rewrite group lrs before the step
        calls.append(len(opt.param_groups))
        for group in opt.param_groups:
            group["lr"] = 0.0

    optimizer.register_step_pre_hook(zero_lr)
    post_calls = []
    optimizer.register_step_post_hook(lambda opt, args, kwargs: post_calls.append(1))
    before = [p.detach().clone() for p in model.parameters()]
    batch = make_batches(1)[0]
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    assert calls == [len(optimizer.param_groups)] and post_calls == [1]
    # with every lr at zero no parameter may move: the hook reached every group that steps
    # (weight decay is 0; Muon/AdamW/GaLore updates are proportional to lr)
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))


# ---------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------

# Projection refreshes every 2 steps, so the resumed half recomputes projections from restored state.
RESUME_OPTIONS = {"galore": {"update_proj_gap": 2, "rank": 4}, "apollo": {"update_proj_gap": 2, "rank": 4}}


@pytest.mark.parametrize("method", METHODS)
def test_resume_is_exact(method):
    """N steps, checkpoint through torch.save/torch.load(weights_only=True), N more == 2N straight.

    Every method is bit-exact on CPU: their updates are deterministic functions of the restored
    state (GaLore's SVD and APOLLO's seeded random projections included)."""
    options = RESUME_OPTIONS.get(method, {})
    batches, half = make_batches(), 3

    straight_model = make_model(seed=0)
    straight = make_optimizer(straight_model, method, **options)
    straight_losses = train(straight_model, straight, batches, 2 * half)

    model = make_model(seed=0)
    optimizer = make_optimizer(model, method, **options)
    losses = train(model, optimizer, batches, half)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": export_state(optimizer)}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    resumed_model = make_model(seed=1)  # a different init: everything must come from the checkpoint
    resumed_model.load_state_dict(checkpoint["model"])
    resumed = make_optimizer(resumed_model, method, **options)
    groups_before = [id(g) for g in resumed.param_groups]
    import_state(resumed, checkpoint["optimizer"])
    assert [id(g) for g in resumed.param_groups] == groups_before  # hooks holding groups stay valid
    losses += train(resumed_model, resumed, batches, half, start=half)

    assert losses == straight_losses
    for (name, a), b in zip(straight_model.named_parameters(), resumed_model.parameters()):
        assert torch.equal(a, b), name


def test_combined_resume_keeps_parts_and_groups_linked():
    model = make_model()
    optimizer = make_optimizer(model, "muon")
    train(model, optimizer, make_batches(), 2)
    state = export_state(optimizer)
    import_state(optimizer, state)
    combined = optimizer.param_groups
    for part in optimizer.parts.values():
        for group in part.param_groups:
            assert any(group is g for g in combined)


def test_galore_export_has_no_python_objects():
    model = make_model()
    optimizer = make_optimizer(model, "galore", rank=4)
    train(model, optimizer, make_batches(), 1)
    buffer = io.BytesIO()
    torch.save(export_state(optimizer), buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=True)  # raises on any pickled class
    # the plain torch state_dict would not load that way: the reason export_state exists
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    with pytest.raises(Exception):
        torch.load(buffer, weights_only=True)


def test_import_rejects_another_method_or_model():
    model = make_model()
    adamw = make_optimizer(model, "adamw")
    train(model, adamw, make_batches(), 1)
    with pytest.raises(ValueError, match="same optimizer.name"):
        import_state(make_optimizer(model, "nadam"), export_state(adamw))
    layered = build_optimizer(config("adamw"), model, param_groups(model, "layers"))
    with pytest.raises(ValueError, match="param groups"):
        import_state(layered, export_state(adamw))


# ---------------------------------------------------------------------------------------------
# Bad settings
# ---------------------------------------------------------------------------------------------

def test_unknown_method_suggests_close_match():
    (problem,) = OptimizerConfig(name="adamww").validate()
    assert "unknown method 'adamww'" in problem and "did you mean 'adamw'" in problem
    (problem,) = OptimizerConfig(name="Adam-Mini").validate()
    assert "did you mean 'adam_mini'" in problem


def test_galore_rank_larger_than_matrices():
    model = make_model()
    cfg = OptimizerConfig(name="galore", options={"rank": 1000})
    assert cfg.validate() == []  # needs the model to know
    (problem,) = model_problems(cfg, model)
    assert "optimizer.options.rank: 1000" in problem and "<= 32" in problem
    with pytest.raises(ConfigError, match="rank"):
        build_optimizer(cfg, model, param_groups(model))


def test_unknown_option_key_and_wrong_types():
    (problem,) = OptimizerConfig(name="galore", options={"rnak": 8}).validate()
    assert "optimizer.options.rnak: unknown option for galore" in problem and "did you mean 'rank'" in problem
    (problem,) = OptimizerConfig(name="adamw", options={"rank": 8}).validate()
    assert "unknown option for adamw" in problem and "galore, apollo" in problem
    problems = OptimizerConfig(name="apollo", options={
        "rank": "eight", "scale_type": "chanel", "update_proj_gap": 0, "scale": -1.0,
        "norm_growth_limiter": "yes"}).validate()
    assert len(problems) == 5
    text = "\n".join(problems)
    assert "optimizer.options.rank: expected an integer, got 'eight'" in text and "did you mean 'channel'" in text
    assert "update_proj_gap: must be >= 1, got 0" in text and "scale: must be positive, got -1.0" in text
    assert "norm_growth_limiter: expected true or false" in text
    (problem,) = OptimizerConfig(name="muon", options={"adjust_lr_fn": "orignal"}).validate()
    assert "did you mean 'original'" in problem


def test_yaml_spellings_are_accepted_and_options_become_typed():
    cfg = OptimizerConfig(name="galore", options={"update_proj_gap": 2e2, "scale": "2.5e-1", "rank": None})
    assert cfg.validate() == []
    assert cfg.options.update_proj_gap == 200 and cfg.options.scale == 0.25 and cfg.options.proj_type == "std"


def test_garbage_is_reported_not_raised():
    for cfg in [OptimizerConfig(name=None), OptimizerConfig(name=3), OptimizerConfig(options=[1, 2])]:
        problems = cfg.validate()
        assert problems and all(isinstance(p, str) for p in problems)
    cfg = OptimizerConfig(name="adam_mini", options={"dim": 33})
    assert cfg.validate() == []
    assert "divisible" in model_problems(cfg, make_model())[0]


def test_config_loader_reports_optimizer_problems():
    with pytest.raises(ConfigError) as err:
        validate({"optimizer": {"name": "galore", "options": {"rank": 0, "projtype": "std"}}})
    text = "\n".join(err.value.problems)
    assert "optimizer.options.rank" in text and "did you mean 'proj_type'" in text


# ---------------------------------------------------------------------------------------------
# Memory and description
# ---------------------------------------------------------------------------------------------

def test_eight_bit_state_is_smaller_than_adamw():
    sizes = {}
    for method in ("adamw", "adam8bit", "galore", "adam_mini"):
        model = make_model()
        optimizer = make_optimizer(model, method)
        assert optimizer_state_bytes(optimizer) == 0  # state is created by the first step
        train(model, optimizer, make_batches(), 1)
        sizes[method] = optimizer_state_bytes(optimizer)
    assert sizes["adam8bit"] < sizes["adamw"]
    assert sizes["galore"] < sizes["adamw"] and sizes["adam_mini"] < sizes["adamw"]
    params = sum(p.numel() for p in make_model().parameters())
    assert sizes["adamw"] >= 8 * params  # two fp32 moments per parameter


def test_describe_groups_names_classes_and_roles():
    model = make_model()
    text = describe_groups(make_optimizer(model, "muon"))
    assert "muon (match_rms_adamw)" in text and "adamw (muon's non-matrix part)" in text
    for module_class in ("emb", "head", "qk", "vo", "mlp", "other"):
        assert module_class in text
    assert "low-rank (rank 8)" in describe_groups(make_optimizer(model, "galore"))
