"""`python -m reproduce results` (reproduce/runs.py, tables.py) and the ablation bars of `plot
ablation`, on synthetic run directories written the way train.py writes them."""
import json
from pathlib import Path

import pytest
import yaml

from reproduce import runs, tables
from reproduce.cli import main as reproduce

ROOT = Path(__file__).resolve().parents[1]


def results(argv: list[str]) -> int:
    """`python -m reproduce results ARGV...`"""
    return reproduce(["results", *argv])


def write_run(root: Path, model: str, optimizer: str, mols: bool, lr: float, seed: int,
              final_ppl: float | None = None, val: dict | None = None, extra_lines: list[str] = ()) -> Path:
    run_dir = root / f"{model}-{optimizer}{'-mols' if mols else ''}-lr{lr:.1e}-s{seed}"
    run_dir.mkdir(parents=True)
    config = {"run": {"name": run_dir.name, "seed": seed}, "model": {"size": model},
              "optimizer": {"name": optimizer, "lr": lr}, "mols": {"enabled": mols}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    records = [{"kind": "train", "step": 10, "loss": 5.0}]
    records += [{"kind": "val", "step": step, "loss": 0.0, "ppl": ppl} for step, ppl in (val or {}).items()]
    with open(run_dir / "metrics.jsonl", "w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
        handle.writelines(line + "\n" for line in extra_lines)
    if final_ppl is not None:
        (run_dir / "summary.json").write_text(json.dumps({"final_val_ppl": final_ppl, "final_val_loss": 0.0,
                                                          "optimizer": optimizer, "mols": mols, "model": model}))
    return run_dir


@pytest.fixture
def table1_runs(tmp_path):
    root = tmp_path / "runs"
    # Adam at 60M, the paper's lr, three seeds: 30.00 ± 1.00 against the paper's 29.55
    for seed, ppl in enumerate([29.0, 30.0, 31.0]):
        write_run(root, "llama_60m", "adamw", False, 5e-3, seed, ppl, {1000: 60.0, 10000: ppl})
    # ... and a worse learning rate from a search
    write_run(root, "llama_60m", "adamw", False, 1e-3, 0, 35.0, {10000: 35.0})
    # Adam+MoLS at 60M, one seed: no spread
    write_run(root, "llama_60m", "adamw", True, 2.5e-3, 0, 28.0, {10000: 28.0})
    # GaLore at 130M, unfinished (no summary.json): not a final-PPL cell
    write_run(root, "llama_130m", "galore", False, 1e-2, 0, None, {1000: 80.0})
    return root


def test_metrics_records_are_deduplicated_last_wins(tmp_path):
    run_dir = write_run(tmp_path, "llama_3b", "adam8bit", False, 5e-4, 0, None, {30000: 99.0},
                        extra_lines=[json.dumps({"kind": "val", "step": 30000, "val_ppl": 18.5}), '{"kind": "va'])
    records = runs.read_metrics(run_dir / "metrics.jsonl")
    assert [(r["kind"], r["step"]) for r in records] == [("train", 10), ("val", 30000)]
    assert records[-1]["val_ppl"] == 18.5


def test_table_1_cells_markdown(table1_runs, capsys):
    assert results([str(table1_runs), "--table", "1"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if line.startswith("| ") and not line.startswith("| Method")}
    assert rows["Adam"][:3] == ["29.55", "30.00 ± 1.00", "–"]  # paper, ours, harness protocol (none logged)
    assert rows["Adam+MoLS"][:3] == ["28.48", "28.00", "–"]
    assert rows["NAdam"][:3] == ["28.95", "–", "–"]
    assert rows["GaLore"][3:6] == ["25.22", "–", "–"]  # unfinished
    assert "| *Pre-training with Memory-efficient Optimizers* |" in out
    assert "- Adam @ 60M: lr 5.0e-03, seeds 0,1,2" in out


def test_paper_learning_rate_choice(table1_runs):
    groups = runs.group_runs(runs.find_runs([table1_runs]))
    best = tables.build_table("1", groups, "best")
    assert best.blocks[0][1][0][1][0].measured.mean == pytest.approx(30.0)
    # a 1e-3 run at 60M only: with the paper's rate (5e-3) required, the cell is empty
    groups = {k: v for k, v in groups.items() if k[3] != 5e-3}
    assert tables.build_table("1", groups, "best").blocks[0][1][0][1][0].measured.mean == pytest.approx(35.0)
    assert tables.build_table("1", groups, "paper").blocks[0][1][0][1][0].measured is None


def test_final_ppl_cells_ignore_unfinished_runs(table1_runs):
    # a learning rate whose run looks better but has not finished yet
    write_run(table1_runs, "llama_60m", "adamw", False, 2.5e-3, 0, None, {5000: 20.0})
    groups = runs.group_runs(runs.find_runs([table1_runs]))
    adam_60m = tables.build_table("1", groups).blocks[0][1][0][1][0]
    assert (adam_60m.measured.mean, adam_60m.measured.n) == (pytest.approx(30.0), 3)


def test_table_1_latex(table1_runs, capsys):
    assert results([str(table1_runs), "--table", "1", "--format", "latex"]) == 0
    out = capsys.readouterr().out
    assert r"\begin{tabular}{l" + "c" * 12 + "}" in out and r"\bottomrule" in out
    assert r"Adam & 29.55 & 30.00$\pm$1.00 & -- &" in out
    assert r"Adam+MoLS & 28.48 & 28.00 & -- &" in out
    assert r"\multicolumn{13}{l}{\textit{Pre-training with Full-Rank Optimizers}}" in out


def test_table_3_uses_validation_ppl_at_the_steps(tmp_path, capsys):
    root = tmp_path / "runs"
    for seed, at_30k in enumerate([18.0, 19.0]):
        write_run(root, "llama_3b", "adam8bit", False, 5e-4, seed, None,
                  {0: 32000.0, 30000: 99.0, 60000: 16.0 + seed},
                  extra_lines=[json.dumps({"kind": "val", "step": 30000, "val_ppl": at_30k})])  # resumed: rewrote 30K
    assert results([str(root), "--table", "3"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| Method"))
    assert header == "| Method | " + " | ".join(f"{s} {c}" for s in ("30K", "60K", "90K", "120K", "150K")
                                            for c in ("paper", "ours", "harness")) + " |"
    adam_3b = next(line for line in out.splitlines() if line.startswith("| 8-bit Adam |"))
    cells = [c.strip() for c in adam_3b.split("|")[2:-1]]
    assert cells[0:3] == ["18.63", "18.50 ± 0.71", "–"]
    assert cells[3:6] == ["15.69", "16.50 ± 0.71", "–"]
    assert cells[6:9] == ["14.36", "–", "–"]
    assert cells[12:15] == ["–", "–", "–"]  # the 3B runs stop at 120K: no paper value either


def test_group_listing_marks_the_best_learning_rate(table1_runs, capsys):
    assert results([str(table1_runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "| llama_60m | adam | off | 5.0e-03 * | 3/3 | 30.00 ± 1.00 | 30.00 ± 1.00 (10000) |" in lines
    assert "| llama_60m | adam | off | 1.0e-03 | 1/1 | 35.00 | 35.00 (10000) |" in lines
    assert "| llama_130m | galore | off | 1.0e-02 | 0/1 | – | 80.00 (1000) |" in lines


@pytest.mark.parametrize("table", ["1", "3", None])
def test_plot_writes_a_png(table1_runs, tmp_path, table):
    png = tmp_path / f"curves_{table}.png"
    args = [str(table1_runs), "--plot", str(png)] + (["--table", table] if table else [])
    assert results(args) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_runs_is_an_error(tmp_path, capsys):
    for extra in ([], ["--table", "1"], ["--baseline", "adamw"]):
        assert results([str(tmp_path), *extra]) == 2  # bad input: the user's folder holds no runs
        err = capsys.readouterr().err
        assert err == f"error: no run directories (config.yaml + metrics.jsonl) under {tmp_path}\n"


def test_mols_effect_puts_each_method_beside_its_mols_variant(tmp_path, capsys):
    root = tmp_path / "runs"
    for seed, (off, on) in enumerate([(30.0, 28.0), (32.0, 29.0)]):
        write_run(root, "llama_tiny", "adamw", False, 5e-3, seed, off, {150: off})
        write_run(root, "llama_tiny", "adamw", True, 5e-3, seed, on, {150: on})
    write_run(root, "llama_tiny", "lion", False, 5e-4, 0, 40.0, {150: 40.0})
    summary = root / "llama_tiny-adamw-lr5.0e-03-s0" / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "optimizer_state_bytes": 3 * 2**20}))
    assert results([str(root), "--mols-effect"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| llama_tiny")]
    assert rows[0] == "| llama_tiny | adam | 5.0e-03 | 31.00 ± 1.41 | 28.50 ± 0.71 | -2.50 (2/2 seeds) | 3.00 MiB |"
    assert rows[1].startswith("| llama_tiny | lion | 5.0e-04 | 40.00 | – | – |")


# ------------------------------------------------------------------ issue 11: the other experiments

def write_paper_run(root: Path, name: str, model: str, optimizer: str, lr: float, seed: int = 0,
                    mols: dict | None = None, final_loss: float | None = None, calibration: dict | None = None,
                    extra: dict | None = None) -> Path:
    """A run directory as train.py writes it, config resolved from the given sections."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {"run": {"name": name, "seed": seed}, "model": {"size": model},
              "optimizer": {"name": optimizer, "lr": lr}, "mols": mols or {"enabled": False}}
    for section, values in (extra or {}).items():
        config.setdefault(section, {}).update(values)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    records = [{"kind": "val", "step": 20000, "loss": final_loss, "ppl": 2.718281828 ** final_loss}]
    if calibration:
        records.insert(0, {"kind": "mols_calibration", "step": 200, **calibration})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "summary.json").write_text(json.dumps({"final_val_loss": final_loss,
                                                      "final_val_ppl": 2.718281828 ** final_loss}))
    return run_dir


PAPER_MOLS = {"enabled": True, "samples": 16384}


def rows_of(out: str) -> dict:
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if line.startswith("| ") and not line.startswith("| Method")}


@pytest.fixture
def table7_runs(tmp_path):
    root = tmp_path / "runs"
    write_paper_run(root, "vanilla", "llama_130m", "adamw", 1e-3, final_loss=3.130)
    write_paper_run(root, "full", "llama_130m", "adamw", 2.5e-3, mols=PAPER_MOLS, final_loss=3.090)
    write_paper_run(root, "attn_mlp", "llama_130m", "adamw", 2.5e-3, final_loss=3.140,
                    mols={**PAPER_MOLS, "grouping": "attn_mlp", "reference": "attn"})
    write_paper_run(root, "qk_vo_mlp_emb", "llama_130m", "adamw", 2.5e-3, final_loss=3.095,
                    mols={**PAPER_MOLS, "grouping": "qk_vo_mlp_emb"})
    return root


def test_table_7_rows_take_the_runs_of_their_grouping(table7_runs, capsys):
    assert results([str(table7_runs), "--table", "7"]) == 0
    captured = capsys.readouterr()
    assert "found twice" not in captured.err
    rows = rows_of(captured.out)
    assert rows["Vanilla"] == ["3.127", "3.130", "–"]
    assert rows["Attn, MLP"] == ["3.139", "3.140", "–"]
    assert rows["Attn, MLP, Emb"] == ["3.103", "–", "–"]
    assert rows["QK, VO, MLP, Emb"] == ["3.092", "3.095", "–"]
    assert rows["QK, VO, MLP, Emb, Head"] == ["3.088", "3.090", "–"]


def test_runs_that_differ_in_any_setting_stay_apart(table7_runs, capsys):
    groups = runs.group_runs(runs.find_runs([table7_runs]))
    assert len(groups) == 4  # three MoLS runs at one (model, method, lr) are three groups
    assert results([str(table7_runs)]) == 0
    captured = capsys.readouterr()
    assert "found twice" not in captured.err
    lines = [line for line in captured.out.splitlines() if line.startswith("| llama_130m")]
    assert len(lines) == 4
    assert any("mols.grouping=attn_mlp, mols.reference=attn" in line for line in lines)
    assert any("mols.grouping=modules, mols.reference=vo" in line for line in lines)


def test_table_12_ppl_and_estimation_minutes(tmp_path, capsys):
    root = tmp_path / "runs"
    for samples, seconds, loss in ((2048, 45.0, 3.09), (16384, 240.0, 3.088)):
        write_paper_run(root, f"s{samples}", "llama_130m", "adamw", 2.5e-3, final_loss=loss,
                        mols={"enabled": True, "samples": samples},
                        calibration={"module_snr": {"vo": 1.0}, "alphas": {"vo": 1.0}, "reference": "vo",
                                     "gradient_samples": samples // 64, "sequences": samples, "seconds": seconds})
    assert results([str(root), "--table", "12"]) == 0
    out = capsys.readouterr().out
    assert "| Method | PPL paper | PPL ours | PPL harness | estimation (min) |" in out
    rows = rows_of(out)
    assert rows["2048"] == ["21.99", "21.98", "–", "0.75 (paper 0.67, Δ +0.08)"]
    assert rows["16384"] == ["21.94", "21.93", "–", "4.00 (paper 3.73, Δ +0.27)"]
    assert rows["4096"] == ["22.04", "–", "–", "– (paper 1.16)"]
    png = tmp_path / "t12.png"
    assert reproduce(["plot", "ablation", str(root), "--table", "12", "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_table_13_alphas_by_size(tmp_path, capsys):
    root = tmp_path / "runs"
    for model, lr, emb in (("llama_60m", 2.5e-3, 4.0), ("llama_130m", 2.5e-3, 5.0)):
        for seed, wobble in enumerate((0.0, 0.2)):
            write_paper_run(root, f"{model}-s{seed}", model, "adamw", lr, seed=seed, mols=PAPER_MOLS, final_loss=3.0,
                            calibration={"module_snr": {}, "alphas": {"emb": emb + wobble, "head": 2.0, "qk": 1.2,
                                                                       "vo": 1.0, "mlp": 1.1, "other": 1.0},
                                         "reference": "vo", "seconds": 1.0})
    write_paper_run(root, "llama_3b", "llama_3b", "adam8bit", 5e-4, mols=PAPER_MOLS, final_loss=2.6,
                    calibration={"module_snr": {}, "alphas": {"emb": 6.0, "vo": 1.0}, "reference": "vo", "seconds": 1.0})
    assert results([str(root), "--table", "13"]) == 0
    out = capsys.readouterr().out
    assert "| Method | 60M | 130M | 350M | 1.3B | 3B | 7B |" in out
    rows = rows_of(out)
    assert rows["emb"][:3] == ["4.100 ± 0.141", "5.100 ± 0.141", "–"] and rows["emb"][4] == "6.000"
    assert rows["vo"][0] == "1.000 ± 0.000" and "other" in rows


def test_table_14_reads_table_1_runs_beside_its_own(table1_runs, tmp_path, capsys):
    for lr, ppl in ((1e-4, 33.0), (2.5e-4, 32.0)):
        write_run(tmp_path / "t14", "llama_60m", "lion", False, lr, 0, ppl, {10000: ppl})
    assert results([str(table1_runs), str(tmp_path / "t14"), "--table", "14"]) == 0
    rows = rows_of(capsys.readouterr().out)
    assert rows["Adam"][:3] == ["29.55", "30.00 ± 1.00", "–"]
    assert rows["Lion"][:3] == ["32.46", "32.00", "–"]  # the best rate of the search
    assert rows["SGG"][:3] == ["30.31", "–", "–"] and rows["SOAP"][:3] == ["29.02", "–", "–"]


def test_figure_3_hand_tuned_against_mols(tmp_path, capsys):
    root = tmp_path / "runs"
    write_paper_run(root, "mols", "llama_130m", "adamw", 2.5e-3, mols=PAPER_MOLS, final_loss=3.089)
    write_paper_run(root, "hand", "llama_130m", "adamw", 1e-3, final_loss=3.080,
                    mols={"enabled": True, "fixed_multipliers": {"mlp": 2.0, "emb": 4.0, "head": 4.0}},
                    calibration={"module_snr": {}, "alphas": {"mlp": 2.0}, "reference": "fixed", "seconds": 0.0})
    write_paper_run(root, "plain", "llama_130m", "adamw", 2.5e-3, final_loss=3.120,
                    mols={"enabled": True, "fixed_multipliers": {}})
    assert results([str(root), "--table", "figure3"]) == 0
    out = capsys.readouterr().out
    rows = rows_of(out)
    assert rows["MoLS"] == ["3.088", "3.089", "–"]
    assert rows["hand: MLP x2, others x4"] == ["–", "3.080", "–"] and rows["hand: MLP x1, others x1"] == ["–", "3.120", "–"]
    assert rows["hand: MLP x2, others x2"] == ["–", "–", "–"]
    assert "best hand-tuned setting: 3.074" in out
    png = tmp_path / "f3.png"
    assert reproduce(["plot", "ablation", str(root), "--table", "figure3", "--out", str(png)]) == 0


@pytest.mark.parametrize("figure", ["figure2", "figure4", "figure5"])
def test_curve_figures_table_and_plot(figure, tmp_path, capsys):
    root = tmp_path / "runs"
    models = {"figure2": "llama_60m"}.get(figure, "llama_130m")
    lr = 5e-3 if models == "llama_60m" else 1e-3
    extra = {"figure2": {"data": {"source": "openwebtext"}}, "figure4": {"data": {"seq_len": 1024}},
             "figure5": {"train": {"steps": 100000}}}[figure]
    write_paper_run(root, "adam", models, "adamw", lr, final_loss=3.2, extra=extra)
    assert results([str(root), "--table", figure, "--plot", str(tmp_path / "c.png")]) == 0
    rows = rows_of(capsys.readouterr().out)
    assert rows["Adam"][0] == f"{2.718281828 ** 3.2:.2f}" and rows["Adam+MoLS"][0] == "–"
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_a_run_is_labelled_by_the_method_overlay_it_matches_in_full():
    from reproduce.runs import method_label, method_overlays

    overlays = method_overlays()
    assert method_label({"name": "adamw", "lr": 1e-3, "weight_decay": 0.0}, overlays) == "adam"
    assert method_label({"name": "adamw", "lr": 1e-3}, overlays) == "adam"  # weight decay 0 is the default
    assert method_label({"name": "adamw", "lr": 1e-3, "weight_decay": 0.1}, overlays) == "adamw"  # real AdamW
    assert method_label({"name": "muon", "lr": 1e-3}, overlays) == "muon"
