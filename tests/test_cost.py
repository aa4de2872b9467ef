"""One cost model (models/cost.py): the figures worked out by hand, and every user of FLOPs per token
(the loop's MFU, the sweeps' GPU-hours) reading the same function."""
import pytest

import train
from models import build_model
from models.cost import Shape, flops_per_token, model_shape, parameters
from reproduce.cost import job_cost
from training.config import load_config


def test_llama_60m_by_hand():
    model = build_model("llama_60m", 32000, device="meta")
    assert parameters(model) == 58_073_600
    assert model_shape(model.config) == Shape(layers=8, width=512, heads=8, kv_heads=8)
    # 6 x (all parameters less the 32000 x 512 input embedding) + 12 x 8 layers x 512 x 256 tokens
    assert flops_per_token(model, 256) == 6 * (58_073_600 - 16_384_000) + 12 * 8 * 512 * 256


def test_tied_gpt2_counts_its_embedding_once_and_as_the_head():
    model = build_model("gpt2_125m", device="meta")
    assert model_shape(model.config) == Shape(layers=12, width=768, heads=12, kv_heads=12)
    assert flops_per_token(model, 256) == 6 * 124_439_808 + 12 * 12 * 768 * 256


def test_qwen2_reads_its_key_value_heads():
    assert model_shape(build_model("qwen2_350m", 32000, device="meta").config).kv_heads == 2


def test_mfu_and_gpu_hours_use_the_same_flops():
    assert train.flops_per_token is flops_per_token
    cfg = load_config(["configs/paper/base.yaml", "configs/paper/models/llama_60m.yaml",
                       "configs/paper/methods/adam.yaml"])
    cost = job_cost(cfg)
    per_token = flops_per_token(build_model("llama_60m", 32000, device="meta"), cfg.data.seq_len)
    tokens = cfg.train.steps * cfg.train.global_batch * cfg.data.seq_len
    assert cost.flops == pytest.approx(tokens * per_token, rel=1e-12)
