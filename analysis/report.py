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
import pandas as pd

from analysis import figures
from analysis.collect import TableError, done_runs, load_table, require_columns, write_table
from analysis.design import add_column_args, columns_from, group_budgets, n_columns, prepare
from analysis.fit import HUBER_DELTA
from analysis.flops import CONVENTIONS
from analysis.isoflop import analyse
from analysis.laws import LAWS, Columns
from analysis.render import clean, render
from analysis.study import LawStudy, bootstrap_samples, law_optima, s_star_curves, study_law

DEFAULT_LAWS = ("chinchilla", "apple", "joint_moe")


def _with_groups(table: pd.DataFrame, cols: Columns, n_convention: str, n_col, tol) -> pd.DataFrame:
    """Every run (failed ones too) with its N columns and IsoFLOP budget, for the listings."""
    t = table.copy()
    if "sparsity" not in t:
        t["sparsity"] = 0.0
    try:
        t["N_total"], t["N_active"] = n_columns(t, n_convention, n_col)
    except (ValueError, KeyError):
        return t.iloc[0:0]
    if cols.budget in t:
        t["budget_group"] = group_budgets(t[cols.budget].astype(float).to_numpy(), tol)
    return t


def _law_studies(df, laws, cols, n_given, n_boot, max_inits, seed, n_convention, flops, sigma=None):
    """Each requested law; Chinchilla separately at every sparsity level (never pooled)."""
    out = {}
    for name in laws:
        parts = [(name, df)]
        if name == "chinchilla" and cols.S in df and df[cols.S].nunique() > 1:
            parts = [
                (f"chinchilla@S={s:.4f}", sub.reset_index(drop=True))
                for s, sub in df.groupby(cols.S)
            ]
        for label, sub in parts:
            out[label] = study_law(
                sub,
                name,
                cols,
                n_given,
                n_boot,
                max_inits,
                seed=seed,
                label=label,
                n_convention=n_convention,
                flops_convention=flops,
                replicate_sigma=sigma,
            )
    return out


def build_report(
    source,
    out: Path,
    laws=DEFAULT_LAWS,
    cols: Columns | None = None,
    n_given: bool = False,
    n_boot: int = 1000,
    max_inits: int = 512,
    budgets: list[float] | None = None,
    not_in_plan: list[str] | None = None,
    n_convention: str = "non_embedding",
    flops_convention: str = "ours",
    budget_tolerance: float = 0.05,
    seed: int = 0,
) -> Path:
    t0 = time.time()
    cols = cols or Columns()
    out = Path(out)
    fig_dir = out / "figures"
    table, skipped = load_table(source)
    if table.empty:
        raise TableError(
            f"no readable runs in {source}"
            + (f" ({len(skipped)} run directories skipped)" if skipped else "")
        )
    df = done_runs(table, cols.loss)
    require_columns(df, [c for c in (cols.D,) if not n_given or c], "the analysis")
    n_col = cols.N if n_given else None
    design = prepare(
        df, cols.loss, cols.budget, n_convention, flops_convention, n_col, budget_tolerance
    )
    df = design.df
    df["expansion"] = 1.0 / (1.0 - df["sparsity"].astype(float))
    write_table(table, out)
    label = f"{len(source)} planned run directories" if isinstance(source, list) else str(source)
    fits: dict = {
        "source": label,
        "n_runs": len(table),
        "n_fitted": len(df),
        "n_convention": n_convention if not n_given else f"column {cols.N}",
        "flops_convention": flops_convention,
        "notes": design.notes,
        "learning_rates": design.lr,
        "repeated_runs": design.repeated,
        "not_in_plan": not_in_plan or [],
        "huber_delta": HUBER_DELTA,
        "skipped": [{"run": r, "reason": why} for r, why in skipped],
        "laws": {},
    }
    figs: list[tuple[str, Path]] = []
    iso = None
    if cols.budget in table and {"tokens", "sparsity"} <= set(df):
        all_runs = _with_groups(table, cols, n_convention, n_col, budget_tolerance)
        iso = analyse(df, cols.loss, all_runs, n_boot=n_boot, seed=seed)
        fits["isoflop"] = {
            "groups": iso.groups,
            "noise": iso.noise and vars(iso.noise),
            "noise_by_budget": {f"{b:.4g}": n.to_json() for b, n in iso.noise_by_budget.items()},
            "sparsity_effect": iso.effects,
            "no_interval_reason": iso.no_interval_reason,
            "loss_star_vs_sparsity": iso.slopes,
            "size_scaling": iso.scaling,
            "skipped": iso.skipped,
        }
        if iso.groups:
            frame = iso.frame()
            figs.append(
                (
                    "IsoFLOP curves (total parameters)",
                    figures.isoflop_curves(df, frame, fig_dir, cols.loss),
                )
            )
            figs.append(
                (
                    "IsoFLOP curves (active parameters)",
                    figures.isoflop_curves(df, frame, fig_dir, cols.loss, active=True),
                )
            )
            figs.append(("L* vs sparsity", figures.loss_star_vs_sparsity(frame, fig_dir)))
            figs.append(
                ("N* and N*_active vs sparsity", figures.n_star_vs_sparsity(frame, fig_dir))
            )
    else:
        fits["isoflop"] = {"skipped": f"the table has no {cols.budget!r}/tokens/sparsity columns"}
    budgets = budgets or (sorted(df["C"].unique().tolist()) if "C" in df else [])
    sigma = iso.noise.sigma if iso and iso.noise and iso.noise.source == "replicates" else None
    studies = _law_studies(
        df, laws, cols, n_given, n_boot, max_inits, seed, n_convention, flops_convention, sigma
    )
    for name, st in studies.items():
        fits["laws"][name] = st.to_json()
        if not isinstance(st, LawStudy):
            continue
        n_fixed = _isoflop_n(iso, st.law.n_kind) if iso else {}
        if not st.misspecified:  # the gate: no optimum of a law that misses these runs
            fits["laws"][name]["optima"] = law_optima(st, budgets, n_fixed)
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
        lo, hi = st.data["N"].min(), st.data["N"].max()
        grid = np.exp(np.linspace(np.log(lo) - 1, np.log(hi) + 1, 30))
        curves = s_star_curves(st, budgets, grid) if not st.misspecified else None
        if curves:
            figs.append(
                (f"S* vs N ({name})", figures.s_star_vs_n(curves, fig_dir, name, st.s_range))
            )
    fits["elapsed_s"] = time.time() - t0
    (out / "fits.json").write_text(json.dumps(clean(fits), indent=1))
    report = out / "report.md"
    report.write_text(render(clean(fits), figs, out))
    return report


def _isoflop_n(iso, kind: str) -> dict[float, float]:
    """Per budget (convention's C): the geometric mean N* of its bracketed groups."""
    key = "n_star" if kind == "total" else "n_star_active"
    out: dict[float, list] = {}
    for g in iso.groups:
        if g["bracketed"] and np.isfinite(g[key]):
            out.setdefault(g["C"], []).append(np.log(g[key]))
    return {c: float(np.exp(np.mean(v))) for c, v in out.items()}


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
        )
    except (TableError, ValueError, KeyError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    print(f"report: {path}")


if __name__ == "__main__":
    main()
