"""Figures, one function each; every figure is saved as PNG and PDF.

Bracketed IsoFLOP groups are drawn with filled stars at their minimum; groups whose lowest
loss sits at the edge of the sizes trained get hollow stars and are left out of the
cross-group panels (as they are left out of the fits).
"""

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
    # tight_layout fits the panels to the canvas once; bbox_inches="tight" on top of it only
    # trimmed ~10 pixels of margin and cost a second draw per file (report time -35% without it)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out / f"{name}.{ext}")
    plt.close(fig)
    return out / f"{name}.png"


def _colors(values) -> dict:
    values = sorted(set(values))
    cmap = plt.get_cmap("viridis")
    return {v: cmap(i / max(1, len(values) - 1) * 0.9) for i, v in enumerate(values)}


def _budget_label(c: float) -> str:
    return f"C = {c:.2g} FLOPs"


def _yerr(values: np.ndarray, cis) -> np.ndarray | None:
    """Asymmetric error bars from intervals. An unbounded side is drawn longer than any other
    bar (the report prints it as -inf/inf)."""
    if not all(isinstance(c, list) for c in cis):
        return None
    values = np.asarray(values, float)
    lo = np.array([np.nan if c[0] is None else v - c[0] for v, c in zip(values, cis)])
    hi = np.array([np.nan if c[1] is None else c[1] - v for v, c in zip(values, cis)])
    finite = np.concatenate([lo[np.isfinite(lo)], hi[np.isfinite(hi)]])
    long = 1.5 * max(finite.max() if finite.size else 0, np.ptp(values), 1e-3 * abs(values).max())
    return np.clip(np.nan_to_num(np.vstack([lo, hi]), nan=long), 0, None)


def isoflop_curves(
    df: pd.DataFrame, iso: pd.DataFrame, out: Path, loss_col="val_loss", active: bool = False
) -> Path:
    n_col, key, coef_key = (
        ("N_active", "n_star_active", "coef_active") if active else ("N_total", "n_star", "coef")
    )
    budgets = sorted(iso["budget"].unique())
    colors = _colors(df["sparsity"])
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.2 * len(budgets), 3.6), squeeze=False)
    for ax, c in zip(axes[0], budgets):
        for s, g in df[df["budget_group"] == c].groupby("sparsity"):
            ax.scatter(g[n_col], g[loss_col], color=colors[s], s=22, label=f"S={s:.3f}")
            row = iso[(iso["budget"] == c) & (iso["sparsity"] == s)]
            if not len(row):
                continue
            r = row.iloc[0]
            lo, hi = np.log(g[n_col].min()) - 0.3, np.log(g[n_col].max()) + 0.3
            x = np.linspace(lo, hi, 100)
            ax.plot(np.exp(x), np.polyval(r[coef_key], x), color=colors[s], lw=1.2)
            if np.isfinite(r[key]) and r[key] > 0 and lo <= np.log(r[key]) <= hi:
                ax.scatter(
                    [r[key]],
                    [np.polyval(r[coef_key], np.log(r[key]))],
                    marker="*",
                    s=120,
                    zorder=5,
                    edgecolor="k",
                    color=colors[s] if r["bracketed"] else "none",
                )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(_budget_label(iso[iso["budget"] == c]["C"].iloc[0]))
        ax.set_xlabel("active parameters N_active" if active else "total parameters N")
    axes[0][0].set_ylabel(loss_col)
    axes[0][-1].legend(fontsize=8, title="sparsity (hollow star: not bracketed)", title_fontsize=7)
    return _save(fig, out, "isoflop_curves_active" if active else "isoflop_curves")


def loss_star_vs_sparsity(iso: pd.DataFrame, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.6))
    colors = _colors(iso["C"])
    for c, g in iso[iso["bracketed"]].groupby("C"):
        g = g.sort_values("sparsity")
        ax.errorbar(
            g["sparsity"],
            g["loss_star"],
            yerr=_yerr(g["loss_star"].values, g["loss_star_ci"].tolist()),
            marker="o",
            color=colors[c],
            capsize=3,
            label=_budget_label(c),
        )
        ax.plot(g["sparsity"], g["best_loss"], "x", color=colors[c], alpha=0.6)
    ax.set_xlabel("sparsity S = 1 - K/E")
    ax.set_ylabel("IsoFLOP-optimal loss L* (x: best observed)")
    ax.legend(fontsize=8)
    return _save(fig, out, "loss_star_vs_sparsity")


def n_star_vs_sparsity(iso: pd.DataFrame, out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    colors = _colors(iso["C"])
    for ax, key, label in (
        (axes[0], "n_star", "N* (total)"),
        (axes[1], "n_star_active", "N*_active"),
    ):
        for c, g in iso[iso["bracketed"]].groupby("C"):
            g = g.sort_values("sparsity")
            ax.errorbar(
                g["sparsity"],
                g[key],
                yerr=_yerr(g[key].values, g[f"{key}_ci"].tolist()),
                marker="o",
                color=colors[c],
                capsize=3,
                label=_budget_label(c),
            )
        ax.set_yscale("log")
        ax.set_xlabel("sparsity S")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    return _save(fig, out, "n_star_vs_sparsity")


def loss_star_vs_inference_cost(iso: pd.DataFrame, out: Path) -> Path:
    """Each bracketed optimum's L* against what serving it costs: the parameters held in
    memory (N*, total) and, where the table records it, its KV cache per token. Read
    left to right at fixed L*: the sparsity that is cheapest to serve for a quality."""
    kv = "kv_cache_star" in iso and iso["kv_cache_star"].notna().any()
    fig, axes = plt.subplots(1, 2 if kv else 1, figsize=(9 if kv else 5, 3.6), squeeze=False)
    colors = _colors(iso["C"])
    panels = [("n_star", "parameters to serve (N* total)")]
    panels += [("kv_cache_star", "KV cache at N* (bytes/token, bf16)")] if kv else []
    for ax, (key, label) in zip(axes[0], panels):
        for c, g in iso[iso["bracketed"]].groupby("C"):
            g = g.sort_values("sparsity")
            ax.plot(g[key], g["loss_star"], "o-", color=colors[c], label=_budget_label(c))
            for _, r in g.iterrows():
                ax.annotate(
                    f"E={1 / (1 - r['sparsity']):.0f}", (r[key], r["loss_star"]), fontsize=7
                )
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("L*")
    axes[0][0].legend(fontsize=8)
    return _save(fig, out, "loss_star_vs_inference_cost")


def s_star_vs_n(
    curves: dict[float, tuple[np.ndarray, np.ndarray]],
    out: Path,
    name: str,
    s_range: tuple[float, float],
) -> Path:
    """curves: budget -> (N grid, S* at each N, searched inside the trained S range)."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    colors = _colors(curves)
    for c, (n, s) in curves.items():
        ax.plot(n, s, color=colors[c], label=_budget_label(c))
    ax.axhline(s_range[1], color="grey", ls=":", lw=1, label="largest trained S")
    ax.set_xscale("log")
    ax.set_xlabel("N (the law's)")
    ax.set_ylabel("optimal sparsity S*")
    ax.set_title(f"from the fitted {name} law (inside the trained S)", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, out, f"s_star_vs_n_{name}")


def law_fit(st, pred: np.ndarray, out: Path, sparsity: np.ndarray | None = None) -> Path:
    obs, held_out = st.loss, st.held_out_mask
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    c = sparsity if sparsity is not None else np.zeros_like(obs)
    ax = axes[0]
    kw = {"cmap": "viridis", "vmin": c.min(), "vmax": max(c.max(), 1e-9)}
    sc = ax.scatter(obs[~held_out], pred[~held_out], c=c[~held_out], s=20, label="fitted", **kw)
    if held_out.any():
        ax.scatter(
            obs[held_out], pred[held_out], c=c[held_out], s=40, marker="x", label="held out", **kw
        )
    lo, hi = min(obs.min(), pred.min()), max(obs.max(), pred.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("observed loss")
    ax.set_ylabel("predicted loss")
    ax.set_title(st.label)
    ax.legend(fontsize=8)
    if sparsity is not None:
        fig.colorbar(sc, ax=ax, label="sparsity")
    rel = (pred - obs) / obs * 100
    axes[1].scatter(obs, rel, c=np.where(held_out, "tab:red", "tab:blue"), s=18)
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set_xlabel("observed loss")
    axes[1].set_ylabel("residual (%)")
    return _save(fig, out, f"law_fit_{st.label}".replace("@", "_").replace("=", ""))


def bootstrap_params(
    law: Law, samples: dict[str, np.ndarray], point: dict, out: Path, name: str
) -> Path:
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
    return _save(fig, out, f"bootstrap_{name}".replace("@", "_").replace("=", ""))
