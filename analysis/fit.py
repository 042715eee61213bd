"""Fitting scaling laws the Chinchilla way, with bootstrap intervals and held-out validation.

Objective: sum over runs of Huber_delta(log L_hat - log L) with L_hat in log-sum-exp form
(analysis/laws.py), minimised with L-BFGS (scipy) and an analytic gradient from a grid of
initialisations; the best fit wins. Bootstrap: resample runs with replacement and refit from the
best point estimate (plus the next-best starts), in parallel over cores; percentile intervals.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from analysis.laws import Law

HUBER_DELTA = 1e-3


def objective(theta: np.ndarray, X: np.ndarray, log_y: np.ndarray, delta: float):
    """Huber loss of log-space residuals and its gradient. X: (terms, rows, params)."""
    # Elementwise products and sums, not matmul/einsum: these arrays are tiny, and BLAS calls
    # start OpenBLAS threads that fight the bootstrap's worker processes for the cores.
    z = (X * theta).sum(axis=-1)  # (terms, rows)
    m = z.max(axis=0)
    w = np.exp(z - m)
    s = w.sum(axis=0)
    log_pred = m + np.log(s)
    r = log_pred - log_y
    absr = np.abs(r)
    loss = np.where(absr <= delta, 0.5 * r * r, delta * (absr - 0.5 * delta)).sum()
    dr = np.clip(r, -delta, delta)  # d huber / d r
    softmax = w / s  # d log_pred / d z_k
    grad = ((softmax * dr)[..., None] * X).sum(axis=(0, 1))
    return loss, grad


def _minimize(theta0, X, log_y, delta, maxiter=1000):
    res = minimize(
        objective,
        theta0,
        args=(X, log_y, delta),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": maxiter, "gtol": 1e-9, "ftol": 1e-12},
    )
    return res.x, float(res.fun)


def init_thetas(law: Law, max_inits: int, seed: int = 0) -> np.ndarray:
    grid = [law.init_grid[p] for p in law.params]
    full = np.array([law.to_theta(dict(zip(law.params, v))) for v in itertools.product(*grid)])
    if len(full) <= max_inits:
        return full
    pick = np.random.default_rng(seed).choice(len(full), size=max_inits, replace=False)
    return full[np.sort(pick)]


@dataclass
class FitResult:
    law: str
    theta: np.ndarray
    loss: float
    params: dict[str, float]
    starts: np.ndarray  # the best few end points, reused to start bootstrap refits


def one_blas_thread(fn):
    """Run with a single BLAS thread: L-BFGS-B calls OpenBLAS on tiny vectors, and its spinning
    threads starve the bootstrap's worker processes (measured: 2 workers 5x slower than 1)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper


@one_blas_thread
def fit_law(
    law: Law,
    data: dict,
    loss: np.ndarray,
    delta: float = HUBER_DELTA,
    max_inits: int = 512,
    starts: np.ndarray | None = None,
    keep: int = 2,
    polish: int = 8,
) -> FitResult:
    """Best of L-BFGS runs from the init grid (or from ``starts``, for bootstrap refits).

    Grid starts first run a short L-BFGS (100 iterations); the best ``polish`` of those are run
    to convergence. That finds the same optimum as converging every start at a tenth the cost.
    """
    X = law.design(data)
    log_y = np.log(np.asarray(loss, dtype=float))
    if starts is None:
        rough = sorted(
            (_minimize(t0, X, log_y, delta, maxiter=100) for t0 in init_thetas(law, max_inits)),
            key=lambda r: r[1],
        )
        starts = np.array([r[0] for r in rough[:polish]])
    results = sorted((_minimize(t0, X, log_y, delta) for t0 in starts), key=lambda r: r[1])
    theta, best = results[0]
    return FitResult(
        law.name, theta, best, law.to_natural(theta), np.array([r[0] for r in results[:keep]])
    )


def _bootstrap_chunk(args):
    law, data, loss, delta, starts, seeds = args
    n = len(loss)
    out = []
    for seed in seeds:
        idx = np.random.default_rng(seed).integers(0, n, n)
        sub = {k: v[idx] for k, v in data.items()}
        out.append(fit_law.__wrapped__(law, sub, loss[idx], delta, starts=starts).theta)
    return out


@one_blas_thread  # forked workers inherit the limit
def bootstrap(
    law: Law,
    data: dict,
    loss: np.ndarray,
    point: FitResult,
    n_boot: int = 1000,
    delta: float = HUBER_DELTA,
    seed: int = 0,
    workers: int | None = None,
) -> np.ndarray:
    """Thetas of ``n_boot`` refits on runs resampled with replacement: (n_boot, params)."""
    workers = workers or os.cpu_count() or 1
    seeds = np.random.default_rng(seed).integers(0, 2**63 - 1, n_boot)
    chunks = [seeds[i :: workers * 4] for i in range(workers * 4)]
    jobs = [(law, data, np.asarray(loss, float), delta, point.starts, c) for c in chunks if len(c)]
    if workers == 1:
        parts = [_bootstrap_chunk(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_bootstrap_chunk, jobs))
    return np.array([t for part in parts for t in part])


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    lo, hi = np.nanpercentile(samples, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return float(lo), float(hi)


def natural_samples(law: Law, thetas: np.ndarray) -> dict[str, np.ndarray]:
    nat = [law.to_natural(t) for t in thetas]
    return {p: np.array([n[p] for n in nat]) for p in law.params}


def summarize(law: Law, point: FitResult, thetas: np.ndarray, level: float = 0.95) -> dict:
    samples = natural_samples(law, thetas)
    return {
        p: {"estimate": point.params[p], "ci": list(interval(samples[p], level))}
        for p in law.params
    }


def prediction_errors(law: Law, theta: np.ndarray, data: dict, loss: np.ndarray) -> dict:
    pred = law.predict(theta, data)
    rel = (pred - loss) / loss
    return {
        "n": len(loss),
        "rmse": float(np.sqrt(np.mean((pred - loss) ** 2))),
        "mean_abs_rel_error": float(np.mean(np.abs(rel))),
        "max_abs_rel_error": float(np.max(np.abs(rel))) if len(rel) else float("nan"),
    }
