import numpy as np
import pandas as pd
import pytest

from analysis.fit import bootstrap, fit_law, objective, summarize
from analysis.laws import APPLE, CHINCHILLA, JOINT_MOE, Columns, joint_moe, saturating_experts
from analysis.study import NotIdentifiable, study_law
from analysis.synthetic import TRUE, random_points
from tests.analysis.synth import TRUE_APPLE

pytestmark = pytest.mark.slow  # trains runs, sweeps, prepares corpora or fits laws

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
    thetas, other = bootstrap(law, data, y, point, n_boot=100, workers=2)
    params = summarize(law, point, thetas)
    for p, v in params.items():
        lo, hi = v["ci"]
        assert lo <= true[p] <= hi, f"{name}.{p}: true {true[p]} not in [{lo:.4g}, {hi:.4g}]"
    assert np.mean(np.abs(law.predict(point.theta, data) / y - 1)) < 0.01
    assert 0 <= other <= 1 and point.at_bounds == []


def test_bootstrap_honours_n_boot_and_seed():
    data, y = random_points(CHINCHILLA, TRUE["chinchilla"], 60, noise=0.01, seed=2)
    point = fit_law(CHINCHILLA, data, y, max_inits=32)
    a, _ = bootstrap(CHINCHILLA, data, y, point, n_boot=12, seed=5, workers=1)
    b, _ = bootstrap(CHINCHILLA, data, y, point, n_boot=12, seed=5, workers=2)
    c, _ = bootstrap(CHINCHILLA, data, y, point, n_boot=12, seed=6, workers=1)
    assert a.shape == (12, 5)
    np.testing.assert_allclose(np.sort(a, 0), np.sort(b, 0))  # same draws, any worker count
    assert not np.allclose(np.sort(a, 0), np.sort(c, 0))


def test_intervals_shrink_with_more_data():
    widths = []
    for n in (40, 400):
        data, y = random_points(CHINCHILLA, TRUE["chinchilla"], n, noise=0.01, seed=2)
        point = fit_law(CHINCHILLA, data, y, max_inits=64)
        thetas, _ = bootstrap(CHINCHILLA, data, y, point, n_boot=80, workers=1)
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


def test_a_parameter_on_its_bound_is_reported():
    rng = np.random.default_rng(4)
    data = {
        "N": np.exp(rng.uniform(np.log(10), np.log(1000), 80)),
        "D": np.exp(rng.uniform(np.log(1e9), np.log(1e11), 80)),
    }
    # alpha = 4 lies outside the search's [0, 3]: the fit must end on the bound and say so
    y = 1.7 + 1e4 / data["N"] ** 4 + 410.7 / data["D"] ** 0.28
    assert "alpha" in fit_law(CHINCHILLA, data, y, max_inits=64).at_bounds


def _table(sparsities, n_per=12, seed=0):
    data, y = random_points(APPLE, TRUE_APPLE, n_per * len(sparsities), seed=seed)
    s = np.repeat(sparsities, n_per)
    data["S"] = s
    y = APPLE.predict(APPLE.to_theta(TRUE_APPLE), data)
    return pd.DataFrame(
        {
            "N_total": data["N"],
            "N_active": data["N"] * (1 - s),
            "tokens": data["D"],
            "sparsity": s,
            "val_loss": y,
            "budget_group": np.tile([1e18, 1e19, 1e20], len(y))[: len(y)],
        }
    )


def test_apple_on_three_sparsity_levels_is_not_identifiable():
    st = study_law(_table([0.0, 0.5, 0.75]), "apple", Columns(), n_boot=10)
    assert isinstance(st, NotIdentifiable)
    assert "3 sparsity level(s)" in st.reasons[0] and "5 or more sparsity levels" in st.fixes[0]


def test_apple_on_five_levels_fits_and_holds_out_the_sparsest():
    st = study_law(
        _table([0.0, 0.5, 0.75, 0.875, 0.9375]), "apple", Columns(), n_boot=20, max_inits=64
    )
    assert not isinstance(st, NotIdentifiable)
    assert st.holdout["rule"].startswith("sparsity == 0.9375")
    assert st.s_range == (0.0, 0.9375)


def test_saturating_transform_limits():
    E = np.array([1.0, 4.0, 64.0, 1e6])
    np.testing.assert_allclose(saturating_experts(E, 1.0, np.inf), E)  # identity
    sat = saturating_experts(E, 2.0, 32.0)
    assert sat[0] == pytest.approx(2.0) and sat[-1] < 32.0 and np.all(np.diff(sat) > 0)
    assert joint_moe(2.0, 32.0).constants == {"E_start": 2.0, "E_max": 32.0}
