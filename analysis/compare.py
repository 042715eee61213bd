"""Compare fits side by side: two or more runs tables (sweeps, corpora) and/or laws.

    python -m analysis.compare sweeps/a/runs sweeps/b/report/runs.parquet --law apple \\
        --budgets 1e18 1e19

Prints each fitted parameter with its 95% bootstrap interval per table, the held-out errors,
and the optima each fit implies at the chosen budgets; `*` flags a parameter whose intervals
do not overlap between fits. A law a table cannot identify is reported as such. Bad inputs
end with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.collect import TableError, done_runs, load_table
from analysis.design import add_column_args, columns_from, prepare
from analysis.laws import LAWS, Columns
from analysis.render import ci, num
from analysis.study import LawStudy, law_optima, study_law


def distinct_labels(sources: list[Path]) -> list[str]:
    """The shortest path tails that tell the sources apart (`a/runs`, `b/runs`)."""
    parts = [Path(s).resolve().parts for s in sources]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{p[-1]}#{i + 1}" for i, p in enumerate(parts)]


def overlap(cis: list) -> bool:
    if any(c is None or None in c for c in cis):
        return True  # an unbounded interval overlaps everything
    return max(lo for lo, _ in cis) <= min(hi for _, hi in cis)


def compare(
    sources: list[Path],
    laws: list[str],
    cols: Columns,
    n_given: bool,
    n_boot: int,
    budgets: list[float] | None,
    n_convention: str = "non_embedding",
) -> str:
    studies = []  # (label, law, study)
    for label, src in zip(distinct_labels(sources), sources):
        df = done_runs(load_table(src)[0], cols.loss)
        if cols.budget in df or not n_given:
            df = prepare(
                df, cols.loss, cols.budget, n_convention, n_col=cols.N if n_given else None
            ).df
        df["expansion"] = 1.0 / (1.0 - df["sparsity"].astype(float)) if "sparsity" in df else 1.0
        for law in laws:
            studies.append(
                (label, law, study_law(df, law, cols, n_given, n_boot, n_convention=n_convention))
            )
    lines = []
    width = max(26, *(len(lbl) + 2 for lbl, _, _ in studies))
    for law in laws:
        group = [(lbl, st) for lbl, name, st in studies if name == law]
        lines.append(f"\n== {law}: {LAWS[law].formula}")
        lines.append(f"{'parameter':<10}" + "".join(f"{lbl:>{width}}" for lbl, _ in group))
        fitted = [(lbl, st) for lbl, st in group if isinstance(st, LawStudy)]
        for lbl, st in group:
            if not isinstance(st, LawStudy):
                lines.append(f"{lbl}: not identifiable ({'; '.join(st.reasons)})")
        for p in LAWS[law].params if fitted else []:
            cis = [st.params[p]["ci"] for _, st in fitted]
            flag = "" if len(fitted) < 2 or overlap(cis) else "  * intervals do not overlap"
            cells = "".join(
                f"{num(st.params[p]['estimate']) + ' ' + ci(c):>{width}}"
                for (_, st), c in zip(fitted, cis)
            )
            lines.append(f"{p:<10}{cells}{flag}")
        if fitted:
            held = "".join(
                f"{(num(100 * st.holdout['held_out']['mean_abs_rel_error']) + '%') if st.holdout else '–':>{width}}"
                for _, st in fitted
            )
            lines.append(f"{'held-out':<10}{held}   (mean |rel. error| on the highest sparsity)")
        for c in budgets or []:
            optima = []
            for _, st in fitted:
                o = law_optima(st, [c], {}).get(f"{c:.4g}", {}).get("joint")
                optima.append(f"N={num(o['n'])} S={o['s']:.3f}" if o else "–")
            lines.append(
                f"{'C=' + format(c, '.3g'):<10}"
                + "".join(f"{x:>{width}}" for x in optima)
                + "   (optimum inside the trained S range)"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("sources", nargs="+", help="run directories or .parquet/.csv tables")
    ap.add_argument("--law", action="append", choices=sorted(LAWS), help="default: apple")
    add_column_args(ap)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--budgets", type=float, nargs="*", help="budgets at which to compare optima")
    a = ap.parse_args(argv)
    cols = columns_from(a)
    try:
        print(
            compare(
                [Path(s) for s in a.sources],
                a.law or ["apple"],
                cols,
                a.N is not None,
                a.bootstrap,
                a.budgets,
                a.n_convention,
            )
        )
    except (TableError, ValueError, KeyError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
