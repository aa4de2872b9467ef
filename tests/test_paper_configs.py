"""Every cell of the paper's Tables 1, 3 and 6, composed as `python -m reproduce run` composes it, resolves to
the paper's settings. The expected numbers are transcribed here from the paper (Tables 8, 9, 10 and
Appendix A) independently of configs/paper/, so a typo in the YAML fails a test."""
from pathlib import Path

import pytest

from models import SIZES
from reproduce import paper
from reproduce.cli import main as reproduce
from reproduce.jobs import Variant, build_jobs, experiment_jobs
from training.config import load_config

ROOT = Path(__file__).resolve().parents[1]

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


# Tables 8 and 9, keyed like the grid's rows. Table 8's "Adam (8-bit)" is Adam up to 1B and
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

# GPUs per job in the experiments' grids: one 8-GPU node, two for Table 3.
PROCESSES = {"1": 8, "3": 16, "6": 8}


MAIN_TABLES = ("1", "3", "6")


def table_cells():
    for table, spec in paper.tables().items():
        if table not in MAIN_TABLES:
            continue
        for row in spec["rows"]:
            for model in spec["models"]:
                yield pytest.param(table, model, Variant(row["method"], row["mols"]),
                                   id=f"table{table}-{model}-{row['label']}")


@pytest.fixture(scope="module")
def compose():
    cache = {}

    def composed(table, model, variant):
        if (table, model, variant) not in cache:
            (job,) = build_jobs(name=f"table{table}", models=[model], variants=[variant], lrs="paper",
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
    assert cfg.data.source == "c4"
    assert cfg.data.tokenizer == ("gpt2" if model.startswith("gpt2") else "t5-base")  # GPT-2: its own ids
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
    assert paper.preset(table).nodes * 8 == PROCESSES[table]

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


def test_mols_overlay_is_the_papers_rule(compose):
    cfg = compose("1", "llama_60m", Variant("adam", True))
    # 16,384 = 32 iterations of 512: Table 12's row that equals Table 1's 130M Adam+MoLS (21.94)
    assert cfg.mols.samples == 16384 and cfg.mols.reference == "vo" and cfg.mols.estimator == "mean"
    assert cfg.mols_estimate_step == 100  # 1% of 10K steps
    assert cfg.mols.stats_device == "cpu"
    assert cfg.mols.min_alpha is None and cfg.mols.max_alpha is None  # Eq. 5: no floor, no cap
    assert cfg.mols.grouping == "modules" and cfg.mols.fixed_multipliers is None
    assert cfg.mols.zero_variance == "count"


def test_low_rank_methods_use_table_9_scales(compose):
    galore = compose("1", "llama_350m", Variant("galore", False)).optimizer.options
    apollo = compose("1", "llama_350m", Variant("apollo", False)).optimizer.options
    assert galore.scale == 0.25 and galore.update_proj_gap == 200
    assert apollo.scale == 1.0 and apollo.scale_type == "channel" and apollo.proj == "random"


def test_learning_rates_file_is_tables_8_and_9():
    rates = paper.learning_rates_file()
    assert rates["search_grid"] == [1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2]
    for key, sizes in rates["learning_rates"].items():
        for model, lr in sizes.items():
            assert lr == pytest.approx(PAPER_LR[key][NEAREST_LLAMA.get(model, model)]), (key, model)


def test_paper_results_match_the_spec():
    tables = paper.tables()
    adam_mols = next(r for r in tables["1"]["rows"] if r["label"] == "Adam+MoLS")
    assert adam_mols["ppl"] == {"llama_60m": 28.48, "llama_130m": 21.94, "llama_350m": 16.41, "llama_1b": 13.45}
    seven_b = next(r for r in tables["3"]["rows"] if r["label"] == "8-bit Adam+MoLS")["ppl"]["llama_7b"]
    assert seven_b == [16.22, 13.77, 12.34, 11.70, 11.54]
    assert tables["3"]["steps"] == [30_000, 60_000, 90_000, 120_000, 150_000]
    for name, table in tables.items():
        for row in table["rows"]:
            assert row["method"] is None or (ROOT / "configs" / "paper" / "methods" / f"{row['method']}.yaml").is_file()
            assert name not in MAIN_TABLES + ("14",) or set(row["ppl"]) == set(table["models"])


# ------------------------------------------------------------------ issue 11: faithful configs

PAPER = ROOT / "configs" / "paper"


def compose_row(table: str, label: str, model: str):
    """A row of a table at one model as its experiment runs it: with the overlays of the
    experiment's grid (e.g. Figure 4's seq_len_1024.yaml); a row's first learning rate."""
    row = next(r for r in paper.tables()[table]["rows"] if r["label"] == label)
    job = experiment_jobs(table, name=f"t{table}", models=[model], variants=[Variant.from_row(row)],
                          lrs="paper", seeds=[0], out_dir="runs/paper")[0]
    return load_config([ROOT / c for c in job.configs], job.overrides), job


def test_the_floor_is_an_explicit_overlay_of_ours():
    cfg = load_config([PAPER / "base.yaml", PAPER / "models/llama_130m.yaml", PAPER / "methods/adam.yaml",
                       PAPER / "mols.yaml", PAPER / "mols_floor.yaml"], [])
    assert cfg.mols.min_alpha == 1.0 and cfg.mols.samples == 16384
    # the quickstart keeps its published behaviour
    assert load_config([ROOT / "configs/quickstart.yaml"], []).mols.min_alpha == 1.0
    assert load_config([ROOT / "configs/scaled.yaml"], []).mols.min_alpha == 1.0
    from mols.config import MoLSConfig
    assert MoLSConfig().min_alpha is None  # the library default is the paper's rule


# parameters counted on the meta device; the named sizes hold
NAMED_SIZES = {"gpt2_125m": 124.4e6, "gpt2_355m": 354.8e6, "qwen2_350m": 360.0e6}


@pytest.mark.parametrize("model", sorted(NAMED_SIZES))
def test_table_6_models_have_their_named_sizes_and_no_unreachable_rows(compose, model):
    from models import build_model
    cfg = compose("6", model, Variant("adam", False))
    size = SIZES[model]
    params = sum(p.numel() for p in build_model(model, device="meta").parameters())
    assert params == pytest.approx(NAMED_SIZES[model], rel=0.002)
    if model.startswith("gpt2"):  # GPT-2's own tokenizer: every one of the 50,257 rows is a token id
        assert cfg.data.tokenizer == "gpt2" and size.vocab == 50257
    else:  # Qwen2.5's grouped-query attention, the LLaMA runs' 32,000 rows (t5-base ids)
        assert cfg.data.tokenizer == "t5-base" and size.vocab == 32000 and size.kv_heads == 2


def test_model_overlays_say_which_token_budget_they_follow():
    for path in sorted((PAPER / "models").glob("*.yaml")):
        if path.stem in ("llama_60m", "llama_130m", "llama_350m", "llama_1b", "gpt2_125m", "gpt2_355m", "qwen2_350m"):
            assert "Token budget" in path.read_text() and "Table 10" in path.read_text(), path.name


def test_low_rank_ranks_are_attributed_to_galore():
    from optimizers.low_rank import PAPER_RANKS
    assert PAPER_RANKS == {512: 128, 768: 256, 1024: 256, 2048: 512}  # GaLore's table
    text = (PAPER / "methods/apollo.yaml").read_text()
    assert "rank: null" in text and "GaLore" in text and "APOLLO's own settings" not in text.replace("not APOLLO's own settings", "")


TABLE_7 = {"Vanilla": (False, None, None), "Attn, MLP": (True, "attn_mlp", "attn"),
           "Attn, MLP, Emb": (True, "attn_mlp_emb", "attn"), "QK, VO, MLP, Emb": (True, "qk_vo_mlp_emb", "vo"),
           "QK, VO, MLP, Emb, Head": (True, "modules", "vo")}


@pytest.mark.parametrize("label", sorted(TABLE_7))
def test_table_7_groupings_and_references(label):
    from mols.groups import reference_problem
    enabled, grouping, reference = TABLE_7[label]
    cfg, job = compose_row("7", label, "llama_130m")
    assert cfg.mols.enabled == enabled and cfg.model.size == "llama_130m" and cfg.train.steps == 20_000
    assert cfg.optimizer.lr == pytest.approx(2.5e-3 if enabled else 1e-3)  # Table 8: Adam+MoLS / Adam
    if enabled:
        assert (cfg.mols.grouping, cfg.mols.reference) == (grouping, reference)
        assert reference_problem(grouping, reference) is None and cfg.mols.min_alpha is None


def test_table_12_samples():
    rows = paper.tables()["12"]["rows"]
    samples = [compose_row("12", r["label"], "llama_130m")[0].mols.samples for r in rows]
    assert samples == [2048, 4096, 8192, 16384, 32768]
    assert [r["ppl"]["llama_130m"] for r in rows] == [21.99, 22.04, 21.96, 21.94, 21.93]
    assert [r["minutes"]["llama_130m"] for r in rows] == [0.67, 1.16, 2.02, 3.73, 7.83]


def test_table_14_values_and_runnable_rows():
    rows = {r["label"]: r for r in paper.tables()["14"]["rows"]}
    assert rows["SOAP"]["ppl"] == {"llama_60m": 29.02, "llama_130m": 22.59, "llama_350m": 17.03, "llama_1b": 14.62}
    assert rows["Lion"]["ppl"]["llama_350m"] == 21.25 and rows["Adafactor"]["ppl"]["llama_1b"] == 15.19
    assert [label for label, r in rows.items() if r.get("run", True)] == ["SOAP", "Lion", "Adafactor"]
    table1 = {r["label"]: r["ppl"] for r in paper.tables()["1"]["rows"]}
    for label, ppl in table1.items():
        assert rows[label]["ppl"] == ppl


def test_figure_3_hand_tuned_multipliers_are_fixed_and_ramped():
    cfg, job = compose_row("figure3", "hand: MLP x2, others x4", "llama_130m")
    assert cfg.mols.enabled and cfg.mols.fixed_multipliers == {"mlp": 2.0, "emb": 4.0, "head": 4.0}
    assert cfg.optimizer.lr == pytest.approx(1e-3)  # the first lr_base of the row
    assert paper.tables()["figure3"]["paper_best_hand_tuned"] == 3.074


def test_experiment_overlays():
    fig4, job = compose_row("figure4", "Adam", "llama_130m")
    assert fig4.data.seq_len == 1024 and fig4.train.micro_batch == 32  # the grid adds seq_len_1024.yaml
    assert job.configs[-1] == "configs/paper/experiments/seq_len_1024.yaml"
    fig2, _ = compose_row("figure2", "Adam", "llama_60m")
    assert fig2.data.source == "openwebtext"
    fig5, _ = compose_row("figure5", "Adam", "llama_130m")
    assert fig5.train.steps == 100_000
    assert load_config([PAPER / "base.yaml", PAPER / "models/llama_130m.yaml", PAPER / "methods/adam.yaml",
                        PAPER / "experiments/seq_len_1024.yaml"], []).data.seq_len == 1024
    fig7, _ = compose_row("figure7", "LLaMA-60M on OpenWebText", "llama_60m")
    assert fig7.data.source == "openwebtext" and fig7.mols.track_every == 100 and fig7.mols.fixed_multipliers == {}
    steps = load_config([PAPER / "base.yaml", PAPER / "models/llama_130m.yaml", PAPER / "methods/adam.yaml",
                         PAPER / "experiments/steps_100k.yaml"], [])
    assert steps.train.steps == 100_000 and steps.warmup_steps == 10_000


ENTRY_POINTS = {"table7": 5, "table12": 5, "table13": 4, "table14": 84, "figure1": 3, "figure2": 15,
                "figure3": 13, "figure4": 5, "figure5": 5, "figure7": 2}


@pytest.mark.parametrize("experiment", sorted(ENTRY_POINTS))
def test_experiment_dry_run(experiment, tmp_path, capsys):
    assert reproduce(["run", experiment, "--dry-run", "--mode", "local", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{ENTRY_POINTS[experiment]} jobs" in out and "train.py" in out
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


@pytest.mark.parametrize("experiment, jobs", [("lr_search", 252), ("lr_search_3", 70), ("lr_search_6", 105)])
def test_lr_search_presets(experiment, jobs, capsys):
    assert reproduce(["run", experiment, "--dry-run", "--mode", "local"]) == 0
    assert f"{jobs} jobs" in capsys.readouterr().out
