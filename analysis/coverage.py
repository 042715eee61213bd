"""Benchmark: do the IsoFLOP intervals cover the truth? (prints a table)

    python -m analysis.coverage [--replications 200 --bootstrap 400 --sizes 4 --seeds 1]

Each replication draws a synthetic IsoFLOP design with known truth: 3 budgets x 3
sparsities, ``--sizes`` model sizes spaced 1.7x around an off-centre true optimum, losses on an
exact parabola in log N plus Gaussian noise (sigma = 0.006, the seed-to-seed spread measured on
the demo), ``--seeds`` runs per size. The analysis (analysis/isoflop.py) runs on it as on real
runs; the table gives the fraction of replications whose 95% interval contains the true N*,
L*, slope of L* vs S and exponent of N* in C. Nominal is 0.95; the acceptance bar is 0.85.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from analysis.isoflop import analyse

BUDGETS = (1e10, 1e11, 1e12)
SPARSITIES = (0.0, 0.5, 0.75)
CURVATURE = 0.05  # nats per (log N)^2
SIGMA = 0.006


def truth(c: float, s: float) -> tuple[float, float]:
    """(N*, L*) of group (c, s): N* ~ C^0.5 grows with S, L* falls with C and with S."""
    n_star = 0.02 * c**0.5 * (1 + 2 * s)
    l_star = 2.0 + 40 * c**-0.12 - 0.08 * s
    return n_star, l_star


def synthetic(rng: np.random.Generator, sizes: int, seeds: int) -> pd.DataFrame:
    rows = []
    for c in BUDGETS:
        for s in SPARSITIES:
            n_star, l_star = truth(c, s)
            offset = rng.uniform(-0.25, 0.25)  # the grid is never centred exactly
            for k in range(sizes):
                x = np.log(n_star) + offset + np.log(1.7) * (k - (sizes - 1) / 2)
                for seed in range(seeds):
                    loss = l_star + CURVATURE * (x - np.log(n_star)) ** 2 + rng.normal(0, SIGMA)
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
                            "val_loss": loss,
                        }
                    )
    return pd.DataFrame(rows)


def covered(ci, value: float) -> bool:
    if ci is None:
        return False
    lo = -np.inf if ci[0] is None else ci[0]
    hi = np.inf if ci[1] is None else ci[1]
    return lo <= value <= hi


def run(replications: int, n_boot: int, sizes: int, seeds: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    hits: dict[str, list] = {"N*": [], "L*": [], "slope": [], "exponent": []}
    bracketed = []
    for r in range(replications):
        res = analyse(synthetic(rng, sizes, seeds), "val_loss", n_boot=n_boot, seed=r)
        for g in res.groups:
            n_star, l_star = truth(g["budget"], g["sparsity"])
            bracketed.append(g["bracketed"])
            hits["N*"].append(covered(g["n_star_ci"], n_star))
            hits["L*"].append(covered(g["loss_star_ci"], l_star))
        for c, v in res.slopes.items():
            if "slope" in v:
                ls = [truth(float(c), s)[1] for s in v["sparsities"]]
                hits["slope"].append(covered(v["slope_ci"], np.polyfit(v["sparsities"], ls, 1)[0]))
        for v in res.scaling.values():
            if "n_star" in v:
                hits["exponent"].append(covered(v["n_star"]["ci"], 0.5))
    out = {k: (float(np.mean(v)), len(v)) for k, v in hits.items()}
    out["bracketed_fraction"] = (float(np.mean(bracketed)), len(bracketed))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replications", type=int, default=200)
    ap.add_argument("--bootstrap", type=int, default=400)
    ap.add_argument("--sizes", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=1)
    a = ap.parse_args()
    t0 = time.perf_counter()
    res = run(a.replications, a.bootstrap, a.sizes, a.seeds)
    print(
        f"{a.replications} synthetic designs: {len(BUDGETS)} budgets x {len(SPARSITIES)} "
        f"sparsities x {a.sizes} sizes x {a.seeds} seed(s), sigma {SIGMA}, "
        f"{a.bootstrap} bootstrap draws each ({time.perf_counter() - t0:.0f} s)\n"
    )
    print(f"{'quantity':<20} {'coverage of 95% CI':>19} {'intervals':>10}")
    for k, (frac, n) in res.items():
        print(f"{k:<20} {frac:>19.3f} {n:>10}")


if __name__ == "__main__":
    main()
