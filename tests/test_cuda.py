"""The GPU path. These run only where CUDA is present (skipped on CPU-only machines and in CI);
on a GPU machine: `pytest -m cuda`."""
import pytest
import torch

from models import build_model, loss_sum_and_count, mean_loss
from mols import MoLS, param_groups
from mols.snr import measure_module_snr

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def batches(count: int, vocab: int = 256, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        ids = torch.randint(0, vocab, (4, 32), generator=generator).cuda()
        yield {"input_ids": ids, "labels": ids}


def test_snr_statistics_on_the_cpu_equal_those_on_the_gpu():
    """The CPU statistics read CUDA gradients only after their copy landed (no non_blocking race)."""
    torch.manual_seed(0)
    model = build_model("llama_micro", 256).cuda()
    mols = MoLS(model, torch.optim.AdamW(param_groups(model), lr=1e-3), estimate_step=0, warmup_steps=1)
    on_cpu = measure_module_snr(model, batches(16), mols.segments, loss_fn=mean_loss, stats_device="cpu")
    on_gpu = measure_module_snr(model, batches(16), mols.segments, loss_fn=mean_loss, stats_device="cuda")
    for cls, snr in on_cpu.module_snr.items():
        assert on_gpu.module_snr[cls] == pytest.approx(snr, rel=1e-5), cls


def test_a_bf16_step_is_sane_and_close_to_fp32():
    losses = {}
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        model = build_model("llama_micro", 256).cuda()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        for batch in batches(5):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                loss, count = loss_sum_and_count(model, batch)
            (loss / count).backward()
            optimizer.step()
            optimizer.zero_grad()
        losses[dtype] = float(loss / count)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert losses[torch.bfloat16] == pytest.approx(losses[torch.float32], rel=0.02)
