"""Benchmark: law fit + bootstrap on synthetic runs (prints a table).

    python -m analysis.benchmark_fit [--runs 100] [--bootstrap 1000]

Target (issue 5): the Apple law, 1000 bootstraps on ~100 runs in <= 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import time

from analysis.fit import bootstrap, fit_law
from analysis.laws import LAWS
from analysis.synthetic import TRUE, random_points


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--laws", default="apple,chinchilla,joint_moe")
    a = ap.parse_args()
    n = a.runs
    print(f"{n} synthetic runs, {a.bootstrap} bootstrap resamples, {os.cpu_count()} cores\n")
    print(
        f"{'law':<11} {'params':>6} {'fit s':>7} {'bootstrap s':>12} {'total s':>8} "
        f"{'other basin':>12}"
    )
    for name in a.laws.split(","):
        law = LAWS[name]
        data, y = random_points(law, TRUE[name], n)
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
