"""Every cell of the paper's Tables 1, 3 and 6, composed as scripts/sweep.py composes it, resolves to
the paper's settings. The expected numbers are transcribed here from the paper (Tables 8, 9, 10 and
Appendix A) independently of configs/paper/, so a typo in the YAML fails a test."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
from scripts import sweep  # noqa: E402
from training.config import load_config  # noqa: E402
from models import SIZES  # noqa: E402

# Table 10 (hidden, intermediate, heads, layers, steps); 1B as GaLore's config (32 heads, 24
# layers) because the paper's 24 heads cannot divide 2048.
TABLE_10 = {
    "llama_60m": (512, 1376, 8, 8, 10_000),
    "llama_130m": (768, 2048, 12, 12, 20_000),
    "llama_350m": (1024, 2736, 16, 24, 60_000),
    "llama_1b": (2048, 5461, 32, 24, 100_000),
    "llama_3b": (2560, 6848, 32, 32, 120_000),
    "llama_7b": (4096, 11008, 32, 32, 150_000),
    "qwen2_350m": (1024, 3328, 16, 26, 60_000),
    "gpt2_125m": (768, 3072, 12, 12, 20_000),
    "gpt2_355m": (1024, 4096, 16, 24, 60_000),
}

LLAMA = ["llama_60m", "llama_130m", "llama_350m", "llama_1b", "llama_3b", "llama_7b"]


def by_size(*rates):
    return dict(zip(LLAMA, rates))


# Tables 8 and 9, keyed like the sweep's rows. Table 8's "Adam (8-bit)" is Adam up to 1B and
# 8-bit Adam at 3B/7B.
PAPER_LR = {
    "adam": by_size(5e-3, 1e-3, 1e-3, 5e-4),
    "adam8bit": {"llama_3b": 5e-4, "llama_7b": 5e-4},
    "nadam": by_size(5e-3, 1e-3, 1e-3, 5e-4),
    "lamb": by_size(1e-2, 1e-2, 5e-3, 5e-3),
    "muon": by_size(5e-3, 2.5e-3, 1e-3, 1e-3, 1e-3, 5e-4),
    "adam+mols": by_size(2.5e-3, 2.5e-3, 1e-3, 1e-3),
    "adam8bit+mols": {"llama_3b": 5e-4, "llama_7b": 5e-4},
    "adam_mini": by_size(5e-3, 1e-3, 5e-4, 2.5e-4),
    "adam_mini+mols": by_size(2.5e-3, 1e-3, 1e-3, 1e-3),
    "galore": by_size(1e-2, 1e-2, 1e-2, 1e-2, 5e-3, 1e-2),
    "apollo": by_size(1e-2, 1e-2, 1e-2, 1e-2, 5e-3, 1e-2),
}
# Table 6 models have no published rates: the nearest LLaMA size's.
NEAREST_LLAMA = {"gpt2_125m": "llama_130m", "gpt2_355m": "llama_350m", "qwen2_350m": "llama_350m"}

OPTIMIZER_OF_METHOD = {"adam": "adamw", "adam8bit": "adam8bit", "nadam": "nadam", "lamb": "lamb", "muon": "muon",
                       "adam_mini": "adam_mini", "galore": "galore", "apollo": "apollo"}

# GPUs per job in the sweep presets: one 8-GPU node, two for Table 3.
PROCESSES = {"1": 8, "3": 16, "6": 8}


def table_cells():
    for table, spec in sweep.paper_tables().items():
        for row in spec["rows"]:
            for model in spec["models"]:
                yield pytest.param(table, model, sweep.Variant(row["method"], row["mols"]),
                                   id=f"table{table}-{model}-{row['label']}")


@pytest.fixture(scope="module")
def compose():
    cache = {}

    def composed(table, model, variant):
        if (table, model, variant) not in cache:
            (job,) = sweep.build_jobs(name=f"table{table}", models=[model], variants=[variant], lrs="paper",
                                      seeds=[0], out_dir="runs/paper")
            cache[(table, model, variant)] = load_config([ROOT / c for c in job.configs], job.overrides)
        return cache[(table, model, variant)]
    return composed


def test_every_table_cell_has_a_cell(compose):
    cells = list(table_cells())
    assert len(cells) == 9 * 4 + 5 * 2 + 5 * 3


@pytest.mark.parametrize("table, model, variant", table_cells())
def test_cell_resolves_to_the_paper_settings(compose, table, model, variant):
    cfg = compose(table, model, variant)
    hidden, intermediate, heads, layers, steps = TABLE_10[model]

    # Appendix A: the common setting
    assert cfg.data.source == "c4" and cfg.data.tokenizer == "t5-base"
    assert cfg.data.seq_len == 256 and cfg.data.shuffle_seed == 42 and cfg.data.val_tokens == 10_000_000
    assert cfg.train.global_batch == 512
    assert cfg.train.grad_clip == 1.0 and cfg.train.warmup_ratio == 0.1 and cfg.train.min_lr_ratio == 0.1
    assert cfg.optimizer.betas == [0.9, 0.95] and cfg.optimizer.eps == 1e-8
    assert cfg.train.precision.startswith("bf16")
    assert cfg.run.resume == "auto" and cfg.run.wandb.group == f"table{table}"

    # Table 10: shape and steps
    assert cfg.model.size == model and cfg.train.steps == steps
    size = SIZES[model]
    assert (size.hidden, size.intermediate, size.heads, size.layers) == (hidden, intermediate, heads, layers)
    assert cfg.train.global_batch % (PROCESSES[table] * cfg.train.micro_batch) == 0

    # Tables 8 and 9: the learning rate (nearest LLaMA size for Table 6's models)
    paper_size = NEAREST_LLAMA.get(model, model)
    assert cfg.optimizer.lr == pytest.approx(PAPER_LR[variant.key][paper_size])

    # the method, MoLS, memory savers of the 3B/7B runs
    assert cfg.optimizer.name == OPTIMIZER_OF_METHOD[variant.method]
    assert cfg.mols.enabled == variant.mols
    large = model in ("llama_3b", "llama_7b")
    assert cfg.model.gradient_checkpointing == large
    if large and variant.method.startswith("adam"):
        assert cfg.optimizer.name == "adam8bit"  # Table 3's Adam is 8-bit Adam


def test_mols_overlay_is_the_papers_estimate(compose):
    cfg = compose("1", "llama_60m", sweep.Variant("adam", True))
    assert cfg.mols.samples == 2048 and cfg.mols.reference == "vo" and cfg.mols.estimator == "mean"
    assert cfg.mols_estimate_step == 100  # 1% of 10K steps
    assert cfg.mols.stats_device == "cpu" and cfg.mols.min_alpha == 1.0


def test_low_rank_methods_use_table_9_scales(compose):
    galore = compose("1", "llama_350m", sweep.Variant("galore", False)).optimizer.options
    apollo = compose("1", "llama_350m", sweep.Variant("apollo", False)).optimizer.options
    assert galore.scale == 0.25 and galore.update_proj_gap == 200
    assert apollo.scale == 1.0 and apollo.scale_type == "channel" and apollo.proj == "random"


def test_learning_rates_file_is_tables_8_and_9():
    rates = sweep.paper_learning_rates()
    assert rates["search_grid"] == [1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2]
    for key, sizes in rates["learning_rates"].items():
        for model, lr in sizes.items():
            assert lr == pytest.approx(PAPER_LR[key][NEAREST_LLAMA.get(model, model)]), (key, model)


def test_paper_results_match_the_spec():
    tables = sweep.paper_tables()
    adam_mols = next(r for r in tables["1"]["rows"] if r["label"] == "Adam+MoLS")
    assert adam_mols["ppl"] == {"llama_60m": 28.48, "llama_130m": 21.94, "llama_350m": 16.41, "llama_1b": 13.45}
    seven_b = next(r for r in tables["3"]["rows"] if r["label"] == "8-bit Adam+MoLS")["ppl"]["llama_7b"]
    assert seven_b == [16.22, 13.77, 12.34, 11.70, 11.54]
    assert tables["3"]["steps"] == [30_000, 60_000, 90_000, 120_000, 150_000]
    for table in tables.values():
        for row in table["rows"]:
            assert (ROOT / "configs" / "paper" / "methods" / f"{row['method']}.yaml").is_file()
            assert set(row["ppl"]) == set(table["models"])
