"""The sparsity effect, read the way a sparsity study should be read.

Per budget, from the IsoFLOP groups (bracketed ones only) and the same bootstrap draws as
everything else (and, for continuity with earlier reports, the slope of L\\* in S itself,
``slope_in_sparsity``):
- **per doubling of E**: the slope of L\\* against log2(E), E = 1/(1-S) (K=1: the expert count).
  Abnar et al.'s law and the question "how sparse" are in log(1-S), not in S;
- **vs dense**: Delta L\\*(S) = L\\*(S) - L\\*(dense), with its interval, for every sparsity;
- **paired at matched width**: the loss difference between a sparse run and the dense run of the
  same width and seed (the same data order: common random numbers), averaged over the widths
  and seeds both have, with a t interval over the pairs. It needs no parabola and is the most
  powerful contrast such a design has, but it compares equal widths, not optima;
- **vs dense, censored** (``vs_dense_bound``): a sparse group that is not bracketed (its lowest
  loss at an edge the design could not go past, e.g. a corpus too small for smaller models)
  has no located L\\*, but its true minimum lies at or below its lowest size-mean loss, so
  that loss minus the dense L\\* bounds ΔL\\* from above. Its interval redraws the edge's mean
  with the budget's noise (the same noise scale draws as every other interval) against the
  dense L\\*'s bootstrap. An upper end below 0 supports "sparser is better"; nothing in it can
  show the effect is small.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.fit import percentile_interval


def doublings(sparsity) -> np.ndarray:
    """log2(E) for E = 1/(1-S): 0 for dense, 4 for S = 0.9375."""
    return -np.log2(1.0 - np.asarray(sparsity, float))


def slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """OLS slope of y (..., k) on x (k,): for one fit or a stack of bootstrap replicates."""
    xc = x - x.mean()
    return (y * xc).sum(-1) / (xc * xc).sum()


def sparsity_effects(rows, keep, point, boot, level, design_df, loss, draws=None) -> dict:
    """Per budget: the effect entries; ``draws`` (if given) receives each interval's bootstrap
    draws under (budget, "per_doubling") and (budget, "vs_dense@S")."""
    out = {}
    draws = {} if draws is None else draws
    for b in sorted({r["budget"] for r in rows}):
        idx = [i for i in keep if rows[i]["budget"] == b]
        entry: dict = {}
        s = np.array([rows[i]["sparsity"] for i in idx])
        whole = bool(idx) and all(boot[i] for i in idx)
        if len(np.unique(s)) >= 2:
            x = doublings(s)
            entry["per_doubling"] = float(slope(x, np.array([point[i]["loss_star"] for i in idx])))
            entry["per_doubling_ci"] = None
            if whole:
                reps = slope(x, np.stack([boot[i]["loss_star"] for i in idx], axis=-1))
                draws[(f"{b:.4g}", "per_doubling")] = reps
                entry["per_doubling_ci"] = percentile_interval(reps, level)
        dense = [i for i in idx if rows[i]["sparsity"] == 0]
        if dense:
            d = dense[0]
            entry["vs_dense"] = {}
            for i in idx:
                if i == d:
                    continue
                key = f"{rows[i]['sparsity']:.4f}"
                delta: dict = {
                    "delta": float(point[i]["loss_star"] - point[d]["loss_star"]),
                    "ci": None,
                }
                if boot[i] and boot[d]:
                    reps = boot[i]["loss_star"] - boot[d]["loss_star"]
                    draws[(f"{b:.4g}", f"vs_dense@{key}")] = reps
                    delta["ci"] = percentile_interval(reps, level)
                entry["vs_dense"][key] = delta
        entry["paired"] = paired_contrasts(design_df[design_df["budget_group"] == b], loss, level)
        out[f"{b:.4g}"] = entry
    return out


def edge_draws(g, scale: np.ndarray, rng) -> np.ndarray:
    """(B,) redraws of a group's lowest size-mean loss: its mean over that size's runs plus
    the mean of as many noise draws at each replicate's noise scale."""
    xs, means = g.size_means()
    best = int(np.argmin(means))
    n = int((g.x == xs[best]).sum())
    return means[best] + rng.normal(size=len(scale)) * scale / np.sqrt(n)


def censored_bounds(rows, point, boot, edges: dict, level: float) -> dict:
    """Per budget: {sparsity: {delta_at_most, ci}} for each unbracketed sparse group against a
    bracketed dense group of the same budget; ``edges`` {row index: edge_draws}."""
    out: dict = {}
    for i, r in enumerate(rows):
        dense = [
            j
            for j, d in enumerate(rows)
            if d["budget"] == r["budget"] and d["sparsity"] == 0 and d["bracketed"]
        ]
        if r["bracketed"] or r["sparsity"] == 0 or not dense:
            continue
        d = dense[0]
        entry: dict = {"delta_at_most": float(r["best_loss"] - point[d]["loss_star"]), "ci": None}
        if i in edges and boot[d]:
            entry["ci"] = percentile_interval(edges[i] - boot[d]["loss_star"], level)
        out.setdefault(f"{r['budget']:.4g}", {})[f"{r['sparsity']:.4f}"] = entry
    return out


def add_censored_bounds(effects, rows, groups, point, boot, scales, rng, level) -> None:
    """``effects[budget]["vs_dense_bound"]`` for the budgets with an unbracketed sparse group
    (``scales``: each budget's noise scale draws, as the bootstrap used them)."""
    edges = {
        i: edge_draws(g, scales[g.budget], rng)
        for i, g in enumerate(groups)
        if not rows[i]["bracketed"] and g.budget in scales
    }
    for b, bounds in censored_bounds(rows, point, boot, edges, level).items():
        effects.setdefault(b, {})["vs_dense_bound"] = bounds


def paired_contrasts(df: pd.DataFrame, loss: str, level: float = 0.95) -> dict:
    """Per sparsity: mean over (width, seed) pairs of loss(S) - loss(dense), and its t interval."""
    width = "d_model" if "d_model" in df else "N_active"
    dense = df[df["sparsity"] == 0].set_index([width, "seed"])[loss]
    out = {}
    for s, g in df[df["sparsity"] > 0].groupby("sparsity"):
        mine = g.set_index([width, "seed"])[loss]
        both = mine.index.intersection(dense.index)
        if len(both) == 0:
            continue
        out[f"{s:.4f}"] = mean_with_t_interval((mine.loc[both] - dense.loc[both]), level)
    return out


def mean_with_t_interval(diffs, level: float = 0.95) -> dict:
    """{pairs, mean, ci}: the mean of paired differences with its t interval (none from one
    pair)."""
    diffs = np.asarray(diffs, float)
    entry: dict = {"pairs": len(diffs), "mean": float(diffs.mean()), "ci": None}
    if len(diffs) >= 2:
        half = stats.t.ppf(0.5 + level / 2, len(diffs) - 1) * diffs.std(ddof=1)
        half /= np.sqrt(len(diffs))
        entry["ci"] = [float(diffs.mean() - half), float(diffs.mean() + half)]
    return entry


def slope_in_sparsity(rows, keep, point, boot, level) -> dict:
    """Per budget: the slope of L* in S (linear) over its bracketed sparsities."""
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
            entry["slope"] = float(slope(s, np.array([point[i]["loss_star"] for i in idx])))
            entry["slope_ci"] = (
                percentile_interval(
                    slope(s, np.stack([boot[i]["loss_star"] for i in idx], axis=-1)), level
                )
                if all(boot[i] for i in idx)
                else None
            )
        out[f"{b:.4g}"] = entry
    return out
