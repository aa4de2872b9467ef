"""The GPU path, on real text (tests/assets: Wikipedia lead sections and their 2k byte-level BPE).

These run only where CUDA is present (skipped on CPU-only machines and in CI); on a GPU machine:
`pytest -m cuda tests/test_cuda.py`. Each asserts something a wrong GPU path breaks: bf16-mixed
gradients and training that track fp32 and leave chance (ln 2000 = 7.6) well behind, MoLS
statistics that do not depend on where they are kept or on the thread that folds them, fp32 RoPE
frequencies under bf16-pure, a checkpoint that restores a CUDA run exactly, every memory-saving
optimizer stepping there, pinned prefetched batches that train exactly as batches made in line,
train.py under FSDP with MoLS on an NCCL group (CUDA tensors only in every collective), and an
update that waits for the device only where it decides whether to step.
The helpers are scripts/gpu_report.py's (it runs the same comparisons at the paper's sizes); the
thresholds' margins were measured on a CPU (bf16 autocast there), noted at each.
"""
import math
import time

import pytest
import torch

import train
from data import build_train_stream, get_tokenizer
from data.prefetch import Prefetcher
from models import mean_loss
from mols import GradientMoments, classify, measure_module_snr, param_groups
from optimizers import build_optimizer
from scripts.gpu_report import (OPTIMIZERS, TOKENIZER, FsdpMolsRun, fsdp_mols_train, gradient_agreement, gradients,
                                loss_curve, paper_config, prepare, snr_on_cpu_and_device, text_batches, train_step)
from test_faults import arguments, final_model
from training import checkpoint
from training.evaluation import to_device
from training.faults import StopRequests
from training.state import TrainingState

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DEVICE = torch.device("cuda")


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer(TOKENIZER)


def config(tokenizer, size: str, precision: str, *overrides: str, method: str = "adamw"):
    """The paper's config composition at `size`, with the tokenizer's own 2,000-row vocabulary."""
    return paper_config(size, method, device=DEVICE, precision=precision,
                        overrides=(f"model.vocab_size={len(tokenizer)}", *overrides))


def test_bf16_mixed_gradients_agree_with_fp32_on_real_text(tokenizer):
    """llama_60m's shape, one batch of 8 x 128 tokens, the same initial weights: every tensor's
    gradient points the same way (a CPU's bf16 autocast gives a minimum cosine of 0.99985, on
    q/k projections), yet the two are not the same computation (relative differences ~1e-2; an
    autocast that silently ran fp32 would give ~1e-6 at most)."""
    batch = text_batches(tokenizer, batch_size=8, seq_len=128, count=1)[0]
    grads, weights = {}, {}
    for precision in ("fp32", "bf16-mixed"):
        model, got, autocast = prepare(config(tokenizer, "llama_60m", precision), len(tokenizer), DEVICE)
        assert got == precision
        weights[precision] = {n: p.detach().clone() for n, p in model.named_parameters()}
        grads[precision] = gradients(model, batch, DEVICE, autocast)
        del model
    assert all(torch.equal(weights["fp32"][n], w) for n, w in weights["bf16-mixed"].items())
    agreement = gradient_agreement(grads["fp32"], grads["bf16-mixed"])
    assert set(agreement) == set(weights["fp32"])  # every parameter got a non-zero gradient
    worst = min(agreement, key=lambda n: agreement[n]["cosine"])
    assert agreement[worst]["cosine"] > 0.99, (worst, agreement[worst])
    assert max(v["relative_difference"] for v in agreement.values()) > 1e-3


def test_bf16_mixed_training_tracks_fp32_and_learns_on_real_text(tokenizer):
    """40 AdamW steps of 16 x 128 tokens of llama_tiny from the same weights: bf16-mixed ends where
    fp32 does (a CPU: last-5 mean 6.2886 vs 6.2854, validation 6.256 vs 6.253), both well below
    chance (7.60). A path that leaves the model at chance, or drifts from fp32, fails."""
    batches = text_batches(tokenizer, batch_size=16, seq_len=128, count=40)
    val = text_batches(tokenizer, "val", batch_size=16, seq_len=128, count=4, seed=None)
    curves = {p: loss_curve(config(tokenizer, "llama_tiny", p, "optimizer.lr=3e-3"), len(tokenizer), DEVICE,
                            batches, 40, val) for p in ("fp32", "bf16-mixed")}
    chance = math.log(len(tokenizer))
    fp32, bf16 = (sum(curves[p]["train_loss"][-5:]) / 5 for p in ("fp32", "bf16-mixed"))
    assert curves["fp32"]["val_loss_before"] == pytest.approx(chance, abs=0.2)  # starts at chance
    assert fp32 < chance - 1.0 and bf16 < chance - 1.0, (fp32, bf16)
    assert bf16 == pytest.approx(fp32, abs=0.05)
    val_fp32, val_bf16 = curves["fp32"]["val_loss_after"], curves["bf16-mixed"]["val_loss_after"]
    assert val_bf16 < chance - 1.0 and val_bf16 == pytest.approx(val_fp32, abs=0.05)


def test_snr_statistics_on_the_cpu_equal_those_on_the_gpu(tokenizer):
    """The same 16 CUDA gradient samples folded into statistics kept on the CPU and on the GPU
    give the same module SNRs to float tolerance (the CPU reads each gradient only after its copy
    landed: no non_blocking race); measure_module_snr's own loop agrees with both."""
    cfg = config(tokenizer, "llama_tiny", "bf16-mixed")
    model, _, autocast = prepare(cfg, len(tokenizer), DEVICE)
    segments = classify(model.named_parameters(), cfg.mols.grouping)
    batches = text_batches(tokenizer, batch_size=8, seq_len=128, count=16)
    on_cpu, on_gpu = snr_on_cpu_and_device(model, batches, segments, DEVICE, autocast)
    assert set(on_cpu) == set(on_gpu) == {"emb", "head", "qk", "vo", "mlp", "other"}
    assert all(snr > 0 for snr in on_cpu.values())
    for cls, snr in on_cpu.items():
        assert on_gpu[cls] == pytest.approx(snr, rel=1e-5), cls
    with autocast():  # recomputed gradients: the backward may order its sums differently
        measured = measure_module_snr(model, (to_device(b, DEVICE) for b in batches), segments,
                                      loss_fn=mean_loss, stats_device="cpu")
    assert measured.gradient_samples == 16
    for cls, snr in on_cpu.items():
        assert measured.module_snr[cls] == pytest.approx(snr, rel=1e-3), cls


def test_bf16_pure_casts_the_weights_and_keeps_rope_inv_freq_fp32(tokenizer):
    """RoPE's inverse frequencies in bf16 would put positions far apart on the same angle."""
    model, precision, _ = prepare(config(tokenizer, "llama_micro", "bf16-pure"), len(tokenizer), DEVICE)
    assert precision == "bf16-pure"
    assert all(p.dtype == torch.bfloat16 and p.device.type == DEVICE.type for p in model.parameters())
    inv_freq = {n: b.dtype for n, b in model.named_buffers() if n.endswith("inv_freq")}
    assert inv_freq and set(inv_freq.values()) == {torch.float32}, inv_freq


def test_a_checkpoint_saved_on_cuda_restores_the_run_exactly(tokenizer, tmp_path):
    """Three fused-AdamW steps, a checkpoint (training.state), a model built from another seed
    restored from it: the same weights and optimizer state on the device, the same next loss, and
    the same next update (an optimizer state lost on the way would move each weight by ~lr)."""
    cfg = config(tokenizer, "llama_micro", "bf16-mixed", "optimizer.lr=1e-3")
    batches = text_batches(tokenizer, batch_size=4, seq_len=64, count=4)

    def fresh(seed: int):
        cfg.run.seed = seed
        model, _, autocast = prepare(cfg, len(tokenizer), DEVICE)
        return model, build_optimizer(cfg.optimizer, model, param_groups(model, cfg.mols.grouping)), autocast

    model, optimizer, autocast = fresh(0)
    for batch in batches[:3]:
        train_step(model, optimizer, [batch], DEVICE, autocast)
    path = tmp_path / "checkpoints" / "step_0000003.pt"
    TrainingState(model, optimizer, mols=None, streams={}, step=3, tokens_seen=3 * 4 * 64).save(
        path, cfg.to_dict(), 1, True)

    restored_model, restored_optimizer, _ = fresh(1)
    assert not torch.equal(next(restored_model.parameters()), next(model.parameters()))
    restored = TrainingState(restored_model, restored_optimizer, mols=None, streams={})
    restored.restore(checkpoint.load(path), 0, path)
    assert (restored.step, restored.tokens_seen) == (3, 3 * 4 * 64)
    for (name, a), b in zip(model.named_parameters(), restored_model.parameters()):
        assert b.device.type == DEVICE.type and torch.equal(a, b), name
        state, restored_state = optimizer.state[a], restored_optimizer.state[b]
        assert set(state) == set(restored_state), name
        for key, value in state.items():
            assert restored_state[key].device == value.device and torch.equal(restored_state[key], value), (name, key)

    loss, _ = train_step(model, optimizer, [batches[3]], DEVICE, autocast)
    restored_loss, _ = train_step(restored_model, restored_optimizer, [batches[3]], DEVICE, autocast)
    assert float(restored_loss) == float(loss)  # the forward pass: the same weights, the same kernels
    for (name, a), b in zip(model.named_parameters(), restored_model.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-5), name


@pytest.mark.parametrize("method", OPTIMIZERS)
def test_each_optimizer_steps_on_the_device(tokenizer, method):
    """adamw (fused), 8-bit Adam, GaLore, APOLLO, Muon and Adam-mini: two steps on real text,
    finite, every weight tensor on the device, the loss of the batch trained on going down."""
    cfg = config(tokenizer, "llama_tiny", "bf16-mixed", "optimizer.lr=1e-3", method=method)
    model, _, autocast = prepare(cfg, len(tokenizer), DEVICE)
    optimizer = build_optimizer(cfg.optimizer, model, param_groups(model, cfg.mols.grouping))
    batch = text_batches(tokenizer, batch_size=8, seq_len=128, count=1)[0]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = [float(train_step(model, optimizer, [batch], DEVICE, autocast)[0]) for _ in range(3)]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
    for name, param in model.named_parameters():
        assert param.device.type == DEVICE.type and torch.isfinite(param).all(), name
        assert not torch.equal(param, before[name]), f"{name} did not move"


def test_prefetched_batches_are_pinned_and_a_cuda_run_trains_the_same_with_and_without_prefetching(
        tokenizer, tmp_path, monkeypatch):
    """data.prefetch on a GPU: the thread hands out the stream's own batches in page-locked memory
    (so the copy to the device does not wait for the host), and six updates of train.py on CUDA
    (two micro-batches each) end on bitwise the weights of the same run with batches made in line.
    Deterministic kernels (torch.use_deterministic_algorithms) for both runs: the two can differ
    by their data only."""
    data = config(tokenizer, "llama_micro", "fp32", "data.seq_len=64").data

    def stream():
        return build_train_stream(data, tokenizer, rank=0, world_size=1, micro_batch=4)

    plain = stream()
    expected = [plain.next_batch() for _ in range(3)]
    plain.close()
    ahead = Prefetcher(stream(), depth=2, pin_memory=True)
    try:
        for want in expected:
            got = ahead.next_batch()
            assert set(got) == set(want)
            for key, value in got.items():
                assert value.is_pinned() and torch.equal(value, want[key]), key
    finally:
        ahead.close()

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        for name, depth in (("ahead", 2), ("inline", 0)):
            assert train.main(arguments(tmp_path, name, "train.device=cuda", "train.steps=6",
                                        "train.checkpoint_every=0", f"data.prefetch={depth}")) == 0
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
    prefetched, inline = final_model(tmp_path / "ahead"), final_model(tmp_path / "inline")
    assert set(prefetched) == set(inline)
    for key, tensor in inline.items():
        assert torch.equal(prefetched[key], tensor), key


def test_threaded_host_folds_of_cuda_gradients_give_bitwise_the_moments_of_the_in_line_fold():
    """MoLS with statistics on the CPU and gradients on the GPU (mols.snr.HostFolds): each gradient
    is copied into a reused pinned buffer without a host wait and folded by a worker thread once
    the copy's event says it landed. The GPU is kept busy before every sample and the gradients
    are overwritten in place by the next one (as a backward does), so a fold that read its buffer
    before the copy, or a copy that read the gradient after it changed, would show. fp32 and bf16
    gradients (bf16-pure's), a missing gradient (zeros), uncertainty groups: every moment equals
    the in-line fold's bitwise."""
    torch.manual_seed(0)
    shapes = {"embed": ((2000, 512), torch.float32), "proj": ((512, 1536), torch.float32),
              "norm": ((512,), torch.float32), "bf16": ((1024, 512), torch.bfloat16)}
    params = {name: torch.nn.Parameter(torch.zeros(shape, dtype=dtype, device=DEVICE))
              for name, (shape, dtype) in shapes.items()}
    samples = [{name: torch.randn(shape, device=DEVICE).to(dtype) * (1 + s)
                for name, (shape, dtype) in shapes.items()} for s in range(10)]
    samples[3]["norm"] = None  # counts as a zero gradient

    def fold_all(threaded: bool) -> GradientMoments:
        for p in params.values():
            p.grad = None
        moments = GradientMoments(params, "cpu", groups=2, threaded=threaded)
        for sample in samples:
            torch.cuda._sleep(2_000_000)  # the GPU is busy: the copies below wait in its queue
            for name, p in params.items():
                if sample[name] is None:
                    p.grad = None
                elif p.grad is None:
                    p.grad = sample[name].clone()
                else:
                    p.grad.copy_(sample[name])
            moments.add_current_grads()
        moments.finish_folds()
        return moments

    threaded, inline = fold_all(True), fold_all(False)
    assert threaded._host.threaded and threaded._host._free is not None  # the pinned path ran
    assert all(buffer.is_pinned() for buffer in threaded._host._free.queue)
    assert not inline._host.threaded and inline._host._free is None
    assert threaded.count == inline.count == 10 and threaded.group_count == inline.group_count == [5, 5]
    for name in shapes:
        assert torch.equal(threaded.mean[name], inline.mean[name]), name
        assert torch.equal(threaded.m2[name], inline.m2[name]), name
        for group in range(2):
            assert torch.equal(threaded.group_mean[group][name], inline.group_mean[group][name]), (name, group)
            assert torch.equal(threaded.group_m2[group][name], inline.group_m2[group][name]), (name, group)
    assert inline.m2["embed"].abs().sum() > 0


def test_train_py_under_fsdp_with_mols_on_one_gpu_calibrates_checkpoints_and_resumes(tmp_path):
    """NCCL takes CUDA tensors only. One process under torchrun makes an NCCL group of one: FSDP
    shards over it, MoLS shards its statistics and exchanges each gradient sample through the
    group's collectives (mols/collectives.py), so a host tensor handed to any collective of the
    calibration, the checkpoint or the resume fails this run. train.py (the paper's configs at
    llama_micro, bf16-pure) calibrates at step 2 from 8 gradient samples, writes sharded
    checkpoints at steps 2 and 4, and a second launch resumes from step 4 and finishes step 6
    (scripts/gpu_report.py's section 1 runs the same at llama_60m)."""
    run = FsdpMolsRun("llama_micro", seq_len=64, micro_batch=4, global_batch=8, samples=32)
    figures = {}
    problems = fsdp_mols_train(run, DEVICE, tmp_path, figures, deadline=time.monotonic() + 400)
    failed = {key: figures.get(key, {}).get("stderr_tail") for key in ("first", "resumed")}
    assert not problems, (problems, failed)
    assert figures["backend"] == "nccl" and figures["precision"] == "bf16-pure"
    assert figures["first"]["exit_code"] == figures["resumed"]["exit_code"] == 0
    calibration = figures["calibration"]
    assert calibration["step"] == 2 and calibration["gradient_samples"] == 8 and calibration["statistics_bytes"] > 0
    assert calibration["table"][0].startswith("MoLS calibration at step 2: 32 sequences in 8 gradient samples")
    assert set(calibration["alphas"]) >= {"emb", "head", "qk", "vo", "mlp"}
    assert all(name.startswith(("step_0000002", "step_0000004")) for name in figures["first"]["checkpoints"])
    assert figures["resumed"]["resumed_from"].startswith("step_0000004")
    assert figures["resumed"]["last_step"] == 6 and math.isfinite(figures["resumed"]["final_val_loss"])
    assert figures["peak_memory_gib"] > 0 and figures["estimate_gib"] > 0


class PollOutsideSyncCheck(StopRequests):
    """StopRequests whose poll, the update's one wait for the device (its `.tolist()`: stop
    signals and non-finite values, which decide whether to step), runs with the sync check off."""

    def __init__(self):
        super().__init__(signals=())
        self.polls = 0

    def poll(self, nonfinite_loss, device):
        self.polls += 1
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode(0)
        try:
            return super().poll(nonfinite_loss, device)
        finally:
            torch.cuda.set_sync_debug_mode(mode)


@pytest.mark.parametrize("precision", ["fp32", "bf16-pure"])
def test_an_update_on_cuda_waits_for_the_device_only_in_its_poll(tokenizer, precision):
    """train.take_update on CUDA (fused AdamW, pinned batches as the prefetcher gives them, two
    micro-batches): with torch.cuda.set_sync_debug_mode("error") every operation that makes the host
    wait for the GPU raises, except inside StopRequests.poll, which runs with the check off (the
    one wait the update needs) and is called once. The second update is checked: the first
    creates the optimizer's state. tests/test_host_syncs.py counts the same waits on a CPU, where
    a wait such as a device copy of a host value cannot be seen."""
    cfg = config(tokenizer, "llama_micro", precision, "optimizer.lr=1e-3")
    model, _, autocast = prepare(cfg, len(tokenizer), DEVICE)
    optimizer = build_optimizer(cfg.optimizer, model, param_groups(model, cfg.mols.grouping))
    assert optimizer.defaults.get("fused") is True  # torch's fused AdamW, as on every CUDA run
    micro_batches = [{k: v.pin_memory() for k, v in batch.items()}
                     for batch in text_batches(tokenizer, batch_size=4, seq_len=64, count=2)]
    stops = PollOutsideSyncCheck()

    def update():
        return train.take_update(model, model, optimizer, micro_batches, lr_factor=1.0, grad_clip=1.0, world_size=1,
                                 device=DEVICE, autocast=autocast, stops=stops)

    assert not update().nonfinite
    torch.cuda.synchronize()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stops.polls = 0
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError, match="synchroniz"):  # the check is on: a host wait raises
            torch.ones((), device=DEVICE).item()
        second = update()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert stops.polls == 1 and not second.nonfinite
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters()), "the update did not step"
