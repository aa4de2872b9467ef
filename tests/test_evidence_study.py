"""scripts/evidence_study.py plans and resumes the evidence study (docs/evidence.md) from the runs
already in its directory: each phase reads the rates the fp32 grid chose, and the bf16 grid tunes
AdamW, the bf16 MoLS arm and AdamW's shorter budgets again around them, extending a grid whose best
rate sits at an end. Summaries stand in for finished runs; nothing trains here."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("evidence_study", ROOT / "scripts" / "evidence_study.py")
study_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study_script)
run_name = study_script.run_name

# selection-half losses, seed 0, as in docs/evidence.md (fp32 grid) and docs/evidence_runs (bf16)
FP32_GRID = {"adamw": {1.25e-3: 4.942, 2.5e-3: 4.769, 5e-3: 4.756, 1e-2: 5.201},
             "mols": {1.25e-3: 5.137, 2.5e-3: 5.097, 5e-3: 5.209},
             "mols_floor": {1.25e-3: 4.814, 2.5e-3: 4.711, 5e-3: 4.796}}
BF16 = {("adamw", 1040): {2.5e-3: 4.934, 5e-3: 4.841},
        ("mols_floor", 1040): {2.5e-3: 4.859, 5e-3: 4.870},
        ("adamw", 130): {1.25e-3: 6.92, 2.5e-3: 6.737, 5e-3: 6.748, 1e-2: 6.905},
        ("adamw", 260): {1.25e-3: 6.31, 2.5e-3: 6.117, 5e-3: 6.194, 1e-2: 6.543},
        ("adamw", 520): {2.5e-3: 5.510, 5e-3: 5.569}}


def finished(root: Path, name: str, loss: float) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "summary.json").write_text(json.dumps({"final_val_loss": loss, "final_selection_loss": loss}))


def test_the_bf16_grid_plans_the_runs_it_lacks_around_the_fp32_choices(tmp_path, capsys):
    for arm, grid in FP32_GRID.items():
        for lr, loss in grid.items():
            finished(tmp_path, run_name(arm, lr, 0), loss)
        best = min(grid, key=grid.get)
        for seed in (1, 2):
            finished(tmp_path, run_name(arm, best, seed), grid[best])
    for (arm, steps), grid in BF16.items():
        for lr, loss in grid.items():
            finished(tmp_path, run_name(arm, lr, 0, steps, "bf16-pure"), loss)

    assert study_script.main(["--out-dir", str(tmp_path), "--phases", "bf16_grid", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "best learning rates (selection half, seed 0): adamw 0.005, mols 0.0025, mols_floor 0.0025" in out
    would_run = {line.split()[-1] for line in out.splitlines() if line.startswith("[study] would run")}
    # AdamW: 2.5e-3, 5e-3, 1e-2 around its 5e-3; the floor (the better MoLS arm): 1.25e-3, 2.5e-3, 5e-3;
    # the 1/8 and 1/4 budgets have all theirs, extended to 1.25e-3 as 2.5e-3 won; the 1/2 budget lacks 1e-2
    assert would_run == {"adamw_lr0.01_s0_bf16-pure", "mols_floor_lr0.00125_s0_bf16-pure",
                         "adamw_lr0.01_s0_steps520_bf16-pure"}
    assert "best in bf16-pure (selection half, seed 0): adamw_lr0.0025_s0_steps130_bf16-pure" in out
    assert "best in bf16-pure (selection half, seed 0): adamw_lr0.0025_s0_steps260_bf16-pure" in out


def test_a_grid_is_extended_while_its_best_rate_is_at_an_end(tmp_path):
    ran = []
    losses = {1.25e-3: 6.0, 2.5e-3: 5.5, 5e-3: 5.2, 1e-2: 5.1, 2e-2: 5.3}  # best 1e-2, found by one step each way

    class Trained(study_script.Study):
        def run(self, arm, lr, seed, steps=study_script.STEPS, precision="fp32"):
            ran.append((lr, steps, precision))
            return {"final_val_loss": losses[lr], "final_selection_loss": losses[lr]}

    study = Trained(tmp_path, 1, "python", dry=False)
    assert study_script.best_rate(study, "adamw", [2.5e-3, 5e-3], 2, 520, "bf16-pure") == 1e-2
    assert [lr for lr, _, _ in ran] == [2.5e-3, 5e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-3, 5e-3, 1e-2, 2e-2]
    assert {(steps, precision) for _, steps, precision in ran} == {(520, "bf16-pure")}
