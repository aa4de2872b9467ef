"""The reproduce package as a whole: the experiments' data (configs/paper/experiments.yaml), the
coverage doc generated from it, the command line's subcommands, and its place on top of the
project (it imports the project's packages; nothing imports it). Its parts: test_reproduce_run.py
(grids, Slurm, cost), test_reproduce_results.py (tables), test_paper_configs.py (the composed
configs against the paper)."""
import ast
import json
from pathlib import Path

import pytest
import yaml

from reproduce import coverage, paper
from reproduce.cli import main as reproduce
from reproduce.jobs import experiment_jobs

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("configs", "data", "models", "mols", "optimizers", "training", "scripts", "reproduce")


# ------------------------------------------------------------------ the data

def test_every_experiment_says_what_it_is_and_how_it_is_read():
    entries = paper.experiments()
    papers = [entry["paper"] for entry in entries.values()]
    # every table and figure of the paper, in its order
    for number in [1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14]:
        assert f"Table {number}" in papers, number
    assert "Tables 8, 9" in papers
    assert [p for p in papers if p.startswith("Figure")] == [f"Figure {n}" for n in range(1, 9)]
    for key, entry in entries.items():
        assert entry["what"] and entry["read"], key
        assert ("grid" in entry) == ("command" not in entry), key  # run here, or says what produces it
        if "grid" in entry:
            assert entry["description"], key
            for config in paper.preset(key).configs:
                assert config.is_file(), (key, config)


def test_presets_are_the_former_sweep_presets():
    """The grids of the retired TABLE_PRESETS (scripts/sweep.py), now data."""
    expected = {"1": ([0, 1, 2], "paper", 1, "table1", []), "3": ([0], "paper", 2, "table3", []),
                "6": ([0], "paper", 1, "table6", []), "lr_search": ([0], "grid", 1, "lr_search", []),
                "4": ([0], {"llama3.2_1b": 2.0e-5}, 1, "table4", ["finetune/commonsense.yaml"]),
                "5": ([0], {"gemma3_1b": 2.0e-4, "llama3.2_3b": 2.5e-5, "qwen2.5_7b": 1.0e-5}, 1, "table5",
                      ["finetune/mmlu.yaml"]),
                "lr_search_3": ([0], "grid", 2, "lr_search_table3", []),
                "lr_search_6": ([0], "grid", 1, "lr_search_table6", []),
                "7": ([0], "paper", 1, "table7", []), "12": ([0], "paper", 1, "table12", []),
                "13": ([0], "paper", 1, "table13", []), "14": ([0], "grid", 1, "table14", []),
                "figure1": ([0], "paper", 1, "figure1", []),
                "figure2": ([0], "paper", 1, "figure2", ["experiments/openwebtext.yaml"]),
                "figure3": ([0], "paper", 1, "figure3", []),
                "figure4": ([0], "paper", 1, "figure4", ["experiments/seq_len_1024.yaml"]),
                "figure5": ([0], "paper", 1, "figure5", ["experiments/steps_100k.yaml"]),
                "figure7": ([0], "paper", 1, "figure7", []),
                # beyond the paper: the rebuttal's SNR estimators against the paper's (the overlays per row)
                "snr_estimator": ([0], "paper", 1, "snr_estimator", [])}
    assert set(paper.runnable()) == set(expected)
    for key, (seeds, lrs, nodes, name, configs) in expected.items():
        grid = paper.preset(key)
        assert (grid.seeds, grid.lrs, grid.nodes, grid.name) == (seeds, lrs, nodes, name), key
        assert grid.configs == [paper.PAPER / c for c in configs], key
    assert paper.preset("lr_search_3").rows == paper.table("3")["rows"]


def test_one_loader_for_the_paper_numbers():
    assert paper.resolve("table7") == "7" and paper.table("table7") == paper.table("7")
    with pytest.raises(KeyError, match="no experiment"):
        paper.resolve("table99")
    assert paper.table("1")["rows"][0]["ppl"]["llama_60m"] == 29.55
    paper.table("1")["rows"][0]["ppl"]["llama_60m"] = 0  # callers get copies
    assert paper.table("1")["rows"][0]["ppl"]["llama_60m"] == 29.55
    row = {"method": "adam", "mols": True}
    assert paper.row_learning_rate(row, "llama_130m") == 2.5e-3
    assert paper.row_learning_rate({**row, "lrs": [1e-3, 2.5e-3]}, "llama_130m") == [1e-3, 2.5e-3]
    assert paper.row_learning_rate({"method": "nadam", "mols": False}, "llama_7b") is None
    raw = yaml.safe_load((paper.PAPER / "learning_rates.yaml").read_text())
    assert paper.learning_rates() == raw["learning_rates"] and paper.search_grid() == raw["search_grid"]


def test_experiment_jobs_carry_the_grids_overlays():
    jobs = experiment_jobs("figure2", models=["llama_60m"])
    assert len(jobs) == 5 and all(j.configs[-1] == "configs/paper/experiments/openwebtext.yaml" for j in jobs)
    assert all("run.out_dir=runs/paper/figure2" in j.overrides for j in jobs)
    assert len(experiment_jobs("lr_search", models=["llama_60m"])) == 9 * 7


# ------------------------------------------------------------------ docs/paper_coverage.md

def test_the_coverage_doc_holds_the_generated_table():
    assert coverage.documented_table() == coverage.markdown_table(), (
        "docs/paper_coverage.md's table differs from configs/paper/experiments.yaml: run "
        "`python -m reproduce list --update-doc`")


def test_the_coverage_table_has_a_line_per_experiment(capsys):
    assert reproduce(["list", "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| paper | what | command | read with |"
    assert len(lines) == 2 + len(paper.experiments())
    assert "| Table 7 | grouping ablation at 130M (final loss) | `python -m reproduce run 7` |" in "\n".join(lines)


def test_update_doc_rewrites_only_the_table(tmp_path):
    doc = tmp_path / "coverage.md"
    doc.write_text(f"# title\n\nprose\n\n{coverage.BEGIN}\n| old |\n{coverage.END}\n\nmore prose\n")
    assert coverage.update_doc(doc)
    text = doc.read_text()
    assert text.startswith("# title\n\nprose\n\n") and text.endswith(f"{coverage.END}\n\nmore prose\n")
    assert coverage.documented_table(doc) == coverage.markdown_table()
    assert not coverage.update_doc(doc)


# ------------------------------------------------------------------ the command line

def test_list_names_every_experiment_with_its_command(capsys):
    assert reproduce(["list"]) == 0
    out = capsys.readouterr().out
    for key, entry in paper.experiments().items():
        assert f"{entry['paper']}: {entry['what']}" in out
        if "grid" in entry:
            assert f"python -m reproduce run {key} " in out
    assert "(108 jobs, 1 node(s) each, runs/paper/table1/)" in out


def test_run_takes_table_aliases_and_refuses_unknown_experiments(tmp_path, capsys):
    assert reproduce(["run", "table7", "--dry-run", "--mode", "local", "--out-dir", str(tmp_path)]) == 0
    assert "[sweep] table7: 5 jobs" in capsys.readouterr().out
    for argv in (["run", "figure6"], ["run", "nope"], ["results", str(tmp_path), "--table", "lr_search"]):
        with pytest.raises(SystemExit) as exit:
            reproduce(argv)
        assert exit.value.code == 2
        assert "is not a" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        reproduce(["run"])  # neither an experiment nor --models/--methods
    assert "name an EXPERIMENT, or give --models and --methods" in capsys.readouterr().err


def _write_run(root: Path, name: str, model: str, optimizer: str, lr: float, ppl: float, mols: bool = False):
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {"run": {"name": name, "seed": 0}, "model": {"size": model},
              "optimizer": {"name": optimizer, "lr": lr}, "mols": {"enabled": mols}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    records = [{"kind": "val", "step": step, "loss": 0.0, "ppl": ppl + 10.0 / step} for step in (100, 200)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "summary.json").write_text(json.dumps({"final_val_ppl": ppl}))


@pytest.mark.parametrize("table", [None, "1"])
def test_plot_curves(tmp_path, capsys, table):
    root = tmp_path / "runs"
    _write_run(root, "adam", "llama_60m", "adamw", 5e-3, 30.0)
    _write_run(root, "adam-mols", "llama_60m", "adamw", 2.5e-3, 28.0, mols=True)
    png = tmp_path / "curves.png"
    assert reproduce(["plot", "curves", str(root), "--out", str(png)] + (["--table", table] if table else [])) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in capsys.readouterr().out


def test_plot_errors_name_what_is_missing(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert reproduce(["plot", "snr", str(tmp_path / "run")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    assert reproduce(["plot", "alphas", str(tmp_path / "run")]) == 2
    assert "no mols.json" in capsys.readouterr().err
    assert reproduce(["plot", "curves", str(tmp_path / "run"), "--out", str(tmp_path / "x.png")]) == 2
    assert "no run directories" in capsys.readouterr().err
    assert reproduce(["plot", "ablation", str(tmp_path / "run"), "--table", "7"]) == 2
    assert "no run directories" in capsys.readouterr().err


# ------------------------------------------------------------------ its place in the project

def imports_of(path: Path) -> set[str]:
    """The top-level names of every import of a file (lazy and relative ones included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = path.relative_to(ROOT).parts[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(package if node.level else (node.module or "").split(".")[0])
    return names


def test_nothing_imports_reproduce():
    files = [ROOT / "train.py", *(p for package in PROJECT if package != "reproduce"
                                  for p in sorted((ROOT / package).rglob("*.py")))]
    offenders = [str(p.relative_to(ROOT)) for p in files if "reproduce" in imports_of(p)]
    assert not offenders, f"reproduce sits on top of the project; these import it: {offenders}"


def test_reproduce_imports_no_script():
    """It may import every package of the project, but no script: scripts/ holds standalone tools."""
    offenders = {str(p.relative_to(ROOT)): sorted(imports_of(p) & {"scripts", "train"})
                 for p in sorted((ROOT / "reproduce").rglob("*.py"))}
    assert not any(offenders.values()), offenders


RETIRED = ["sweep", "results", "plot_snr", "alpha_table", "plot_ablation", "lr_search", "table1", "table3", "table6",
           "table7", "table12", "table13", "table14", "figure1", "figure2", "figure3", "figure4", "figure5", "figure7"]


def test_the_paper_scripts_are_retired():
    assert not [name for name in RETIRED if (ROOT / "scripts" / f"{name}.py").exists()]


def test_every_table_and_figure_has_a_command_and_a_reader():
    """docs/paper_coverage.md claims no table or figure without a command that produces it (a grid,
    a `python ...` line, or data the configs hold) and one that reads it (a `python ...` line or
    the test that checks the data)."""
    for key, entry in paper.experiments().items():
        command = entry.get("command", "")
        assert "grid" in entry or command.startswith("python ") or command.startswith("data:") \
            or command.startswith("`configs/"), (key, command)
        reads = entry.get("read", [])
        assert reads and all(r.startswith(("python ", "`tests/")) for r in reads), (key, reads)
        assert "yet" not in " ".join(reads), (key, reads)
