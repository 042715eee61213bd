"""Schedules in one table: WSD trunks as bootstrap clusters, cosine controls set aside and
paired against the runs the fits use."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.design import prepare
from analysis.report import build_report
from analysis.study import _clusters
from tests.analysis.synth import sweep_table


def _branched(seeds=2):
    """A sweep table whose runs at the smaller budgets branched from the largest budget's run
    of the same (size, sparsity, seed): sizes shared across budgets, so trunks exist."""
    parts = []
    for seed in range(seeds):
        t = sweep_table(budgets=(1e18, 2e18, 4e18), sparsities=(0.0, 0.75), seed=seed)
        t["seed"], t["schedule"] = seed, "wsd"
        t["run_id"] = [f"r{seed}_{i}" for i in range(len(t))]
        t["size"] = t.groupby(["budget_flops", "sparsity"]).cumcount()
        parts.append(t)
    df = pd.concat(parts, ignore_index=True)
    trunk = df[df["budget_flops"] == 4e18].set_index(["seed", "sparsity", "size"])["run_id"]
    key = list(zip(df["seed"], df["sparsity"], df["size"]))
    df["branch_of"] = [trunk[k] if b < 4e18 else None for k, b in zip(key, df["budget_flops"])]
    return df


def test_a_trunk_and_its_branches_are_one_cluster_of_the_law_bootstrap():
    df = prepare(_branched(), "val_loss", "budget_flops").df
    labels, what = _clusters(df)
    assert "trunk" in what
    for trunk, g in df.groupby(df["branch_of"].fillna(df["run_id"])):
        assert len(set(labels[g.index])) == 1, trunk  # the trunk with every branch of it
    # and nothing else in it: one cluster per trunk
    assert len(set(labels)) == df["branch_of"].fillna(df["run_id"]).nunique()
    # without branches, (budget, sparsity, seed): a trunk's runs at 3 budgets are 3 clusters
    plain = prepare(_branched().drop(columns="branch_of"), "val_loss", "budget_flops").df
    assert len(set(_clusters(plain)[0])) == 3 * 2 * 2


def test_cosine_controls_are_set_aside_and_paired(tmp_path):
    main = _branched(seeds=3)
    controls = main[main["budget_flops"] == 1e18].copy()
    controls["schedule"], controls["branch_of"] = "cosine", None
    controls["run_id"] = controls["run_id"] + "c"
    rng = np.random.default_rng(0)
    controls["val_loss"] += 0.01 + rng.normal(0, 0.002, len(controls))  # cosine 0.01 worse
    table = pd.concat([main, controls], ignore_index=True)
    table.to_csv(tmp_path / "runs.csv", index=False)
    build_report(tmp_path / "runs.csv", tmp_path / "r", laws=(), n_boot=50)
    fits = json.loads((tmp_path / "r" / "fits.json").read_text())
    assert (fits["n_runs"], fits["n_fitted"]) == (len(table), len(main))  # controls set aside
    assert any("set aside as controls" in n for n in fits["notes"])
    groups = fits["isoflop"]["groups"]
    assert sum(g["n_runs"] for g in groups) == len(main)  # never pooled with the WSD runs
    sched = fits["schedule"]
    assert sched["branches"] == (main["branch_of"].notna()).sum() and sched["controls"] == 30
    for s in ("0.0000", "0.7500"):
        d = sched["minus_controls"][s]
        assert d["pairs"] == 15 and d["ci"][0] <= -0.01 <= d["ci"][1] and d["ci"][1] < 0
    assert "minus cosine control" in (tmp_path / "r" / "report.md").read_text()


@pytest.mark.parametrize("column", ["branch_of", "schedule"])
def test_a_plain_table_states_no_schedule(tmp_path, column):
    t = sweep_table(budgets=(1e18, 1e19), sparsities=(0.0, 0.5))
    if column == "schedule":
        t["schedule"] = "cosine"
    else:
        t["branch_of"] = None
    t.to_csv(tmp_path / "runs.csv", index=False)
    build_report(tmp_path / "runs.csv", tmp_path / "r", laws=(), n_boot=20)
    assert "schedule:" not in (tmp_path / "r" / "report.md").read_text()
