import copy
import math
import os
import tempfile
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models import build_model
from mols import GROUPINGS, MoLS, classify, compute_alphas, measure_module_snr, param_groups
from mols.groups import MIXED
from mols.scaling import Ramp
from mols.snr import GradientMoments


# ---------------------------------------------------------------- the estimator

def synthetic_params(shapes):
    return {f"p{i}": torch.nn.Parameter(torch.zeros(shape)) for i, shape in enumerate(shapes)}


def test_estimator_recovers_known_module_snr():
    torch.manual_seed(0)
    params = synthetic_params([(64, 32)])
    mu = torch.linspace(-1, 1, 64 * 32).reshape(64, 32)
    sigma = torch.linspace(0.5, 2.0, 64 * 32).reshape(64, 32)
    moments = GradientMoments(params)
    for _ in range(4000):
        params["p0"].grad = mu + sigma * torch.randn_like(mu)
        moments.add_current_grads()
    true_snr = float((mu.square() / sigma.square()).mean())
    (segment,) = classify(params.items())
    estimate = moments.module_snr([segment])[segment.module_class]
    # E[mu_hat^2 / var_hat] exceeds the truth by about 1/K per element: well inside 3%
    assert estimate == pytest.approx(true_snr, rel=0.03)


def test_streamed_moments_equal_the_direct_computation():
    torch.manual_seed(1)
    params = synthetic_params([(7, 5), (11,)])
    samples = {n: torch.randn(9, *p.shape) * 3 + 1 for n, p in params.items()}
    samples["p0"][:, 0, 0] = 0.25  # zero variance: SNR defined as 0
    moments = GradientMoments(params)
    for k in range(9):
        for n, p in params.items():
            p.grad = samples[n][k].clone()
        moments.add_current_grads()
    for n in params:
        mean, var = samples[n].mean(0), samples[n].var(0, unbiased=True)
        direct = torch.where(var > 0, mean.square() / var, torch.zeros_like(var))
        torch.testing.assert_close(moments.element_snr(n), direct, rtol=1e-4, atol=1e-6)
    assert moments.element_snr("p0")[0, 0] == 0


def test_median_estimator():
    params = synthetic_params([(3,)])
    moments = GradientMoments(params)
    for g in ([1.0, 0.0, 2.0], [1.0, 2.0, 4.0], [1.0, 1.0, 0.0]):
        params["p0"].grad = torch.tensor(g)
        moments.add_current_grads()
    (segment,) = classify(params.items())
    snr = moments.element_snr("p0")
    assert moments.module_snr([segment], "median")[segment.module_class] == pytest.approx(float(snr.median()))


def fixed_batches(vocab=64, count=8, batch=2, length=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(0, vocab, (batch, length), generator=gen)
        out.append({"input_ids": ids, "labels": ids})
    return out


def test_measurement_leaves_the_model_untouched():
    torch.manual_seed(0)
    model = build_model("llama_micro", 64)
    before = copy.deepcopy(model.state_dict())
    model.lm_head.weight.grad = torch.ones_like(model.lm_head.weight)
    result = measure_module_snr(model, fixed_batches(), classify(model.named_parameters()))
    assert set(result.module_snr) == {"emb", "head", "qk", "vo", "mlp", "other"}
    assert result.gradient_samples == 8 and result.sequences == 16
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name])
    assert torch.equal(model.lm_head.weight.grad, torch.ones_like(model.lm_head.weight))
    assert model.model.embed_tokens.weight.grad is None


def _ddp_worker(rank, world, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(build_model("llama_micro", 64))
    batches = fixed_batches()[rank::world]
    result = measure_module_snr(model, batches, classify(model.module.named_parameters()))
    if rank == 0:
        torch.save({"snr": result.module_snr, "samples": result.gradient_samples, "seqs": result.sequences}, out_file)
    # Free DDP before the process group: if the reducer held the group's last reference, its
    # destructor would join gloo's thread while holding the GIL that thread waits for (a hang).
    del model
    dist.destroy_process_group()


def test_two_process_estimate_equals_one_process_estimate():
    torch.manual_seed(0)
    model = build_model("llama_micro", 64)
    single = measure_module_snr(model, fixed_batches(), classify(model.named_parameters()))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.pt")
        workers = mp.spawn(_ddp_worker, args=(2, os.path.join(tmp, "init"), out), nprocs=2, join=False)
        deadline = time.monotonic() + 120
        while not workers.join(timeout=1):  # fail rather than hang CI if a worker is stuck
            if time.monotonic() > deadline:
                for process in workers.processes:
                    process.kill()
                pytest.fail("the 2-process estimate did not finish in 120 s")
        pooled = torch.load(out)
    assert pooled["samples"] == single.gradient_samples and pooled["seqs"] == single.sequences
    for cls, value in single.module_snr.items():
        assert pooled["snr"][cls] == pytest.approx(value, rel=1e-4)


# ---------------------------------------------------------------- the rule and the ramp

def test_alpha_rule_with_vo_reference():
    alphas, ref = compute_alphas({"emb": 0.01, "head": 0.04, "qk": 0.5, "vo": 1.0, "mlp": 0.25, "other": 0.1})
    assert ref == "vo"
    assert alphas == pytest.approx({"emb": 10.0, "head": 5.0, "qk": math.sqrt(2), "vo": 1.0, "mlp": 2.0, "other": 1.0})


def test_min_alpha_keeps_modules_above_the_reference_unchanged_and_max_reference():
    snr = {"emb": 0.01, "head": 4.0, "vo": 1.0, "qk": 1.0, "mlp": 1.0}
    alphas, _ = compute_alphas(snr, "vo", min_alpha=1.0)
    assert alphas["head"] == 1.0 and alphas["emb"] == pytest.approx(10.0)
    alphas, _ = compute_alphas(snr, "vo", min_alpha=0.0)
    assert alphas["head"] == pytest.approx(0.5)
    alphas, ref = compute_alphas(snr, "max")
    assert ref == "head" and alphas["vo"] == pytest.approx(2.0) and alphas["emb"] == pytest.approx(20.0)
    alphas, ref = compute_alphas(snr, "auto")
    assert ref in ("qk", "vo", "mlp")
    alphas, _ = compute_alphas(snr, "vo", max_alpha=5.0)
    assert alphas["emb"] == 5.0


def test_missing_reference_class_is_a_clear_error():
    with pytest.raises(ValueError, match="reference 'vo' matches no module class"):
        compute_alphas({"attn": 1.0, "mlp": 0.5}, "vo")


def test_ramp_goes_linearly_from_one_to_alpha_over_the_rest_of_warmup():
    ramp = Ramp(start=10, end=20, start_values={"emb": 1.0}, end_values={"emb": 3.0})
    assert ramp.value("emb", 9) == 1.0
    assert ramp.value("emb", 10) == pytest.approx(1.2)
    assert ramp.value("emb", 14) == pytest.approx(2.0)
    assert ramp.value("emb", 19) == pytest.approx(3.0)
    assert ramp.value("emb", 500) == pytest.approx(3.0)
    assert ramp.value("unknown", 15) == 1.0


def train_steps(model, optimizer, batches):
    for batch in batches:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def test_multipliers_scale_group_learning_rates_only_during_the_step():
    torch.manual_seed(0)
    model = build_model("llama_micro", 64)
    optimizer = torch.optim.AdamW(param_groups(model), lr=1e-3)
    mols = MoLS(model, optimizer, estimate_step=1, warmup_steps=4)
    seen = []
    optimizer.register_step_pre_hook(lambda opt, a, k: seen.append({g["module_class"]: g["lr"] for g in opt.param_groups}))
    mols.ramp = Ramp(0, 1, {}, {"emb": 4.0, "head": 2.0})
    train_steps(model, optimizer, fixed_batches(count=1))
    assert seen[0]["emb"] == pytest.approx(4e-3) and seen[0]["head"] == pytest.approx(2e-3)
    assert seen[0]["mlp"] == pytest.approx(1e-3) and seen[0]["other"] == pytest.approx(1e-3)
    assert all(g["lr"] == 1e-3 for g in optimizer.param_groups)  # restored after the step
    assert mols.step == 1


def test_gpt2_fused_slice_scaling_equals_per_slice_learning_rates():
    torch.manual_seed(0)
    base = build_model("gpt2_micro", 64)
    batch = fixed_batches(count=1)
    name = "transformer.h.0.attn.c_attn.weight"
    lr, m_qk, m_vo = 1e-2, 3.0, 1.5

    def one_step(model, groups, mols_ramp=None):
        optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=0.1)
        if mols_ramp is not None:
            mols = MoLS(model, optimizer, estimate_step=0, warmup_steps=1)
            mols.ramp = mols_ramp
        train_steps(model, optimizer, batch)
        return dict(model.named_parameters())[name].detach()

    scaled_model = copy.deepcopy(base)
    groups = param_groups(scaled_model)
    assert any(g["module_class"] == MIXED for g in groups)
    scaled = one_step(scaled_model, groups, Ramp(0, 1, {}, {"qk": m_qk, "vo": m_vo}))

    def reference(multiplier):  # the whole fused tensor at one learning rate
        model = copy.deepcopy(base)
        fused = dict(model.named_parameters())[name]
        rest = [p for n, p in model.named_parameters() if n != name]
        return one_step(model, [{"params": rest, "lr": 0.0, "weight_decay": 0.0},
                                {"params": [fused], "lr": lr * multiplier}])

    width = scaled.shape[1] // 3
    torch.testing.assert_close(scaled[:, :2 * width], reference(m_qk)[:, :2 * width], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(scaled[:, 2 * width:], reference(m_vo)[:, 2 * width:], rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- grouping

@pytest.mark.parametrize("arch", ["llama_micro", "gpt2_micro", "qwen2_micro"])
@pytest.mark.parametrize("grouping", sorted(GROUPINGS))
def test_every_parameter_lands_in_exactly_one_class(arch, grouping):
    model = build_model(arch, 64)
    params = dict(model.named_parameters())
    covered = {n: torch.zeros(p.shape, dtype=torch.int) for n, p in params.items()}
    for seg in classify(model.named_parameters(), grouping):
        seg.view(covered[seg.name]).add_(1)
    for name, count in covered.items():
        assert torch.all(count == 1), name
    groups = param_groups(model, grouping)
    in_groups = [id(p) for g in groups for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in params.values())


def test_module_classes_of_the_paper():
    classes = {s.name: s.module_class for s in classify(build_model("llama_micro", 64).named_parameters())}
    assert classes["model.embed_tokens.weight"] == "emb" and classes["lm_head.weight"] == "head"
    assert classes["model.layers.0.self_attn.q_proj.weight"] == "qk"
    assert classes["model.layers.1.self_attn.o_proj.weight"] == "vo"
    assert classes["model.layers.0.mlp.gate_proj.weight"] == "mlp"
    assert classes["model.norm.weight"] == "other"
    layered = {s.name: s.module_class for s in classify(build_model("llama_micro", 64).named_parameters(), "layers")}
    assert layered["model.layers.1.self_attn.v_proj.weight"] == "layer1.vo"
    ablation = {s.module_class for s in classify(build_model("llama_micro", 64).named_parameters(), "attn_mlp")}
    assert ablation == {"attn", "mlp", "other"}


# ---------------------------------------------------------------- state

def test_resume_in_the_middle_of_the_ramp_continues_with_identical_multipliers():
    torch.manual_seed(0)
    model = build_model("llama_micro", 64)
    optimizer = torch.optim.AdamW(param_groups(model), lr=1e-3)
    mols = MoLS(model, optimizer, estimate_step=2, warmup_steps=10)
    batches = fixed_batches(count=12)
    for step in range(5):
        if mols.calibration_due(step):
            mols.calibrate(model, batches[:4])
        train_steps(model, optimizer, batches[step:step + 1])
    saved = torch.load(_roundtrip(mols.state_dict()), weights_only=True)
    resumed = MoLS(model, torch.optim.AdamW(param_groups(model), lr=1e-3), estimate_step=2, warmup_steps=10)
    resumed.load_state_dict(saved)
    assert not resumed.calibration_due(5)
    for step in range(5, 12):
        assert resumed.multipliers(step) == mols.multipliers(step)
    assert resumed.multipliers(9)["emb"] == pytest.approx(mols.calibrations[0].alphas["emb"])


def _roundtrip(state):
    path = os.path.join(tempfile.mkdtemp(), "mols.pt")
    torch.save(state, path)
    return path


def test_mols_takes_its_classes_from_the_optimizer_groups():
    model = build_model("llama_micro", 64)
    attn_mlp = torch.optim.AdamW(param_groups(model, "attn_mlp"), lr=1e-3)
    with pytest.raises(ValueError, match="reference 'vo' matches no module class.*attn"):
        MoLS(model, attn_mlp, estimate_step=1, warmup_steps=2)
    mols = MoLS(model, attn_mlp, estimate_step=1, warmup_steps=2, reference="attn")
    assert {s.module_class for s in mols.segments} == {"attn", "mlp", "other"}


def test_mols_fails_loudly_when_no_group_can_be_scaled():
    model = build_model("llama_micro", 64)
    with pytest.raises(ValueError, match="no param group of the optimizer carries a 'module_class'"):
        MoLS(model, torch.optim.AdamW(model.parameters(), lr=1e-3), estimate_step=1, warmup_steps=2)
    linear = torch.nn.Linear(3, 3)
    with pytest.raises(ValueError, match="no parameter of Linear is in a module class"):
        MoLS(linear, torch.optim.AdamW(param_groups(linear), lr=1e-3), estimate_step=1, warmup_steps=2)


def test_gpt2_fused_qkv_is_split_by_the_grouping_its_group_carries():
    model = build_model("gpt2_micro", 64)
    mols = MoLS(model, torch.optim.AdamW(param_groups(model), lr=1e-3), estimate_step=1, warmup_steps=2)
    fused = [s for s in mols.segments if s.name.endswith("attn.c_attn.weight")]
    assert [s.module_class for s in fused[:2]] == ["qk", "vo"]
    merged = MoLS(model, torch.optim.AdamW(param_groups(model, "attn_mlp"), lr=1e-3), estimate_step=1,
                  warmup_steps=2, reference="attn")
    assert not merged.fused  # q, k and v are all "attn": nothing to slice


# ---------------------------------------------------------------- issue 11: the paper's rule, options

def test_default_rule_has_no_floor_and_the_floor_is_an_option():
    snr = {"head": 4.0, "vo": 1.0, "qk": 0.25, "other": 0.1}
    alphas, ref = compute_alphas(snr)  # the paper's Eq. 5: alpha = sqrt(SNR_vo / SNR_m), no floor
    assert ref == "vo" and alphas["head"] == pytest.approx(0.5) and alphas["qk"] == pytest.approx(2.0)
    floored, _ = compute_alphas(snr, min_alpha=1.0)
    assert floored["head"] == 1.0 and floored["qk"] == pytest.approx(2.0)


def test_zero_variance_elements_count_as_zero_or_are_excluded():
    params = synthetic_params([(4, 2)])
    moments = GradientMoments(params)
    for k in range(3):
        grad = torch.tensor([[1.0 + k, 2.0], [3.0, 0.0], [0.0, 0.0], [2.0 - k, 5.0 + k]])
        params["p0"].grad = grad
        moments.add_current_grads()
    (segment,) = classify(params.items())
    snr = moments.element_snr("p0")
    live = moments.m2["p0"] > 0
    assert int(live.sum()) == 3  # (0,0), (3,0), (3,1) vary; the rest is constant
    counted = moments.module_snr([segment], zero_variance="count")[segment.module_class]
    excluded = moments.module_snr([segment], zero_variance="exclude")[segment.module_class]
    assert counted == pytest.approx(float(snr.sum()) / 8)
    assert excluded == pytest.approx(float(snr[live].sum()) / 3)
    median = moments.module_snr([segment], "median", zero_variance="exclude")[segment.module_class]
    assert median == pytest.approx(float(snr[live].median()))
    _, zero = moments.module_stats([segment])
    assert zero[segment.module_class] == pytest.approx(5 / 8)


def test_zero_variance_reaches_mols_from_the_config():
    from mols.config import MoLSConfig
    torch.manual_seed(0)
    model = build_model("llama_micro", 64)
    results = {}
    for mode in ("count", "exclude"):
        optimizer = torch.optim.AdamW(param_groups(model), lr=1e-3)
        mols = MoLS(model, optimizer, MoLSConfig(enabled=True, zero_variance=mode), estimate_step=0, warmup_steps=4)
        # ids < 16 only: embedding rows 16..63 never get a gradient
        calibration = mols.calibrate(model, [{k: v % 16 for k, v in b.items()} for b in fixed_batches(count=4)])
        results[mode] = calibration
    assert results["count"].zero_variance_fraction["emb"] >= 0.75
    assert results["exclude"].module_snr["emb"] > 3 * results["count"].module_snr["emb"]
    assert results["exclude"].module_snr["vo"] == pytest.approx(results["count"].module_snr["vo"], rel=1e-3)


def test_fixed_multipliers_skip_the_estimate_and_ramp_like_alphas():
    from mols.config import MoLSConfig
    model = build_model("llama_micro", 64)
    optimizer = torch.optim.AdamW(param_groups(model), lr=1e-3)
    cfg = MoLSConfig(enabled=True, fixed_multipliers={"emb": 4.0, "mlp": 2.0})
    assert cfg.validate() == []
    mols = MoLS(model, optimizer, cfg, estimate_step=2, warmup_steps=6, step=lambda: 2)

    def no_batches():
        raise AssertionError("hand-set multipliers must not draw estimation batches")
        yield

    assert not mols.calibration_due(1) and mols.calibration_due(2)
    calibration = mols.calibrate(model, no_batches(), loss_fn=None)
    assert calibration.reference == "fixed" and calibration.module_snr == {} and calibration.sequences == 0
    assert calibration.alphas == {"emb": 4.0, "head": 1.0, "mlp": 2.0, "qk": 1.0, "vo": 1.0}
    estimated = Ramp(2, 6, {c: 1.0 for c in calibration.alphas}, calibration.alphas)
    for step in range(0, 9):
        for cls in ("emb", "mlp", "qk"):
            assert mols.multiplier(cls, step) == pytest.approx(estimated.value(cls, step))
    assert mols.multiplier("emb", 3) == pytest.approx(1 + 3.0 * 2 / 4) and mols.multiplier("emb", 8) == 4.0
    assert "hand-set" in calibration.table()
    # {} = every multiplier 1 (SNR tracking with plain Adam)
    plain = MoLS(model, torch.optim.AdamW(param_groups(model), lr=1e-3),
                             MoLSConfig(enabled=True, fixed_multipliers={}), estimate_step=0, warmup_steps=2)
    assert set(plain.calibrate(model, no_batches()).alphas.values()) == {1.0}


def test_fixed_multipliers_are_checked():
    from mols.config import MoLSConfig
    problems = MoLSConfig(fixed_multipliers={"emb": -1, "attn": 2.0}).validate()
    assert any("fixed_multipliers.emb" in p for p in problems)
    assert any("'attn' is not a class of grouping 'modules'" in p for p in problems)
    assert MoLSConfig(grouping="attn_mlp", reference="attn", fixed_multipliers={"attn": 2.0}).validate() == []
    model = build_model("llama_micro", 64)
    with pytest.raises(ValueError, match="fixed_multipliers"):
        MoLS(model, torch.optim.AdamW(param_groups(model), lr=1e-3), estimate_step=0, warmup_steps=1,
             fixed_multipliers={"attn": 2.0})


@pytest.mark.corpus
def test_paper_rule_and_floor_both_run_on_the_embedded_corpus(tmp_path):
    import json
    import train
    from training.records import read_metrics
    tiny = ["model.size=llama_micro", "data.tokenizer=embedded-8k", "data.seq_len=32", "data.val_tokens=4000",
            "train.global_batch=8", "train.micro_batch=4", "train.steps=6", "train.eval_every=6",
            "mols.enabled=true", "mols.estimate_at=1", "train.warmup_steps=3", "mols.samples=16", "train.threads=1",
            f"run.out_dir={tmp_path}"]
    alphas = {}
    for name, floor in (("paper", "null"), ("floor", "1.0")):
        args = ["--config", "configs/quickstart.yaml"]
        for item in [*tiny, f"mols.min_alpha={floor}", f"run.name={name}"]:
            args += ["--set", item]
        assert train.main(args) == 0
        (record,) = [r for r in read_metrics(tmp_path / name / "metrics.jsonl") if r["kind"] == "mols_calibration"]
        alphas[name] = record
        assert json.loads((tmp_path / name / "summary.json").read_text())["final_val_loss"] > 0
    paper, floor = alphas["paper"], alphas["floor"]
    assert paper["module_snr"] == pytest.approx(floor["module_snr"])  # the same estimate; only the rule differs
    for cls, alpha in paper["alphas"].items():
        assert floor["alphas"][cls] == pytest.approx(max(1.0, alpha))
    ref = paper["module_snr"]["vo"]
    for cls in ("emb", "head", "qk", "mlp"):
        assert paper["alphas"][cls] == pytest.approx(math.sqrt(ref / paper["module_snr"][cls]), rel=1e-6)


def test_folding_on_a_worker_thread_gives_the_moments_of_folding_in_line():
    """With gradients on a GPU and moments on the host, the folds run on a worker thread while the
    GPU computes on (mols.snr.HostFolds); on a CPU the same thread path runs here, and must give
    bitwise the moments of the in-line fold, groups included."""
    from mols.snr import GradientMoments
    torch.manual_seed(0)
    params = {"a": torch.nn.Parameter(torch.zeros(6, 3)), "b": torch.nn.Parameter(torch.zeros(5))}
    samples = [{"a": torch.randn(6, 3), "b": None if k == 3 else torch.randn(5)} for k in range(9)]
    results = []
    for threaded in (False, True):
        moments = GradientMoments(params, groups=3, threaded=threaded)
        for sample in samples:
            for name, param in params.items():  # in place, as a training loop may: folds must not see it
                if sample[name] is None:
                    param.grad = None
                elif param.grad is None:
                    param.grad = sample[name].clone()
                else:
                    param.grad.copy_(sample[name])
            moments.add_current_grads()
        moments.finish_folds()
        results.append(moments)
    inline, threaded = results
    assert inline.count == threaded.count == 9 and inline.group_count == threaded.group_count
    for name in params:
        assert torch.equal(inline.mean[name], threaded.mean[name]) and torch.equal(inline.m2[name], threaded.m2[name])
        for g in range(3):
            assert torch.equal(inline.group_mean[g][name], threaded.group_mean[g][name])
            assert torch.equal(inline.group_m2[g][name], threaded.group_m2[g][name])


def _hand_samples():
    torch.manual_seed(1)
    params = {"w": torch.nn.Parameter(torch.zeros(3, 2))}
    samples = [torch.randn(3, 2) + torch.tensor([1.0, 0.0]) for _ in range(6)]
    return params, samples


def _fold(params, samples, **kwargs):
    from mols.snr import GradientMoments
    moments = GradientMoments(params, **kwargs)
    for grad in samples:
        params["w"].grad = grad.clone()
        moments.add_current_grads()
    moments.finish_folds()
    return moments


def test_the_norm_ratio_module_snr_is_the_ratio_of_summed_signal_to_summed_noise():
    """The review page's revised estimator, as we read it: (||mu|| / ||sigma||)^2 over the module."""
    from mols.groups import Segment
    params, samples = _hand_samples()
    stacked = torch.stack(samples).double()
    mu, var = stacked.mean(0), stacked.var(0, unbiased=True)
    moments = _fold(params, samples)
    segments = [Segment("w", "mlp")]
    ratio = moments.module_snr(segments, estimator="norm_ratio")["mlp"]
    assert ratio == pytest.approx(float(mu.square().sum() / var.sum()), rel=1e-6)
    assert moments.module_snr(segments, estimator="mean")["mlp"] == pytest.approx(float((mu.square() / var).mean()),
                                                                                  rel=1e-6)
    corrected = moments.module_snr(segments, estimator="norm_ratio", snr="corrected")["mlp"]
    assert corrected == pytest.approx(max(0.0, float(mu.square().sum() / var.sum()) - 1 / 6), rel=1e-6)


def test_moving_average_moments_weigh_the_latest_samples_most():
    """mols.moments: ema: m <- d m + (1 - d) g and s <- d s + (1 - d) g^2 over the samples in order,
    divided by 1 - d^K (as Adam's), var = s - m^2: by hand."""
    params, samples = _hand_samples()
    decay = 0.8
    m = s = torch.zeros(3, 2, dtype=torch.float64)
    for g in samples:
        m, s = decay * m + (1 - decay) * g.double(), decay * s + (1 - decay) * g.double().square()
    debias = 1 - decay ** len(samples)
    mean, var = m / debias, (s / debias - (m / debias).square()).clamp(min=0)
    moments = _fold(params, samples, ema_decay=decay)
    got_mean, got_var = moments.estimates("w")
    torch.testing.assert_close(got_mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_var.double(), var, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="no groups"):
        _fold(params, samples, ema_decay=decay, groups=2)


def test_the_estimator_variants_reach_a_calibration_from_the_config():
    from mols.config import MoLSConfig
    torch.manual_seed(0)
    model = build_model("llama_micro", 64)
    settings = MoLSConfig(estimator="norm_ratio", moments="ema", ema_decay=0.9, uncertainty_groups=0)
    assert settings.validate() == []
    mols = MoLS(model, torch.optim.AdamW(param_groups(model), lr=1e-3), settings, estimate_step=0, warmup_steps=2)
    calibration = mols.calibrate(model, fixed_batches())
    assert calibration.estimator == "norm_ratio" and calibration.moments == "ema 0.9"
    assert "module SNR: norm_ratio; moments: ema 0.9" in calibration.table()
    assert all(v > 0 for v in calibration.module_snr.values())
    problems = MoLSConfig(moments="ema").validate()  # the default 4 groups
    assert any("uncertainty_groups: moving averages" in p for p in problems)


def test_a_fold_that_fails_on_the_worker_thread_is_raised_by_the_next_wait():
    from mols.snr import HostFolds
    folds = HostFolds(torch.device("cpu"), largest=4, threaded=True)
    seen, released = [], []

    def fail(grad):
        raise RuntimeError("fold failed")
    folds.run(lambda: fail(None), release=lambda: released.append(1))
    folds.fold(torch.ones(4), seen.append)   # skipped after the failure
    folds.run(lambda: seen.append("later"), release=lambda: released.append(2))
    with pytest.raises(RuntimeError, match="fold failed"):
        folds.close()
    assert seen == [] and released == [1, 2]  # every release ran: no staging buffer is lost
