"""The noise of a run's loss, per budget, and what it can and cannot support.

- **A budget's own noise, never a borrowed one.** Replicate runs (seeds) at the budget give its
  noise where they have MIN_OWN_DF degrees of freedom or more. Without them, the residuals of
  its own parabolas (groups with more sizes than parameters) give a noise that also holds any
  misfit, and the report flags it. Without either, the budget gets no interval and the report
  says what would fix it. (Noise pooled from another budget is wrong: short runs near a loss
  plateau scatter far more than long ones.)
- **Heavy tails.** Where some seeds leave a plateau late, a few replicate pairs differ by many
  times what the rest do: the Gaussian model behind the intervals does not hold. A budget whose
  replicate deviations have a standard deviation over HEAVY_TAIL_RATIO times their robust
  (median-absolute-deviation) scale is *transition-dominated*: no intervals, and a label. Milder tails
  are not caught: with Student-t noise (3 degrees of freedom) L* intervals cover 0.86 of the
  time, not 0.95 (docs/statistics.md).
- **Lack of fit.** With replicates, a group's parabola is tested against the pure error (an F
  test of the size means' departure from the parabola): a curve that is not a parabola in log N
  (asymmetric, as real IsoFLOP curves can be) is detected, and its optimum is taken from a
  cubic instead (analysis/isoflop.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_OWN_DF = 3  # replicate degrees of freedom a budget needs for a noise of its own
HEAVY_TAIL_RATIO = 2.0  # sd / robust scale of replicate deviations above this: no intervals
HEAVY_TAIL_MIN_DF = 6  # fewer replicate degrees of freedom cannot tell tails apart
LOF_LEVEL = 0.05  # a parabola whose lack-of-fit p-value is below this is rejected


@dataclass
class Noise:
    sigma: float
    df: int
    source: str  # "replicates" | "residuals"
    flag: str | None = None  # what a reader must know about this estimate


@dataclass
class BudgetNoise:
    """The noise a budget's intervals use, or why it has none."""

    noise: Noise | None
    transition_dominated: bool = False
    reason: str | None = None  # why there is no interval
    tail_ratio: float | None = None

    def to_json(self) -> dict:
        n = self.noise
        return {
            "sigma": n.sigma if n else None,
            "df": n.df if n else None,
            "source": n.source if n else None,
            "flag": n.flag if n else None,
            "transition_dominated": self.transition_dominated,
            "tail_ratio": self.tail_ratio,
            "no_interval_reason": self.reason,
        }


def _cells(groups) -> list[np.ndarray]:
    """The losses of every (group, size) with more than one seed."""
    return [g.y[g.x == v] for g in groups for v in g.sizes if (g.x == v).sum() > 1]


def replicate_noise(groups) -> Noise | None:
    """sqrt(within-cell sum of squares / its degrees of freedom), over every replicated cell."""
    cells = _cells(groups)
    df = sum(len(c) - 1 for c in cells)
    if df < 1:
        return None
    ss = sum(float(((c - c.mean()) ** 2).sum()) for c in cells)
    return Noise(float(np.sqrt(ss / df)), int(df), "replicates")


def residual_noise(groups, degree_of) -> Noise | None:
    """The pooled residual noise of the groups with more sizes than their curve's parameters."""
    from analysis.isoflop import design_map, fitted

    ss, df = 0.0, 0
    for g in groups:
        k = degree_of(g) + 1
        if len(g.sizes) > k:
            resid = g.y - fitted(g.x, design_map(g.x, k - 1) @ g.y)
            ss, df = ss + float((resid**2).sum()), df + len(g.y) - k
    if df < 1:
        return None
    return Noise(
        float(np.sqrt(ss / df)),
        int(df),
        "residuals",
        "no replicates at this budget: the parabolas' residuals, which also hold any misfit",
    )


def tail_ratio(groups) -> float | None:
    """The replicate noise over a robust scale of the same deviations (1.4826 x the median
    absolute deviation, each scaled by sqrt(n/(n-1)) to the noise's variance): about 1 when
    they are Gaussian; None with too few to tell."""
    cells = _cells(groups)
    noise = replicate_noise(groups)
    if noise is None or noise.df < HEAVY_TAIL_MIN_DF:
        return None
    devs = np.concatenate([(c - c.mean()) * np.sqrt(len(c) / (len(c) - 1)) for c in cells])
    robust = 1.4826 * float(np.median(np.abs(devs - np.median(devs))))
    return noise.sigma / robust if robust > 0 else float("inf")


def budget_noise(groups, degree_of) -> dict[float, BudgetNoise]:
    """Each budget's own noise (see the module's docstring)."""
    out = {}
    for b in sorted({g.budget for g in groups}):
        mine = [g for g in groups if g.budget == b]
        rep = replicate_noise(mine)
        if rep is not None and rep.df >= MIN_OWN_DF:
            ratio = tail_ratio(mine)
            if ratio is not None and ratio > HEAVY_TAIL_RATIO:
                out[b] = BudgetNoise(
                    rep,
                    transition_dominated=True,
                    tail_ratio=ratio,
                    reason=(
                        f"transition-dominated: the replicate deviations' sd is {ratio:.1f}x "
                        "their robust scale (a few seeds far from the rest, as when runs leave "
                        "a loss plateau at different times), so the Gaussian intervals would "
                        "mislead; longer runs, or more seeds, would fix it"
                    ),
                )
            else:
                out[b] = BudgetNoise(rep, tail_ratio=ratio)
            continue
        res = residual_noise(mine, degree_of)
        if res is not None:
            out[b] = BudgetNoise(res)
            continue
        out[b] = BudgetNoise(
            None,
            reason=(
                "no replicate runs and no group with more than 3 sizes at this budget: its "
                "noise cannot be estimated (noise is never borrowed from another budget); a "
                "second seed at a few points, or a fourth size per group, would fix it"
            ),
        )
    return out


def lack_of_fit(g, pure: Noise | None, degree: int = 2) -> dict | None:
    """F test of the group's size means against its polynomial of ``degree`` in log N, with the
    budget's replicate noise as the pure error; None where it cannot be tested (no replicate
    noise, or no sizes to spare)."""
    from analysis.isoflop import design_map, fitted

    xs, means = g.size_means()
    counts = np.array([int((g.x == v).sum()) for v in xs])
    df_lof = len(xs) - (degree + 1)
    if pure is None or pure.source != "replicates" or df_lof < 1 or pure.sigma <= 0:
        return None
    coef = design_map(g.x, degree) @ g.y
    ss_lof = float((counts * (means - fitted(xs, coef)) ** 2).sum())
    f = (ss_lof / df_lof) / pure.sigma**2
    p = float(stats.f.sf(f, df_lof, pure.df))
    return {"F": f, "df": [int(df_lof), int(pure.df)], "p": p, "rejected": p < LOF_LEVEL}
