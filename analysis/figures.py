"""Figures, one function each; every figure is saved as PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.laws import Law

plt.rcParams.update(
    {
        "figure.dpi": 110,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "font.size": 10,
    }
)


def _save(fig, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out / f"{name}.{ext}", bbox_inches="tight")
    plt.close(fig)
    return out / f"{name}.png"


def _colors(values) -> dict:
    values = sorted(set(values))
    cmap = plt.get_cmap("viridis")
    return {v: cmap(i / max(1, len(values) - 1) * 0.9) for i, v in enumerate(values)}


def _budget_label(c: float) -> str:
    return f"C = {c:.2g} FLOPs"


def isoflop_curves(
    df: pd.DataFrame,
    iso: pd.DataFrame,
    out: Path,
    loss_col="val_loss",
    n_col="params_total",
    coef_key="coef",
) -> Path:
    budgets = sorted(df["budget_flops"].unique())
    colors = _colors(df["sparsity"])
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.2 * len(budgets), 3.6), squeeze=False)
    for ax, c in zip(axes[0], budgets):
        for s, g in df[df["budget_flops"] == c].groupby("sparsity"):
            ax.scatter(g[n_col], g[loss_col], color=colors[s], s=22, label=f"S={s:.3f}")
            row = iso[(iso["budget"] == c) & (iso["sparsity"] == s)]
            if len(row) and isinstance(row.iloc[0].get(coef_key), list):
                key = "n_star" if coef_key == "coef" else "n_star_active"
                lo = min(np.log(g[n_col].min()), np.log(row.iloc[0][key])) - 0.2
                hi = max(np.log(g[n_col].max()), np.log(row.iloc[0][key])) + 0.2
                x = np.linspace(lo, hi, 100)
                ax.plot(np.exp(x), np.polyval(row.iloc[0][coef_key], x), color=colors[s], lw=1.2)
                ax.scatter(
                    [row.iloc[0][key]],
                    [row.iloc[0]["loss_star"]],
                    marker="*",
                    s=110,
                    color=colors[s],
                    edgecolor="k",
                    zorder=5,
                )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(_budget_label(c))
        ax.set_xlabel("total parameters N" if n_col == "params_total" else n_col)
    axes[0][0].set_ylabel(loss_col)
    axes[0][-1].legend(fontsize=8, title="sparsity")
    return _save(fig, out, "isoflop_curves" if n_col == "params_total" else "isoflop_curves_active")


def loss_star_vs_sparsity(iso: pd.DataFrame, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.6))
    colors = _colors(iso["budget"])
    for c, g in iso.dropna(subset=["loss_star"]).groupby("budget"):
        g = g.sort_values("sparsity")
        err = None
        if "loss_star_ci" in g and all(isinstance(c, list) for c in g["loss_star_ci"]):
            ci = np.array(g["loss_star_ci"].tolist())
            err = np.abs(ci.T - g["loss_star"].values)
        ax.errorbar(
            g["sparsity"],
            g["loss_star"],
            yerr=err,
            marker="o",
            color=colors[c],
            capsize=3,
            label=_budget_label(c),
        )
    ax.set_xlabel("sparsity S = 1 - K/E")
    ax.set_ylabel("IsoFLOP-optimal loss L*")
    ax.legend(fontsize=8)
    return _save(fig, out, "loss_star_vs_sparsity")


def n_star_vs_sparsity(iso: pd.DataFrame, out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    colors = _colors(iso["budget"])
    for ax, key, label in (
        (axes[0], "n_star", "N* (total)"),
        (axes[1], "n_star_active", "N*_active"),
    ):
        if key not in iso:
            continue
        for c, g in iso.dropna(subset=[key]).groupby("budget"):
            g = g.sort_values("sparsity")
            ax.plot(g["sparsity"], g[key], marker="o", color=colors[c], label=_budget_label(c))
        ax.set_yscale("log")
        ax.set_xlabel("sparsity S")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    return _save(fig, out, "n_star_vs_sparsity")


def s_star_vs_n(
    curves: dict[float, tuple[np.ndarray, np.ndarray]], out: Path, law_name: str
) -> Path:
    """curves: budget -> (N grid, S* at each N) from a fitted law."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    colors = _colors(curves)
    for c, (n, s) in curves.items():
        ax.plot(n, s, color=colors[c], label=_budget_label(c))
    ax.set_xscale("log")
    ax.set_xlabel("total parameters N")
    ax.set_ylabel("optimal sparsity S*")
    ax.set_title(f"from the fitted {law_name} law")
    ax.legend(fontsize=8)
    return _save(fig, out, f"s_star_vs_n_{law_name}")


def law_fit(
    law: Law,
    pred: np.ndarray,
    obs: np.ndarray,
    held_out: np.ndarray,
    out: Path,
    sparsity: np.ndarray | None = None,
) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    c = sparsity if sparsity is not None else np.zeros_like(obs)
    ax = axes[0]
    sc = ax.scatter(
        obs[~held_out],
        pred[~held_out],
        c=c[~held_out],
        s=20,
        cmap="viridis",
        vmin=c.min(),
        vmax=max(c.max(), 1e-9),
        label="fitted",
    )
    if held_out.any():
        ax.scatter(
            obs[held_out],
            pred[held_out],
            c=c[held_out],
            s=40,
            marker="x",
            cmap="viridis",
            vmin=c.min(),
            vmax=max(c.max(), 1e-9),
            label="held out",
        )
    lo, hi = min(obs.min(), pred.min()), max(obs.max(), pred.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("observed loss")
    ax.set_ylabel("predicted loss")
    ax.set_title(f"{law.name}")
    ax.legend(fontsize=8)
    if sparsity is not None:
        fig.colorbar(sc, ax=ax, label="sparsity")
    rel = (pred - obs) / obs * 100
    axes[1].scatter(obs, rel, c=np.where(held_out, "tab:red", "tab:blue"), s=18)
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set_xlabel("observed loss")
    axes[1].set_ylabel("residual (%)")
    return _save(fig, out, f"law_fit_{law.name}")


def bootstrap_params(law: Law, samples: dict[str, np.ndarray], point: dict, out: Path) -> Path:
    k = len(law.params)
    cols = 5
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), squeeze=False)
    for ax, p in zip(axes.ravel(), law.params):
        log = p in law.log_coefficients
        v = samples[p][np.isfinite(samples[p]) & ((samples[p] > 0) | (not log))]
        ax.hist(np.log10(v) if log else v, bins=40, color="tab:blue", alpha=0.8)
        ax.axvline(np.log10(point[p]) if log else point[p], color="k", lw=1)
        ax.set_title(f"log10 {p}" if log else p, fontsize=9)
        ax.grid(False)
    for ax in axes.ravel()[k:]:
        ax.axis("off")
    return _save(fig, out, f"bootstrap_{law.name}")
