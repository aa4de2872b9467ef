"""Methods against a baseline with the statistics an optimizer claim needs
(`python -m reproduce results ROOTS --baseline FILTER`; the formulas are in reproduce/stats.py):

- arms: runs of one (model, method, MoLS) and every setting that changes training (as `results`
  groups them), except the learning rate and the seeds (run.seed, data.shuffle_seed); each arm's
  learning rate is chosen on its runs' final loss on the selection split (data.val_selection),
  as a mean over the seeds run at every rate of its grid, or, when the runs have no selection
  split, on the reported split (and the output says so);
- every method arm against the baseline arm that ran in the same setting (they differ only in the
  method: mols.* and optimizer.* settings): the final-loss difference with its 95% interval, from a
  paired t-test when both arms have two or more runs that share run.seed (initialisation) and
  data.shuffle_seed (data order), otherwise Welch's t-test; the seeds the observed spread would need
  to detect a margin at 5% significance with 80% power;
- the data-equivalent speed-up: L(D) = a D^-b + c fitted to the baseline's final loss at several
  budgets (arms that differ from it only in train.steps, each at its own chosen learning rate: a
  budget run at several rates is tuned like any arm), the tokens it needs to reach the method's final
  loss, divided by the method's tokens (interval: a bootstrap over seeds); refused when the fit misses
  the baseline's own final loss at the method's budget by as much as the method differs from it (the
  curve cannot then place the method's loss, and may give a speed-up to a method that ends higher);
- steps to a target loss (default: the higher of the two final losses) on the mean validation curves;
- whether the effect depends on where it ran: for one method against its baseline in two settings
  (fp32 and bf16-pure, say), the change in the method-baseline difference, paired over the seeds
  both settings ran (a seed is the same initialisation and data order in each).

A filter (--baseline, --method) is comma-separated terms that must all hold: a method name (the
label `results` shows, e.g. adam, or the optimizer's name, e.g. adamw; NAME+mols for it with MoLS)
and KEY=VALUE for any setting (train.precision=bf16-pure, mols.min_alpha=null, model=llama_tiny;
values as in YAML).
"""
from __future__ import annotations

import math
import random
import re
import statistics
import sys
from dataclasses import dataclass, field
from typing import Optional

import yaml

from configs import UserError
from reproduce import stats
from reproduce.runs import Run
from reproduce.stats import Estimate, PowerLaw

SEED_SETTINGS = ("data.shuffle_seed",)  # vary between the seeds of one arm, like run.seed
METHOD_SETTINGS = ("mols.", "optimizer.")  # what a method is; every other setting is where it ran
RESAMPLES = 1000  # bootstrap resamples of the speed-up's interval


class EvidenceError(UserError):
    """A filter that names nothing or an unknown setting (one line, exit status 2)."""


PairKey = tuple  # (run.seed, data.shuffle_seed): runs with the same key share initialisation and data order


def pair_key(run: Run) -> PairKey:
    return run.seed, run.settings.get("data.shuffle_seed")


def show(value) -> str:
    """A setting's value as it is written in YAML (and in a filter)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


# ------------------------------------------------------------------------------------------------
# Arms and their learning rates
# ------------------------------------------------------------------------------------------------

@dataclass
class RateScore:
    lr: float
    score: Optional[float]  # mean loss on the choice split over the choice seeds; None: nothing finished
    running: int            # runs at this rate not finished yet


@dataclass(eq=False)  # an arm is itself: compared by identity
class Arm:
    model: str
    method: str
    mols: bool
    optimizer: str
    settings: dict                                   # minus SEED_SETTINGS
    runs: dict = field(default_factory=dict)         # lr -> {PairKey: Run}
    label: str = ""                                  # method and the method settings it differs in
    where: str = ""                                  # the other settings it differs in ("" if none)
    lr: Optional[float] = None                       # the chosen learning rate (None: nothing finished)
    chosen_on: str = ""                              # "selection" or "reported"
    grid: list[RateScore] = field(default_factory=list)
    choice_seeds: list = field(default_factory=list)  # the PairKeys the choice averaged over

    @property
    def name(self) -> str:
        return f"{self.label} ({self.where})" if self.where else self.label

    def finished(self, lr: Optional[float] = None) -> dict[PairKey, Run]:
        """The finished runs at a learning rate (default: the chosen one)."""
        lr = self.lr if lr is None else lr
        return {key: run for key, run in self.runs.get(lr, {}).items() if run.final_loss is not None}

    def running(self) -> int:
        """Unfinished runs at the chosen rate (at every rate while none has finished)."""
        pools = [self.runs.get(self.lr, {})] if self.lr is not None else list(self.runs.values())
        return sum(run.final_loss is None for pool in pools for run in pool.values())

    def final_losses(self) -> list[float]:
        return [run.final_loss for _, run in sorted(self.finished().items(), key=lambda item: repr(item[0]))]

    def tokens(self, lr: Optional[float] = None) -> Optional[float]:
        """Tokens of a finished run at a learning rate (default: the chosen one), from summary.json;
        else train.steps x train.global_batch x data.seq_len."""
        counts = [run.tokens for run in self.finished(lr).values() if run.tokens]
        if counts:
            return statistics.fmean(counts)
        s = self.settings
        if all(isinstance(s.get(k), int) for k in ("train.steps", "train.global_batch", "data.seq_len")):
            return s["train.steps"] * s["train.global_batch"] * s["data.seq_len"]
        return None

    def tokens_per_step(self) -> Optional[float]:
        runs = [run for run in self.finished().values() if run.tokens and run.steps]
        if runs:
            return statistics.fmean(run.tokens / run.steps for run in runs)
        steps, tokens = self.settings.get("train.steps"), self.tokens()
        return tokens / steps if tokens and steps else None

    def curve(self) -> list[tuple[int, float]]:
        """Mean validation loss over the finished seeds, at the steps every one of them logged."""
        runs = list(self.finished().values())
        if not runs:
            return []
        steps = sorted(set.intersection(*(set(run.val_loss) for run in runs)))
        return [(step, statistics.fmean(run.val_loss[step] for run in runs)) for step in steps]


def build_arms(runs: list[Run]) -> list[Arm]:
    """Runs grouped into arms (all learning rates and seeds of one setting), labelled by what
    differs between the arms, each with its learning rate chosen."""
    arms: dict[tuple, Arm] = {}
    for run in runs:
        settings = {k: v for k, v in run.settings.items() if k not in SEED_SETTINGS}
        key = (run.model, run.method, run.mols, tuple(sorted((k, repr(v)) for k, v in settings.items())))
        arm = arms.setdefault(key, Arm(run.model, run.method, run.mols, run.optimizer, settings))
        seeds = arm.runs.setdefault(run.lr, {})
        if pair_key(run) in seeds:
            print(f"warning: seed {run.seed} of {arm.method} at lr {run.lr:.3g} found twice with the same settings; "
                  f"using {run.path}", file=sys.stderr)
        seeds[pair_key(run)] = run
    arms_list = list(arms.values())
    _label(arms_list)
    for arm in arms_list:
        choose_rate(arm)
    return sorted(arms_list, key=lambda a: (a.model, natural(a.where), a.mols, natural(a.label)))


def natural(text: str) -> list:
    """Sort key that puts train.steps=125 before train.steps=1000."""
    return [(0, float(part), "") if part[:1].isdigit() else (1, 0.0, part)
            for part in re.split(r"(\d+(?:\.\d+)?)", text) if part]


def _label(arms: list[Arm]) -> None:
    """label: the method and its settings that differ between the arms that have them (MoLS's only
    among MoLS arms); where: every other setting that differs between the arms."""
    keys = sorted({k for arm in arms for k in arm.settings})
    method_keys = [k for k in keys if k.startswith(METHOD_SETTINGS)
                   and len({repr(arm.settings[k]) for arm in arms if k in arm.settings}) > 1]
    where_keys = [k for k in keys if not k.startswith(METHOD_SETTINGS)
                  and len({repr(arm.settings.get(k, "(absent)")) for arm in arms}) > 1]
    several_models = len({arm.model for arm in arms}) > 1
    for arm in arms:
        own = [f"{k}={show(arm.settings[k])}" for k in method_keys if k in arm.settings]
        arm.label = " ".join([arm.method + ("+mols" if arm.mols else ""), *own])
        where = [f"{k}={show(arm.settings[k]) if k in arm.settings else '(absent)'}" for k in where_keys]
        arm.where = ", ".join(([f"model={arm.model}"] if several_models else []) + where)


def choose_rate(arm: Arm) -> None:
    """The learning rate with the lowest mean final loss on the selection split (the reported one
    when a run lacks it), over the seeds run at every rate (all of a rate's seeds when no seed is
    common to all)."""
    finished = {lr: arm.finished(lr) for lr in sorted(arm.runs)}
    done = {lr: runs for lr, runs in finished.items() if runs}
    every = [run for runs in done.values() for run in runs.values()]
    arm.chosen_on = "selection" if every and all(r.selection_loss is not None for r in every) else "reported"
    common = set.intersection(*(set(runs) for runs in done.values())) if done else set()
    arm.choice_seeds = sorted(common, key=repr)

    def score(runs: dict[PairKey, Run]) -> Optional[float]:
        if not runs:
            return None
        chosen = [runs[k] for k in common] if common else list(runs.values())
        return statistics.fmean(r.selection_loss if arm.chosen_on == "selection" else r.final_loss for r in chosen)

    arm.grid = [RateScore(lr, score(finished[lr]), len(arm.runs[lr]) - len(finished[lr])) for lr in sorted(arm.runs)]
    scored = [rate for rate in arm.grid if rate.score is not None]
    arm.lr = min(scored, key=lambda rate: rate.score).lr if scored else None


# ------------------------------------------------------------------------------------------------
# Filters
# ------------------------------------------------------------------------------------------------

def matcher(text: str, arms: list[Arm], flag: str):
    """The arms a filter selects (see the module's docstring)."""
    known = {k for arm in arms for k in arm.settings} | {"model", "mols.enabled"}
    terms = []
    for term in (t.strip() for t in text.split(",")):
        if not term:
            continue
        if "=" in term:
            key, value = (part.strip() for part in term.split("=", 1))
            if key not in known:
                raise EvidenceError(f"{flag} {text!r}: no run has the setting {key!r}")
            terms.append((key, yaml.safe_load(value)))
        else:
            name, plus, suffix = term.partition("+")
            if plus and suffix != "mols":
                raise EvidenceError(f"{flag} {text!r}: {term!r} is not a method name or NAME+mols")
            terms.append((name, bool(plus)))

    def matches(arm: Arm) -> bool:
        for key, value in terms:
            if key == "model":
                ok = arm.model == str(value)
            elif key == "mols.enabled":
                ok = arm.mols == value
            elif key in known:
                ok = key in arm.settings and arm.settings[key] == value
            else:  # a method name: its label or its optimizer's name, with or without MoLS
                ok = key in (arm.method, arm.optimizer) and arm.mols == value
            if not ok:
                return False
        return True
    return matches


def differing_settings(a: Arm, b: Arm, ignore: tuple = ()) -> set:
    """The settings in which two arms differ ("model" among them), except those starting with `ignore`."""
    absent = object()
    names = {k for k in a.settings.keys() | b.settings.keys() if not k.startswith(ignore)}
    out = {k for k in names if a.settings.get(k, absent) != b.settings.get(k, absent)}
    return out | ({"model"} if a.model != b.model else set())


# ------------------------------------------------------------------------------------------------
# Comparisons
# ------------------------------------------------------------------------------------------------

@dataclass
class Speedup:
    budgets: list[tuple[float, Estimate]]      # (tokens, final loss) of the baseline per budget
    rates: list[float] = field(default_factory=list)  # each budget's chosen learning rate
    fit: Optional[PowerLaw] = None
    misses: Optional[float] = None              # fit - measured, the baseline's mean at the method's budget
    problem: str = ""                           # why there is no speed-up ("" when there is one)
    target: Optional[float] = None              # the method's mean final loss
    method_tokens: Optional[float] = None
    tokens_needed: Optional[float] = None       # inf: the fit never reaches the target
    steps_needed: Optional[float] = None
    ratio: Optional[float] = None
    low: Optional[float] = None
    high: Optional[float] = None
    unreached: float = 0.0                      # share of resamples whose target lies below the fit's c
    extrapolated: str = ""                      # "" or where the needed tokens lie outside the budgets
    without_one: list = field(default_factory=list)  # (budget's tokens, ratio) refitted without that budget
    no_fit_without: list = field(default_factory=list)  # budgets without which no curve fits


@dataclass
class StepsToTarget:
    target: float
    how: str                                    # where the target comes from
    baseline: Optional[float]
    method: Optional[float]
    baseline_last: int
    method_last: int


@dataclass
class Comparison:
    method: Arm
    baseline: Arm
    difference: Optional[Estimate] = None       # method - baseline
    unpaired_left_out: int = 0                  # runs without a partner when the test is paired
    spread: Optional[float | tuple] = None      # sd of the paired differences, or (s_method, s_baseline)
    margin: Optional[float] = None
    seeds: Optional[int] = None
    speedup: Optional[Speedup] = None
    steps: Optional[StepsToTarget] = None
    per_seed: dict = field(default_factory=dict)  # PairKey -> method - baseline, when the test is paired


@dataclass
class Contrast:
    """One method against its baseline in two settings: does the difference change between them?"""
    first: Comparison
    second: Comparison
    changed: str                                # the one setting the two comparisons differ in
    change: Optional[Estimate] = None           # second's difference - first's
    left_out: int = 0                           # seeds that only one setting ran (paired test)


def contrast(first: Comparison, second: Comparison, changed: str) -> Contrast:
    """The change in the method-baseline difference between two settings: a paired t-test on the
    per-seed changes when both comparisons are paired and share two or more seeds; otherwise the two
    differences as independent estimates (Welch); with a side that has no interval, the change of
    the means alone."""
    out = Contrast(first, second, changed)
    a, b = first.per_seed, second.per_seed
    common = sorted(set(a) & set(b), key=repr)
    d1, d2 = first.difference, second.difference
    if len(common) >= 2:
        out.change = stats.paired_t([b[k] - a[k] for k in common])
        out.left_out = len(a) + len(b) - 2 * len(common)
    elif d1.se is not None and d2.se is not None:
        out.change = stats.difference_of(d2, d1)
    else:
        out.change = Estimate(d2.value - d1.value, None, None, min(d1.n, d2.n))
    return out


def contrasts(comparisons: list[Comparison]) -> list[Contrast]:
    """Every two comparisons of the same method and baseline whose arms differ, method against method
    and baseline against baseline, in the same one setting."""
    out = []
    done = [c for c in comparisons if c.difference is not None]
    for i, first in enumerate(done):
        for second in done[i + 1:]:
            changed = differing_settings(first.method, second.method)
            if (len(changed) == 1 and differing_settings(first.baseline, second.baseline) == changed
                    and first.method.label == second.method.label and first.baseline.label == second.baseline.label
                    and not next(iter(changed)).startswith(METHOD_SETTINGS)):
                out.append(contrast(first, second, next(iter(changed))))
    return out


def final_difference(c: Comparison) -> None:
    """c.difference, c.unpaired_left_out, c.per_seed and c.spread (what the seeds-needed count uses)."""
    m, b = c.method.finished(), c.baseline.finished()
    pairs = sorted(set(m) & set(b), key=repr)
    if len(pairs) >= 2:
        c.per_seed = {k: m[k].final_loss - b[k].final_loss for k in pairs}
        c.unpaired_left_out = len(m) + len(b) - 2 * len(pairs)
        c.difference, c.spread = stats.paired_t(list(c.per_seed.values())), statistics.stdev(c.per_seed.values())
        return
    ml, bl = c.method.final_losses(), c.baseline.final_losses()
    if len(ml) >= 2 and len(bl) >= 2:
        c.difference, c.spread = stats.welch_t(ml, bl), (statistics.stdev(ml), statistics.stdev(bl))
    elif ml and bl:
        c.difference = Estimate(statistics.fmean(ml) - statistics.fmean(bl), None, None, min(len(ml), len(bl)))


def speedup(method: Arm, baseline: Arm, budget_arms: list[Arm], resamples: int = RESAMPLES) -> Speedup:
    """The tokens the baseline needs to reach the method's final loss, from L(D) = a D^-b + c fitted
    to its final loss at every budget (mean over seeds, each budget at its own chosen rate), over the
    method's tokens; the interval is the 2.5-97.5% percentile range over bootstrap resamples of the
    seeds (each budget's and the method's drawn independently, with replacement, and the curve
    refitted). No ratio when the fit misses the baseline's own loss at the method's budget by as much
    as the method's difference from that loss: the curve's error there is then as large as what it
    is asked to measure."""
    losses = []  # (tokens, [final losses], lr) per budget
    for arm in budget_arms:
        values, tokens = [run.final_loss for run in arm.finished().values()], arm.tokens()
        if values and tokens:
            losses.append((tokens, values, arm.lr))
    losses.sort(key=lambda budget: budget[0])
    result = Speedup(budgets=[(tokens, stats.mean_interval(values)) for tokens, values, _ in losses],
                     rates=[lr for _, _, lr in losses])
    losses = [(tokens, values) for tokens, values, _ in losses]
    method_losses, result.method_tokens = method.final_losses(), method.tokens()
    if not method_losses or not result.method_tokens:
        result.problem = "the method has no finished run with a token count"
        return result
    try:
        result.fit = stats.fit_power_law([t for t, _ in losses], [statistics.fmean(v) for _, v in losses])
    except stats.FitError as err:
        result.problem = str(err)
        return result
    result.target = statistics.fmean(method_losses)
    measured, own_tokens = baseline.final_losses(), baseline.tokens()
    if measured and own_tokens:  # where the curve must be right: the point the method is judged against
        measured_mean, fitted = statistics.fmean(measured), result.fit.loss(own_tokens)
        result.misses, difference = fitted - measured_mean, result.target - measured_mean
        if abs(result.misses) >= abs(difference):
            result.problem = (f"the fit misses the baseline's own final loss at {millions(own_tokens)} tokens "
                              f"by {result.misses:+.3f} (fit {fitted:.3f}, measured "
                              f"{measured_mean:.3f}), as much as the method's difference from it "
                              f"({difference:+.3f}): the budgets do not lie on one curve closely enough to place "
                              "the method's loss" + why_off_the_curve(losses, result.rates))
            return result
    result.tokens_needed = result.fit.tokens_for(result.target)
    result.ratio = result.tokens_needed / result.method_tokens
    per_step = baseline.tokens_per_step()
    result.steps_needed = result.tokens_needed / per_step if per_step else None
    if result.tokens_needed > losses[-1][0]:
        result.extrapolated = f"beyond the baseline's largest budget ({losses[-1][0] / 1e6:.3g}M tokens)"
    elif result.tokens_needed < losses[0][0]:
        result.extrapolated = f"below the baseline's smallest budget ({losses[0][0] / 1e6:.3g}M tokens)"

    if len(losses) >= 4:  # the bootstrap covers the seeds; this, how much the answer hangs on one budget
        for left_out in range(len(losses)):
            rest = losses[:left_out] + losses[left_out + 1:]
            try:
                fit = stats.fit_power_law([t for t, _ in rest], [statistics.fmean(v) for _, v in rest])
            except stats.FitError:
                result.no_fit_without.append(losses[left_out][0])
                continue
            result.without_one.append((losses[left_out][0], fit.tokens_for(result.target) / result.method_tokens))

    rng = random.Random(0)  # the same interval every time the table is made
    ratios = []
    for _ in range(resamples):
        means = [statistics.fmean(rng.choices(values, k=len(values))) for _, values in losses]
        target = statistics.fmean(rng.choices(method_losses, k=len(method_losses)))
        try:
            fit = stats.fit_power_law([t for t, _ in losses], means)
        except stats.FitError:
            ratios.append(math.inf)  # no falling curve: the target counts as never reached
            continue
        ratios.append(fit.tokens_for(target) / result.method_tokens)
    result.low, result.high = stats.percentile(ratios, 0.025), stats.percentile(ratios, 0.975)
    result.unreached = sum(math.isinf(r) for r in ratios) / len(ratios)
    return result


def why_off_the_curve(losses: list[tuple[float, list[float]]], rates: list[float]) -> str:
    """A likely reason the budgets lie off a D^-b + c: that curve gains less with each doubling of
    the tokens than with the one before (it is convex in log D), so budgets whose loss falls faster
    per doubling as they grow cannot lie on it; or the budgets share one rate, tuned for one of them."""
    per_doubling = [(statistics.fmean(a) - statistics.fmean(b)) / math.log2(tb / ta)
                    for (ta, a), (tb, b) in zip(losses, losses[1:])]
    if any(later > earlier for earlier, later in zip(per_doubling, per_doubling[1:])):
        return (" (the loss falls by " + ", ".join(f"{d:.2f}" for d in per_doubling) + " nats per doubling of the "
                "tokens from budget to budget; a D^-b + c falls by less at each doubling than at the one before)")
    if len(set(rates)) == 1:
        return " (the budgets share one learning rate: shorter budgets run at a rate tuned for another can bend it)"
    return ""


def steps_to_target(method: Arm, baseline: Arm, target: Optional[float]) -> Optional[StepsToTarget]:
    mc, bc = method.curve(), baseline.curve()
    if not mc or not bc:
        return None
    how = "given"
    if target is None:
        target, how = max(mc[-1][1], bc[-1][1]), "the higher of the two final losses"
    return StepsToTarget(target, how, stats.first_crossing(bc, target), stats.first_crossing(mc, target),
                         bc[-1][0], mc[-1][0])


@dataclass
class Report:
    arms: list[Arm]
    comparisons: list[Comparison]
    baselines: list[Arm]
    notes: list[str]                            # arms left out of the comparisons, and why
    contrasts: list[Contrast] = field(default_factory=list)


def build_report(runs: list[Run], baseline: str, method: Optional[str] = None, margin: Optional[float] = None,
                 target: Optional[float] = None, resamples: int = RESAMPLES) -> Report:
    arms = build_arms(runs)
    is_baseline = matcher(baseline, arms, "--baseline")
    is_method = matcher(method, arms, "--method") if method else (lambda arm: True)
    baselines = [arm for arm in arms if is_baseline(arm)]
    if not baselines:
        raise EvidenceError(f"--baseline {baseline!r} matches none of the arms: "
                            + "; ".join(arm.name for arm in arms))
    notes, comparisons = [], []
    for arm in arms:
        if is_baseline(arm) or not is_method(arm):
            continue
        same_setting = [base for base in baselines if not differing_settings(arm, base, METHOD_SETTINGS)]
        if len(same_setting) != 1:
            notes.append(f"{arm.name}: not compared: " + (
                "no baseline arm ran in the same setting" if not same_setting
                else f"{len(same_setting)} baseline arms ran in its setting (narrow --baseline)"))
            continue
        base = same_setting[0]
        comparison = Comparison(arm, base)
        comparisons.append(comparison)
        if arm.lr is None or base.lr is None:
            continue
        final_difference(comparison)
        if comparison.difference is not None:
            comparison.margin = abs(margin if margin is not None else comparison.difference.value)
            if comparison.spread is not None:
                comparison.seeds = stats.seeds_needed(comparison.spread, comparison.margin)
        budgets = [other for other in baselines if other.lr is not None and other.finished()
                   and differing_settings(other, base) <= {"train.steps"}]  # base itself among them
        comparison.speedup = speedup(arm, base, budgets, resamples)
        comparison.steps = steps_to_target(arm, base, target)
    if method and not comparisons and not notes:
        raise EvidenceError(f"--method {method!r} matches no arm outside the baseline's")
    return Report(arms, comparisons, baselines, notes, contrasts(comparisons))


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------

def table(header: list[str], rows: list[list[str]], style: str) -> list[str]:
    if style == "markdown":
        return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
            ["| " + " | ".join(row) + " |" for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]


def interval(est: Optional[Estimate], digits: int = 3, sign: bool = False, transform=None) -> str:
    if est is None:
        return "–"
    f = transform or (lambda x: x)
    fmt = f"{{:{'+' if sign else ''}.{digits}f}}"
    text = fmt.format(f(est.value))
    return text + (f" [{fmt.format(f(est.low))}, {fmt.format(f(est.high))}]" if est.low is not None else "")


def verdict(p: float) -> str:
    shown = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    return f"{shown}: {'significant' if p < 0.05 else 'not significant'} at 5%"


def design_text(c: Comparison) -> str:
    d = c.difference
    if d is None or d.design == "":
        return "none (one seed)" if d is not None else "–"
    if d.design == "paired":
        return f"paired t, {d.n} pairs"
    return f"Welch t, {len(c.method.finished())}/{len(c.baseline.finished())} seeds"


def setting_value(arm: Arm, key: str) -> str:
    return arm.model if key == "model" else show(arm.settings[key]) if key in arm.settings else "(absent)"


def contrast_design(x: Contrast) -> str:
    change = x.change
    if change.design == "paired":
        return f"paired t over {change.n} shared seeds" + (f" ({x.left_out} run(s) of one setting only left out)"
                                                           if x.left_out else "")
    if change.design == "welch":
        return "Welch t on the two differences (fewer than two shared seeds)"
    return "none: a difference without an interval (one seed)"


def ratio_text(s: Optional[Speedup], flag: bool = True) -> str:
    if s is not None and s.ratio is None and s.misses is not None:
        return "refused: the fit misses the baseline"
    if s is None or s.ratio is None:
        return "–"
    bounds = f" [{times(s.low)}, {times(s.high)}]" if s.low is not None else ""
    return times(s.ratio) + bounds + (" (extrapolated)" if s.extrapolated and flag else "")


def times(ratio: float) -> str:
    return "never" if math.isinf(ratio) else f"{ratio:.2f}x"


def steps_text(st: Optional[StepsToTarget]) -> str:
    if st is None:
        return "–"
    if st.baseline is None or st.method is None:
        return "not both reach it"
    return f"{st.baseline:,.0f} vs {st.method:,.0f}" + (f" ({st.baseline / st.method:.2f}x)" if st.method else "")


def choice_text(arm: Arm) -> str:
    if arm.lr is None:
        return "–"
    if len(arm.grid) == 1:
        return "one rate run"
    pending = any(rate.score is None for rate in arm.grid)
    return f"{arm.chosen_on} split" + (" (grid unfinished)" if pending else "")


def seeds_text(arm: Arm) -> str:
    running = arm.running()
    return f"{len(arm.finished()) if arm.lr is not None else 0}" + (f" (+{running} running)" if running else "")


def rate_text(lr: Optional[float]) -> str:
    return "–" if lr is None else f"{lr:.3g}"


def millions(tokens: float) -> str:
    return "never" if math.isinf(tokens) else f"{tokens / 1e6:.3g}M"


def render(report: Report, style: str = "text") -> str:
    """The report as plain text (style "text") or Markdown."""
    heading = (lambda text: f"### {text}") if style == "markdown" else (lambda text: text)
    bullet = "- " if style == "markdown" else "  - "
    out = [heading("Final validation loss per arm (reported split; 95% intervals; PPL = exp(loss))")]
    rows = []
    for arm in report.arms:
        est = stats.mean_interval(arm.final_losses()) if arm.lr is not None and arm.finished() else None
        role = " (baseline)" if arm in report.baselines else ""
        rows.append([arm.label + role, arm.where or "–", rate_text(arm.lr),
                     choice_text(arm),
                     seeds_text(arm), interval(est), interval(est, 1, transform=math.exp)])
    out += table(["arm", "setting", "lr", "lr chosen on", "seeds", "val loss", "val PPL"], rows, style)

    out += ["", heading("Against the baseline (method - baseline; a negative difference: the method's loss is lower)")]
    rows = [[c.method.label, c.baseline.label, c.method.where or "–", interval(c.difference, sign=True),
             design_text(c), verdict(c.difference.p) if c.difference and c.difference.p is not None else "–",
             str(c.seeds) if c.seeds else f">{stats.SEEDS_LIMIT:,}" if c.spread is not None and c.margin else "–",
             ratio_text(c.speedup), steps_text(c.steps)]
            for c in report.comparisons]
    if rows:
        out += table(["method", "baseline", "setting", "difference [95% CI]", "test", "p", "seeds needed",
                      "tokens speed-up [95% CI]", "steps to target (baseline vs method)"], rows, style)
    else:
        out.append("no method arm ran in a baseline's setting" + (" (see below)" if report.notes else "") + ".")

    if report.comparisons or report.notes:
        out += ["", heading("What the numbers say")]
    for c in report.comparisons:
        if style == "markdown":  # a blank line ends the list above
            out += ["", f"**{c.method.name} against {c.baseline.label}**:"]
        else:
            out.append(f"{c.method.name} against {c.baseline.label}:")
        out += [bullet + line for line in comparison_sentences(c)]
    out += ([""] if style == "markdown" and report.notes else []) + [bullet.lstrip() + note for note in report.notes]

    if report.contrasts:
        out += ["", heading("Does the effect depend on the setting? (the method - baseline difference in two settings)")]
        rows = []
        for x in report.contrasts:
            where = [f"{x.changed}={setting_value(c.method, x.changed)}" for c in (x.first, x.second)]
            rows.append([x.first.method.label, x.first.baseline.label, where[0], interval(x.first.difference, sign=True),
                         where[1], interval(x.second.difference, sign=True), interval(x.change, sign=True),
                         contrast_design(x), verdict(x.change.p) if x.change.p is not None else "–"])
        out += table(["method", "baseline", "setting 1", "difference 1", "setting 2", "difference 2",
                      "change (2 - 1) [95% CI]", "test", "p"], rows, style)

    fits = []
    for base in report.baselines:
        sample = next((c.speedup for c in report.comparisons if c.baseline is base and c.speedup), None)
        if sample is None:  # no method with a finished run against it (yet)
            continue
        same_rate = all(lr == base.lr for lr in sample.rates)
        points = "; ".join(f"{millions(tokens)} tokens" + ("" if same_rate else f" (lr {lr:.3g})")
                           + f": {interval(est)} ({est.n} seed{'s' * (est.n != 1)})"
                           for (tokens, est), lr in zip(sample.budgets, sample.rates))
        line = f"{base.name}, " + (f"lr {base.lr:.3g}" if same_rate else "each budget at its chosen rate") + \
            f": {points or 'no finished budget'}"
        if sample.fit:
            fit = sample.fit
            line += (f". Fit: a = {fit.a_per_token:.4g}, b = {fit.b:.3f}, c = {fit.c:.3f} (D in tokens; "
                     f"{fit.points} budgets" + (", as many as parameters: the curve passes through every point and "
                                                 "nothing checks its shape" if fit.points == 3 else "")
                     + (", b at the end of the searched range: the data hardly constrain the fit" if fit.at_edge
                        else "") + ")")
            if sample.misses is not None:
                line += f"; at the baseline's own budget the fit is {sample.misses:+.3f} off its measured loss"
        elif sample.problem:
            line += f". No fit: {sample.problem}"
        fits.append(line if style == "text" else bullet + line)
    if fits:
        out += ["", heading("Speed-up fits: the baseline's final validation loss against tokens, L(D) = a D^-b + c"),
                *fits]

    out += ["", heading("Equal tuning: each arm's learning-rate grid (* the chosen rate)")]
    for arm in report.arms:
        if not arm.grid:
            continue
        split = "selection split" if arm.chosen_on == "selection" else "REPORTED split"
        seeds = ("mean over " if len(arm.choice_seeds) != 1 else "") + \
            (("seed" + "s" * (len(arm.choice_seeds) > 1) + " " + ", ".join(str(k[0]) for k in arm.choice_seeds))
             if arm.choice_seeds else "each rate's seeds")
        cells = " | ".join(f"{rate.lr:.3g}: " + (f"{rate.score:.3f}" if rate.score is not None else "running")
                           + (" *" if rate.lr == arm.lr else "")
                           + (f" (+{rate.running} running)" if rate.running and rate.score is not None else "")
                           for rate in arm.grid)
        line = f"{arm.name}: {cells} " + (f"(final loss on the {split}, {seeds})" if arm.lr is not None
                                            else "(nothing finished yet)")
        out.append(line if style == "text" else bullet + line)
    out += [bullet.lstrip() + line for line in tuning_notes(report.arms)]

    out += ["", heading("How these numbers are made")]
    out += [bullet.lstrip() + line for line in METHODS]
    return "\n".join(out)


def comparison_sentences(c: Comparison) -> list[str]:
    lines = []
    if c.method.lr is None or c.baseline.lr is None:
        return [f"no finished run yet for {'the method' if c.method.lr is None else 'the baseline'}"]
    d = c.difference
    if d is not None:
        if d.design == "paired":
            design = (f"paired t-test over {d.n} seeds that share initialisation (run.seed) and data order "
                      f"(data.shuffle_seed)")
            if c.unpaired_left_out:
                design += f"; {c.unpaired_left_out} run(s) without a partner left out"
        elif d.design == "welch":
            design = "Welch's t-test (the runs do not share seeds and data order, or too few do)"
        else:
            design = "one seed on a side: no interval, no test"
        text = f"final loss {d.value:+.3f} nats"
        if d.low is not None:
            text += f" [{d.low:+.3f}, {d.high:+.3f}], {design}, t = {d.t:.2f}, df = {d.df:.3g}: {verdict(d.p)}"
        else:
            text += f", {design}"
        lines.append(text + ".")
        if c.spread is None:
            lines.append("Seeds needed: unknown until each side has two or more seeds (no spread to go by).")
        elif c.margin == 0:
            lines.append("Seeds needed: no difference was observed; give the margin to detect with --margin.")
        else:
            paired = not isinstance(c.spread, tuple)
            spread = (f"sd of the paired differences {c.spread:.4f}" if paired else
                      f"sds {c.spread[0]:.4f} and {c.spread[1]:.4f}")
            count = f"{c.seeds}" if c.seeds else f"more than {stats.SEEDS_LIMIT:,}"
            lines.append(f"Seeds needed to detect a difference of {c.margin:.3f} at 5% significance with 80% power, "
                         f"given the observed spread ({spread}): {count}{'' if paired else ' per arm'}.")
    s = c.speedup
    if s is not None:
        if s.ratio is None:
            lines.append(f"Speed-up: not measured: {s.problem}.")
        else:
            if math.isinf(s.tokens_needed):
                needed = f"an unbounded number of tokens (the target lies below the fit's asymptote c = {s.fit.c:.3f})"
            else:
                needed = f"{millions(s.tokens_needed)} tokens" + (f" ({s.steps_needed:,.0f} steps)" if s.steps_needed
                                                                   else "")
            text = (f"Speed-up: {c.baseline.label} needs {needed} to reach {s.target:.3f}, the method's final loss; "
                    f"the method used {millions(s.method_tokens)}: {ratio_text(s, flag=False)} "
                    "(bootstrap over seeds, 95%)")
            if s.extrapolated:
                text += f"; the fit is extrapolated {s.extrapolated}"
            if s.unreached:
                text += f"; {s.unreached:.0%} of the resamples never reach the target"
            if any(est.n < 2 for _, est in s.budgets):
                text += "; budgets run with one seed add nothing to the interval"
            if s.without_one:
                low, high = min(s.without_one, key=lambda item: item[1]), max(s.without_one, key=lambda item: item[1])
                text += (f"; fitted without one budget it is {times(low[1])} (without {millions(low[0])} tokens) "
                         f"to {times(high[1])} (without {millions(high[0])}): the bootstrap interval does not "
                         "account for which budgets were run")
            if s.no_fit_without:
                text += "; no curve fits without " + ", ".join(f"{millions(t)} tokens" for t in s.no_fit_without)
            lines.append(text + ".")
    st = c.steps
    if st is not None:
        where = f"Steps to loss {st.target:.3f} ({st.how}, mean curves over seeds)"
        if st.baseline is None or st.method is None:
            missing = [f"{who} does not reach it within its {last:,} steps"
                       for who, at, last in (("the baseline", st.baseline, st.baseline_last),
                                             ("the method", st.method, st.method_last)) if at is None]
            lines.append(f"{where}: " + "; ".join(missing) + ".")
        else:
            lines.append(f"{where}: baseline {st.baseline:,.0f}, method {st.method:,.0f}"
                         + (f" ({st.baseline / st.method:.2f}x: the baseline's steps over the method's)"
                            if st.method else "") + ".")
    return lines


def tuning_notes(arms: list[Arm]) -> list[str]:
    notes = []
    for arm in arms:
        if arm.lr is None or len(arm.grid) < 2:
            continue
        rates = [rate.lr for rate in arm.grid]
        pending = any(rate.score is None for rate in arm.grid)  # a rate with nothing finished may yet win
        if arm.lr in (rates[0], rates[-1]) and not pending:
            notes.append(f"{arm.name}: the chosen rate is the {'smallest' if arm.lr == rates[0] else 'largest'} of "
                         f"its grid: a {'smaller' if arm.lr == rates[0] else 'larger'} one might be better.")
        if arm.chosen_on == "reported":
            notes.append(f"{arm.name}: its runs have no selection split (data.val_selection): the rate was chosen "
                         "on the reported split, the numbers it is judged by, which flatters the chosen rate.")
    single = [arm.name for arm in arms if len(arm.grid) == 1 and arm.lr is not None]
    if single:
        notes.append("one learning rate run, not tuned in its own setting: " + "; ".join(single) + ".")
    return notes


METHODS = [
    "Interval of a mean: mean ± t(0.975, n-1) s / sqrt(n) over the seeds (Student's t, computed in "
    "reproduce/stats.py); for perplexity, exp of the loss interval.",
    "Difference: a paired t-test on the per-seed differences when two or more runs of each arm share run.seed "
    "(initialisation) and data.shuffle_seed (data order); otherwise Welch's t-test (df by Welch-Satterthwaite). "
    "Two-sided, 5%.",
    "Seeds needed: the smallest n with n >= ((t(0.975, df) + t(0.80, df)) sigma / margin)^2, sigma the sd of the "
    "paired differences (n pairs, df = n - 1) or sqrt(s1^2 + s2^2) for unpaired arms (n seeds per arm, "
    "Welch's df); the margin is the observed difference unless --margin gives one.",
    "Speed-up: L(D) = a D^-b + c (a > 0, c >= 0) fitted by least squares to the baseline's mean final loss at each "
    "budget (its arms that differ only in train.steps, each at its own chosen rate); the ratio is the D at which the "
    "fit reaches the method's mean final loss over the method's tokens; interval: 2.5-97.5% percentiles over "
    f"{RESAMPLES} bootstrap resamples of the seeds (each budget and the method resampled independently, refitted); "
    "with four or more budgets, also the ratio refitted without each budget in turn (its lowest and highest). "
    "Refused when |fit - measured| at the baseline's own budget is at least |method - baseline|: the fit's error "
    "there would decide the answer, even its side of 1x.",
    "Change between settings: for one method against its baseline in two settings, the second setting's "
    "per-seed difference minus the first's, paired over the seeds both ran (same run.seed and data.shuffle_seed: "
    "the same initialisation and data order), a paired t-test; with fewer than two shared seeds, the two "
    "differences as independent estimates (se = sqrt(se1^2 + se2^2), Welch-Satterthwaite df). Only comparisons "
    "whose arms differ in exactly one setting are contrasted.",
    "Steps to target: the first step at which the mean validation curve (reported split) reaches the target, "
    "linearly interpolated between evaluations; the default target is the higher of the two final losses "
    "(--target sets it).",
]
