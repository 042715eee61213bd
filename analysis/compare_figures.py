"""Figures of a comparison: each source's IsoFLOP optima against sparsity on shared axes (one
colour per source, one marker per budget), and each identifiable law's S*(N) per source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.effects import doublings
from analysis.figures import _budget_label, _save, _yerr, plt

MARKERS = "osD^vP*Xh"
LINES = ("-", "--", ":", "-.")


def _source_colors(labels: list[str]) -> dict:
    cmap = plt.get_cmap("tab10")
    return {lbl: cmap(i % 10) for i, lbl in enumerate(labels)}


def _budget_markers(budgets) -> dict:
    return {c: MARKERS[i % len(MARKERS)] for i, c in enumerate(sorted(set(budgets)))}


def optima_vs_sparsity(frames: dict[str, pd.DataFrame], key: str, out: Path, name: str) -> Path:
    """frames: source label -> its IsoFLOP groups (report's `groups`); bracketed ones drawn
    with their intervals against log2 E. key: loss_star, n_star or n_star_active."""
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = _source_colors(list(frames))
    budgets = [c for f in frames.values() if len(f) for c in f["C"]]
    markers = _budget_markers(budgets)
    for label, frame in frames.items():
        if frame.empty:
            continue
        for c, g in frame[frame["bracketed"]].groupby("C"):
            g = g.sort_values("sparsity")
            ax.errorbar(
                doublings(g["sparsity"]),
                g[key],
                yerr=_yerr(g[key].values, g[f"{key}_ci"].tolist()),
                marker=markers[c],
                color=colors[label],
                capsize=3,
                label=f"{label}, {_budget_label(c)}",
            )
    if key != "loss_star":
        ax.set_yscale("log")
    ax.set_xlabel("log2 E (E = 1/(1-S); 0 = dense)")
    ax.set_ylabel({"loss_star": "L*", "n_star": "N* (total)", "n_star_active": "N*_active"}[key])
    ax.legend(fontsize=7)
    return _save(fig, out, name)


def s_star_vs_n(curves: dict[str, dict], out: Path, law: str) -> Path:
    """curves: source label -> {budget: (N grid, S*)} from that source's fitted law."""
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = _source_colors(list(curves))
    for label, per_budget in curves.items():
        for i, (c, (n, s)) in enumerate(sorted(per_budget.items())):
            ax.plot(
                n,
                np.asarray(s),
                ls=LINES[i % len(LINES)],
                color=colors[label],
                label=f"{label}, {_budget_label(c)}",
            )
    ax.set_xscale("log")
    ax.set_xlabel("N (the law's)")
    ax.set_ylabel("optimal sparsity S*")
    ax.set_title(f"{law}: S*(N) per source, inside each one's trained S", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, out, f"s_star_vs_n_{law}")
