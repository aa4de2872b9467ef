"""scripts/calibration_study.py (docs/calibration.md) runs end to end in its --quick mode and writes
consistent numbers: the K values asked for, intervals around their estimates, corrected SNR <=
plain SNR, the single-pass measurement equal to MoLS.calibrate's, and tables that say the same."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "calibration_study.py"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibration_study")
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out-dir", str(out)], cwd=out, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, json.loads((out / "calibration_study.json").read_text()), done.stdout


def test_the_k_values_are_the_ones_asked_for_with_both_estimators(quick):
    _, results, _ = quick
    part = results["alpha_vs_k"]["llama_micro"]
    plan = results["meta"]["plan"]
    for snr in ("plain", "corrected"):
        rows = [r for r in part["rows"] if r["snr"] == snr]
        assert [r["K"] for r in rows] == plan["ks"] == [4, 8, 16]
        assert [r["sequences"] for r in rows] == [k * plan["sample_sequences"] for k in plan["ks"]]
    assert part["model"]["train_steps"] == plan["train_steps"]


def test_every_interval_contains_its_estimate(quick):
    _, results, _ = quick
    rows = [r for part in ("alpha_vs_k", "micro_batch") for p in results[part].values() for r in p["rows"]]
    checked = 0
    for row in rows:
        assert row["reference"] == "vo"
        for cls, alpha in row["alphas"].items():
            if cls in row["alpha_low"]:
                assert row["alpha_low"][cls] <= alpha <= row["alpha_high"][cls], (row["K"], cls)
                assert row["alpha_se"][cls] >= 0
                checked += 1
        assert set(row["module_snr_se"]) >= {"emb", "qk", "vo", "mlp", "head"}
    assert checked > 20


def test_the_corrected_module_snr_is_at_most_the_plain_one(quick):
    _, results, _ = quick
    for part in ("alpha_vs_k", "micro_batch"):
        for p in results[part].values():
            plain = {(r.get("micro_batch"), r["K"]): r for r in p["rows"] if r["snr"] == "plain"}
            corrected = {(r.get("micro_batch"), r["K"]): r for r in p["rows"] if r["snr"] == "corrected"}
            assert plain.keys() == corrected.keys()
            for key, row in plain.items():
                for cls, value in row["module_snr"].items():
                    assert corrected[key]["module_snr"][cls] <= value + 1e-12, (part, key, cls)


def test_the_single_pass_measurement_is_mols_calibrate(quick):
    _, results, _ = quick
    check = results["alpha_vs_k"]["llama_micro"]["calibrate_check"]
    assert check["K"] == 4 and check["gradient_samples"] == 4
    assert check["max_relative_difference_module_snr"] < 1e-6
    assert check["max_relative_difference_alpha_high"] < 1e-6


def test_the_micro_batch_part_cuts_the_same_sequences(quick):
    _, results, _ = quick
    part = results["micro_batch"]["llama_micro"]
    assert [(r["micro_batch"], r["K"]) for r in part["rows"] if r["snr"] == "plain"] == [(2, 16), (4, 8)]
    assert len({json.dumps(r["data"], sort_keys=True) for r in part["rows"]}) == 1  # the same sequences for every b
    assert all(r["sequences"] == part["sequences"] == 32 for r in part["rows"])
    # b = 4 over 32 sequences is the alpha-vs-K part's K = 8 (micro-batches of 4): the same numbers
    same = next(r for r in part["rows"] if r["micro_batch"] == 4 and r["snr"] == "plain")
    other = next(r for r in results["alpha_vs_k"]["llama_micro"]["rows"] if r["K"] == 8 and r["snr"] == "plain")
    for cls, value in other["module_snr"].items():
        assert math.isclose(same["module_snr"][cls], value, rel_tol=1e-6)


def test_table12_runs_train_py_and_reports_the_loss_and_k(quick):
    out, results, _ = quick
    table = results["table12"]
    assert [r["name"] for r in table["runs"]] == ["mols-n16-seed0", "mols-n64-seed0"]
    for run in table["runs"]:
        assert (out / "table12" / run["name"] / "summary.json").exists()
        assert math.isfinite(run["final_val_loss"])
        assert run["calibration_sequences"] == 16 * run["calibration_gradient_samples"]
        assert run["command"].startswith("python train.py --config configs/quickstart.yaml")
    # quickstart micro-batch 16: K = ceil(samples / 16), at least 2 (16 samples draw 2 micro-batches)
    assert [r["calibration_gradient_samples"] for r in table["runs"]] == [2, 4]
    assert table["summary"]["mols-n64"]["mean"] == table["runs"][1]["final_val_loss"]


def test_the_tables_and_the_plot_are_written_and_say_what_the_json_says(quick):
    out, results, stdout = quick
    text = (out / "calibration_tables.md").read_text()
    assert (out / "calibration_alpha_vs_k.png").stat().st_size > 10_000
    assert text.strip() in stdout
    row = next(r for r in results["alpha_vs_k"]["llama_micro"]["rows"] if r["K"] == 16 and r["snr"] == "corrected")
    assert "| 16 (64) |" in text and "`snr: corrected`" in text and "Table 12 in miniature" in text
    loss = results["table12"]["runs"][0]["final_val_loss"]
    assert f"{loss:.4f}" in text
    assert f"{row['alphas']['emb']:.3f}"[:4] in text
    # the tables are a function of the JSON alone
    again = subprocess.run([sys.executable, str(SCRIPT), "--out-dir", str(out), "--tables-only",
                            "--plot", str(out / "again.png")], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert (out / "calibration_tables.md").read_text() == text
