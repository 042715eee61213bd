"""A table -> law fits with intervals, held-out errors, warnings and the optima they imply.

A law is fitted only when the design can constrain it (``identifiability``): enough runs,
budgets and sparsity/expert levels for its parameters; otherwise the report says it is not
identifiable from these runs and what runs would fix that. A fitted law is flagged when a
parameter ends on a bound of its search, when an interval spans orders of magnitude, or when
its held-out error is far above its in-sample error. Optima are searched only inside the
trained sparsity range; an optimum at the edge of that range is flagged (the law says
"sparser", which these runs cannot confirm).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from analysis.fit import (
    bootstrap,
    fit_law,
    natural_samples,
    percentile_interval,
    prediction_errors,
    summarize,
)
from analysis.flops import Family, six_n_flops
from analysis.laws import JOINT_CONSTANTS, LAWS, Columns, Law, joint_moe, law_data
from analysis.schedules import trunk_labels

HOLDOUT_RATIO = 3.0  # held-out error this many times the in-sample error is flagged
WIDE_LOG10 = 2.0  # a coefficient interval wider than 100x is flagged
WIDE_EXPONENT = 1.0  # an exponent interval wider than this is flagged
OPTIMA_BOOT = 200  # bootstrap fits used for an optimum's interval
MISFIT_RATIO = 2.0  # in-sample RMSE over this many replicate sigmas: misspecified
OTHER_BASIN = 0.10  # more refits than this landing in another minimum is flagged


@dataclass
class NotIdentifiable:
    law: str
    reasons: list[str]
    fixes: list[str]

    def to_json(self) -> dict:
        return {"identifiable": False, "reasons": self.reasons, "fixes": self.fixes}


def identifiability(df: pd.DataFrame, law: Law, cols: Columns) -> NotIdentifiable | None:
    reasons, fixes = [], []
    k = len(law.params)
    if len(df) < 2 * k:
        reasons.append(f"{len(df)} runs for {k} parameters")
        fixes.append(f"at least {2 * k} finished runs")
    need = law.requirements.get("budgets")
    if need and "budget_group" in df and df["budget_group"].notna().all():
        have = df["budget_group"].nunique()
        if have < need:
            reasons.append(f"{have} budget(s): N and D move together along one IsoFLOP line")
            fixes.append(f"runs at {need} or more budgets")
    elif need and cols.D in df:
        r = np.corrcoef(np.log(df[cols.N]), np.log(df[cols.D]))[0, 1] if len(df) > 2 else 1
        if abs(r) > 0.98:
            reasons.append(f"log N and log D are collinear (r = {r:.3f})")
            fixes.append("runs that vary N and D independently")
    if "levels" in law.requirements:
        sym, n = law.requirements["levels"]
        have = df[getattr(cols, sym)].nunique() if getattr(cols, sym) in df else 1
        if have < n:
            what = "sparsity" if sym == "S" else "expert-count"
            reasons.append(
                f"{have} {what} level(s) for a law with {_s_params(law)} "
                f"{what}-dependent parameters"
            )
            fixes.append(
                f"runs at {n} or more {what} levels (e.g. S in {{0, 0.5, 0.75, 0.875, 0.9375}})"
            )
    return NotIdentifiable(law.name, reasons, fixes) if reasons else None


def _s_params(law: Law) -> int:
    return {"apple": 4, "joint_moe": 4}.get(law.name, 0)


@dataclass
class LawStudy:
    law: Law
    label: str  # law name, with the subset it was fitted on
    columns: Columns
    theta: np.ndarray
    thetas: np.ndarray  # bootstrap thetas
    other_basin: float
    params: dict  # name -> {estimate, ci}
    fit_errors: dict
    holdout: dict | None
    flags: list[str]
    data: dict
    loss: np.ndarray
    held_out_mask: np.ndarray
    family: Family | None  # exact FLOPs of the table's family, for optima
    sparsity: np.ndarray  # S of each fitted run
    misspecified: str | None = None  # why no optimum is reported (the fit-quality gate)
    resampled: str = "runs"  # the bootstrap's unit: runs, or (budget, sparsity, seed) clusters

    def to_json(self) -> dict:
        return {
            "identifiable": True,
            "formula": self.law.formula,
            "columns": asdict(self.columns),
            "n_kind": self.law.n_kind,
            "constants": self.law.constants,
            "params": self.params,
            "fit_errors": self.fit_errors,
            "holdout": self.holdout,
            "flags": self.flags,
            "n_bootstrap": len(self.thetas),
            "bootstrap_other_basin_fraction": self.other_basin,
            "bootstrap": f"resampling {self.resampled}",
            "trained_sparsity_range": list(self.s_range),
            "misspecified": self.misspecified,
        }

    @property
    def s_range(self) -> tuple[float, float]:
        return float(self.sparsity.min()), float(self.sparsity.max())


def holdout_mask(df: pd.DataFrame, law: Law, cols: Columns) -> tuple[np.ndarray, str | None]:
    """Hold out the highest sparsity (as Abnar et al. did), when enough levels remain."""
    need = law.requirements.get("holdout_levels")
    if cols.S not in df or not need or df[cols.S].nunique() - 1 < need:
        return np.zeros(len(df), bool), None
    top = df[cols.S].max()
    return (df[cols.S] == top).to_numpy(), f"{cols.S} == {top:.4g} (highest sparsity)"


def _flags(law: Law, fit, summary: dict, errors: dict, holdout: dict | None) -> list[str]:
    flags = [f"{p} ended on the bound of its search ({law.bounds[p]})" for p in fit.at_bounds]
    for p, v in summary.items():
        lo, hi = v["ci"] or (None, None)
        if lo is None or hi is None:
            flags.append(f"{p}: interval unbounded")
        elif p in law.log_coefficients and lo > 0 and np.log10(hi / lo) > WIDE_LOG10:
            flags.append(f"{p}: interval spans {np.log10(hi / lo):.1f} orders of magnitude")
        elif p not in law.log_coefficients and hi - lo > WIDE_EXPONENT:
            flags.append(f"{p}: interval [{lo:.3g}, {hi:.3g}] is wider than {WIDE_EXPONENT}")
    if holdout:
        inside, out = errors["mean_abs_rel_error"], holdout["held_out"]["mean_abs_rel_error"]
        if out > HOLDOUT_RATIO * inside and out > 0.005:
            flags.append(
                f"held-out error {100 * out:.2f}% is {out / max(inside, 1e-12):.0f}x the "
                f"in-sample {100 * inside:.2f}%: the law does not extrapolate in S"
            )
    return flags


def _profile_joint(data, loss, max_inits) -> Law:
    """Ê's constants by profile: the (E_start, E_max) of the grid whose fit is best."""
    fits = [
        (fit_law(joint_moe(s, m), data, loss, max_inits=max_inits // 4).loss, s, m)
        for s, m in JOINT_CONSTANTS
    ]
    _, s, m = min(fits)
    return joint_moe(s, m)


def study_law(
    df: pd.DataFrame,
    law_name: str,
    cols: Columns,
    n_given: bool = False,
    n_boot: int = 1000,
    max_inits: int = 512,
    workers: int | None = None,
    seed: int = 0,
    label: str | None = None,
    n_convention: str = "non_embedding",
    flops_convention: str = "ours",
    replicate_sigma: float | None = None,
) -> LawStudy | NotIdentifiable:
    """``replicate_sigma``: the noise of a run's loss from replicates; a law whose in-sample
    RMSE exceeds MISFIT_RATIO times it is misspecified for these runs, and no optimum of it
    is reported (its parameters still are)."""
    law = LAWS[law_name]
    if not n_given:
        cols = replace(cols, N="N_total" if law.n_kind == "total" else "N_active")
    missing = [getattr(cols, s) for s in law.needs if s != "S" and getattr(cols, s) not in df]
    if missing:
        return NotIdentifiable(
            law.name,
            [f"the table has no column(s) {missing}"],
            ["name the columns with --N/--D/--E"],
        )
    blocked = identifiability(df, law, cols)
    if blocked:
        return blocked
    data = law_data(df, law, cols)
    loss = df[cols.loss].to_numpy(float)
    if law.name == "joint_moe":
        law = _profile_joint(data, loss, max_inits)
    point = fit_law(law, data, loss, max_inits=max_inits, seed=seed)
    clusters, resampled = _clusters(df)
    thetas, other = bootstrap(
        law, data, loss, point, n_boot=n_boot, workers=workers, seed=seed, clusters=clusters
    )
    summary = summarize(law, point, thetas)
    errors = prediction_errors(law, point.theta, data, loss)
    mask, rule = holdout_mask(df, law, cols)
    holdout = None
    if rule:
        part = fit_law(
            law, {k: v[~mask] for k, v in data.items()}, loss[~mask], max_inits=max_inits, seed=seed
        )
        holdout = {
            "rule": rule,
            "fit_n": int((~mask).sum()),
            "held_out": prediction_errors(
                law, part.theta, {k: v[mask] for k, v in data.items()}, loss[mask]
            ),
            "params": part.params,
        }
    family = (
        Family.from_table(df, n_convention == "non_embedding", flops_convention)
        if not n_given
        else None
    )
    s = df[cols.S].to_numpy(float) if cols.S in df else np.zeros(len(df))
    flags = _flags(law, point, summary, errors, holdout)
    if other > OTHER_BASIN:
        flags.append(
            f"{100 * other:.0f}% of the bootstrap refits found another minimum: the fit is not "
            "unique, its intervals mix basins"
        )
    misfit = None
    if replicate_sigma and errors["rmse"] > MISFIT_RATIO * replicate_sigma:
        misfit = (
            f"in-sample RMSE {errors['rmse']:.3g} is {errors['rmse'] / replicate_sigma:.1f}x the "
            f"replicate noise σ = {replicate_sigma:.3g}: the law does not describe these runs, "
            "so no optimum of it is reported"
        )
        flags.append("misspecified: " + misfit)
    return LawStudy(
        law,
        label or law.name,
        cols,
        point.theta,
        thetas,
        other,
        summary,
        errors,
        holdout,
        flags,
        data,
        loss,
        mask,
        family,
        s,
        misfit,
        resampled,
    )


MIN_CLUSTERS = 8  # fewer clusters than this and resampling them cannot vary the fit enough


def _clusters(df: pd.DataFrame) -> tuple[np.ndarray | None, str]:
    """A label per run for the cluster bootstrap, its (budget, sparsity, seed), and what is
    resampled. Without budgets (a table of N, D points) or with fewer than MIN_CLUSTERS
    clusters, runs are resampled one by one: resampling one or two clusters would redraw the
    same table every time and make every interval a point."""
    if "budget_group" not in df:
        return None, "runs (the table has no budgets to cluster by)"
    keys = [k for k in ("budget_group", "sparsity", "seed") if k in df]
    labels = "g" + df.groupby(keys, sort=False).ngroup().astype(str)
    what = "(budget, sparsity, seed) clusters of runs"
    trunks = trunk_labels(df)
    if trunks is not None:  # a trunk and its branches move together, whatever their budget
        labels = ("t" + trunks.astype(str)).where(trunks.notna(), labels)
        what = "clusters of runs: a WSD trunk with its branches, else (budget, sparsity, seed)"
    codes = pd.factorize(labels)[0]
    n = len(np.unique(codes))
    if n < MIN_CLUSTERS:
        return None, f"runs (only {n} clusters)"
    return codes, what


def _fpt(st: LawStudy, n: np.ndarray, s: float) -> np.ndarray:
    if st.family is None:  # no architecture columns: 6 x N (active), said in the report
        return six_n_flops(n if st.law.n_kind == "active" else n * (1 - s))
    return st.family.flops_per_token(n, s, st.law.n_kind)


def law_optimum(
    st: LawStudy,
    theta: np.ndarray,
    budget: float,
    n: float | None = None,
    s: float | None = None,
    n_points: int = 200,
    s_points: int = 41,
) -> dict:
    """Minimise the fitted law at a budget over S inside the trained range (N fixed), N (S
    fixed), or both. D = C / flops_per_token(N, S) of the table's own model family."""
    n_lo = st.data["N"].min() / 30
    n_hi = st.data["N"].max() * 30
    ns = (
        np.array([n])
        if n is not None
        else np.exp(np.linspace(np.log(n_lo), np.log(n_hi), n_points))
    )
    lo, hi = st.s_range
    ss = np.array([s]) if s is not None else np.linspace(lo, hi, s_points)
    best: dict | None = None
    for sv in ss:
        d = budget / _fpt(st, ns, sv)
        data = {"N": ns, "D": d, "S": np.full(len(ns), sv), "E": np.full(len(ns), 1 / (1 - sv))}
        loss = st.law.predict(theta, data)
        j = int(np.argmin(loss))
        if best is None or loss[j] < best["loss"]:
            best = {
                "n": float(ns[j]),
                "s": float(sv),
                "d": float(d[j]),
                "loss": float(loss[j]),
                "n_at_edge": n is None and j in (0, len(ns) - 1),
            }
    assert best is not None  # ss and ns are never empty
    best["s_at_upper_edge"] = s is None and hi > lo and best["s"] >= hi - 1e-12
    return best


def law_optima(
    st: LawStudy, budgets: list[float], n_fixed: dict[float, float], level: float = 0.95
) -> dict:
    """Per budget: the joint optimum (N, S) inside the trained S range; S* at the IsoFLOP N*
    (the law's own kind of N); N* at each trained sparsity; with bootstrap intervals."""
    sparse = bool({"S", "E"} & set(st.law.needs)) and st.s_range[1] > st.s_range[0]
    boots = st.thetas[:OPTIMA_BOOT]
    out = {}
    for c in budgets:
        entry = {"joint": law_optimum(st, st.theta, c, s=None if sparse else st.s_range[0])}
        n = n_fixed.get(c)
        if n and sparse:
            best = law_optimum(st, st.theta, c, n=n)
            reps = [law_optimum(st, t, c, n=n)["s"] for t in boots]
            entry["s_star_at_n"] = {
                "n": n,
                "s_star": best["s"],
                "at_upper_edge": best["s_at_upper_edge"],
                "ci": percentile_interval(reps, level),
            }
        entry["n_star_at_s"] = {}
        levels = sorted(set(np.round(st.sparsity, 6)))
        for s in levels:
            best = law_optimum(st, st.theta, c, s=s)["n"]
            reps = [law_optimum(st, t, c, s=s)["n"] for t in boots]
            entry["n_star_at_s"][f"{s:.4f}"] = {
                "n_star": best,
                "ci": percentile_interval(reps, level),
            }
        out[f"{c:.4g}"] = entry
    return out


def s_star_curves(st: LawStudy, budgets: list[float], n_grid: np.ndarray) -> dict:
    if not ({"S", "E"} & set(st.law.needs)) or st.s_range[1] <= st.s_range[0]:
        return {}
    return {
        c: (n_grid, np.array([law_optimum(st, st.theta, c, n=n)["s"] for n in n_grid]))
        for c in budgets
    }


def bootstrap_samples(st: LawStudy) -> dict[str, np.ndarray]:
    return natural_samples(st.law, st.thetas)
