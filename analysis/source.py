"""One runs table -> every fit the report and the comparison read: the design (conventions,
IsoFLOP groups, best LRs), the IsoFLOP analysis with its noise and sparsity effect, and each
law with its gates. No figures and no files: analysis/report.py and analysis/compare.py write
those from what this returns, so a comparison shows exactly the report's fits."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.collect import TableError, done_runs, load_table, require_columns
from analysis.design import group_budgets, n_columns, prepare
from analysis.fit import HUBER_DELTA
from analysis.isoflop import IsoflopResult, analyse
from analysis.laws import Columns
from analysis.schedules import schedule_summary
from analysis.study import LawStudy, law_optima, study_law


@dataclass
class SourceAnalysis:
    table: pd.DataFrame  # every run read, failed ones too
    df: pd.DataFrame  # the fitted runs with the design's columns (C, N_total, N_active, ...)
    fits: dict  # what fits.json holds
    iso: IsoflopResult | None
    studies: dict = field(default_factory=dict)  # law label -> LawStudy or its refusal
    budgets: list[float] = field(default_factory=list)  # budgets the law optima are taken at


def variants_of(table: pd.DataFrame) -> list[str]:
    """The sweep variants a table holds (sweep.variants), in order; [] for none."""
    if "variant" not in table:
        return []
    return sorted(table["variant"].dropna().astype(str).unique())


def one_variant(table: pd.DataFrame, variant: str | None) -> pd.DataFrame:
    """The runs of one variant: runs of two variants are two models, never one curve."""
    names = variants_of(table)
    if variant is None:
        if len(names) > 1:
            raise TableError(
                f"the table holds sweep variants {names}: report one (--variant NAME) or "
                "compare them (python -m analysis.compare TABLE --by-variant)"
            )
        return table
    if variant not in names:
        raise TableError(f"--variant {variant}: the table's variants are {names or 'none'}")
    return table[table["variant"] == variant].reset_index(drop=True)


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


def law_studies(df, laws, cols, n_given, n_boot, max_inits, seed, n_convention, flops, sigma=None):
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


def isoflop_n(iso: IsoflopResult, kind: str) -> dict[float, float]:
    """Per budget (convention's C): the geometric mean N* of its bracketed groups."""
    key = "n_star" if kind == "total" else "n_star_active"
    out: dict[float, list] = {}
    for g in iso.groups:
        if g["bracketed"] and np.isfinite(g[key]):
            out.setdefault(g["C"], []).append(np.log(g[key]))
    return {c: float(np.exp(np.mean(v))) for c, v in out.items()}


def analyse_source(
    source,
    laws,
    cols: Columns,
    n_given: bool = False,
    n_boot: int = 1000,
    max_inits: int = 512,
    budgets: list[float] | None = None,
    not_in_plan: list[str] | None = None,
    n_convention: str = "non_embedding",
    flops_convention: str = "ours",
    budget_tolerance: float = 0.05,
    seed: int = 0,
    variant: str | None = None,
    loaded: tuple | None = None,
) -> SourceAnalysis:
    """``loaded``: the source's (table, skipped runs) as load_table gave them, when the caller
    has read it already (compare reads a sweep once for all its variants)."""
    t0 = time.time()
    table, skipped = loaded if loaded is not None else load_table(source)
    table = one_variant(table, variant)
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
    label = f"{len(source)} planned run directories" if isinstance(source, list) else str(source)
    label += f" (variant {variant})" if variant else ""
    fits: dict = {
        "source": label,
        "n_runs": len(table),
        "n_fitted": len(df),
        "n_convention": n_convention if not n_given else f"column {cols.N}",
        "flops_convention": flops_convention,
        "notes": design.notes,
        "learning_rates": design.lr,
        "repeated_runs": design.repeated,
        "schedule": schedule_summary(df, design.controls, cols.loss),
        "not_in_plan": not_in_plan or [],
        "huber_delta": HUBER_DELTA,
        "skipped": [{"run": r, "reason": why} for r, why in skipped],
        "laws": {},
    }
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
    else:
        fits["isoflop"] = {"skipped": f"the table has no {cols.budget!r}/tokens/sparsity columns"}
    budgets = budgets or (sorted(df["C"].unique().tolist()) if "C" in df else [])
    sigma = iso.noise.sigma if iso and iso.noise and iso.noise.source == "replicates" else None
    studies = law_studies(
        df, laws, cols, n_given, n_boot, max_inits, seed, n_convention, flops_convention, sigma
    )
    for name, st in studies.items():
        fits["laws"][name] = st.to_json()
        if isinstance(st, LawStudy) and not st.misspecified:
            # the gate: no optimum of a law that misses these runs
            n_fixed = isoflop_n(iso, st.law.n_kind) if iso else {}
            fits["laws"][name]["optima"] = law_optima(st, budgets, n_fixed)
    fits["elapsed_s"] = time.time() - t0
    return SourceAnalysis(table, df, fits, iso, studies, budgets)
