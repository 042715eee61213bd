"""Synthetic runs tables drawn from known truths (plus noise), shaped like a sweep's table."""

import numpy as np
import pandas as pd

from analysis.laws import APPLE
from analysis.synthetic import TRUE

TRUE_APPLE = TRUE["apple"]


def sweep_table(
    budgets=(1e18, 1e19, 1e20),
    sparsities=(0.0, 0.5, 0.75, 0.875, 0.9375),
    sizes=5,
    noise=0.003,
    seed=0,
) -> pd.DataFrame:
    """A sweep-like runs table whose losses follow the Apple law, sized so every group's
    optimum lies inside its sizes: per (C, S), sizes spaced 1.6x around the law's optimum."""
    rng = np.random.default_rng(seed)
    theta = APPLE.to_theta(TRUE_APPLE)
    rows = []
    for c in budgets:
        for s in sparsities:
            E = round(1 / (1 - s))
            grid = np.exp(np.linspace(np.log(1e6), np.log(1e12), 400))
            d = c / (6 * grid * (1 - s))
            loss = APPLE.predict(theta, {"N": grid, "D": d, "S": np.full(len(grid), s)})
            n_opt = grid[np.argmin(loss)]
            for k in range(sizes):
                n_total = n_opt * 1.6 ** (k - (sizes - 1) / 2)
                n_active = n_total * (1 - s)
                tokens = c / (6 * n_active)
                true = APPLE.predict(
                    theta, {"N": np.array([n_total]), "D": np.array([tokens]), "S": np.array([s])}
                )[0]
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
                        "params_embedding": 0.0,
                        "params_active_non_embedding": n_active,
                        "tokens": tokens,
                        "flops_per_token": 6 * n_active,
                        "seed": 0,
                        "val_loss": true * np.exp(rng.normal(0, noise)),
                    }
                )
    return pd.DataFrame(rows)
