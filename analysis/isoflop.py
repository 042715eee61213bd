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

from analysis.fit import percentile_interval, rng_for

MIN_SIZES = 3
MIN_OWN_DF = 3  # replicate degrees of freedom a budget needs for a noise of its own


@dataclass
class Noise:
    sigma: float
    df: int
    source: str  # "replicates" | "residuals"


@dataclass
class Group:
    budget: float  # the group's budget label (planner's convention)
    C: float  # its budget under the chosen FLOPs convention
    sparsity: float
    runs: pd.DataFrame
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


def design_map(x: np.ndarray) -> np.ndarray:
    """P with coef = P @ y for the least-squares parabola [c2, c1, c0] through (x, y)."""
    X = np.column_stack([x**2, x, np.ones_like(x)])
    return np.linalg.pinv(X)


def fitted(x: np.ndarray, coef: np.ndarray) -> np.ndarray:
    return coef[..., 0, None] * x**2 + coef[..., 1, None] * x + coef[..., 2, None]


def vertex(coef: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """(x*, L*) of parabolas coef (..., 3). Concave ones have no minimum: x* = +inf where the
    losses fall towards large N, -inf otherwise, and L* is the lowest value on [lo, hi]."""
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


def _replicate_ss(groups: list[Group]) -> tuple[float, float]:
    """Sum of squares about each (group, size) mean over its seeds, and its degrees of freedom."""
    ss = df = 0.0
    for g in groups:
        for v in g.sizes:
            cell = g.y[g.x == v]
            if len(cell) > 1:
                ss, df = ss + ((cell - cell.mean()) ** 2).sum(), df + len(cell) - 1
    return ss, df


def noise_by_budget(groups: list[Group], pooled: Noise) -> dict[float, Noise]:
    """Each budget's own replicate noise where it has MIN_OWN_DF degrees of freedom, else the
    pooled estimate."""
    out = {}
    for b in sorted({g.budget for g in groups}):
        ss, df = _replicate_ss([g for g in groups if g.budget == b])
        own = MIN_OWN_DF <= df < pooled.df  # all replicates at one budget: the pooled estimate
        out[b] = Noise(float(np.sqrt(ss / df)), int(df), "replicates") if own else pooled
    return out


def estimate_noise(groups: list[Group]) -> tuple[Noise | None, str | None]:
    ss, df = _replicate_ss(groups)
    if df >= 1:
        return Noise(float(np.sqrt(ss / df)), int(df), "replicates"), None
    for g in groups:
        if len(g.sizes) > MIN_SIZES:
            resid = g.y - fitted(g.x, design_map(g.x) @ g.y)
            ss, df = ss + (resid**2).sum(), df + len(g.y) - MIN_SIZES
    if df >= 1:
        return Noise(float(np.sqrt(ss / df)), int(df), "residuals"), None
    return None, (
        "no replicate runs (seeds) and no group with more than 3 sizes: the noise of "
        "a loss cannot be estimated, so no interval is given; add a second seed at a "
        "few points or a fourth size per group"
    )


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
    noise: Noise | None
    no_interval_reason: str | None
    slopes: dict
    scaling: dict
    skipped: str | None = None
    noise_by_budget: dict = field(default_factory=dict)  # budget -> Noise used there

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.groups)


def _fit_all(groups, ys):
    """Point fits of every group for losses ys (list of arrays, or (B, n) replicates)."""
    out = []
    for g, y in zip(groups, ys):
        coef = (design_map(g.x) @ np.asarray(y).T).T
        coef_a = (design_map(g.xa) @ np.asarray(y).T).T
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


def _slope(s: np.ndarray, ls: np.ndarray) -> np.ndarray:
    """OLS slope of ls (..., k) on s (k,)."""
    sc = s - s.mean()
    return (ls * sc).sum(-1) / (sc * sc).sum()


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
    noise, why = estimate_noise(groups)
    point = _fit_all(groups, [g.y for g in groups])
    boot, by_budget = None, {}
    if noise is not None:
        rng = rng_for(seed)
        by_budget = noise_by_budget(groups, noise)
        scales = {}  # one draw per noise estimate: budgets that share one share its draw
        for n in by_budget.values():
            if id(n) not in scales:
                scales[id(n)] = n.sigma * np.sqrt(n.df / rng.chisquare(n.df, n_boot))
        ys = [fitted(g.x, p["coef"]) for p, g in zip(point, groups)]
        boot = _fit_all(
            groups,
            [
                yh + rng.normal(size=(n_boot, len(yh))) * scales[id(by_budget[g.budget])][:, None]
                for yh, g in zip(ys, groups)
            ],
        )
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
            "coef": p["coef"].tolist(),
            "coef_active": p["coef_active"].tolist(),
        }
        for key in ("n_star", "n_star_active", "loss_star", "d_star"):
            row[key] = float(p[key])
            row[f"{key}_ci"] = _interval(key, boot[i][key], level) if boot else None
        if all_runs is not None:
            row["failed"] = _failed_in(all_runs, g, loss)
        rows.append(row)
    keep = [i for i, r in enumerate(rows) if r["bracketed"]]
    return IsoflopResult(
        rows,
        noise,
        why,
        _slopes(rows, keep, point, boot, level),
        _scaling(rows, keep, point, boot, level),
        noise_by_budget=by_budget,
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


def _slopes(rows, keep, point, boot, level) -> dict:
    out = {}
    for b in sorted({rows[i]["budget"] for i in range(len(rows))}):
        idx = [i for i in keep if rows[i]["budget"] == b]
        excluded = [
            rows[i]["sparsity"]
            for i in range(len(rows))
            if rows[i]["budget"] == b and i not in keep
        ]
        s = np.array([rows[i]["sparsity"] for i in idx])
        entry = {"sparsities": s.tolist(), "excluded_sparsities": excluded}
        if len(np.unique(s)) < 2:
            entry["reason"] = "fewer than 2 bracketed sparsity levels at this budget"
        else:
            entry["slope"] = float(_slope(s, np.array([point[i]["loss_star"] for i in idx])))
            entry["slope_ci"] = (
                percentile_interval(
                    _slope(s, np.stack([boot[i]["loss_star"] for i in idx], axis=-1)), level
                )
                if boot
                else None
            )
        out[f"{b:.4g}"] = entry
    return out


def _scaling(rows, keep, point, boot, level) -> dict:
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
                est = _slope(lc, np.log([point[i][key] for i in idx]))
                reps = (
                    _slope(lc, np.log(np.stack([boot[i][key] for i in idx], -1))) if boot else None
                )
            entry[key] = {
                "exponent": float(est),
                "ci": percentile_interval(reps, level) if boot else None,
            }
        out[f"{s:.4f}"] = entry
    return out
