"""`python -m reproduce results` beside the paper's numbers: the three columns (the paper's, ours,
ours under the harness's protocol), the readers of Table 2, the appendix's training-time table
(Table 15), Figure 8 and Section 5.1's statements, on synthetic run directories written the way
train.py writes them; and the paper's own numbers checked against each other."""
import json
import math
from pathlib import Path

import pytest
import yaml

from reproduce import paper, tables
from reproduce.cli import main as reproduce


def write_run(root: Path, name: str, model: str, optimizer: str, lr: float, *, mols: bool = False, seed: int = 0,
              final_ppl: float, harness_ppl: float | None = None, val: dict | None = None, train: dict | None = None,
              summary: dict | None = None, config: dict | None = None) -> Path:
    """A run directory: config.yaml (the given sections), metrics.jsonl (val, val_harness at the
    final step, train records) and summary.json."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    cfg = {"run": {"name": name, "seed": seed}, "model": {"size": model}, "optimizer": {"name": optimizer, "lr": lr},
           "mols": {"enabled": mols, **({"samples": 16384} if mols else {})}}
    for section, values in (config or {}).items():
        cfg.setdefault(section, {}).update(values)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    records = [{"kind": "train", "step": step, "loss": loss} for step, loss in (train or {}).items()]
    records += [{"kind": "val", "step": step, "loss": math.log(ppl), "ppl": ppl} for step, ppl in (val or {}).items()]
    final = {"final_val_ppl": final_ppl, "final_val_loss": math.log(final_ppl), **(summary or {})}
    if harness_ppl is not None:
        step = max(val) if val else 100
        records.append({"kind": "val_harness", "step": step, "loss": math.log(harness_ppl), "ppl": harness_ppl,
                        "batches": 10, "tokens": 1000})
        final.update({"final_harness_ppl": harness_ppl, "final_harness_loss": math.log(harness_ppl)})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "summary.json").write_text(json.dumps(final))
    return run_dir


def rows_of(out: str) -> dict:
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if line.startswith("| ") and not line.startswith("| Method")}


def test_table_1_prints_the_paper_ours_and_the_harness_protocol_side_by_side(tmp_path, capsys):
    root = tmp_path / "runs"
    for seed, (ours, harness) in enumerate([(30.0, 29.0), (31.0, 30.0)]):
        write_run(root, f"adam-s{seed}", "llama_60m", "adamw", 5e-3, seed=seed, final_ppl=ours, harness_ppl=harness,
                  val={10000: ours}, config={"train": {"precision": "bf16-pure"}})
    write_run(root, "mols", "llama_60m", "adamw", 2.5e-3, mols=True, final_ppl=28.0, val={10000: 28.0},
              config={"train": {"precision": "bf16-mixed"}})  # no harness numbers: an older run
    assert reproduce(["results", str(root), "--table", "1"]) == 0
    out = capsys.readouterr().out
    assert "| Method | 60M paper | 60M ours | 60M harness | 130M paper |" in out
    assert "the one the paper's is comparable to" in out  # the legend says which column to compare
    rows = rows_of(out)
    assert rows["Adam"][:3] == ["29.55", "30.50 ± 0.71", "29.50 ± 0.71 (Δ -0.05)"]
    assert rows["Adam+MoLS"][:3] == ["28.48", "28.00", "–"]
    # a cell whose runs are not in the paper's precision says so
    assert "Adam+MoLS @ 60M: lr 2.5e-03, seeds 0, train.precision bf16-mixed (the paper's configs: bf16-pure)" in out
    assert "Adam @ 60M: lr 5.0e-03, seeds 0,1\n" in out + "\n"


def test_table_3_reads_the_harness_ppl_logged_at_each_step(tmp_path, capsys):
    root = tmp_path / "runs"
    run = write_run(root, "adam8bit", "llama_3b", "adam8bit", 5e-4, final_ppl=15.0, val={30000: 19.0, 60000: 16.0})
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"kind": "val_harness", "step": 30000, "loss": 2.9, "ppl": 18.0}) + "\n")
    assert reproduce(["results", str(root), "--table", "3"]) == 0
    cells = rows_of(capsys.readouterr().out.split("LLaMA-7B")[0])["8-bit Adam"]  # the 3B block
    assert cells[:3] == ["18.63", "19.00", "18.00 (Δ -0.63)"]
    assert cells[3:6] == ["15.69", "16.00", "–"]


def wall_clock_runs(root: Path) -> None:
    for name, optimizer, mols, ppl, hours in (("adam", "adamw", False, 14.0, 50.0), ("mols", "adamw", True, 13.0, 51.0),
                                              ("mini", "adam_mini", False, 15.0, 49.0),
                                              ("mini-mols", "adam_mini", True, 13.5, 50.0)):
        write_run(root, name, "llama_1b", optimizer, 1e-3, mols=mols, final_ppl=ppl, harness_ppl=ppl - 0.5,
                  summary={"wall_time_s": hours * 3600, "tokens_seen": 13_107_200_000})


def test_table_2_reads_wall_time_and_tokens_from_the_summaries(tmp_path, capsys):
    wall_clock_runs(tmp_path / "runs")
    assert reproduce(["results", str(tmp_path / "runs"), "--table", "2"]) == 0
    out = capsys.readouterr().out
    assert ("| Method | PPL paper | PPL ours | PPL harness | training time (h) | tokens (B) | PPL vs base | "
            "time vs base |") in out
    rows = rows_of(out)
    assert rows["Adam"] == ["14.51", "14.00", "13.50 (Δ -1.01)", "50.00 (paper 54.18, Δ -4.18)", "13.11", "–", "–"]
    # against its base: (13 - 14) / 14 = -7.14% PPL, (51 - 50) / 50 = +2.00% time; the paper's from its numbers
    assert rows["Adam+MoLS"][5:] == ["-7.14% (paper -7.31%, Δ +0.16)", "2.00% (paper 1.66%, Δ +0.34)"]
    assert rows["Adam-mini+MoLS"][3] == "50.00 (paper 54.01, Δ -4.01)"
    assert rows["Adam-mini+MoLS"][6] == "2.04% (paper 1.71%, Δ +0.33)"


def test_table_15_every_method_at_1b(tmp_path, capsys):
    wall_clock_runs(tmp_path / "runs")
    write_run(tmp_path / "runs", "muon", "llama_1b", "muon", 1e-3, final_ppl=14.2, summary={"wall_time_s": 90 * 3600})
    assert reproduce(["results", str(tmp_path / "runs"), "--table", "15"]) == 0
    rows = rows_of(capsys.readouterr().out)
    assert list(rows) == ["Adam", "NAdam", "LAMB", "Muon", "Adam+MoLS", "Adam-mini", "GaLore", "APOLLO", "Adam-mini+MoLS"]
    assert rows["Muon"][:4] == ["14.29", "14.20", "–", "90.00 (paper 91.83, Δ -1.83)"]
    assert rows["Muon"][6] == "80.00% (paper 69.49%, Δ +10.51)"
    assert rows["NAdam"][1] == "–"


@pytest.mark.parametrize("table", ["2", "15"])
def test_the_papers_printed_percentages_follow_from_its_numbers(table):
    """Table 2 and Table 15 print each row's change against Adam (Adam-mini for the memory-efficient
    rows) as a magnitude: recomputed here from the paper's hours and perplexities, each printed
    value is within one unit of its last digit (most are truncated: Muon's 1.516% PPL is printed
    1.51, GaLore's 23.597% time 23.5; LAMB's 5.307% PPL is printed 5.31)."""
    spec = paper.table(table)
    rows = {r["label"]: r for r in spec["rows"]}
    checked = 0
    for row in rows.values():
        if not row.get("base"):
            continue
        base = rows[row["base"]]
        for key in ("ppl", "hours"):
            exact = abs(row[key]["llama_1b"] - base[key]["llama_1b"]) / base[key]["llama_1b"] * 100
            printed = row["printed"][key]
            digits = len(str(printed).split(".")[1])
            assert abs(exact - printed) < 10**-digits, (row["label"], key, exact, printed)
            checked += 1
    assert checked == (4 if table == "2" else 14)
    table1 = {r["label"]: r["ppl"]["llama_1b"] for r in paper.table("1")["rows"]}
    assert all(table1[r["label"]] == r["ppl"]["llama_1b"] for r in spec["rows"])  # Table 1's 1.3B column


def test_the_statements_reductions_are_table_1s_and_table_3s():
    rows = {r["label"]: r for r in paper.table("speedup")["rows"]}
    t1 = {r["label"]: r["ppl"] for r in paper.table("1")["rows"]}
    t3 = {r["label"]: r["ppl"] for r in paper.table("3")["rows"]}
    for label, (mols, base) in {"PPL: Adam+MoLS - Adam": ("Adam+MoLS", "Adam"),
                                "PPL: Adam-mini+MoLS - Adam-mini": ("Adam-mini+MoLS", "Adam-mini")}.items():
        for model, value in rows[label]["paper"].items():
            assert value == pytest.approx(t1[mols][model] - t1[base][model], abs=1e-9)
    final = {model: (t3["8-bit Adam+MoLS"][model], t3["8-bit Adam"][model]) for model in ("llama_3b", "llama_7b")}
    for model, value in rows["PPL: 8-bit Adam+MoLS - 8-bit Adam"]["paper"].items():
        mols, adam = final[model]
        last = max(i for i, v in enumerate(adam) if v is not None)
        assert value == pytest.approx(mols[last] - adam[last], abs=1e-9)
    t2 = {r["label"]: r for r in paper.table("2")["rows"]}
    assert rows["time: Adam+MoLS vs Adam (%)"]["paper"]["llama_1b"] == t2["Adam+MoLS"]["printed"]["hours"]
    assert "paper" not in rows["speed-up of Adam+MoLS over Adam (x)"]  # lost in our copy of the text


def test_section_5_1_statements_from_runs(tmp_path, capsys):
    root = tmp_path / "runs"
    steps = {"train": {"steps": 1000}}
    write_run(root, "adam", "llama_60m", "adamw", 5e-3, final_ppl=30.0, harness_ppl=29.0,
              val={250: 45.0, 500: 34.0, 1000: 30.0}, config=steps, summary={"wall_time_s": 1000.0})
    write_run(root, "mols", "llama_60m", "adamw", 2.5e-3, mols=True, final_ppl=28.5, harness_ppl=27.8,
              val={250: 40.0, 500: 29.5, 1000: 28.5}, config=steps, summary={"wall_time_s": 1020.0})
    write_run(root, "mini", "llama_60m", "adam_mini", 5e-3, final_ppl=31.0, val={1000: 31.0}, config=steps)
    write_run(root, "mini-mols", "llama_60m", "adam_mini", 2.5e-3, mols=True, final_ppl=29.0, harness_ppl=28.0,
              val={1000: 29.0}, config=steps)
    assert reproduce(["results", str(root), "--table", "speedup"]) == 0
    out = capsys.readouterr().out
    rows = rows_of(out)
    assert set(rows) == {r["label"] for r in paper.table("speedup")["rows"] if "measure" in r}  # bases not printed
    assert rows["PPL: Adam+MoLS - Adam"][0] == "-1.20 (paper -1.07, Δ -0.13)"   # 27.8 - 29.0: the harness's
    assert rows["PPL: Adam-mini+MoLS - Adam-mini"][0] == "-2.00 (paper -1.14, Δ -0.86)"  # 29 - 31: ours
    assert "PPL: Adam-mini+MoLS - Adam-mini @ 60M: our protocol (no harness values)" in out
    assert rows["speed-up of Adam+MoLS over Adam (x)"][0] == "2.00x"  # 29.5 <= 30 at step 500 of 1000
    assert rows["time: Adam+MoLS vs Adam (%)"] == ["–"] * 3 + ["– (paper 1.66%)"] + ["–"] * 2  # no 1.3B runs


def test_speedup_is_none_when_never_reached(tmp_path):
    from reproduce.runs import find_runs
    root = tmp_path / "runs"
    write_run(root, "adam", "llama_60m", "adamw", 5e-3, final_ppl=30.0, val={1000: 30.0},
              config={"train": {"steps": 1000}})
    write_run(root, "mols", "llama_60m", "adamw", 2.5e-3, mols=True, final_ppl=31.0, val={500: 35.0, 1000: 31.0},
              config={"train": {"steps": 1000}})
    by_mols = {run.mols: run for run in find_runs([root])}
    assert tables.speedup([by_mols[False]], [by_mols[True]]) is None


def test_figure_8_training_ppl_smoothed_over_50_steps(tmp_path, capsys):
    root = tmp_path / "runs"
    train = {step: 6.0 - step / 1000 for step in range(10, 2001, 10)}  # loss logged every 10 steps
    write_run(root, "adam", "llama_130m", "adamw", 1e-3, final_ppl=25.0, train=train, config={"train": {"steps": 2000}})
    assert reproduce(["results", str(root), "--table", "figure8"]) == 0
    out = capsys.readouterr().out
    assert "| Method | 10% of steps | 25% of steps | 50% of steps | 100% of steps |" in out
    rows = rows_of(out.split("| *130M* |")[1].split("| *350M* |")[0])  # the 130M block
    # at step 200: the records of steps 160-200, losses 5.84 ... 5.80, mean 5.82
    assert rows["Adam"][0] == f"{math.exp(5.82):.2f}" and rows["Adam"][3] == f"{math.exp(4.02):.2f}"
    assert rows["Adam+MoLS"] == ["–"] * 4
    assert tables.smoothed_train_ppl([{"kind": "train", "step": 10, "loss": 1.0}], 100) is None
