"""The runs table as the analysis reads it: one N convention, one FLOPs convention, IsoFLOP
groups, the best learning rate per point, and runs that repeated their data.

``prepare`` adds columns, never drops a run silently: whatever it sets aside (other learning
rates, runs outside any IsoFLOP group) is counted in ``Design.notes``.

- N: ``non_embedding`` (default; the planner's ``params_active_non_embedding``) or
  ``with_embedding``. ``N_total`` and ``N_active`` are both kept; each stage says which it uses.
  A foreign table given ``--N col`` uses that column for both.
- IsoFLOP groups: runs of one sparsity whose budgets agree within ``budget_tolerance``
  (relative): a sweep's planned budgets match exactly; a published table's continuous compute
  values are clustered. ``C`` is each group's budget under the FLOPs convention (the median of
  its runs' flops_per_token x tokens).
- Learning rates: where runs differ only in ``lr``, the best is kept (Abnar et al. tuned the
  LR per point) and ``lr_at_edge`` says how often the best was the smallest or largest tried.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.collect import TableError, refuse_bad_numbers
from analysis.flops import flops_per_token
from analysis.laws import Columns
from analysis.schedules import split_controls

N_CONVENTIONS = ("non_embedding", "with_embedding")


def add_column_args(ap) -> None:
    """The command-line options that map a table's columns onto a law's symbols."""
    ap.add_argument("--N", default=None, help="one column for N (default: from --n-convention)")
    for sym, default in (
        ("D", "tokens"),
        ("S", "sparsity"),
        ("E", "expansion"),
        ("loss", "val_loss"),
        ("budget", "budget_flops"),
    ):
        ap.add_argument(f"--{sym}", default=default, help=f"column for {sym} (default {default})")
    ap.add_argument("--n-convention", choices=N_CONVENTIONS, default="non_embedding")


def columns_from(a) -> Columns:
    return Columns(N=a.N or "N_active", D=a.D, S=a.S, E=a.E, loss=a.loss, budget=a.budget)


CELL = ("budget_group", "sparsity", "N_total", "seed")  # one point of the design


@dataclass
class Design:
    df: pd.DataFrame
    n_convention: str
    flops_convention: str
    notes: list[str] = field(default_factory=list)
    lr: dict | None = None  # best-LR selection summary
    repeated: list[str] = field(default_factory=list)  # runs trained past one epoch
    controls: pd.DataFrame | None = None  # runs of another schedule (analysis/schedules.py)


def n_columns(df: pd.DataFrame, convention: str, n_col: str | None) -> tuple[pd.Series, pd.Series]:
    if n_col is not None:
        return df[n_col].astype(float), df[n_col].astype(float)
    if convention == "non_embedding":
        if "params_active_non_embedding" in df and "params_embedding" in df:
            return (df["params_total"] - df["params_embedding"]).astype(float), df[
                "params_active_non_embedding"
            ].astype(float)
        raise ValueError(
            "the non_embedding N convention needs params_embedding and "
            "params_active_non_embedding columns; pass --n-convention "
            "with_embedding or --N <column>"
        )
    return df["params_total"].astype(float), df["params_active"].astype(float)


def group_budgets(values: np.ndarray, tolerance: float) -> np.ndarray:
    """Cluster budgets whose ratio to the cluster's first is within 1 + tolerance; each run
    gets its cluster's geometric mean."""
    order = np.argsort(values)
    labels = np.empty(len(values))
    start: float | None = None
    members: list[int] = []

    def close():
        if members:
            labels[members] = np.exp(np.mean(np.log(values[members])))

    for i in order:
        if start is None or values[i] > start * (1 + tolerance):
            close()
            start, members = values[i], []
        members.append(i)
    close()
    return labels


def best_lr(df: pd.DataFrame, loss: str) -> tuple[pd.DataFrame, dict | None]:
    """Keep each point's best learning rate; report how often it sat at the grid's edge."""
    if "lr" not in df or df.groupby(list(CELL))["lr"].nunique().max() <= 1:
        return df, None
    keep, cells, edge = [], 0, 0
    gaps: dict = {}  # kept run -> the other LRs' losses above it (the bootstrap redoes the choice)
    for _, g in df.groupby(list(CELL)):
        best = g[loss].idxmin()
        keep.append(best)
        gaps[best] = sorted(float(v) for v in g[loss].drop(best) - g.loc[best, loss])
        lrs = sorted(g["lr"].unique())
        if len(lrs) >= 2:
            cells += 1
            edge += g.loc[best, "lr"] in (lrs[0], lrs[-1]) and len(lrs) >= 3
    out = df.loc[sorted(keep)].copy()
    out["lr_gaps"] = [gaps[i] for i in out.index]
    out = out.reset_index(drop=True)
    grids = sorted(
        {
            tuple(sorted(g["lr"].unique()))
            for _, g in df.groupby(list(CELL))
            if g["lr"].nunique() > 1
        }
    )
    summary = {
        "points": cells,
        "best_at_edge": int(edge),
        "edge_fraction": edge / cells if cells else 0.0,
        "grids": [list(g) for g in grids],
        "runs_set_aside": int(len(df) - len(out)),
    }
    return out, summary


def _distinct_seeds(df: pd.DataFrame, seeded: bool, notes: list[str]) -> pd.DataFrame:
    """A replicate is another seed. Two runs of one seed at one design point are not two
    measurements: refuse them (with a seed column), or, for a table without one, number the
    repeats as seeds and say so."""
    repeats = df.groupby(list(CELL))["seed"].transform("size") > 1
    if not repeats.any():
        return df
    if seeded:
        label = df["run_id"].astype(str) if "run_id" in df else pd.Series(df.index.astype(str))
        rows = df[repeats].sort_values(list(CELL))
        first = rows.iloc[0]
        same = rows[(rows[list(CELL)] == first[list(CELL)]).all(axis=1)]
        raise TableError(
            f"runs {', '.join(label[same.index])} are one design point (budget "
            f"{first['budget_group']:.3g}, S={first['sparsity']}, N={first['N_total']:.4g}) "
            f"with the same seed {first['seed']}: replicates need distinct seeds; drop the copies"
        )
    df = df.copy()
    df["seed"] = df.groupby(list(CELL)).cumcount()
    notes.append(
        f"no seed column: {int(repeats.sum())} runs at repeated design points are read as "
        "replicate seeds"
    )
    return df


def prepare(
    df: pd.DataFrame,
    loss: str,
    budget_col: str,
    n_convention: str = "non_embedding",
    flops_convention: str = "ours",
    n_col: str | None = None,
    budget_tolerance: float = 0.05,
) -> Design:
    df = df.copy()
    notes: list[str] = []
    positive = [budget_col, "tokens", "flops_per_token", "params_total", "params_active"]
    refuse_bad_numbers(
        df, positive + ([n_col] if n_col else []), ["sparsity"], ["params_embedding"]
    )
    df["N_total"], df["N_active"] = n_columns(df, n_convention, n_col)
    refuse_bad_numbers(df, ["N_total", "N_active"], [])
    if "sparsity" not in df:
        df["sparsity"] = 0.0
    seeded = "seed" in df
    if not seeded:
        df["seed"] = 0
    budgets = df[budget_col].astype(float).to_numpy() if budget_col in df else None
    if budgets is not None:
        df["budget_group"] = group_budgets(budgets, budget_tolerance)
        n_groups = df["budget_group"].nunique()
        if n_groups < df[budget_col].nunique():
            notes.append(
                f"{df[budget_col].nunique()} distinct budgets clustered into {n_groups}"
                f" IsoFLOP budgets (within {budget_tolerance:.0%})"
            )
    else:
        df["budget_group"] = np.nan
    design = Design(df, n_convention, flops_convention, notes)
    if budgets is not None:
        try:
            df["C_run"] = flops_per_token(df, flops_convention, "N_active") * df["tokens"]
        except (ValueError, KeyError) as e:  # a foreign table: its own compute column
            df["C_run"] = df[budget_col].astype(float)
            notes.append(
                f"C is the table's own {budget_col!r} column (the {flops_convention} "
                f"FLOPs convention needs what it lacks: {str(e).strip(chr(39))})"
            )
        df["C"] = df.groupby(["budget_group"])["C_run"].transform("median")
        df, design.controls = split_controls(df, notes)
        df, design.lr = best_lr(df, loss)
        if design.lr:
            notes.append(
                f"best learning rate kept per point: {design.lr['runs_set_aside']} "
                f"run(s) at other learning rates set aside"
            )
        df = _distinct_seeds(df, seeded, notes)
    if "epochs" in df:
        over = df["epochs"].astype(float) > 1.0
        design.repeated = df.loc[over, "run_id"].astype(str).tolist() if "run_id" in df else []
        if over.any():
            notes.append(
                f"{int(over.sum())} run(s) trained on more than one epoch of their "
                "data (marked `repeated`): their losses are not single-pass points"
            )
        df["repeated"] = over
    design.df = df
    return design
