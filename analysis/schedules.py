"""Learning-rate schedules in one table: WSD trunks and their branches, and cosine controls.

- **Which runs are fitted.** A table mixing schedules (a wsd_branches sweep with cosine
  controls) is fitted on its main schedule (WSD where runs branched, else the most common);
  the others are *controls*, set aside and counted in the notes, never pooled: a control and
  the WSD run of its point are one point trained twice, not two replicates.
- **WSD minus cosine**, per sparsity: the loss of each point's WSD run minus its cosine
  control (same budget, size, seed and LR), averaged over the pairs, with a t interval.
- **Trunks as clusters.** The branches of one trunk share its first 80% of steps: their
  errors are correlated across budgets. Law bootstraps resample a trunk with all its branches
  (analysis/study.py). The IsoFLOP bootstrap draws each run's noise independently, which is
  conservative for what it computes across budgets (slopes and exponents are differences,
  and a positive correlation shrinks their variance) and exact within a budget (a trunk has
  one run per budget).
"""

from __future__ import annotations

import pandas as pd

from analysis.effects import mean_with_t_interval

POINT = ("budget_group", "sparsity", "N_total", "seed")


def split_controls(df: pd.DataFrame, notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the runs of the main schedule, the controls)."""
    if "schedule" not in df or df["schedule"].nunique() <= 1:
        return df, df.iloc[0:0]
    branched = "branch_of" in df and df["branch_of"].notna().any()
    main = "wsd" if branched else df["schedule"].value_counts().idxmax()
    keep = df["schedule"] == main
    controls = df[~keep]
    notes.append(
        f"{len(controls)} run(s) under other schedules ({', '.join(sorted(controls['schedule'].unique()))})"
        f" set aside as controls of the {main} runs the fits use"
    )
    return df[keep].copy(), controls.copy()


def trunk_labels(df: pd.DataFrame) -> pd.Series | None:
    """Each run's trunk (its own id for a trunk), or None where nothing branched."""
    if "branch_of" not in df or not df["branch_of"].notna().any() or "run_id" not in df:
        return None
    trunks = set(df["branch_of"].dropna())
    own = df["run_id"].where(df["run_id"].isin(trunks))
    return df["branch_of"].fillna(own)


def schedule_summary(df: pd.DataFrame, controls: pd.DataFrame | None, loss: str) -> dict | None:
    """What the report states about schedules; None for a table of one plain schedule."""
    trunks = trunk_labels(df)
    if trunks is None and (controls is None or controls.empty):
        return None
    out: dict = {
        "schedule": str(df["schedule"].iloc[0]) if "schedule" in df else None,
        "branches": int(df["branch_of"].notna().sum()) if "branch_of" in df else 0,
        "trunks": int(trunks.nunique()) if trunks is not None else 0,
        "controls": len(controls) if controls is not None else 0,
    }
    if controls is not None and not controls.empty:
        out["minus_controls"] = paired_difference(df, controls, loss)
    return out


def paired_difference(main: pd.DataFrame, controls: pd.DataFrame, loss: str, level=0.95) -> dict:
    """Per sparsity: mean of main - control over the points both have, with a t interval."""
    key = [k for k in (*POINT, "lr") if k in main and k in controls]
    joined = main.merge(controls, on=key, suffixes=("", "_control"))
    out = {}
    for s, g in joined.groupby("sparsity"):
        out[f"{s:.4f}"] = mean_with_t_interval(g[loss] - g[f"{loss}_control"], level)
    return out
