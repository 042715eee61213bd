"""Synthetic runs tables drawn from a law with known parameters (plus log-normal noise)."""

import numpy as np
import pandas as pd

from analysis.laws import APPLE

TRUE_APPLE = {
    "a": 300.0,
    "b": 400.0,
    "c": 0.3,
    "d": 30.0,
    "e": 1.7,
    "alpha": 0.3,
    "beta": 0.28,
    "gamma": 0.2,
    "delta": 0.5,
    "lambda": 0.6,
}


def random_points(law, true: dict, n: int, noise=0.005, seed=0) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = {
        "N": np.exp(rng.uniform(np.log(1e7), np.log(3e9), n)),
        "D": np.exp(rng.uniform(np.log(1e9), np.log(3e11), n)),
        "S": rng.choice([0, 0.5, 0.75, 0.875, 0.9375, 0.96875], n),
        "E": rng.choice([1, 2, 4, 8, 16, 32, 64], n).astype(float),
    }
    y = law.predict(law.to_theta(true), data) * np.exp(rng.normal(0, noise, n))
    return data, y


def isoflop_table(
    budgets=(1e18, 1e19), sparsities=(0.0, 0.5, 0.75, 0.875), sizes=5, noise=0.003, seed=0
) -> pd.DataFrame:
    """A sweep-like runs table: per (C, S), sizes spaced 2x around the rule optimum."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in budgets:
        for s in sparsities:
            E = round(1 / (1 - s))
            n_center = (c / 120) ** 0.5
            for k in range(sizes):
                n_active = n_center * 2.0 ** (k - (sizes - 1) / 2)
                n_total = n_active / (1 - s) * 0.9 + 0.1 * n_active
                fpt = 6 * n_active
                tokens = c / fpt
                data = {"N": np.array([n_total]), "D": np.array([tokens]), "S": np.array([s])}
                loss = APPLE.predict(APPLE.to_theta(TRUE_APPLE), data)[0]
                rows.append(
                    {
                        "run_id": f"r{len(rows)}",
                        "status": "done",
                        "budget_flops": c,
                        "sparsity": s,
                        "num_experts": E,
                        "top_k": 1,
                        "params_total": n_total,
                        "params_active": n_active,
                        "tokens": tokens,
                        "flops_per_token": fpt,
                        "val_loss": loss * np.exp(rng.normal(0, noise)),
                    }
                )
    return pd.DataFrame(rows)
