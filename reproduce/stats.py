"""The statistics behind `python -m reproduce results --baseline` (reproduce/evidence.py), in plain
Python (no scipy): Student's t distribution, the paired and Welch t-tests with their 95% intervals,
the number of seeds a margin needs, the loss-vs-data fit L(D) = a D^-b + c and where a validation
curve first reaches a loss.

Student's t CDF is the regularized incomplete beta function, I_x(df/2, 1/2) with x = df/(df + t^2),
evaluated by its continued fraction (Lentz's method); quantiles invert the CDF by bisection. Both
take a fractional df (Welch's).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from statistics import NormalDist
from typing import Optional

# ------------------------------------------------------------------------------------------------
# Student's t distribution
# ------------------------------------------------------------------------------------------------

def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            return h
    raise ArithmeticError(f"incomplete beta({a}, {b}, {x}) did not converge")


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):  # the continued fraction converges fast on this side
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    tail = t_two_sided_p(t, df) / 2.0
    return 1.0 - tail if t > 0 else tail


def t_quantile(q: float, df: float) -> float:
    """The t with P(T <= t) = q."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile of {q}: must be in (0, 1)")
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < q:
        low, high = high, high * 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if t_cdf(mid, df) < q:
            low = mid
        else:
            high = mid
        if high - low <= 1e-12 * (1.0 + high):
            break
    return (low + high) / 2.0


# ------------------------------------------------------------------------------------------------
# Intervals and tests
# ------------------------------------------------------------------------------------------------

CONFIDENCE = 0.95  # every interval; tests are two-sided at 1 - CONFIDENCE


@dataclass
class Estimate:
    """A mean (or a difference of means) with its 95% interval and, for a difference, its test."""
    value: float
    low: Optional[float]    # None with fewer than two values
    high: Optional[float]
    n: int                  # values; pairs for a paired test; the smaller arm's seeds for Welch's
    design: str = ""        # "paired", "welch" or "" (a mean)
    t: Optional[float] = None
    df: Optional[float] = None
    p: Optional[float] = None
    se: Optional[float] = None  # the standard error the test used


def mean_interval(values: list[float]) -> Estimate:
    """The mean with its t interval, mean ± t(0.975, n-1) s / sqrt(n)."""
    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return Estimate(mean, None, None, n)
    half = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)


def _test(value: float, se: float, df: float, n: int, design: str) -> Estimate:
    if se == 0.0:  # identical differences: the interval is the point, the test is decided
        return Estimate(value, value, value, n, design, math.copysign(math.inf, value) if value else 0.0, df,
                        0.0 if value else 1.0, se)
    t = value / se
    half = t_quantile(0.5 + CONFIDENCE / 2, df) * se
    return Estimate(value, value - half, value + half, n, design, t, df, t_two_sided_p(t, df), se)


def paired_t(differences: list[float]) -> Estimate:
    """Paired t-test on per-pair differences (method - baseline): t = mean / (s_d / sqrt(n)), df n-1."""
    n = len(differences)
    if n < 2:
        raise ValueError("a paired test needs at least two pairs")
    return _test(statistics.fmean(differences), statistics.stdev(differences) / math.sqrt(n), n - 1, n, "paired")


def welch_t(method: list[float], baseline: list[float]) -> Estimate:
    """Welch's t-test of mean(method) - mean(baseline): se = sqrt(s1^2/n1 + s2^2/n2), df by
    Welch-Satterthwaite."""
    n1, n2 = len(method), len(baseline)
    if n1 < 2 or n2 < 2:
        raise ValueError("Welch's test needs at least two values per arm")
    v1, v2 = statistics.variance(method) / n1, statistics.variance(baseline) / n2
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1)) if v1 + v2 > 0 else n1 + n2 - 2
    return _test(statistics.fmean(method) - statistics.fmean(baseline), math.sqrt(v1 + v2), df, min(n1, n2), "welch")


def difference_of(second: Estimate, first: Estimate) -> Estimate:
    """second - first for two independent tested estimates (two differences, say): se =
    sqrt(se1^2 + se2^2), df by Welch-Satterthwaite from each estimate's own df."""
    if second.se is None or first.se is None:
        raise ValueError("both estimates need a standard error")
    v1, v2 = second.se ** 2, first.se ** 2
    df = (v1 + v2) ** 2 / (v1 ** 2 / second.df + v2 ** 2 / first.df) if v1 + v2 > 0 else second.df + first.df
    return _test(second.value - first.value, math.sqrt(v1 + v2), df, min(second.n, first.n), "welch")


POWER = 0.8
SEEDS_LIMIT = 100_000  # seeds_needed counts no further


def seeds_needed(spread: float | tuple[float, float], margin: float, power: float = POWER,
                 limit: int = SEEDS_LIMIT) -> Optional[int]:
    """The smallest n with n >= ((t(1 - alpha/2, df) + t(power, df)) * sigma / margin)^2, alpha = 5%:
    the normal-approximation sample size with t quantiles, solved by counting up. A float spread is
    the standard deviation of paired differences (n pairs, df = n - 1); a pair (s1, s2) the two
    arms' standard deviations (n seeds per arm, sigma^2 = s1^2 + s2^2, Welch's df at n per arm).
    None for a margin of zero or more than `limit` seeds."""
    if margin == 0:
        return None
    paired = not isinstance(spread, tuple)
    variance = spread ** 2 if paired else spread[0] ** 2 + spread[1] ** 2
    if variance == 0:
        return 2
    # t quantiles exceed the normal's, so the answer is at least the normal formula's n
    z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2) + NormalDist().inv_cdf(power)
    for n in range(max(2, math.ceil(z * z * variance / (margin * margin))), limit + 1):
        if paired:
            df = n - 1
        else:
            s1, s2 = spread[0] ** 2, spread[1] ** 2
            df = (n - 1) * (s1 + s2) ** 2 / (s1 ** 2 + s2 ** 2)
        t_sum = t_quantile(0.5 + CONFIDENCE / 2, df) + t_quantile(power, df)
        if n >= t_sum * t_sum * variance / (margin * margin):
            return n
    return None


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between order statistics; inf allowed."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below, above = math.floor(position), math.ceil(position)
    if below == above or ordered[above] == ordered[below]:
        return ordered[below]
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


# ------------------------------------------------------------------------------------------------
# Loss against data: L(D) = a D^-b + c
# ------------------------------------------------------------------------------------------------

class FitError(ValueError):
    """Data a power law cannot be fitted to (said in the output, not raised to the user)."""


B_RANGE = (0.01, 5.0)  # the exponents searched; a best b at either end is reported as such


@dataclass
class PowerLaw:
    """L(D) = a (D / scale)^-b + c, fitted by least squares (a > 0, c >= 0)."""
    a: float
    b: float
    c: float
    scale: float
    at_edge: bool = False   # b at an end of B_RANGE: the data hardly constrain the fit
    points: int = 0

    @property
    def a_per_token(self) -> float:
        """a of L(D) = a D^-b + c with D in tokens."""
        return self.a * self.scale ** self.b

    def loss(self, tokens: float) -> float:
        return self.a * (tokens / self.scale) ** -self.b + self.c

    def tokens_for(self, loss: float) -> float:
        """The D with L(D) = loss; inf for a loss at or below the asymptote c (never reached)."""
        if loss <= self.c:
            return math.inf
        return self.scale * ((loss - self.c) / self.a) ** (-1.0 / self.b)


def _linear_part(b: float, xs: list[float], ys: list[float]) -> Optional[tuple[float, float, float]]:
    """For a fixed b: the least-squares (a, c, sum of squares), c >= 0; None when the best a <= 0."""
    powers = [x ** -b for x in xs]
    mean_p, mean_y = statistics.fmean(powers), statistics.fmean(ys)
    spread = sum((p - mean_p) ** 2 for p in powers)
    if spread == 0:
        return None
    a = sum((p - mean_p) * (y - mean_y) for p, y in zip(powers, ys)) / spread
    c = mean_y - a * mean_p
    if c < 0:  # a loss cannot fall below zero: the best fit through the origin
        a, c = sum(p * y for p, y in zip(powers, ys)) / sum(p * p for p in powers), 0.0
    if a <= 0:
        return None
    return a, c, sum((y - a * p - c) ** 2 for p, y in zip(powers, ys))


def fit_power_law(tokens: list[float], losses: list[float]) -> PowerLaw:
    """Least squares over b on a log grid, refined by golden-section search; a and c are linear for
    a given b. Needs three distinct token counts."""
    if len(set(tokens)) < 3:
        raise FitError(f"a fit of a D^-b + c needs the baseline at 3 or more budgets (has {len(set(tokens))})")
    scale = max(tokens)
    xs = [d / scale for d in tokens]

    def sse(b: float) -> float:
        part = _linear_part(b, xs, losses)
        return math.inf if part is None else part[2]

    low, high, steps = math.log(B_RANGE[0]), math.log(B_RANGE[1]), 120
    grid = [math.exp(low + (high - low) * i / steps) for i in range(steps + 1)]
    errors = [sse(b) for b in grid]
    best = min(range(len(grid)), key=errors.__getitem__)
    if math.isinf(errors[best]):
        raise FitError("the baseline's loss does not fall as its budget grows: no a D^-b + c with a > 0 fits")
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, steps)]
    golden = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        left, right = hi - golden * (hi - lo), lo + golden * (hi - lo)
        if sse(left) <= sse(right):
            hi = right
        else:
            lo = left
    b = (lo + hi) / 2 if sse((lo + hi) / 2) <= errors[best] else grid[best]
    a, c, _ = _linear_part(b, xs, losses)
    return PowerLaw(a, b, c, scale, at_edge=best in (0, steps), points=len(tokens))


# ------------------------------------------------------------------------------------------------
# Curves
# ------------------------------------------------------------------------------------------------

def first_crossing(curve: list[tuple[float, float]], target: float) -> Optional[float]:
    """The step at which a (step, loss) curve first reaches `target`, interpolated linearly between
    the evaluation before and the one at or below it; None when it never does."""
    previous = None
    for step, loss in sorted(curve):
        if loss <= target:
            if previous is None or previous[1] == loss:
                return float(step)
            (step0, loss0) = previous
            return step0 + (step - step0) * (loss0 - target) / (loss0 - loss)
        previous = (step, loss)
    return None
