"""The GPU path, on real text (tests/assets: Wikipedia lead sections and their 2k byte-level BPE).

These run only where CUDA is present (skipped on CPU-only machines and in CI); on a GPU machine:
`pytest -m cuda tests/test_cuda.py`. Each asserts something a wrong GPU path breaks: bf16-mixed
gradients and training that track fp32 and leave chance (ln 2000 = 7.6) well behind, MoLS
statistics that do not depend on where they are kept, fp32 RoPE frequencies under bf16-pure,
a checkpoint that restores a CUDA run exactly, and every memory-saving optimizer stepping there.
The helpers are scripts/gpu_report.py's (it runs the same comparisons at the paper's sizes); the
thresholds' margins were measured on a CPU (bf16 autocast there), noted at each.
"""
import math

import pytest
import torch

from data import get_tokenizer
from models import mean_loss
from mols import classify, measure_module_snr, param_groups
from optimizers import build_optimizer
from scripts.gpu_report import (OPTIMIZERS, TOKENIZER, gradient_agreement, gradients, loss_curve, paper_config,
                                prepare, snr_on_cpu_and_device, text_batches, train_step)
from training import checkpoint
from training.evaluation import to_device
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
