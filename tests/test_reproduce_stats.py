"""The statistics of `python -m reproduce results --baseline` (reproduce/stats.py, evidence.py) on
numbers and synthetic run directories whose answers are known: Student's t against a t table and
closed forms, the paired and Welch tests, the seeds a margin needs, a fixed data-equivalent
speed-up recovered from L(D) = a D^-b + c, steps to a target loss, and the learning rate chosen on
the selection split (or the output saying it was chosen on the reported one)."""
import json
import math
from pathlib import Path

import pytest
import yaml

from reproduce import evidence, stats
from reproduce.cli import main as reproduce
from reproduce.runs import find_runs

# ------------------------------------------------------------------ Student's t


@pytest.mark.parametrize("df, quantile", [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042),
                                          (1e7, 1.960)])
def test_t_quantiles_match_a_t_table(df, quantile):
    assert stats.t_quantile(0.975, df) == pytest.approx(quantile, abs=5e-4)
    assert stats.t_quantile(0.025, df) == pytest.approx(-quantile, abs=5e-4)
    assert stats.t_cdf(stats.t_quantile(0.975, df), df) == pytest.approx(0.975, abs=1e-9)


@pytest.mark.parametrize("t, df, p", [
    (1.0, 1, 0.5),                                           # Cauchy: 1 - 2 atan(1) / pi
    (3.0, 1, 1 - 2 * math.atan(3.0) / math.pi),              # 0.205
    (6.928, 2, 1 - 6.928 / math.sqrt(6.928 ** 2 + 2)),       # df 2: p = 1 - |t| / sqrt(t^2 + 2)
    (2.776, 4, 0.050), (2.228, 10, 0.050), (3.169, 10, 0.010), (2.0, 10, 0.073), (0.0, 5, 1.0),
])
def test_two_sided_p_values_match_closed_forms_and_tables(t, df, p):
    assert stats.t_two_sided_p(t, df) == pytest.approx(p, abs=5e-4)


def test_paired_t_by_hand():
    # differences -0.05, -0.03, -0.04: mean -0.04, sd 0.01, se 0.01/sqrt(3), t = -6.928, df 2
    est = stats.paired_t([-0.05, -0.03, -0.04])
    assert (est.design, est.n, est.df) == ("paired", 3, 2)
    assert est.t == pytest.approx(-6.9282, abs=1e-4)
    assert est.p == pytest.approx(0.0202, abs=5e-4)  # 1 - 6.928 / sqrt(50)
    assert (est.low, est.high) == (pytest.approx(-0.04 - 4.3027 * 0.01 / math.sqrt(3), abs=1e-4),
                                   pytest.approx(-0.04 + 4.3027 * 0.01 / math.sqrt(3), abs=1e-4))


def test_welch_t_by_hand():
    # means 2 and 4, variances 1 and 4, n 3 each: se = sqrt(5/3), t = -1.549, df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2)
    est = stats.welch_t([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert est.design == "welch"
    assert est.t == pytest.approx(-2 / math.sqrt(5 / 3), abs=1e-9)
    assert est.df == pytest.approx(2.941, abs=5e-4)
    # the p-value against the t density integrated numerically (Simpson), independent of the beta function
    df = est.df
    density = lambda x: math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi) \
        * (1 + x * x / df) ** (-(df + 1) / 2)
    n, edge = 20000, abs(est.t)
    h = edge / n
    inner = density(0) + density(edge) + sum((4 if i % 2 else 2) * density(i * h) for i in range(1, n))
    assert est.p == pytest.approx(1 - 2 * inner * h / 3, abs=1e-6)
    assert est.p == pytest.approx(0.221, abs=1e-3)  # R: t.test(c(1,2,3), c(2,4,6)): p-value = 0.2209


def test_seeds_needed():
    # paired, sd of the differences = margin: 10 pairs (n = 9: (2.306 + 0.889)^2 = 10.2 > 9; n = 10: 9.89 <= 10)
    assert stats.seeds_needed(1.0, 1.0) == 10
    assert (stats.t_quantile(0.975, 9) + stats.t_quantile(0.8, 9)) ** 2 == pytest.approx(9.89, abs=0.01)
    assert stats.seeds_needed(1.0, 0.5) == 34   # half the margin: about four times the seeds
    assert stats.seeds_needed(0.02, 0.04) == 5
    assert stats.seeds_needed((1.0, 1.0), 1.0) == 17  # unpaired, per arm (d = 1 in two-sample tables)
    assert stats.seeds_needed(0.0, 0.1) == 2 and stats.seeds_needed(1.0, 0.0) is None
    # a small margin: the smallest n that satisfies the formula, counted from the normal approximation up
    n = stats.seeds_needed(1.0, 0.05)
    formula = lambda n: (stats.t_quantile(0.975, n - 1) + stats.t_quantile(0.8, n - 1)) ** 2 / 0.05 ** 2
    assert n >= formula(n) and n - 1 < formula(n - 1) and 3140 < n < 3160
    assert stats.seeds_needed(1.0, 0.001) is None  # over stats.SEEDS_LIMIT


def test_power_law_fit_recovers_its_parameters():
    tokens = [1e6, 2e6, 4e6, 8e6]
    law = lambda d: 2.0 * (d / 1e6) ** -0.3 + 3.0
    fit = stats.fit_power_law(tokens, [law(d) for d in tokens])
    assert (fit.a_per_token * 1e6 ** -0.3, fit.b, fit.c) == (pytest.approx(2.0, rel=1e-6), pytest.approx(0.3, rel=1e-6),
                                                             pytest.approx(3.0, rel=1e-6))
    assert fit.tokens_for(law(12e6)) == pytest.approx(12e6, rel=1e-6)
    assert fit.tokens_for(2.9) == math.inf  # below the asymptote: never reached
    with pytest.raises(stats.FitError, match="3 or more budgets"):
        stats.fit_power_law([1e6, 2e6], [5.0, 4.0])
    with pytest.raises(stats.FitError, match="does not fall"):
        stats.fit_power_law(tokens, [4.0, 4.1, 4.2, 4.3])


def test_first_crossing_interpolates_between_evaluations():
    curve = [(0, 10.0), (100, 5.2), (200, 4.8)]
    assert stats.first_crossing(curve, 5.5) == pytest.approx(100 * 4.5 / 4.8)  # 93.75
    assert stats.first_crossing(curve, 5.0) == pytest.approx(150.0)
    assert stats.first_crossing(curve, 4.8) == 200.0
    assert stats.first_crossing(curve, 4.7) is None


# ------------------------------------------------------------------ synthetic studies

TOKENS_PER_STEP = 32 * 128
STEPS = 1000
B = 0.3
D_MAIN = STEPS * TOKENS_PER_STEP
# a D^-b + c with a set so that 1.5x the tokens lowers the loss by exactly 0.04 at the main budget
A = 0.04 / ((D_MAIN / 1e6) ** -B * (1 - 1.5 ** -B))
C = 3.0


def law(tokens: float) -> float:
    return A * (tokens / 1e6) ** -B + C


def write_run(root: Path, name: str, lr: float, seed: int, final: float, steps: int = STEPS, mols: dict | None = None,
              selection: float | None = None, shuffle_seed: int | None = None, curve: dict | None = None,
              precision: str = "fp32") -> Path:
    """A finished run as train.py writes it (config.yaml, metrics.jsonl, summary.json)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {"run": {"name": name, "seed": seed}, "model": {"size": "llama_tiny"},
              "optimizer": {"name": "adamw", "lr": lr},
              "data": {"shuffle_seed": 42 + seed if shuffle_seed is None else shuffle_seed, "seq_len": 128,
                       "val_selection": selection is not None},
              "train": {"steps": steps, "global_batch": 32, "micro_batch": 16, "precision": precision},
              "mols": mols or {"enabled": False}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    curve = curve or {0: 9.0, steps // 2: final + 0.5, steps: final}
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"kind": "val", "step": s, "loss": v, "ppl": math.exp(v)})
                                                   + "\n" for s, v in sorted(curve.items())))
    summary = {"final_val_loss": final, "final_val_ppl": math.exp(final), "steps": steps,
               "tokens_seen": steps * TOKENS_PER_STEP}
    if selection is not None:
        summary["final_selection_loss"] = selection
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


PAPER_RULE = {"enabled": True, "min_alpha": None}
BASELINE_OFFSETS = (-0.01, 0.0, 0.01)        # per seed; they sum to zero, so means are exact
DIFFERENCES = (-0.05, -0.03, -0.04)          # method - baseline per seed: mean -0.04 = law(1.5 D) - law(D)


@pytest.fixture
def study(tmp_path):
    """AdamW and MoLS, each on a grid of three rates (seed 0) and three seeds at the best; AdamW also
    at 1/8, 1/4 and 1/2 of the steps. MoLS's final loss is the baseline's at 1.5x the tokens."""
    root = tmp_path / "runs"
    base = {s: law(D_MAIN) + BASELINE_OFFSETS[s] for s in range(3)}
    # the grid: 4e-3 has the lowest loss on the REPORTED split, 2e-3 on the selection split
    write_run(root, "adamw_lr1e-3_s0", 1e-3, 0, base[0] + 0.2, selection=base[0] + 0.2)
    write_run(root, "adamw_lr4e-3_s0", 4e-3, 0, base[0] - 0.1, selection=base[0] + 0.1)
    for s in range(3):
        write_run(root, f"adamw_lr2e-3_s{s}", 2e-3, s, base[s], selection=base[s])
        write_run(root, f"mols_lr2e-3_s{s}", 2e-3, s, base[s] + DIFFERENCES[s], mols=PAPER_RULE,
                  selection=base[s] + DIFFERENCES[s])
        for fraction in (8, 4, 2):
            steps = STEPS // fraction
            final = law(steps * TOKENS_PER_STEP) + BASELINE_OFFSETS[s]
            write_run(root, f"adamw_lr2e-3_s{s}_steps{steps}", 2e-3, s, final, steps=steps, selection=final)
    for lr in (1e-3, 4e-3):
        write_run(root, f"mols_lr{lr:.0e}_s0", lr, 0, base[0] + 0.1, mols=PAPER_RULE, selection=base[0] + 0.1)
    return root


def report_of(root: Path, baseline: str = "adamw", **kwargs) -> evidence.Report:
    return evidence.build_report(find_runs([root]), baseline, resamples=200, **kwargs)


def only_comparison(report: evidence.Report) -> evidence.Comparison:
    (comparison,) = report.comparisons
    return comparison


def test_a_fixed_speed_up_is_recovered(study):
    c = only_comparison(report_of(study))
    s = c.speedup
    assert [tokens for tokens, _ in s.budgets] == [STEPS // f * TOKENS_PER_STEP for f in (8, 4, 2, 1)]
    assert s.fit.b == pytest.approx(B, rel=1e-5) and s.fit.c == pytest.approx(C, abs=1e-5)
    assert s.ratio == pytest.approx(1.5, abs=1e-4)
    assert s.steps_needed == pytest.approx(1.5 * STEPS, rel=1e-4)
    assert "beyond the baseline's largest budget" in s.extrapolated  # 1.5x the largest budget
    assert s.low <= s.ratio <= s.high
    # the points lie on the law: leaving any one budget out of the fit finds the same 1.5x
    assert [tokens for tokens, _ in s.without_one] == [tokens for tokens, _ in s.budgets]
    assert all(ratio == pytest.approx(1.5, abs=1e-3) for _, ratio in s.without_one)


def test_the_speed_up_says_how_much_it_hangs_on_one_budget(study):
    for s in range(3):  # the 1/8 budget ends 0.1 higher than the law: dropping it moves the fit
        run = study / f"adamw_lr2e-3_s{s}_steps125"
        summary = json.loads((run / "summary.json").read_text())
        summary["final_val_loss"] += 0.1
        (run / "summary.json").write_text(json.dumps(summary))
    s = only_comparison(report_of(study)).speedup
    ratios = dict(s.without_one)
    assert ratios[D_MAIN // 8] == pytest.approx(1.5, abs=1e-3)  # without the bent point: the law again
    assert abs(s.ratio - 1.5) > 0.01 and min(ratios.values()) < s.ratio < max(ratios.values())
    assert "fitted without one budget it is" in evidence.render(report_of(study))


def test_a_budget_without_which_no_curve_fits_is_named(study, monkeypatch):
    fit = stats.fit_power_law
    smallest = STEPS // 8 * TOKENS_PER_STEP

    def fits_only_with_the_smallest_budget(tokens, losses):
        if min(tokens) != smallest:
            raise stats.FitError("no falling curve")
        return fit(tokens, losses)
    monkeypatch.setattr(stats, "fit_power_law", fits_only_with_the_smallest_budget)
    s = only_comparison(report_of(study)).speedup
    assert s.no_fit_without == [smallest] and len(s.without_one) == 3
    assert "no curve fits without 0.512M tokens" in evidence.render(report_of(study))


def test_a_fit_that_misses_the_baselines_own_loss_gives_no_speed_up(tmp_path, capsys):
    # the docs/evidence.md bf16 study: AdamW's shorter budgets ran at the rate tuned for the longest,
    # so they lie off any power law through the full budget; the fit of all four misses AdamW's own
    # 1,040-step loss by ~0.1 nats, and placed MoLS, which ends 0.03 ABOVE AdamW, at a 1.08x speed-up
    root = tmp_path / "runs"
    adamw, mols = (4.8225, 4.7827, 4.8164), (4.8369, 4.8283, 4.8527)
    for s in range(3):
        write_run(root, f"adamw_s{s}", 5e-3, s, adamw[s], steps=1040, selection=adamw[s])
        write_run(root, f"mols_s{s}", 2.5e-3, s, mols[s], steps=1040, mols=PAPER_RULE, selection=mols[s])
    for steps, final in ((130, 6.684), (260, 6.124), (520, 5.528)):
        write_run(root, f"adamw_s0_steps{steps}", 5e-3, 0, final, steps=steps, selection=final)
    s = only_comparison(report_of(root)).speedup
    full = 1040 * TOKENS_PER_STEP
    assert s.fit is not None and s.misses == pytest.approx(s.fit.loss(full) - sum(adamw) / 3)
    assert s.misses > 0.08 and s.target > sum(adamw) / 3  # off by more than the method's +0.032
    assert s.fit.tokens_for(s.target) > full  # what the fit alone says: a "speed-up" for a method that ends higher
    assert s.ratio is None and s.low is None and "misses the baseline's own final loss at 4.26M tokens" in s.problem
    assert reproduce(["results", str(root), "--baseline", "adamw"]) == 0
    out = capsys.readouterr().out
    assert "refused: the fit misses the baseline" in out and "1.08x" not in out
    assert "Speed-up: not measured: the fit misses the baseline's own final loss" in out
    assert "at the baseline's own budget the fit is +0.0" in out
    # why: the loss falls faster per doubling as the budgets grow, which no a D^-b + c does
    assert "the loss falls by 0.56, 0.60, 0.72 nats per doubling of the tokens from budget to budget" in out
    # the same runs with the budgets on a power law through AdamW's mean: the fit holds and a speed-up is given
    law_through = lambda tokens: 3.0 * (tokens / full) ** -0.5 + sum(adamw) / 3 - 3.0
    for steps in (130, 260, 520):
        summary_path = root / f"adamw_s0_steps{steps}" / "summary.json"
        summary = json.loads(summary_path.read_text())
        summary["final_val_loss"] = summary["final_selection_loss"] = law_through(steps * TOKENS_PER_STEP)
        summary_path.write_text(json.dumps(summary))
    s = only_comparison(report_of(root)).speedup
    assert abs(s.misses) < 1e-3 and s.ratio == pytest.approx(s.fit.tokens_for(s.target) / full) and s.ratio < 1


def test_a_refusal_names_a_shared_rate_when_the_budgets_slow_down_as_a_power_law_would(tmp_path):
    root = tmp_path / "runs"  # drops of 1.0, 0.5, 0.5 per doubling: not faster, yet no a D^-b + c through all four
    for s, (base, method) in enumerate([(4.99, 5.0), (5.0, 5.0), (5.01, 5.02)]):
        write_run(root, f"adamw_s{s}", 5e-3, s, base, steps=1040, selection=base)
        write_run(root, f"mols_s{s}", 5e-3, s, method, steps=1040, mols=PAPER_RULE, selection=method)
    for steps, final in ((130, 7.0), (260, 6.0), (520, 5.5)):
        write_run(root, f"adamw_s0_steps{steps}", 5e-3, 0, final, steps=steps, selection=final)
    s = only_comparison(report_of(root)).speedup
    assert s.ratio is None and abs(s.misses) > 0.01
    assert "the budgets share one learning rate" in s.problem and "per doubling" not in s.problem


def test_each_budget_is_fitted_at_its_own_tuned_rate(study, capsys):
    # the 1/8 budget also ran at twice the rate (seed 0 only), ending 0.05 lower on the selection split
    smallest, steps = STEPS // 8 * TOKENS_PER_STEP, STEPS // 8
    tuned = law(smallest) + BASELINE_OFFSETS[0] - 0.05
    write_run(study, f"adamw_lr4e-3_s0_steps{steps}", 4e-3, 0, tuned, steps=steps, selection=tuned)
    s = only_comparison(report_of(study)).speedup
    assert s.rates == [4e-3, 2e-3, 2e-3, 2e-3]
    assert s.budgets[0][1].value == pytest.approx(tuned) and s.budgets[0][1].n == 1  # its best rate, its seeds
    assert s.budgets[1][1].n == 3
    assert reproduce(["results", str(study), "--baseline", "adamw"]) == 0
    out = capsys.readouterr().out
    assert "each budget at its chosen rate: 0.512M tokens (lr 0.004): " in out


def test_paired_difference_and_its_p_value(study):
    c = only_comparison(report_of(study))
    d = c.difference
    assert (d.design, d.n, d.df) == ("paired", 3, 2)
    assert d.value == pytest.approx(-0.04, abs=1e-9)
    assert d.p == pytest.approx(0.0202, abs=5e-4)  # the hand computation of test_paired_t_by_hand
    assert c.spread == pytest.approx(0.01, abs=1e-9)
    assert c.seeds == stats.seeds_needed(0.01, 0.04) == 3


def test_runs_that_do_not_share_data_order_get_welch(tmp_path):
    root = tmp_path / "runs"
    for s, (base, method) in enumerate([(5.0, 4.9), (5.2, 5.0), (5.1, 5.05)]):
        write_run(root, f"adamw_s{s}", 2e-3, s, base, selection=base)
        write_run(root, f"mols_s{s}", 2e-3, s, method, mols=PAPER_RULE, selection=method, shuffle_seed=100 + s)
    c = only_comparison(report_of(root))
    expected = stats.welch_t([4.9, 5.0, 5.05], [5.0, 5.2, 5.1])
    assert c.difference.design == "welch"
    assert (c.difference.value, c.difference.p) == (pytest.approx(expected.value), pytest.approx(expected.p))
    assert c.seeds == stats.seeds_needed((c.spread[0], c.spread[1]), abs(expected.value))
    assert c.speedup.ratio is None and "3 or more budgets (has 1)" in c.speedup.problem


def test_learning_rate_is_chosen_on_the_selection_split(study):
    report = report_of(study)
    adamw = next(arm for arm in report.arms if not arm.mols and arm.settings["train.steps"] == STEPS)
    assert adamw.chosen_on == "selection"
    assert adamw.lr == 2e-3  # 4e-3 is lower on the reported split, higher on the selection split
    assert [rate.lr for rate in adamw.grid] == [1e-3, 2e-3, 4e-3]
    assert adamw.choice_seeds == [(0, 42)]  # the seed every rate has


def test_without_a_selection_split_the_output_says_so(tmp_path, capsys):
    root = tmp_path / "runs"
    for lr, loss in ((1e-3, 5.2), (2e-3, 5.0)):
        write_run(root, f"adamw_{lr}", lr, 0, loss)
        write_run(root, f"mols_{lr}", lr, 0, loss - 0.1, mols=PAPER_RULE)
    assert reproduce(["results", str(root), "--baseline", "adamw"]) == 0
    out = capsys.readouterr().out
    assert "chosen on the reported split, the numbers it is judged by" in out
    assert "final loss on the REPORTED split" in out
    assert "one seed on a side: no interval, no test" in out


def test_steps_to_target_on_the_curves(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "adamw", 2e-3, 0, 5.0, curve={0: 9.0, 500: 6.0, 1000: 5.0})
    write_run(root, "mols", 2e-3, 0, 4.9, mols=PAPER_RULE, curve={0: 9.0, 500: 5.6, 1000: 4.9})
    steps = only_comparison(report_of(root, target=5.8)).steps
    assert steps.baseline == pytest.approx(600.0)          # 500 + 500 * (6.0 - 5.8) / (6.0 - 5.0)
    assert steps.method == pytest.approx(500 * 3.2 / 3.4)  # 470.6
    default = only_comparison(report_of(root)).steps       # the higher final loss, 5.0
    assert (default.target, default.baseline, default.method) == (5.0, 1000.0, pytest.approx(500 + 500 * 0.6 / 0.7))
    missed = only_comparison(report_of(root, target=4.95)).steps
    assert missed.baseline is None and missed.method == pytest.approx(500 + 500 * 0.65 / 0.7)
    text = evidence.render(report_of(root, target=4.95))
    assert "the baseline does not reach it within its 1,000 steps" in text


def test_the_report_reads_in_plain_words(study, capsys):
    assert reproduce(["results", str(study), "--baseline", "adamw", "--margin", "0.02"]) == 0
    out = capsys.readouterr().out
    assert "p = 0.020: significant at 5%" in out
    assert "paired t-test over 3 seeds that share initialisation (run.seed) and data order" in out
    assert "Seeds needed to detect a difference of 0.020 at 5% significance with 80% power" in out
    assert "1.50x [" in out and "the fit is extrapolated beyond the baseline's largest budget" in out
    seed0 = law(D_MAIN) + BASELINE_OFFSETS[0]  # the grid: seed 0's selection loss at every rate, the chosen one marked
    assert (f"adam (train.steps=1000): 0.001: {seed0 + 0.2:.3f} | 0.002: {seed0:.3f} * | 0.004: {seed0 + 0.1:.3f} "
            "(final loss on the selection split, seed 0)") in out
    assert "one learning rate run, not tuned in its own setting" in out  # the budget arms
    header = next(line for line in out.splitlines() if line.startswith("arm "))
    assert "val loss" in header and "val PPL" in header
    assert reproduce(["results", str(study), "--baseline", "adamw", "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert "| method | baseline | setting | difference [95% CI] |" in markdown
    png = study.parent / "curves.png"
    assert reproduce(["results", str(study), "--baseline", "adamw", "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "### Against the baseline" in markdown


def test_each_method_meets_the_baseline_of_its_own_setting(study):
    # the same two arms in pure bf16, one seed each; a baseline filter that matches both precisions
    write_run(study, "adamw_bf16", 2e-3, 0, 5.5, precision="bf16-pure", selection=5.5)
    write_run(study, "mols_bf16", 2e-3, 0, 5.4, mols=PAPER_RULE, precision="bf16-pure", selection=5.4)
    report = report_of(study)
    pairs = sorted((c.method.where, c.baseline.where) for c in report.comparisons)
    assert [m for m, b in pairs] == [b for m, b in pairs]  # never across settings
    assert len(pairs) == 2 and any("bf16-pure" in m for m, _ in pairs)
    bf16 = next(c for c in report.comparisons if "bf16-pure" in c.method.where)
    assert bf16.difference.value == pytest.approx(-0.1) and bf16.difference.design == ""
    assert "3 or more budgets (has 1)" in bf16.speedup.problem  # the budgets ran in fp32 only
    fp32 = only_comparison(report_of(study, method="train.precision=fp32"))  # --method narrows the comparisons
    assert fp32.method.where == "train.precision=fp32, train.steps=1000"


def test_the_plot_has_a_panel_per_setting(study, monkeypatch, tmp_path):
    from reproduce import plots
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, out: figures.append(fig))
    plots.plot_arms(report_of(study).arms, tmp_path / "one.png")  # fp32 only: the budgets share its panel
    assert [ax.get_title() for ax in figures[-1].axes] == ["Validation loss per arm (reported split)"]
    write_run(study, "adamw_bf16", 2e-3, 0, 5.5, precision="bf16-pure", selection=5.5)
    write_run(study, "mols_bf16", 2e-3, 0, 5.4, mols=PAPER_RULE, precision="bf16-pure", selection=5.4)
    plots.plot_arms(report_of(study).arms, tmp_path / "two.png")
    bf16, fp32 = figures[-1].axes
    assert bf16.get_title().endswith(": train.precision=bf16-pure") and fp32.get_title().endswith(": train.precision=fp32")
    assert len(bf16.get_lines()) == 2 and len(fp32.get_lines()) == 5  # fp32: two full arms and three budgets


def test_filters_that_name_nothing_are_errors(study, capsys):
    assert reproduce(["results", str(study), "--baseline", "lion"]) == 2
    assert "--baseline 'lion' matches none of the arms" in capsys.readouterr().err
    assert reproduce(["results", str(study), "--baseline", "train.stepz=1000"]) == 2
    assert "no run has the setting 'train.stepz'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        reproduce(["results", str(study), "--margin", "0.1"])
    assert stop.value.code == 2 and "--margin only with --baseline" in capsys.readouterr().err


def test_a_loss_below_the_fits_asymptote_is_never_reached(study, capsys):
    for s in range(3):  # far below c = 3.0: no budget of the baseline gets there
        write_run(study, f"floor_s{s}", 2e-3, s, 2.9 + 0.01 * s, mols={"enabled": True, "min_alpha": 1.0},
                  selection=2.9)
    report = report_of(study, method="mols.min_alpha=1.0")
    s = only_comparison(report).speedup
    assert s.tokens_needed == math.inf and s.ratio == math.inf and s.high == math.inf
    text = evidence.render(report)
    assert "an unbounded number of tokens (the target lies below the fit's asymptote c = 3.000)" in text


def test_runs_without_a_partner_are_left_out_of_the_paired_test(study):
    write_run(study, "mols_lr2e-3_s3", 2e-3, 3, 3.0, mols=PAPER_RULE, selection=3.0)  # no AdamW seed 3
    c = only_comparison(report_of(study))
    assert c.difference.design == "paired" and c.difference.n == 3 and c.unpaired_left_out == 1
    assert "1 run(s) without a partner left out" in evidence.render(report_of(study))


def test_a_study_in_progress_says_what_is_missing(tmp_path, capsys):
    root = tmp_path / "runs"
    write_run(root, "adamw", 2e-3, 0, 5.0, selection=5.0)
    (write_run(root, "mols", 2e-3, 0, 4.9, mols=PAPER_RULE, selection=4.9) / "summary.json").unlink()  # running
    assert reproduce(["results", str(root), "--baseline", "adamw"]) == 0
    out = capsys.readouterr().out
    assert "no finished run yet for the method" in out
    assert "adam+mols: 0.002: running (nothing finished yet)" in out
    assert "0 (+1 running)" in out and "Speed-up fits" not in out
    # one rate of the method's grid finished, the other still running: its choice is provisional
    write_run(root, "mols_lr1e-3", 1e-3, 0, 5.1, mols=PAPER_RULE, selection=5.1)
    assert reproduce(["results", str(root), "--baseline", "adamw"]) == 0
    out = capsys.readouterr().out
    assert "selection split (grid unfinished)" in out
    assert "adam+mols: 0.001: 5.100 * | 0.002: running (final loss on the selection split, seed 0)" in out
    assert "baseline's steps over the method's" in out


def test_the_change_of_an_effect_between_settings_is_paired_over_seeds(study):
    # MoLS against AdamW again in pure bf16, same seeds: per seed the difference moves by a known amount
    shifts = (-0.02, -0.03, -0.01)  # bf16 difference - fp32 difference: mean -0.02, sd 0.01
    for s in range(3):
        base = law(D_MAIN) + 0.3 + BASELINE_OFFSETS[s]
        write_run(study, f"adamw_bf16_s{s}", 2e-3, s, base, precision="bf16-pure", selection=base)
        method = base + DIFFERENCES[s] + shifts[s]
        write_run(study, f"mols_bf16_s{s}", 2e-3, s, method, mols=PAPER_RULE, precision="bf16-pure", selection=method)
    report = report_of(study)
    (x,) = report.contrasts
    assert x.changed == "train.precision"
    assert "bf16-pure" in x.first.method.where and "fp32" in x.second.method.where  # arms sort by setting
    change = x.change  # fp32 - bf16 = the shifts with their sign turned: mean +0.02, sd 0.01, as by hand
    assert (change.design, change.n, change.df) == ("paired", 3, 2)
    t = 0.02 / (0.01 / math.sqrt(3))  # df 2: p = 1 - |t| / sqrt(t^2 + 2) = 0.074
    assert change.value == pytest.approx(0.02, abs=1e-9) and change.p == pytest.approx(1 - t / math.sqrt(t * t + 2))
    text = evidence.render(report)
    assert "Does the effect depend on the setting?" in text
    assert "train.precision=bf16-pure" in text and "paired t over 3 shared seeds" in text
    # seeds that do not meet: Welch's test on the two sets of per-seed differences
    for s in range(3):
        for arm in ("adamw", "mols"):
            (study / f"{arm}_bf16_s{s}").rename(study / f"{arm}_bf16_s{s + 3}")
            config = yaml.safe_load((study / f"{arm}_bf16_s{s + 3}" / "config.yaml").read_text())
            config["run"]["seed"], config["data"]["shuffle_seed"] = s + 3, 45 + s
            (study / f"{arm}_bf16_s{s + 3}" / "config.yaml").write_text(yaml.safe_dump(config))
    (x,) = report_of(study).contrasts
    change = x.change  # two independent differences: se^2 = 0.01^2/3 (fp32) + 0.01^2/3 (bf16), df 4
    assert change.design == "welch" and change.value == pytest.approx(0.02, abs=1e-9)
    assert change.df == pytest.approx(4) and change.t == pytest.approx(0.02 / math.sqrt(2 * 0.01 ** 2 / 3))
    assert change.p == pytest.approx(stats.t_two_sided_p(change.t, 4))
    assert "Welch t on the two differences" in evidence.render(report_of(study))


def test_a_change_with_one_seed_on_a_side_has_no_interval(study):
    write_run(study, "adamw_bf16", 2e-3, 0, 5.5, precision="bf16-pure", selection=5.5)
    write_run(study, "mols_bf16", 2e-3, 0, 5.4, mols=PAPER_RULE, precision="bf16-pure", selection=5.4)
    (x,) = report_of(study).contrasts
    assert x.change.value == pytest.approx(-0.04 - (-0.1), abs=1e-9) and x.change.low is None and x.change.p is None
    assert "none: a difference without an interval (one seed)" in evidence.render(report_of(study))


def test_only_comparisons_that_differ_in_one_setting_are_contrasted(study):
    for s in range(3):  # both arms in bf16, at the full budget and at half of it
        for steps in (STEPS, STEPS // 2):
            base = law(steps * TOKENS_PER_STEP) + 0.3 + BASELINE_OFFSETS[s]
            write_run(study, f"adamw_bf16_s{s}_{steps}", 2e-3, s, base, steps=steps, precision="bf16-pure",
                      selection=base)
            write_run(study, f"mols_bf16_s{s}_{steps}", 2e-3, s, base + DIFFERENCES[s], steps=steps, mols=PAPER_RULE,
                      precision="bf16-pure", selection=base)
    report = report_of(study)
    assert len(report.comparisons) == 3  # fp32 at 1000 steps, bf16 at 500 and at 1000
    assert sorted(x.changed for x in report.contrasts) == ["train.precision", "train.steps"]  # not both at once


def test_no_change_is_reported_between_different_methods(study):
    for s in range(3):  # the floor against AdamW, in fp32 like the paper's rule: two methods, not two settings
        write_run(study, f"floor_s{s}", 2e-3, s, law(D_MAIN) + BASELINE_OFFSETS[s] - 0.01,
                  mols={"enabled": True, "min_alpha": 1.0}, selection=law(D_MAIN))
    report = report_of(study)
    assert len(report.comparisons) == 2 and report.contrasts == []
    assert "Does the effect depend" not in evidence.render(report)
