"""IsoFLOP analysis (Chinchilla approach 2) and optimal sparsity.

Per (budget, sparsity): a parabola of loss vs log N gives N*, L*; tokens D* at N* follow from
the group's own (N, tokens) pairs (interpolated in log space). Intervals: refit the parabola on
runs resampled with replacement within the group (groups of >= 4 distinct sizes; with 3 the
parabola interpolates exactly and no interval is reported). Across budgets: N* ~ C^a, D* ~ C^b.
Across sparsities: the slope of L* vs S per budget, and S* from a fitted law.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.fit import interval
from analysis.laws import Law


def fit_parabola(logn: np.ndarray, loss: np.ndarray) -> tuple[float, float, np.ndarray] | None:
    """(log N*, L*, coefficients) of loss = c2 x^2 + c1 x + c0, or None without a minimum."""
    if len(np.unique(logn)) < 3:
        return None
    c2, c1, c0 = np.polyfit(logn, loss, 2)
    if c2 <= 0:
        return None
    x = -c1 / (2 * c2)
    return x, c0 - c1 * c1 / (4 * c2), np.array([c2, c1, c0])


def _interp_log(x: float, xs: np.ndarray, ys: np.ndarray) -> float:
    order = np.argsort(xs)
    xs, ys = xs[order], np.log(ys[order])
    if xs[0] <= x <= xs[-1]:
        return float(np.exp(np.interp(x, xs, ys)))
    line = np.polyfit(xs, ys, 1) if len(xs) > 1 else (0.0, ys[0])
    return float(np.exp(np.polyval(line, x)))


def isoflop_group(
    g: pd.DataFrame,
    n_col: str,
    loss_col: str,
    tokens_col: str,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict | None:
    logn = np.log(g[n_col].to_numpy(float))
    loss = g[loss_col].to_numpy(float)
    fit = fit_parabola(logn, loss)
    if fit is None:
        return None
    x, lstar, coef = fit
    d_star = _interp_log(x, logn, g[tokens_col].to_numpy(float))
    out = {
        "n_star": float(np.exp(x)),
        "loss_star": float(lstar),
        "d_star": d_star,
        "coef": coef.tolist(),
        "n_runs": len(g),
        "bracketed": bool(logn.min() <= x <= logn.max()),
    }
    samples = []
    if len(np.unique(logn)) >= 4:
        rng = np.random.default_rng(seed)
        for _ in range(n_boot):
            idx = rng.integers(0, len(g), len(g))
            f = fit_parabola(logn[idx], loss[idx])
            if f is not None:
                samples.append((np.exp(f[0]), f[1]))
    if len(samples) >= max(10, n_boot // 10):
        s = np.array(samples)
        out["n_star_ci"], out["loss_star_ci"] = (
            list(interval(s[:, 0], level)),
            list(interval(s[:, 1], level)),
        )
        out["n_star_samples"], out["loss_star_samples"] = s[:, 0], s[:, 1]
    return out


def isoflop_table(
    df: pd.DataFrame, loss_col="val_loss", budget_col="budget_flops", n_boot: int = 1000
) -> pd.DataFrame:
    """One row per (budget, sparsity): N*, N_active*, D*, L* with intervals where estimable."""
    rows = []
    for (c, s), g in df.groupby([budget_col, "sparsity"]):
        row = {"budget": float(c), "sparsity": float(s), "n_runs": len(g)}
        for label, col in (("", "params_total"), ("_active", "params_active")):
            r = isoflop_group(g, col, loss_col, "tokens", n_boot)
            if r is None:
                continue
            row[f"n_star{label}"] = r["n_star"]
            row[f"n_star{label}_ci"] = r.get("n_star_ci")
            row[f"coef{label}"] = r["coef"]
            if label == "":  # L* and D* from the parabola in total parameters
                row["loss_star"], row["loss_star_ci"] = r["loss_star"], r.get("loss_star_ci")
                row["d_star"], row["bracketed"] = r["d_star"], r["bracketed"]
        rows.append(row)
    return pd.DataFrame(rows)


def power_law(x: np.ndarray, y: np.ndarray) -> dict:
    """y = k x^a fitted in log space; bootstrap interval on a over the points."""
    lx, ly = np.log(x), np.log(y)
    a, logk = np.polyfit(lx, ly, 1)
    out = {"exponent": float(a), "coefficient": float(np.exp(logk)), "n": len(x)}
    if len(x) >= 3:
        rng = np.random.default_rng(0)
        boots = []
        for _ in range(1000):
            idx = rng.integers(0, len(x), len(x))
            if len(np.unique(lx[idx])) >= 2:
                boots.append(np.polyfit(lx[idx], ly[idx], 1)[0])
        out["exponent_ci"] = list(interval(np.array(boots)))
    return out


def optimal_size_scaling(iso: pd.DataFrame) -> dict:
    """Per sparsity: N* ~ C^a and D* ~ C^b across budgets (needs >= 2 budgets)."""
    out = {}
    for s, g in iso.dropna(subset=["n_star"]).groupby("sparsity"):
        if g["budget"].nunique() >= 2:
            out[f"{s:.4f}"] = {
                "n_star": power_law(g["budget"].values, g["n_star"].values),
                "d_star": power_law(g["budget"].values, g["d_star"].values),
            }
    return out


def loss_star_vs_sparsity(iso: pd.DataFrame) -> dict:
    """Per budget: slope of L* vs S (negative: sparser is better at fixed compute)."""
    out = {}
    for c, g in iso.dropna(subset=["loss_star"]).groupby("budget"):
        if g["sparsity"].nunique() < 2:
            continue
        s, ls = g["sparsity"].to_numpy(float), g["loss_star"].to_numpy(float)
        slope = float(np.polyfit(s, ls, 1)[0])
        entry = {"slope": slope, "n": len(g)}
        if len(g) >= 3:
            rng = np.random.default_rng(0)
            boots = [
                np.polyfit(s[i], ls[i], 1)[0]
                for i in (rng.integers(0, len(s), len(s)) for _ in range(1000))
                if len(np.unique(s[i])) >= 2
            ]
            entry["slope_ci"] = list(interval(np.array(boots)))
        out[f"{c:.4g}"] = entry
    return out


def flops_model(df: pd.DataFrame, n_col: str) -> np.ndarray:
    """log(flops_per_token) ~ k0 + k1 log N + k2 log(1-S), fitted on the table itself, so the
    law can turn (N, S, C) into D = C / flops_per_token without importing the model code."""
    A = np.column_stack([np.ones(len(df)), np.log(df[n_col]), np.log1p(-df["sparsity"])])
    coef, *_ = np.linalg.lstsq(A, np.log(df["flops_per_token"]), rcond=None)
    return coef


def tokens_for(budget: float, n: np.ndarray, s: np.ndarray, fcoef: np.ndarray) -> np.ndarray:
    fpt = np.exp(fcoef[0] + fcoef[1] * np.log(n) + fcoef[2] * np.log1p(-s))
    return budget / fpt


def law_optimum(
    law: Law,
    theta: np.ndarray,
    fcoef: np.ndarray,
    budget: float,
    n: float | None = None,
    s: float | None = None,
    n_range=(1e3, 1e13),
    s_max: float = 0.99,
) -> dict:
    """Minimise the fitted law at a budget over S (N fixed), N (S fixed), or both."""
    ns = np.array([n]) if n is not None else np.exp(np.linspace(*np.log(n_range), 400))
    ss = np.array([s]) if s is not None else np.linspace(0.0, s_max, 199)
    Ng, Sg = np.meshgrid(ns, ss, indexing="ij")
    Dg = tokens_for(budget, Ng, Sg, fcoef)
    data = {
        "N": Ng.ravel(),
        "D": Dg.ravel(),
        "S": Sg.ravel(),
        "E": 1.0 / np.maximum(1 - Sg.ravel(), 1e-6),
    }  # E = 1/(1-S) at K = 1
    loss = law.predict(theta, data).reshape(Ng.shape)
    i, j = np.unravel_index(np.argmin(loss), loss.shape)
    return {
        "n": float(Ng[i, j]),
        "s": float(Sg[i, j]),
        "d": float(Dg[i, j]),
        "loss": float(loss[i, j]),
        "at_edge": bool((n is None and i in (0, len(ns) - 1)) or (s is None and j == len(ss) - 1)),
    }
