"""Benchmark: law fit + bootstrap on synthetic runs (prints a table).

    python -m analysis.benchmark_fit [--runs 100] [--bootstrap 1000]

Target (issue 5): the Apple law, 1000 bootstraps on ~100 runs in <= 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from analysis.fit import bootstrap, fit_law
from analysis.laws import LAWS

TRUE = {
    "chinchilla": {"A": 406.4, "B": 410.7, "E": 1.69, "alpha": 0.34, "beta": 0.28},
    "apple": {
        "a": 300.0,
        "b": 400.0,
        "c": 0.3,
        "d": 30.0,
        "e": 1.7,
        "alpha": 0.3,
        "beta": 0.28,
        "gamma": 0.2,
        "delta": 0.5,
        "lambda": 0.6,
    },
    "joint_moe": {
        "a": 120.0,
        "b": 900.0,
        "c": 1.8,
        "alpha": -0.3,
        "beta": -0.3,
        "gamma": 0.01,
        "delta": -0.15,
        "omega": 0.05,
        "zeta": -0.01,
    },
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--laws", default="apple,chinchilla,joint_moe")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    n = a.runs
    data = {
        "N": np.exp(rng.uniform(np.log(1e7), np.log(3e9), n)),
        "D": np.exp(rng.uniform(np.log(1e9), np.log(3e11), n)),
        "S": rng.choice([0, 0.5, 0.75, 0.875, 0.9375], n),
        "E": rng.choice([1, 2, 4, 8, 16, 32], n).astype(float),
    }
    print(f"{n} synthetic runs, {a.bootstrap} bootstrap resamples, {os.cpu_count()} cores\n")
    print(
        f"{'law':<11} {'params':>6} {'fit s':>7} {'bootstrap s':>12} {'total s':>8} "
        f"{'other basin':>12}"
    )
    for name in a.laws.split(","):
        law = LAWS[name]
        y = law.predict(law.to_theta(TRUE[name]), data) * np.exp(rng.normal(0, 0.005, n))
        t0 = time.perf_counter()
        point = fit_law(law, data, y)
        t1 = time.perf_counter()
        _, other = bootstrap(law, data, y, point, n_boot=a.bootstrap)
        t2 = time.perf_counter()
        print(
            f"{name:<11} {len(law.params):>6} {t1 - t0:>7.1f} {t2 - t1:>12.1f} {t2 - t0:>8.1f} "
            f"{other:>12.2f}"
        )


if __name__ == "__main__":
    main()
