import numpy as np
import pytest

from analysis.fit import bootstrap, fit_law, objective, summarize
from analysis.laws import APPLE, CHINCHILLA, JOINT_MOE
from tests.analysis.synth import TRUE_APPLE, random_points

TRUE = {
    "chinchilla": {"A": 406.4, "B": 410.7, "E": 1.69, "alpha": 0.34, "beta": 0.28},
    "apple": TRUE_APPLE,
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
LAW = {"chinchilla": CHINCHILLA, "apple": APPLE, "joint_moe": JOINT_MOE}


def test_gradient_matches_finite_differences():
    data, y = random_points(APPLE, TRUE_APPLE, 40)
    X, ly = APPLE.design(data), np.log(y) + 0.01
    theta = APPLE.to_theta(TRUE_APPLE) + 0.05
    _, g = objective(theta, X, ly, 1e-3)
    eps = 1e-6
    num = [
        (objective(theta + eps * e, X, ly, 1e-3)[0] - objective(theta - eps * e, X, ly, 1e-3)[0])
        / (2 * eps)
        for e in np.eye(len(theta))
    ]
    np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("name", ["chinchilla", "apple", "joint_moe"])
def test_fit_recovers_known_parameters_within_intervals(name):
    law, true = LAW[name], TRUE[name]
    data, y = random_points(law, true, 120, noise=0.004, seed=1)
    point = fit_law(law, data, y, max_inits=128)
    thetas = bootstrap(law, data, y, point, n_boot=200, workers=2)
    params = summarize(law, point, thetas)
    for p, v in params.items():
        lo, hi = v["ci"]
        assert lo <= true[p] <= hi, f"{name}.{p}: true {true[p]} not in [{lo:.4g}, {hi:.4g}]"
    pred = law.predict(point.theta, data)
    assert np.mean(np.abs(pred / y - 1)) < 0.01


def test_intervals_shrink_with_more_data():
    widths = []
    for n in (40, 400):
        data, y = random_points(CHINCHILLA, TRUE["chinchilla"], n, noise=0.01, seed=2)
        point = fit_law(CHINCHILLA, data, y, max_inits=64)
        thetas = bootstrap(CHINCHILLA, data, y, point, n_boot=200, workers=1)
        params = summarize(CHINCHILLA, point, thetas)
        widths.append({p: v["ci"][1] - v["ci"][0] for p, v in params.items()})
    for p in ("E", "alpha", "beta"):
        assert widths[1][p] < 0.6 * widths[0][p], p


def test_huber_resists_an_outlier():
    data, y = random_points(CHINCHILLA, TRUE["chinchilla"], 80, noise=0.002, seed=3)
    y = y.copy()
    y[0] *= 1.5  # one diverged run
    params = fit_law(CHINCHILLA, data, y, max_inits=64).params
    assert params["E"] == pytest.approx(TRUE["chinchilla"]["E"], rel=0.05)
    assert params["alpha"] == pytest.approx(TRUE["chinchilla"]["alpha"], rel=0.1)
