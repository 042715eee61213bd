"""Known laws with known coefficients, and runs drawn from them: what the fit benchmark and
the tests that check a fit recovers its truth both start from."""

from __future__ import annotations

import numpy as np

TRUE = {
    "chinchilla": {"A": 406.4, "B": 410.7, "E": 1.69, "alpha": 0.34, "beta": 0.28},
    "apple": {
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
    },
    "joint_moe": {
        "a": 120.0,
        "b": 900.0,
        "c": 1.8,
        "alpha": -0.3,
        "beta": -0.3,
        "gamma": 0.01,
        "delta": -0.15,
        "omega": 0.05,
        "zeta": -0.01,
    },
}


def random_points(law, true: dict, n: int, noise=0.005, seed=0) -> tuple[dict, np.ndarray]:
    """n runs scattered over N, D, S, E, with log-normal multiplicative noise on the loss."""
    rng = np.random.default_rng(seed)
    data = {
        "N": np.exp(rng.uniform(np.log(1e7), np.log(3e9), n)),
        "D": np.exp(rng.uniform(np.log(1e9), np.log(3e11), n)),
        "S": rng.choice([0, 0.5, 0.75, 0.875, 0.9375, 0.96875], n),
        "E": rng.choice([1, 2, 4, 8, 16, 32, 64], n).astype(float),
    }
    y = law.predict(law.to_theta(true), data) * np.exp(rng.normal(0, noise, n))
    return data, y
