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


# The paper's fine-tuning models, known by shape (models.pretrained.PAPER_MODEL_SHAPES) so that a dry
# run and a sweep's cost need no download: their totals are the model cards' figures.
MODEL_CARD_PARAMETERS = {"google/gemma-3-1b-pt": 1.00e9, "meta-llama/Llama-3.2-1B": 1.24e9,
                         "meta-llama/Llama-3.2-3B": 3.21e9, "Qwen/Qwen2.5-7B": 7.62e9}


@pytest.mark.parametrize("name", sorted(MODEL_CARD_PARAMETERS))
def test_the_paper_fine_tuning_models_are_counted_without_their_files(name, monkeypatch):
    from reproduce.cost import finetuning_counts

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load_config([], [f"model.pretrained={name}", "data.source=instructions", "data.path=shipped-synthetic"])
    total, trained = finetuning_counts(cfg.model)
    assert total == trained == pytest.approx(MODEL_CARD_PARAMETERS[name], rel=0.01)


def test_a_lora_mols_job_requests_host_memory_for_the_adapters_statistics_only():
    from models.pretrained import meta_finetuning_model
    from reproduce.cost import BASE_MEM_PER_RANK_GIB

    cfg = load_config(["configs/paper/finetune/base.yaml", "configs/paper/finetune/models/qwen2.5_7b.yaml",
                       "configs/paper/methods/adam.yaml", "configs/paper/mols.yaml", "configs/paper/finetune/mmlu.yaml"])
    model, _ = meta_finetuning_model(cfg.model)
    adapters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 15e6 < adapters < 25e6   # rank 8 on every linear layer of Qwen2.5-7B's 28 layers
    per_adapter = 8 * (1 + cfg.mols.uncertainty_groups)
    assert job_cost(cfg).mem_per_rank_bytes == BASE_MEM_PER_RANK_GIB * 2**30 + per_adapter * adapters


def test_sharded_mols_statistics_are_requested_per_rank():
    from reproduce.cost import BASE_MEM_PER_RANK_GIB

    cfg = load_config(["configs/paper/base.yaml", "configs/paper/models/llama_1b.yaml",
                       "configs/paper/methods/adam.yaml", "configs/paper/mols.yaml"])
    assert cfg.mols.shard_statistics
    statistics = {world: job_cost(cfg, world).mem_per_rank_bytes - BASE_MEM_PER_RANK_GIB * 2**30 for world in (1, 8)}
    assert statistics[1] > 8 * 1.2e9   # two fp32 values per parameter of 1.3B
    assert statistics[8] == pytest.approx(statistics[1] / 8, rel=1e-6)
