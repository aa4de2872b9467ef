"""Issue 20: how sure a calibration is (jackknife over groups of samples) and the bias-corrected SNR."""
import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import asdict

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models import build_model
from mols import Calibration, MoLS, classify, compute_alphas, measure_module_snr, param_groups
from mols.groups import Segment
from mols.snr import GradientMoments, jackknife_se, t_quantile_975
from test_mols import fixed_batches

# A fake model: one tensor per class, each row an independent repetition of the experiment (so a
# few hundred repetitions cost one pass of K samples). Row r of "vo" and of "emb" are module
# classes rep{r}.vo and rep{r}.emb; gradients are mu + sigma * noise with a known element SNR.
REPS, ELEMENTS, K, GROUPS = 200, 50, 512, 4


def synthetic_run(groups=GROUPS, seed=0):
    gen = torch.Generator().manual_seed(seed)
    true_snr = {"vo": 0.3 + 0.6 * torch.rand(REPS, ELEMENTS, generator=gen),
                "emb": 0.03 + 0.04 * torch.rand(REPS, ELEMENTS, generator=gen)}
    sigma = {c: 0.5 + torch.rand(REPS, ELEMENTS, generator=gen) for c in true_snr}
    mu = {c: sigma[c] * true_snr[c].sqrt() * torch.sign(torch.randn(REPS, ELEMENTS, generator=gen)) for c in true_snr}
    params = {c: torch.nn.Parameter(torch.zeros(REPS, ELEMENTS)) for c in true_snr}
    moments = GradientMoments(params, groups=groups)
    for _ in range(K):
        for c, p in params.items():
            p.grad = mu[c] + sigma[c] * torch.randn(REPS, ELEMENTS, generator=gen)
        moments.add_current_grads()
    segments = [Segment(c, f"rep{r}.{c}", dim=0, start=r, stop=r + 1) for c in params for r in range(REPS)]
    truth = {f"rep{r}.{c}": float(true_snr[c][r].mean()) for c in true_snr for r in range(REPS)}
    return moments, segments, truth


def per_rep(values: dict, r: int) -> dict:
    return {cls.split(".", 1)[1]: v for cls, v in values.items() if cls.startswith(f"rep{r}.")}


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_run()


def test_interval_covers_the_true_module_snr_and_alpha_at_the_stated_rate(synthetic):
    moments, segments, truth = synthetic
    estimate = moments.module_snr(segments, snr="corrected")
    replicates = moments.jackknife_replicates(segments, snr="corrected")
    assert len(replicates) == GROUPS
    se = jackknife_se(replicates)
    t = t_quantile_975(GROUPS - 1)
    snr_hits = [abs(estimate[c] - truth[c]) <= t * se[c] for c in truth]
    alpha_hits = []
    for r in range(REPS):
        alpha = compute_alphas(per_rep(estimate, r))[0]["emb"]
        alpha_se = jackknife_se([compute_alphas(per_rep(rep, r))[0] for rep in replicates])["emb"]
        true_alpha = math.sqrt(truth[f"rep{r}.vo"] / truth[f"rep{r}.emb"])
        alpha_hits.append(abs(alpha - true_alpha) <= t * alpha_se)
    snr_rate, alpha_rate = sum(snr_hits) / len(snr_hits), sum(alpha_hits) / len(alpha_hits)
    print(f"coverage: module SNR {snr_rate:.3f}, alpha {alpha_rate:.3f}")
    assert 0.85 <= snr_rate <= 0.995, snr_rate
    assert 0.85 <= alpha_rate <= 0.995, alpha_rate


def test_corrected_snr_is_unbiased_and_the_plain_one_is_biased_up_by_one_over_k(synthetic):
    moments, segments, truth = synthetic
    plain = moments.module_snr(segments)
    corrected = moments.module_snr(segments, snr="corrected")
    emb = [c for c in truth if c.endswith(".emb")]
    for name, values in (("plain", plain), ("corrected", corrected)):
        errors = torch.tensor([values[c] - truth[c] for c in emb], dtype=torch.float64)
        bias, se = float(errors.mean()), float(errors.std() / math.sqrt(len(emb)))
        print(f"{name}: bias {bias:.2e} (se {se:.1e}, 1/K {1 / K:.2e})")
        if name == "corrected":
            assert abs(bias) < 4 * se, (bias, se)
        else:
            assert bias > 5 * se and 0.8 / K < bias < 1.3 / K, (bias, se, 1 / K)


def test_two_ranks_give_the_interval_of_one_rank_on_the_same_samples():
    torch.manual_seed(0)
    model = build_model("llama_micro", 64)
    single = measure_module_snr(model, fixed_batches(), classify(model.named_parameters()), groups=GROUPS)
    assert len(single.replicates) == GROUPS and single.module_snr_se
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.pt")
        workers = mp.spawn(_ddp_worker, args=(2, os.path.join(tmp, "init"), out), nprocs=2, join=False)
        deadline = time.monotonic() + 120
        while not workers.join(timeout=1):
            if time.monotonic() > deadline:
                for process in workers.processes:
                    process.kill()
                pytest.fail("the 2-process estimate did not finish in 120 s")
        pooled = torch.load(out)
    for cls, value in single.module_snr.items():
        assert pooled["snr"][cls] == pytest.approx(value, rel=1e-4)
        assert pooled["se"][cls] == pytest.approx(single.module_snr_se[cls], rel=1e-3, abs=1e-9)
    for mine, theirs in zip(single.replicates, pooled["replicates"]):
        for cls, value in mine.items():
            assert theirs[cls] == pytest.approx(value, rel=1e-4)


def _ddp_worker(rank, world, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(build_model("llama_micro", 64))
    result = measure_module_snr(model, fixed_batches()[rank::world], classify(model.module.named_parameters()),
                                groups=GROUPS)
    if rank == 0:
        torch.save({"snr": result.module_snr, "se": result.module_snr_se, "replicates": result.replicates}, out_file)
    del model  # before the process group (see tests/test_mols.py)
    dist.destroy_process_group()


def test_the_estimate_is_bitwise_the_same_with_and_without_groups():
    moments_off, segments, _ = synthetic_run(groups=0, seed=3)
    moments_on, _, _ = synthetic_run(groups=GROUPS, seed=3)
    for name in moments_off.mean:
        assert torch.equal(moments_off.mean[name], moments_on.mean[name])
        assert torch.equal(moments_off.m2[name], moments_on.m2[name])
    assert moments_off.module_snr(segments) == moments_on.module_snr(segments)
    assert moments_on.statistics_bytes() == (1 + GROUPS) * moments_off.statistics_bytes()
    torch.manual_seed(0)
    model = build_model("llama_micro", 64)
    calibrations = {}
    for groups in (0, GROUPS):
        mols = MoLS(model, torch.optim.AdamW(param_groups(model), lr=1e-3), estimate_step=0, warmup_steps=4,
                    uncertainty_groups=groups, uncertainty_warn=None)
        calibrations[groups] = mols.calibrate(model, fixed_batches())
    assert calibrations[0].module_snr == calibrations[GROUPS].module_snr
    assert calibrations[0].alphas == calibrations[GROUPS].alphas
    assert calibrations[0].alpha_se == {} and set(calibrations[GROUPS].alpha_se) == {"emb", "head", "qk", "vo", "mlp"}


def test_the_table_shows_intervals_and_a_wide_interval_warns():
    torch.manual_seed(0)
    model = build_model("llama_micro", 64)
    mols = MoLS(model, torch.optim.AdamW(param_groups(model), lr=1e-3), estimate_step=0, warmup_steps=4,
                uncertainty_warn=0.01)
    with pytest.warns(UserWarning, match="uncertain by more than 1%"):
        calibration = mols.calibrate(model, fixed_batches())
    table = calibration.table()
    assert "jackknife over 4 groups" in table and "95% interval" in table
    for cls in ("emb", "qk", "mlp", "head"):
        low, high = calibration.alpha_low[cls], calibration.alpha_high[cls]
        assert low <= calibration.alphas[cls] <= high
        assert f"[{low:.3f}, {high:.3f}]" in table
        half = (high - low) / 2
        assert half == pytest.approx(t_quantile_975(3) * calibration.alpha_se[cls], abs=1e-9) or low == 0.0
    assert calibration.uncertain and f"! {calibration.uncertain[0]}: alpha" in table
    # a loose threshold: no warning, no mark
    quiet = MoLS(model, torch.optim.AdamW(param_groups(model), lr=1e-3), estimate_step=0, warmup_steps=4,
                 uncertainty_warn=100.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert quiet.calibrate(model, fixed_batches()).uncertain == []
    # logged and saved: plain JSON through state_dict, and old checkpoints (no new fields) still load
    state = json.loads(json.dumps(mols.state_dict()))
    assert state["calibrations"][0]["alpha_high"] == calibration.alpha_high
    mols.load_state_dict(state)
    assert mols.calibrations[0] == calibration
    old = {k: v for k, v in asdict(calibration).items() if k in ("step", "module_snr", "alphas", "reference",
                                                                 "gradient_samples", "sequences", "seconds",
                                                                 "zero_variance_fraction")}
    assert "interval" not in Calibration(**old).table()


def test_the_plain_estimators_bias_is_shown_beside_it_and_warned_about_beyond_the_interval():
    torch.manual_seed(0)
    model = build_model("llama_micro", 64)
    mols = MoLS(model, torch.optim.AdamW(param_groups(model), lr=1e-3), estimate_step=0, warmup_steps=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calibration = mols.calibrate(model, fixed_batches())
    assert set(calibration.alphas_corrected) == set(calibration.alphas)
    # the corrected alphas are those of the corrected SNRs of the same samples
    corrected = MoLS(model, torch.optim.AdamW(param_groups(model), lr=1e-3), estimate_step=0, warmup_steps=4,
                     snr="corrected", uncertainty_groups=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert corrected.calibrate(model, fixed_batches()).alphas == pytest.approx(calibration.alphas_corrected)
    table = calibration.table()
    assert "corrected" in table.splitlines()[3]
    for cls in calibration.biased:  # flagged only beyond both the interval and uncertainty_warn
        gap = abs(calibration.alphas_corrected[cls] - calibration.alphas[cls])
        assert gap > (calibration.alpha_high[cls] - calibration.alpha_low[cls]) / 2
        assert gap > 0.2 * calibration.alphas[cls]
        assert f"! {cls}: alpha {calibration.alphas[cls]:.3f} becomes" in table
        assert any("1/K bias" in str(w.message) and cls in str(w.message) for w in caught)
    assert calibration.biased or not any("1/K bias" in str(w.message) for w in caught)


def test_the_settings_reach_mols_from_the_config_and_are_checked():
    from mols.config import MoLSConfig
    model = build_model("llama_micro", 64)
    cfg = MoLSConfig(enabled=True, snr="corrected", uncertainty_groups=3, uncertainty_warn=None)
    assert cfg.validate() == []
    mols = MoLS(model, torch.optim.AdamW(param_groups(model), lr=1e-3), cfg, estimate_step=0, warmup_steps=2)
    assert mols.settings is not cfg and mols.settings == cfg  # its own copy, read where used
    with pytest.raises(ValueError, match="mols.snr: unknown value 'exact'"):
        MoLS(model, torch.optim.AdamW(param_groups(model), lr=1e-3), cfg, estimate_step=0, warmup_steps=2, snr="exact")
    calibration = mols.calibrate(model, fixed_batches(count=6))
    assert calibration.snr == "corrected" and calibration.uncertainty_groups == 3
    assert "bias-corrected" in calibration.table() and "+- 4.30 se" in calibration.table()
    assert any("uncertainty_groups" in p for p in MoLSConfig(uncertainty_groups=1).validate())
    assert any("uncertainty_warn" in p for p in MoLSConfig(uncertainty_warn=0).validate())
    # too few samples for the groups: no interval, said in the table
    few = MoLS(model, torch.optim.AdamW(param_groups(model), lr=1e-3), estimate_step=0, warmup_steps=2,
               uncertainty_groups=4)
    calibration = few.calibrate(model, fixed_batches(count=3))
    assert calibration.alpha_se == {} and "not available" in calibration.table()
