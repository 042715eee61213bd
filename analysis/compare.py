"""Compare fits side by side: two or more runs tables (sweeps, corpora) and/or laws.

    python -m analysis.compare sweeps/a/runs sweeps/b/report/runs.parquet --law apple \\
        --budgets 1e18 1e19

Prints each fitted parameter with its 95% bootstrap interval per table, the held-out errors, and
the optima each fit implies at the chosen budgets; `*` flags a parameter whose intervals do not
overlap between fits.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from analysis.collect import done_runs, load_table
from analysis.laws import LAWS, Columns
from analysis.study import law_optima, study_law


def _fmt(v) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.4g}"


def overlap(cis: list[list[float]]) -> bool:
    return max(lo for lo, _ in cis) <= min(hi for _, hi in cis)


def compare(
    sources: list[Path],
    laws: list[str],
    cols: Columns,
    n_given: bool,
    n_boot: int,
    budgets: list[float] | None,
) -> str:
    studies = []  # (label, study)
    for src in sources:
        df = done_runs(load_table(src)[0], cols.loss)
        for law in laws:
            studies.append((f"{Path(src).name}:{law}", study_law(df, law, cols, n_given, n_boot)))
    lines = []
    width = max(24, *(len(lbl) + 2 for lbl, _ in studies))
    for law in laws:
        group = [(lbl, st) for lbl, st in studies if st.law.name == law]
        lines.append(f"\n== {law}: {LAWS[law].formula}")
        lines.append(f"{'parameter':<10}" + "".join(f"{lbl:>{width}}" for lbl, _ in group))
        for p in LAWS[law].params:
            cis = [st.params[p]["ci"] for _, st in group]
            flag = "" if len(group) < 2 or overlap(cis) else "  * intervals do not overlap"
            cells = "".join(
                f" {_fmt(st.params[p]['estimate']) + ' [' + _fmt(ci[0]) + ', ' + _fmt(ci[1]) + ']':>{width}}"
                for (_, st), ci in zip(group, cis)
            )
            lines.append(f"{p:<10}{cells}{flag}")
        holdout = "".join(
            f"{(_fmt(100 * st.holdout['held_out']['mean_abs_rel_error']) + '%') if st.holdout else '–':>{width}}"
            for _, st in group
        )
        lines.append(f"{'held-out':<10}{holdout}   (mean |rel. error| on the highest sparsity)")
        for c in budgets or []:
            cells = []
            for _, st in group:
                o = law_optima(st, [c], {}, []).get(f"{c:.4g}", {}).get("joint")
                cells.append(f"N={_fmt(o['n'])} S={o['s']:.3f}" if o else "–")
            lines.append(
                f"{'C=' + format(c, '.3g'):<10}"
                + "".join(f"{x:>{width}}" for x in cells)
                + "   (joint optimum)"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("sources", nargs="+", help="run directories or .parquet/.csv tables")
    ap.add_argument("--law", action="append", choices=sorted(LAWS), help="default: apple")
    for sym, default in (
        ("N", None),
        ("D", "tokens"),
        ("S", "sparsity"),
        ("E", "num_experts"),
        ("loss", "val_loss"),
        ("budget", "budget_flops"),
    ):
        ap.add_argument(f"--{sym}", default=default, help=f"column for {sym}")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--budgets", type=float, nargs="*", help="budgets at which to compare optima")
    a = ap.parse_args(argv)
    cols = Columns(N=a.N or "params_active", D=a.D, S=a.S, E=a.E, loss=a.loss, budget=a.budget)
    print(
        compare(
            [Path(s) for s in a.sources],
            a.law or ["apple"],
            cols,
            a.N is not None,
            a.bootstrap,
            a.budgets,
        )
    )


if __name__ == "__main__":
    main()
