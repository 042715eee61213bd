"""Runs (or any table with the right columns) -> runs table, fits.json, figures, report.md.

    python -m analysis.report sweeps/demo/runs --out reports/demo
    python -m analysis.report runs.csv --law chinchilla --N params --D tokens --loss loss

A table that cannot be analysed (missing file or columns, no rows, losses that are not finite
and positive) ends with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from analysis import figures
from analysis.collect import TableError, write_table
from analysis.design import add_column_args, columns_from
from analysis.flops import CONVENTIONS
from analysis.laws import LAWS, Columns
from analysis.render import clean, render
from analysis.source import analyse_source
from analysis.study import LawStudy, bootstrap_samples, s_star_curves

DEFAULT_LAWS = ("chinchilla", "apple", "joint_moe")


def build_report(
    source, out: Path, laws=DEFAULT_LAWS, cols: Columns | None = None, **options
) -> Path:
    """The report of one table: ``options`` are analysis/source.py ``analyse_source``'s
    (n_given, n_boot, max_inits, budgets, not_in_plan, n_convention, flops_convention,
    budget_tolerance, seed, variant)."""
    t0 = time.time()
    cols = cols or Columns()
    out = Path(out)
    fig_dir = out / "figures"
    a = analyse_source(source, laws, cols, **options)
    df, fits, iso = a.df, a.fits, a.iso
    write_table(a.table, out)
    figs: list[tuple[str, Path]] = []
    if iso is not None and iso.groups:
        frame = iso.frame()
        figs += [
            (
                "IsoFLOP curves (total parameters)",
                figures.isoflop_curves(df, frame, fig_dir, cols.loss),
            ),
            (
                "IsoFLOP curves (active parameters)",
                figures.isoflop_curves(df, frame, fig_dir, cols.loss, active=True),
            ),
            ("L* vs sparsity", figures.loss_star_vs_sparsity(frame, fig_dir)),
            ("N* and N*_active vs sparsity", figures.n_star_vs_sparsity(frame, fig_dir)),
            (
                "L* against inference cost (memory, KV cache)",
                figures.loss_star_vs_inference_cost(frame, fig_dir),
            ),
        ]
    for name, st in a.studies.items():
        if not isinstance(st, LawStudy):
            continue
        pred = st.law.predict(st.theta, st.data)
        figs.append((f"{name} fit", figures.law_fit(st, pred, fig_dir, st.sparsity)))
        figs.append(
            (
                f"{name} bootstrap",
                figures.bootstrap_params(
                    st.law,
                    bootstrap_samples(st),
                    {p: v["estimate"] for p, v in st.params.items()},
                    fig_dir,
                    name,
                ),
            )
        )
        curves = law_s_star_curves(st, a.budgets)
        if curves:
            figs.append(
                (f"S* vs N ({name})", figures.s_star_vs_n(curves, fig_dir, name, st.s_range))
            )
    fits["elapsed_s"] = time.time() - t0
    (out / "fits.json").write_text(json.dumps(clean(fits), indent=1))
    report = out / "report.md"
    report.write_text(render(clean(fits), figs, out))
    return report


def law_s_star_curves(st: LawStudy, budgets: list[float]) -> dict | None:
    """S*(N) at each budget over the trained N range widened e-fold each side; None for a
    misspecified law (the gate)."""
    if st.misspecified:
        return None
    lo, hi = st.data["N"].min(), st.data["N"].max()
    grid = np.exp(np.linspace(np.log(lo) - 1, np.log(hi) + 1, 30))
    return s_star_curves(st, budgets, grid)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("source", help="a directory of run directories, or a .parquet/.csv table")
    ap.add_argument(
        "--out",
        default=None,
        help="output directory (default: <source>/report for a directory, else a "
        "`report` folder beside the table)",
    )
    ap.add_argument(
        "--law",
        action="append",
        choices=sorted(LAWS),
        help="law(s) to fit (repeatable; default: all three)",
    )
    add_column_args(ap)
    ap.add_argument("--flops-convention", choices=CONVENTIONS, default="ours")
    ap.add_argument(
        "--budget-tolerance",
        type=float,
        default=0.05,
        help="budgets within this relative distance form one IsoFLOP group",
    )
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--inits", type=int, default=512, help="L-BFGS initialisations (max)")
    ap.add_argument("--seed", type=int, default=0, help="seed of every bootstrap")
    ap.add_argument("--budgets", type=float, nargs="*", help="budgets for the optima")
    ap.add_argument("--variant", help="the sweep variant to analyse (a table of several)")
    a = ap.parse_args(argv)
    source = Path(a.source)
    out = Path(a.out) if a.out else (source if source.is_dir() else source.parent) / "report"
    cols = columns_from(a)
    try:
        path = build_report(
            source,
            out,
            tuple(a.law or DEFAULT_LAWS),
            cols,
            n_given=a.N is not None,
            n_boot=a.bootstrap,
            max_inits=a.inits,
            budgets=a.budgets,
            n_convention=a.n_convention,
            flops_convention=a.flops_convention,
            budget_tolerance=a.budget_tolerance,
            seed=a.seed,
            variant=a.variant,
        )
    except (TableError, ValueError, KeyError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    print(f"report: {path}")


if __name__ == "__main__":
    main()
