"""MFU's FLOP count and the device peak it is measured against."""
import torch

from models import build_model
from models.cost import flops_per_token
from training.throughput import Throughput, peak_tflops


def test_flops_per_token_counts_matrix_parameters_and_attention():
    llama = build_model("llama_60m", 32000, device="meta")
    # 6 x (58,073,600 parameters - 16,384,000 input-embedding rows) + 12 x 8 layers x 512 wide x 256 tokens
    assert flops_per_token(llama, 256) == 6 * 41_689_600 + 12 * 8 * 512 * 256 == 262_720_512
    gpt2 = build_model("gpt2_micro", 1000, device="meta")  # tied: the embedding is also the head
    assert flops_per_token(gpt2, 128) == 6 * 81_920 + 12 * 2 * 32 * 128


def test_mfu_needs_a_peak_which_a_cpu_does_not_have():
    cpu = torch.device("cpu")
    assert peak_tflops(cpu) is None and peak_tflops(cpu, 2.0) == 2.0
    speed = Throughput(flops_per_token=1e9, world_size=2, peak=100.0, device=cpu)
    speed.step_done(1000)
    report = speed.report()
    assert report["tok_per_s_per_device"] == report["tok_per_s"] / 2
    assert report["mfu"] == report["tok_per_s_per_device"] * 1e9 / 100e12
    assert "mem_alloc_gib" not in report and Throughput(1e9, 1, None, cpu).report().keys() >= {"step_s", "data_wait_s"}
