"""Scaling laws as plain functions of a table's columns, in a form every fitter can share.

Each law's log-prediction is ``log L = logsumexp_k(X_k @ theta)``: each additive term's log is
linear in the fit parameters theta (log-coefficients and exponents), given the data. So a law
is its parameter names, their bounds, a start grid and a design tensor X of shape (terms,
rows, params); the Huber fit, its analytic gradient and the bootstrap are law-agnostic
(analysis/fit.py).

Which N each law reads is part of the law (``n_kind``): the Apple law's N is total parameters
(its (1-S) terms turn it into active ones), Chinchilla's and the joint MoE law's N is active
parameters, all under the report's one N convention. The joint MoE law's E is the expansion
E/K = 1/(1-S) (total over active expert parameters, granularity cancelling) in the fit and in
the optimiser alike.

``requirements`` say what a design must contain before a law is identifiable from it; a law
fitted on less would return numbers its data cannot carry (analysis/study.py refuses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np

E_ = np.exp
BIG = E_(30.0)  # upper bound of every coefficient


@dataclass
class Columns:
    N: str = "N_active"  # filled per law from the N convention unless --N is given
    D: str = "tokens"
    S: str = "sparsity"
    E: str = "expansion"  # E/K = 1/(1 - S), added by the report
    loss: str = "val_loss"
    budget: str = "budget_flops"


@dataclass
class Law:
    name: str
    formula: str
    params: list[str]  # natural parameter names, as in the formula
    log_coefficients: list[str]  # which of them theta holds as logs (coefficients > 0)
    needs: list[str]  # Columns fields the law reads
    design: Callable[[dict], np.ndarray]  # data -> X (terms, rows, len(params))
    init_grid: dict[str, list[float]]  # starting values per natural parameter
    bounds: dict[str, tuple[float, float]]  # natural units
    n_kind: str  # "total" or "active"
    requirements: dict = field(default_factory=dict)  # levels of S / E, budgets, runs
    constants: dict = field(default_factory=dict)

    def to_natural(self, theta: np.ndarray) -> dict[str, float]:
        with np.errstate(over="ignore"):  # a wild bootstrap refit may overflow to inf: keep it
            return {
                p: float(np.exp(t)) if p in self.log_coefficients else float(t)
                for p, t in zip(self.params, theta)
            }

    def to_theta(self, natural: dict[str, float]) -> np.ndarray:
        return np.array(
            [np.log(natural[p]) if p in self.log_coefficients else natural[p] for p in self.params]
        )

    def theta_bounds(self) -> list[tuple[float, float]]:
        out = []
        for p in self.params:
            lo, hi = self.bounds[p]
            out.append((np.log(lo), np.log(hi)) if p in self.log_coefficients else (lo, hi))
        return out

    def predict(self, theta: np.ndarray, data: dict) -> np.ndarray:
        X = self.design(data)
        z = (X * theta).sum(axis=-1)
        m = z.max(axis=0)
        return np.exp(m) * np.exp(z - m).sum(axis=0)


def _logs(data: dict, *names: str) -> list[np.ndarray]:
    return [np.log(np.asarray(data[n], dtype=float)) for n in names]


def _stack(rows: int, terms: list[dict[int, np.ndarray | float]], n_params: int) -> np.ndarray:
    X = np.zeros((len(terms), rows, n_params))
    for k, term in enumerate(terms):
        for j, v in term.items():
            X[k, :, j] = v
    return X


# --- Chinchilla (Hoffmann et al. 2022): L = E + A/N^alpha + B/D^beta -------------------------
def _chinchilla_design(data: dict) -> np.ndarray:
    lN, lD = _logs(data, "N", "D")
    # theta = [log A, log B, log E, alpha, beta]
    return _stack(len(lN), [{0: 1.0, 3: -lN}, {1: 1.0, 4: -lD}, {2: 1.0}], 5)


CHINCHILLA = Law(
    name="chinchilla",
    formula="L(N, D) = E + A/N^alpha + B/D^beta",
    params=["A", "B", "E", "alpha", "beta"],
    log_coefficients=["A", "B", "E"],
    needs=["N", "D"],
    design=_chinchilla_design,
    # Hoffmann et al. (App. D): log A, log B in {0..25}, log E in {-1..1.5}, alpha, beta in {0..2}
    init_grid={
        "A": [E_(v) for v in (0, 5, 10, 15, 20, 25)],
        "B": [E_(v) for v in (0, 5, 10, 15, 20, 25)],
        "E": [E_(v) for v in (-1, -0.5, 0, 0.5, 1, 1.5)],
        "alpha": [0.0, 0.5, 1.0, 1.5, 2.0],
        "beta": [0.0, 0.5, 1.0, 1.5, 2.0],
    },
    bounds={
        "A": (1e-6, BIG),
        "B": (1e-6, BIG),
        "E": (1e-3, 50.0),
        "alpha": (0.0, 3.0),
        "beta": (0.0, 3.0),
    },
    n_kind="active",
    requirements={"budgets": 3},
)


# --- Abnar et al. 2025 (Apple), Eq. 6 -------------------------------------------------------
# L(N, D, S) = a/N^alpha + b/D^beta + c/(1-S)^lambda + d/((1-S)^delta N^gamma) + e
def _apple_design(data: dict) -> np.ndarray:
    lN, lD = _logs(data, "N", "D")
    l1S = np.log1p(-np.asarray(data["S"], dtype=float))
    # theta = [log a, log b, log c, log d, log e, alpha, beta, gamma, delta, lambda]
    return _stack(
        len(lN),
        [
            {0: 1.0, 5: -lN},
            {1: 1.0, 6: -lD},
            {2: 1.0, 9: -l1S},
            {3: 1.0, 8: -l1S, 7: -lN},
            {4: 1.0},
        ],
        10,
    )


APPLE = Law(
    name="apple",
    formula="L(N, D, S) = a/N^alpha + b/D^beta + c/(1-S)^lambda + d/((1-S)^delta N^gamma) + e",
    params=["a", "b", "c", "d", "e", "alpha", "beta", "gamma", "delta", "lambda"],
    log_coefficients=["a", "b", "c", "d", "e"],
    needs=["N", "D", "S"],
    design=_apple_design,
    init_grid={
        "a": [E_(v) for v in (0, 5, 10)],
        "b": [E_(v) for v in (0, 5, 10)],
        "c": [E_(v) for v in (-3, -1)],
        "d": [E_(v) for v in (0, 5)],
        "e": [E_(v) for v in (-1, 0, 0.5)],
        "alpha": [0.2, 0.6],
        "beta": [0.2, 0.6],
        "gamma": [0.2, 0.6],
        "delta": [-0.5, 0.5],
        "lambda": [-0.5, 0.5],
    },
    bounds={
        "a": (1e-6, BIG),
        "b": (1e-6, BIG),
        "c": (1e-8, BIG),
        "d": (1e-8, BIG),
        "e": (1e-3, 50.0),
        "alpha": (0.0, 3.0),
        "beta": (0.0, 3.0),
        "gamma": (0.0, 3.0),
        "delta": (-3.0, 3.0),
        "lambda": (-3.0, 3.0),
    },
    n_kind="total",
    # Four of its ten parameters describe S; Abnar et al. fit it on 5+ sparsity levels and
    # held the highest out, which must leave enough levels to fit on.
    requirements={"levels": ("S", 5), "holdout_levels": 4, "budgets": 2},
)


# --- Joint MoE law (Ludziejewski et al. 2025) -----------------------------------------------
# L = a Ê^delta N^(alpha + gamma ln Ê) + b Ê^omega D^(beta + zeta ln Ê) + c, N = active params,
# Ê the saturating transform of E (Clark et al. 2022) with constants E_start and E_max.
def saturating_experts(E: np.ndarray, E_start: float, E_max: float) -> np.ndarray:
    E = np.asarray(E, dtype=float)
    inv_max = 0.0 if np.isinf(E_max) else 1.0 / E_max
    return 1.0 / (1.0 / (E - 1.0 + 1.0 / (1.0 / E_start - inv_max)) + inv_max)


def _joint_design(data: dict, E_start: float, E_max: float) -> np.ndarray:
    lN, lD = _logs(data, "N", "D")
    lE = np.log(saturating_experts(data["E"], E_start, E_max))
    # theta = [log a, log b, log c, alpha, beta, gamma, delta, omega, zeta]
    return _stack(
        len(lN),
        [
            {0: 1.0, 6: lE, 3: lN, 5: lE * lN},
            {1: 1.0, 7: lE, 4: lD, 8: lE * lD},
            {2: 1.0},
        ],
        9,
    )


JOINT_MOE = Law(
    name="joint_moe",
    formula="L = a Ê^delta N^(alpha + gamma ln Ê) + b Ê^omega D^(beta + zeta ln Ê) + c",
    params=["a", "b", "c", "alpha", "beta", "gamma", "delta", "omega", "zeta"],
    log_coefficients=["a", "b", "c"],
    needs=["N", "D", "E"],
    design=partial(_joint_design, E_start=1.0, E_max=np.inf),
    init_grid={
        "a": [E_(v) for v in (0, 5, 10)],
        "b": [E_(v) for v in (0, 5, 10)],
        "c": [E_(v) for v in (-1, 0, 0.5)],
        "alpha": [-0.6, -0.2],
        "beta": [-0.6, -0.2],
        "gamma": [0.0],
        "delta": [0.0, 0.5],
        "omega": [0.0],
        "zeta": [0.0, 0.02],
    },
    bounds={
        "a": (1e-6, BIG),
        "b": (1e-6, BIG),
        "c": (1e-3, 50.0),
        "alpha": (-3.0, 0.0),
        "beta": (-3.0, 0.0),
        "gamma": (-1.0, 1.0),
        "delta": (-3.0, 3.0),
        "omega": (-3.0, 3.0),
        "zeta": (-1.0, 1.0),
    },
    n_kind="active",
    requirements={"levels": ("E", 4), "budgets": 2},
    constants={"E_start": 1.0, "E_max": float("inf")},
)
# Ê's constants are profiled over this grid (the fit with the lowest objective is kept); the
# identity transform (E_start = 1, E_max = inf) is one of its points.
JOINT_CONSTANTS = [(s, m) for s in (1.0, 1.5, 2.0, 3.0) for m in (8.0, 32.0, 128.0, np.inf)]


def joint_moe(E_start: float, E_max: float) -> Law:
    return replace(
        JOINT_MOE,
        design=partial(_joint_design, E_start=E_start, E_max=E_max),
        constants={"E_start": E_start, "E_max": E_max},
    )


LAWS = {law.name: law for law in (CHINCHILLA, APPLE, JOINT_MOE)}


def law_data(df, law: Law, cols: Columns) -> dict:
    """The arrays a law needs from a table, under the law's symbol names (N, D, S, E)."""
    out = {}
    for sym in law.needs:
        name = getattr(cols, sym)
        if name not in df.columns:
            if sym == "S":  # dense data (e.g. published Chinchilla points): S = 0
                out[sym] = np.zeros(len(df))
                continue
            raise KeyError(
                f"column {name!r} (for {sym}) is not in the table; columns: {sorted(df.columns)}"
            )
        out[sym] = df[name].to_numpy(dtype=float)
    return out
