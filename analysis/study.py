"""A table -> law fits with intervals, held-out errors and the optima they imply.

Used by both the report and the comparison CLI, so both read the same numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from analysis.fit import bootstrap, fit_law, interval, natural_samples, prediction_errors, summarize
from analysis.isoflop import flops_model, law_optimum
from analysis.laws import LAWS, Columns, Law, law_data


@dataclass
class LawStudy:
    law: Law
    columns: Columns
    theta: np.ndarray
    thetas: np.ndarray  # bootstrap thetas
    params: dict  # name -> {estimate, ci}
    fit_errors: dict
    holdout: dict | None
    data: dict
    loss: np.ndarray
    held_out_mask: np.ndarray
    fcoef: np.ndarray | None  # flops-per-token model for optima (needs flops_per_token column)

    def to_json(self) -> dict:
        return {
            "formula": self.law.formula,
            "columns": asdict(self.columns),
            "constants": self.law.constants,
            "params": self.params,
            "fit_errors": self.fit_errors,
            "holdout": self.holdout,
            "n_bootstrap": len(self.thetas),
        }


def columns_for(law: Law, cols: Columns, n_given: bool) -> Columns:
    return cols if n_given else replace(cols, N=law.default_N)


def holdout_mask(df: pd.DataFrame, cols: Columns) -> tuple[np.ndarray, str | None]:
    """Hold out the highest sparsity (as Abnar et al. did) when there are several."""
    if cols.S not in df.columns or df[cols.S].nunique() < 3:
        return np.zeros(len(df), bool), None
    top = df[cols.S].max()
    return (df[cols.S] == top).to_numpy(), f"{cols.S} == {top:.4g} (highest sparsity)"


def study_law(
    df: pd.DataFrame,
    law_name: str,
    cols: Columns,
    n_given: bool = False,
    n_boot: int = 1000,
    max_inits: int = 512,
    workers: int | None = None,
) -> LawStudy:
    law = LAWS[law_name]
    cols = columns_for(law, cols, n_given)
    data = law_data(df, law, cols)
    loss = df[cols.loss].to_numpy(float)
    if len(loss) <= len(law.params):
        raise ValueError(f"{law.name}: {len(loss)} runs cannot fit {len(law.params)} parameters")
    point = fit_law(law, data, loss, max_inits=max_inits)
    thetas = bootstrap(law, data, loss, point, n_boot=n_boot, workers=workers)
    mask, rule = holdout_mask(df, cols)
    holdout = None
    if rule and (~mask).sum() > len(law.params):
        sub = {k: v[~mask] for k, v in data.items()}
        part = fit_law(law, sub, loss[~mask], max_inits=max_inits)
        holdout = {
            "rule": rule,
            "fit_n": int((~mask).sum()),
            "held_out": prediction_errors(
                law, part.theta, {k: v[mask] for k, v in data.items()}, loss[mask]
            ),
            "params": part.params,
        }
    fcoef = flops_model(df, cols.N) if {"flops_per_token", "sparsity"} <= set(df.columns) else None
    return LawStudy(
        law,
        cols,
        point.theta,
        thetas,
        summarize(law, point, thetas),
        prediction_errors(law, point.theta, data, loss),
        holdout,
        data,
        loss,
        mask,
        fcoef,
    )


def _sparsity_aware(law: Law) -> bool:
    return bool({"S", "E"} & set(law.needs))  # E enters as 1/(1-S) at K = 1


def law_optima(
    st: LawStudy, budgets: list[float], n_fixed: dict[float, float], sparsities: list[float]
) -> dict:
    """Optima the fitted law implies at each budget, with bootstrap intervals:
    S* at a fixed total N (the IsoFLOP N* where known), N* at each sparsity, and the joint
    optimum (flagged when it sits at the edge of the search range)."""
    if st.fcoef is None:
        return {}
    out = {}
    for c in budgets:
        # a law without sparsity has nothing to say about S: search N at S = 0 only
        s_fixed = None if _sparsity_aware(st.law) else 0.0
        entry = {"joint": law_optimum(st.law, st.theta, st.fcoef, c, s=s_fixed)}
        n = n_fixed.get(c)
        if n and _sparsity_aware(st.law):
            best = law_optimum(st.law, st.theta, st.fcoef, c, n=n)["s"]
            boots = [law_optimum(st.law, t, st.fcoef, c, n=n)["s"] for t in st.thetas]
            entry["s_star_at_n"] = {"n": n, "s_star": best, "ci": list(interval(np.array(boots)))}
        entry["n_star_at_s"] = {}
        for s in sparsities:
            best = law_optimum(st.law, st.theta, st.fcoef, c, s=s)["n"]
            boots = [law_optimum(st.law, t, st.fcoef, c, s=s)["n"] for t in st.thetas[:200]]
            entry["n_star_at_s"][f"{s:.4f}"] = {
                "n_star": best,
                "ci": list(interval(np.array(boots))),
            }
        out[f"{c:.4g}"] = entry
    return out


def s_star_curves(st: LawStudy, budgets: list[float], n_grid: np.ndarray) -> dict:
    if st.fcoef is None or not _sparsity_aware(st.law):
        return {}
    return {
        c: (
            n_grid,
            np.array([law_optimum(st.law, st.theta, st.fcoef, c, n=n)["s"] for n in n_grid]),
        )
        for c in budgets
    }


def bootstrap_samples(st: LawStudy) -> dict[str, np.ndarray]:
    return natural_samples(st.law, st.thetas)
