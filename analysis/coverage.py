"""Benchmark: do the report's intervals cover the truth, on designs like real ones? (a table)

    python -m analysis.coverage [--preset all] [--replications 200] [--bootstrap 400]
        [--sigma SD] [--json docs/coverage.json]

Each replication draws a synthetic IsoFLOP design with a known truth and runs the analysis on
it as on real runs (analysis/isoflop.py: per-budget noise, lack of fit, bootstrap); the table
gives, per quantity the report prints an interval for, the fraction of replications whose 95%
interval holds the truth (nominal 0.95), how many intervals there were, and how many groups or
budgets got none (a transition-dominated budget, for one, gets none by design), and the median
half-width of the bounded intervals: what a design can resolve (``--sigma`` replaces the
preset's noise, e.g. by a pilot's measured seed sd, to size a study before it runs).

Presets (``--preset``):
- ``easy``: the old built-in truth: an exact parabola in log N, 3 budgets x 3 sparsities x 4
  sizes, one seed, sigma 0.006;
- ``kernel``: the committed study's design: 3 budgets x 5 sparsities, 4 sizes 1.8x apart, 2
  seeds, its measured noise per budget (0.03 at the largest; 0.2 at the middle one, whose seeds
  disagree far more than Gaussian noise would: heavy-tailed there), a parabola;
- ``heavy``: the kernel design with Student-t noise (3 degrees of freedom) at every budget;
- ``asymmetric``: a Chinchilla-shaped truth (steep below the optimum, flat above), 6 sizes 1.8x
  apart, 2 seeds, sigma 0.005: the case where a parabola's N* misses;
- ``study2``: the second study's design (issue 20): 2 budgets x E in {1, 4, 16}, 6 sizes 1.5x
  apart, 2 seeds, sigma 0.01, a sparsity effect of -0.02 nats per doubling of E.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.isoflop import analyse
from experiments.files import atomic_write_json


@dataclass
class Preset:
    budgets: tuple
    sparsities: tuple
    sizes: int
    spacing: float
    seeds: int
    sigma: dict  # budget -> noise sd
    shape: str = "parabola"  # parabola | chinchilla
    noise: str = "gaussian"  # gaussian | t3 | heavy-at (Student-t at the budgets listed)
    heavy_at: tuple = field(default_factory=tuple)
    effect: float = -0.02  # nats of L* per doubling of E


KERNEL_SIGMA = {6e13: 0.05, 1.9e14: 0.2, 6e14: 0.03}
PRESETS = {
    "easy": Preset(
        (1e10, 1e11, 1e12), (0.0, 0.5, 0.75), 4, 1.7, 1, dict.fromkeys((1e10, 1e11, 1e12), 0.006)
    ),
    "kernel": Preset(
        tuple(KERNEL_SIGMA),
        (0.0, 0.5, 0.75, 0.875, 0.9375),
        4,
        1.8,
        2,
        KERNEL_SIGMA,
        noise="heavy-at",
        heavy_at=(1.9e14,),
    ),
    "heavy": Preset(
        tuple(KERNEL_SIGMA), (0.0, 0.5, 0.75, 0.875, 0.9375), 4, 1.8, 2, KERNEL_SIGMA, noise="t3"
    ),
    "asymmetric": Preset(
        (1e13, 1e14, 1e15),
        (0.0, 0.75),
        6,
        1.8,
        2,
        dict.fromkeys((1e13, 1e14, 1e15), 0.005),
        shape="chinchilla",
    ),
    "study2": Preset((3e15, 6e15), (0.0, 0.75, 0.9375), 6, 1.5, 2, {3e15: 0.01, 6e15: 0.01}),
}
CURVATURE = 0.05  # nats per (log N)^2 of the parabola presets


def optimum(p: Preset, c: float, s: float) -> tuple[float, float]:
    """The true (N*, L*) of group (c, s): N* ~ C^0.5 grows with S; L* falls with C and with
    each doubling of E by ``effect``."""
    doublings = -np.log2(1 - s)
    return 0.02 * c**0.5 * (1 + doublings), 2.0 + 40 * c**-0.12 + p.effect * doublings


def curve(p: Preset, c: float, s: float):
    """The true loss as a function of log N for group (c, s)."""
    n_star, l_star = optimum(p, c, s)
    x0 = np.log(n_star)
    if p.shape == "parabola":
        return lambda x: l_star + CURVATURE * (x - x0) ** 2
    # L = l* + A (e^{-a(x-x0)} / a + e^{b(x-x0)} / b - 1/a - 1/b) A-scaled: its minimum is at x0
    a, b = 0.5, 0.25
    scale = 2 * CURVATURE / (a + b)
    return lambda x: (
        l_star + scale * (np.exp(-a * (x - x0)) / a + np.exp(b * (x - x0)) / b - 1 / a - 1 / b)
    )


def _noise(p: Preset, c: float, rng, n: int) -> np.ndarray:
    sd = p.sigma[c]
    if p.noise == "t3" or (p.noise == "heavy-at" and c in p.heavy_at):
        return sd * rng.standard_t(3, n) / np.sqrt(3.0)  # t3 scaled to sd
    return rng.normal(0, sd, n)


def synthetic(p: Preset, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for c in p.budgets:
        for s in p.sparsities:
            n_star, _ = optimum(p, c, s)
            f = curve(p, c, s)
            offset = rng.uniform(-0.25, 0.25)  # the grid is never centred exactly
            xs = (
                np.log(n_star)
                + offset
                + np.log(p.spacing) * (np.arange(p.sizes) - (p.sizes - 1) / 2)
            )
            for seed in range(p.seeds):
                for x, loss in zip(xs, f(xs) + _noise(p, c, rng, len(xs))):
                    n = float(np.exp(x))
                    rows.append(
                        {
                            "budget_group": c,
                            "C": c,
                            "sparsity": s,
                            "N_total": n,
                            "N_active": n * (1 - s),
                            "tokens": c / (6 * n * (1 - s)),
                            "seed": seed,
                            "val_loss": float(loss),
                        }
                    )
    return pd.DataFrame(rows)


def covered(ci, value: float) -> bool:
    lo = -np.inf if ci[0] is None else ci[0]
    hi = np.inf if ci[1] is None else ci[1]
    return lo <= value <= hi


def _true_optimum(p: Preset, c: float, s: float) -> tuple[float, float]:
    f = curve(p, c, s)
    fine = np.log(optimum(p, c, s)[0]) + np.linspace(-3, 3, 60001)
    i = int(np.argmin(f(fine)))
    return float(np.exp(fine[i])), float(f(fine[i]))


def run(
    preset: str, replications: int, n_boot: int, seed: int = 0, sigma: float | None = None
) -> dict:
    """Coverage of every interval over ``replications`` synthetic designs of ``preset``
    (``sigma``: the same noise sd at every budget instead of the preset's)."""
    p = PRESETS[preset]
    if sigma is not None:
        p = replace(p, sigma=dict.fromkeys(p.sigma, sigma))
    rng = np.random.default_rng(seed)
    hits: dict[str, list] = {
        k: [] for k in ("N*", "L*", "slope in S", "per doubling of E", "vs dense", "exponent")
    }
    missing: dict[str, int] = dict.fromkeys(hits, 0)
    halves: dict[str, list] = {k: [] for k in hits}  # half-widths of the bounded intervals

    def score(key, ci, truth):
        if ci is None:
            missing[key] += 1
        else:
            hits[key].append(covered(ci, truth))
            if ci[0] is not None and ci[1] is not None:
                halves[key].append((ci[1] - ci[0]) / 2)

    for r in range(replications):
        res = analyse(synthetic(p, rng), "val_loss", n_boot=n_boot, seed=r)
        for g in res.groups:
            n_star, l_star = _true_optimum(p, g["budget"], g["sparsity"])
            score("N*", g["n_star_ci"], n_star)
            score("L*", g["loss_star_ci"], l_star)
        for c, v in res.slopes.items():
            if "slope" in v:
                ls = [_true_optimum(p, float(c), s)[1] for s in v["sparsities"]]
                score("slope in S", v["slope_ci"], np.polyfit(v["sparsities"], ls, 1)[0])
        for c, e in res.effects.items():
            if "per_doubling" in e:
                score("per doubling of E", e["per_doubling_ci"], p.effect)
            dense = _true_optimum(p, float(c), 0.0)[1]
            for s, d in (e.get("vs_dense") or {}).items():
                score("vs dense", d["ci"], _true_optimum(p, float(c), float(s))[1] - dense)
        for v in res.scaling.values():
            if "n_star" in v:
                score("exponent", v["n_star"]["ci"], 0.5)
    return {
        k: {
            "coverage": float(np.mean(v)) if v else None,
            "intervals": len(v),
            "none": missing[k],
            "median_half_width": float(np.median(halves[k])) if halves[k] else None,
        }
        for k, v in hits.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="all", choices=["all", *PRESETS])
    ap.add_argument("--replications", type=int, default=200)
    ap.add_argument("--bootstrap", type=int, default=400)
    ap.add_argument("--json", default=None)
    ap.add_argument("--sigma", type=float, default=None, help="noise sd at every budget")
    a = ap.parse_args()
    presets = list(PRESETS) if a.preset == "all" else [a.preset]
    table = {}
    head = f"{'preset':<11} {'quantity':<18} {'coverage':>9} {'intervals':>10} {'none':>6}"
    print(head + f" {'median half-width':>18}")
    for name in presets:
        t0 = time.perf_counter()
        table[name] = run(name, a.replications, a.bootstrap, sigma=a.sigma)
        for k, v in table[name].items():
            cov = f"{v['coverage']:.3f}" if v["coverage"] is not None else "–"
            half = f"{v['median_half_width']:.4g}" if v["median_half_width"] is not None else "–"
            print(f"{name:<11} {k:<18} {cov:>9} {v['intervals']:>10} {v['none']:>6} {half:>18}")
        print(
            f"{'':<11} ({a.replications} designs, {a.bootstrap} draws, {time.perf_counter() - t0:.0f} s)"
        )
        if a.json:  # after every preset: an interrupted run keeps what it measured
            atomic_write_json(Path(a.json), table)


if __name__ == "__main__":
    main()
