"""IsoFLOP analysis (Chinchilla approach 2) and the slope of the optimal loss vs sparsity.

Per (budget, sparsity) group: a parabola of loss vs log N gives N* and L*; D* follows from
the group's own (N, tokens) pairs. A group is *bracketed* when its lowest observed loss (mean
over seeds) is at an interior size, with higher losses on both sides; only bracketed groups
feed what is read across groups: the slope of L* vs S per budget, and N* ~ C^a, D* ~ C^b per
sparsity (which need >= 3 bracketed budgets).

Intervals come from one parametric bootstrap of the whole design. The noise of a run's loss
is estimated from replicate runs (seeds) where the design has them, else from the
parabolas' residuals pooled over groups with more sizes than parameters (which also absorbs
any misfit of the parabola, so it errs wide). A budget whose own replicates give at least
MIN_OWN_DF degrees of freedom gets a noise of its own: short runs can scatter far more than
long ones (a loss plateau that some seeds leave late), and one pooled figure would make the
quiet budgets' intervals too wide and the noisy ones' too narrow. Each replicate redraws
every loss around its group's fitted parabola with that noise (its scale itself redrawn from
its chi-square distribution, so few degrees of freedom give wide intervals), refits every
group, and recomputes every L*, N*, slope and exponent from the same draw. A design with no replicates
and no group of four or more sizes cannot estimate its noise: no interval is given, and the
report says what would fix it. A replicate whose parabola opens downwards has no minimum: its
N* is unbounded on the side the losses fall, and an interval reaching it says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.effects import add_censored_bounds, slope, slope_in_sparsity, sparsity_effects
from analysis.fit import percentile_interval, rng_for
from analysis.noise import Noise, budget_noise, lack_of_fit, replicate_noise, residual_noise

MIN_SIZES = 3


@dataclass
class Group:
    budget: float  # the group's budget label (planner's convention)
    C: float  # its budget under the chosen FLOPs convention
    sparsity: float
    runs: pd.DataFrame
    degree: int = 2  # 3 where the parabola fails its lack-of-fit test
    x: np.ndarray = field(init=False)  # log N_total of each run
    xa: np.ndarray = field(init=False)  # log N_active
    y: np.ndarray = field(init=False)  # loss

    def __post_init__(self):
        self.x = np.log(self.runs["N_total"].to_numpy(float))
        self.xa = np.log(self.runs["N_active"].to_numpy(float))

    def set_loss(self, loss_col: str):
        self.y = self.runs[loss_col].to_numpy(float)
        return self

    @property
    def sizes(self) -> np.ndarray:
        return np.unique(self.x)

    def size_means(self) -> tuple[np.ndarray, np.ndarray]:
        xs = self.sizes
        return xs, np.array([self.y[self.x == v].mean() for v in xs])


def design_map(x: np.ndarray, degree: int = 2) -> np.ndarray:
    """P with coef = P @ y for the least-squares polynomial [c_d, ..., c_0] through (x, y): the
    parabola (degree 2), or the cubic a group whose parabola fails its lack-of-fit test gets."""
    X = np.column_stack([x**k for k in range(degree, -1, -1)])
    return np.linalg.pinv(X)


def fitted(x: np.ndarray, coef: np.ndarray) -> np.ndarray:
    degree = coef.shape[-1] - 1
    return sum(coef[..., degree - k, None] * x**k for k in range(degree + 1))


def vertex(coef: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """(x*, L*) of polynomials coef (..., 3) or (..., 4): the parabola's vertex, or the cubic's
    local minimum. A curve with no minimum (a concave parabola, a cubic without a local
    minimum) has x* = +inf where the losses fall towards large N, -inf otherwise, and L* is the
    lowest value on [lo, hi]."""
    if coef.shape[-1] == 4:
        return _cubic_minimum(coef, lo, hi)
    c2, c1, c0 = coef[..., 0], coef[..., 1], coef[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = -c1 / (2 * c2)
        lstar = c0 - c1 * c1 / (4 * c2)
    convex = c2 > 0
    mid = (lo + hi) / 2
    falling = 2 * c2 * mid + c1 < 0
    edge = np.where(falling, hi, lo)
    edge_value = c2 * edge**2 + c1 * edge + c0
    return (
        np.where(convex, x, np.where(falling, np.inf, -np.inf)),
        np.where(convex, lstar, edge_value),
    )


def _cubic_minimum(coef: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    a, b, c = coef[..., 0], coef[..., 1], coef[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        disc = 4 * b * b - 12 * a * c
        root = np.sqrt(np.where(disc >= 0, disc, np.nan))
        # the root of 3a x^2 + 2b x + c where the curvature 6a x + 2b is positive
        x = np.where(a != 0, (-2 * b + root) / (6 * a), -c / (2 * b))
    has_min = np.isfinite(x) & ((a != 0) | (b > 0))
    mid = (lo + hi) / 2
    slope_mid = 3 * a * mid**2 + 2 * b * mid + c
    edge = np.where(slope_mid < 0, hi, lo)
    at = np.where(has_min, x, edge)
    value = a * at**3 + b * at**2 + c * at + coef[..., 3]
    return np.where(has_min, x, np.where(slope_mid < 0, np.inf, -np.inf)), value


def bracket(g: Group) -> tuple[bool, str | None]:
    xs, means = g.size_means()
    if len(xs) < MIN_SIZES:
        return False, f"{len(xs)} size(s): a parabola needs {MIN_SIZES}"
    best = int(np.argmin(means))
    if best == 0:
        return (
            False,
            "the smallest size has the lowest loss: the optimum lies below the sizes trained",
        )
    if best == len(xs) - 1:
        return (
            False,
            "the largest size has the lowest loss: the optimum lies above the sizes trained",
        )
    return True, None


def _interp_log(x: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """log-log interpolation of ys(xs) at x (linear extrapolation in logs outside)."""
    order = np.argsort(xs)
    xs, ly = xs[order], np.log(ys[order])
    if len(np.unique(xs)) < 2:
        return np.full(np.shape(x), float(np.exp(ly[0])))
    slope, icpt = np.polyfit(xs, ly, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        inside = np.interp(x, xs, ly)
        out = np.where((x >= xs[0]) & (x <= xs[-1]), inside, icpt + slope * x)
        return np.exp(out)


@dataclass
class IsoflopResult:
    groups: list[dict]
    noise: Noise | None  # the replicate noise pooled over budgets that are not transition-dominated
    no_interval_reason: str | None
    slopes: dict
    scaling: dict
    skipped: str | None = None
    noise_by_budget: dict = field(default_factory=dict)  # budget -> BudgetNoise
    effects: dict = field(default_factory=dict)  # budget -> the sparsity effect (analysis/effects)
    # (budget, contrast) -> the effect's bootstrap draws: a comparison of two tables takes the
    # interval of a difference from these (independent draws of independent studies)
    effect_draws: dict = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.groups)


def _fit_all(groups, ys):
    """Fits of every group (its own curve: parabola or cubic) for losses ys (list of arrays, or
    (B, n) replicates; None: no fit)."""
    out = []
    for g, y in zip(groups, ys):
        if y is None:
            out.append(None)
            continue
        coef = (design_map(g.x, g.degree) @ np.asarray(y).T).T
        coef_a = (design_map(g.xa, g.degree) @ np.asarray(y).T).T
        x, lstar = vertex(coef, g.x.min(), g.x.max())
        xa, _ = vertex(coef_a, g.xa.min(), g.xa.max())
        with np.errstate(over="ignore"):
            d = (
                _interp_log(x, g.x, g.runs["tokens"].to_numpy(float))
                if "tokens" in g.runs
                else np.full(np.shape(x), np.nan)
            )
            out.append(
                {
                    "n_star": np.exp(x),
                    "n_star_active": np.exp(xa),
                    "loss_star": lstar,
                    "d_star": d,
                    "coef": coef,
                    "coef_active": coef_a,
                }
            )
    return out


SHAPE_SIZES = 5  # sizes a group needs for a cubic beside its parabola (shape uncertainty)


def _other_shape(g: Group) -> Group:
    other = Group(g.budget, g.C, g.sparsity, g.runs, degree=5 - g.degree)
    other.y = g.y
    return other


def _bootstrap(g: Group, scale: np.ndarray, rng) -> dict:
    """One group's bootstrap fits, redrawn around its own fitted curve."""
    (fit,) = _fit_all([g], [g.y])
    return _fit_all([g], [fitted(g.x, fit["coef"]) + _draw_noise(g, scale, rng)])[0]


def _union(a: list | None, b: list | None) -> list | None:
    """The smallest interval holding both (None sides: unbounded)."""
    if a is None or b is None:
        return a or b
    lo = None if a[0] is None or b[0] is None else min(a[0], b[0])
    hi = None if a[1] is None or b[1] is None else max(a[1], b[1])
    return [lo, hi]


def _draw_noise(g: Group, scale: np.ndarray, rng) -> np.ndarray:
    """(B, runs) noise for one group's replicates. A run kept as the best of several learning
    rates is drawn as the best of several: every LR's run of its point is redrawn (at the gap
    above the kept one that was observed) and the lowest kept, so the winner's curse of the
    selection is in the intervals too."""
    z = rng.normal(size=(len(scale), len(g.y))) * scale[:, None]
    gaps = g.runs["lr_gaps"].tolist() if "lr_gaps" in g.runs else [[]] * len(g.y)
    for j, gap in enumerate(gaps):
        if gap:
            draws = rng.normal(size=(len(scale), len(gap)))
            others = np.asarray(gap)[None, :] + draws * scale[:, None]
            z[:, j] = np.minimum(z[:, j], others.min(axis=1))
    return z


def _pooled(groups, by_budget) -> Noise | None:
    """The design's noise for the reader (and the laws' fit-quality gate): replicates pooled
    over the budgets that are not transition-dominated, else the pooled residuals."""
    usable = [g for g in groups if not by_budget[g.budget].transition_dominated]
    return replicate_noise(usable) or residual_noise(groups, lambda g: g.degree)


def analyse(
    design_df: pd.DataFrame,
    loss: str,
    all_runs: pd.DataFrame | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> IsoflopResult:
    groups = [
        Group(b, float(g["C"].iloc[0]) if "C" in g else b, s, g.sort_values("N_total")).set_loss(
            loss
        )
        for (b, s), g in design_df.groupby(["budget_group", "sparsity"])
    ]
    groups = [g for g in groups if len(g.sizes) >= MIN_SIZES]
    if not groups:
        return IsoflopResult(
            [],
            None,
            None,
            {},
            {},
            skipped=f"no (budget, sparsity) group has {MIN_SIZES} or more sizes "
            "(IsoFLOP curves need them)",
        )
    by_budget = budget_noise(groups, lambda g: 2)
    lof: dict[int, dict | None] = {}
    for i, g in enumerate(groups):  # a parabola that fails against the pure error: a cubic
        test = lof[i] = lack_of_fit(g, by_budget[g.budget].noise)
        if test and test["rejected"] and len(g.sizes) >= 4:
            g.degree = 3
    point = _fit_all(groups, [g.y for g in groups])
    rng = rng_for(seed)
    scales = {}  # one draw per budget's noise
    for b, bn in by_budget.items():
        if bn.noise is not None and not bn.transition_dominated:
            n = bn.noise
            scales[b] = n.sigma * np.sqrt(n.df / rng.chisquare(n.df, n_boot))
    boot = _fit_all(
        groups,
        [
            fitted(g.x, p["coef"]) + _draw_noise(g, scales[g.budget], rng)
            if g.budget in scales
            else None
            for p, g in zip(point, groups)
        ],
    )
    # Shape uncertainty: where a group has sizes enough for either curve, the other curve's
    # bootstrap too, and the intervals of N*, L* (and the C-exponents) cover both. A parabola
    # that passes its lack-of-fit test can still put N* off an asymmetric optimum by more than
    # its own interval (measured: analysis/coverage.py, preset asymmetric).
    alt = [_other_shape(g) if len(g.sizes) >= SHAPE_SIZES else None for g in groups]
    alt_boot = [
        _bootstrap(a, scales[a.budget], rng) if a is not None and a.budget in scales else None
        for a in alt
    ]
    rows = []
    for i, (g, p) in enumerate(zip(groups, point)):
        ok, reason = bracket(g)
        xs, means = g.size_means()
        row = {
            "budget": g.budget,
            "C": g.C,
            "sparsity": g.sparsity,
            "n_runs": len(g.y),
            "sizes": len(xs),
            "bracketed": ok,
            "why_not_bracketed": reason,
            "best_loss": float(means.min()),
            "best_n": float(np.exp(xs[np.argmin(means)])),
            "shape": "parabola" if g.degree == 2 else "cubic",
            "lack_of_fit": lof[i],
            "coef": p["coef"].tolist(),
            "coef_active": p["coef_active"].tolist(),
        }
        mine, other = boot[i], alt_boot[i]
        for key in ("n_star", "n_star_active", "loss_star", "d_star"):
            row[key] = float(p[key])
            row[f"{key}_ci"] = _interval(key, mine[key], level) if mine else None
            if mine and other:
                row[f"{key}_ci"] = _union(row[f"{key}_ci"], _interval(key, other[key], level))
        row["shape_uncertainty"] = bool(mine and other)
        if (
            "kv_cache_bytes_per_token" in g.runs
            and np.isfinite(row["n_star"])
            and row["n_star"] > 0
        ):
            # what serving the optimum costs (point estimate): its KV cache per token,
            # interpolated in log N between the group's sizes like D*
            kv = g.runs["kv_cache_bytes_per_token"].to_numpy(float)
            row["kv_cache_star"] = float(_interp_log(np.log(row["n_star"]), g.x, kv))
        if all_runs is not None:
            row["failed"] = _failed_in(all_runs, g, loss)
        rows.append(row)
    keep = [i for i, r in enumerate(rows) if r["bracketed"]]
    reasons = {b: bn.reason for b, bn in by_budget.items() if bn.reason}
    draws: dict = {}
    effects = sparsity_effects(rows, keep, point, boot, level, design_df, loss, draws)
    # drawn last: every interval above is what it was before censored bounds existed
    add_censored_bounds(effects, rows, groups, point, boot, scales, rng, level)
    return IsoflopResult(
        rows,
        _pooled(groups, by_budget),
        "; ".join(f"C={b:.4g}: {r}" for b, r in reasons.items()) or None,
        slope_in_sparsity(rows, keep, point, boot, level),
        _scaling(rows, keep, point, boot, level, alt_boot),
        noise_by_budget=by_budget,
        effects=effects,
        effect_draws=draws,
    )


def _interval(key: str, samples: np.ndarray, level: float) -> list | None:
    """Sizes and token counts are positive: their intervals are taken in logs, so a replicate
    with no minimum (N* -> 0 or inf) reads as unbounded rather than as a bound of 0."""
    if key == "loss_star":
        return percentile_interval(samples, level)
    with np.errstate(divide="ignore"):
        ci = percentile_interval(np.log(samples), level)
    return [None if v is None else float(np.exp(v)) for v in ci] if ci else None


def _failed_in(all_runs: pd.DataFrame, g: Group, loss: str) -> list[dict]:
    same = all_runs[(all_runs["budget_group"] == g.budget) & (all_runs["sparsity"] == g.sparsity)]
    bad = same[(same.get("status", "done") != "done") | same[loss].isna()]
    return [
        {
            "run_id": str(r.get("run_id", "?")),
            "N_total": float(r["N_total"]),
            "status": str(r.get("status", "?")),
            "reason": str(r.get("reason", "")),
        }
        for _, r in bad.iterrows()
    ]


def _scaling(rows, keep, point, boot, level, alt_boot=None) -> dict:
    """Per sparsity: exponents of N*, N*_active and D* in C over bracketed budgets."""
    out = {}
    for s in sorted({r["sparsity"] for r in rows}):
        idx = [i for i in keep if rows[i]["sparsity"] == s]
        entry: dict = {"budgets": [rows[i]["C"] for i in idx]}
        if len(idx) < 3:
            entry["reason"] = f"{len(idx)} bracketed budget(s); an exponent needs 3"
            out[f"{s:.4f}"] = entry
            continue
        lc = np.log([rows[i]["C"] for i in idx])
        for key in ("n_star", "n_star_active", "d_star"):
            with np.errstate(divide="ignore", invalid="ignore"):
                est = slope(lc, np.log([point[i][key] for i in idx]))
                whole = all(boot[i] for i in idx)
                reps = (
                    slope(lc, np.log(np.stack([boot[i][key] for i in idx], -1))) if whole else None
                )
            ci = percentile_interval(reps, level) if whole else None
            if whole and alt_boot and all(alt_boot[i] for i in idx):
                with np.errstate(divide="ignore", invalid="ignore"):
                    other = slope(lc, np.log(np.stack([alt_boot[i][key] for i in idx], -1)))
                ci = _union(ci, percentile_interval(other, level))
            entry[key] = {"exponent": float(est), "ci": ci}
        out[f"{s:.4f}"] = entry
    return out
