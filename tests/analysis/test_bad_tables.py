"""Issue 23, analysis: tables that would make the analysis falsely certain or silently drop
runs are refused with one line naming the runs (CPU, no fitting needed)."""

import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from analysis.collect import TableError, collect, done_runs
from analysis.design import prepare
from tests.analysis.synth import sweep_table


def _prepared(df):
    return prepare(done_runs(df, "val_loss"), "val_loss", "budget_flops")


def test_a_duplicated_row_is_refused(tmp_path):
    df = sweep_table(budgets=(1e18,), sparsities=(0.0,))
    doubled = pd.concat([df, df.iloc[[2]]], ignore_index=True)
    with pytest.raises(TableError, match=r"run r2 appears 2 times"):
        done_runs(doubled, "val_loss")
    doubled.to_csv(tmp_path / "runs.csv", index=False)
    cmd = [
        sys.executable,
        "-m",
        "analysis.report",
        str(tmp_path / "runs.csv"),
        "--out",
        str(tmp_path / "r"),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 2 and "appears 2 times" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_copied_run_directory_is_refused_naming_both(tmp_path):
    row = sweep_table(budgets=(1e18,), sparsities=(0.0,)).iloc[0].to_dict()
    for name in ("runs/r0", "backup/r0"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "summary.json").write_text(json.dumps(row))
    table, _ = collect(tmp_path)
    with pytest.raises(TableError, match=r"run r0 appears 2 times \(.*backup/r0, .*runs/r0\)"):
        done_runs(table, "val_loss")


def test_one_seed_twice_at_one_point_is_not_a_replicate():
    df = sweep_table(budgets=(1e18,), sparsities=(0.0,))
    copy = df.iloc[[1]].assign(run_id="r1-again", val_loss=df["val_loss"].iloc[1] + 0.01)
    both = pd.concat([df, copy], ignore_index=True)
    with pytest.raises(TableError, match=r"runs r1, r1-again are one design point .* same seed 0"):
        _prepared(both)
    # a table without seeds: the repeat is read as a second seed, and the notes say so
    design = _prepared(both.drop(columns="seed"))
    assert sorted(design.df["seed"]) == [0] * len(df) + [1]
    assert any("read as replicate seeds" in n for n in design.notes)


@pytest.mark.parametrize(
    "column,value,message",
    [
        ("budget_flops", math.nan, "budget_flops that is not a finite positive number: r3=nan"),
        ("params_total", -5.0, "params_total that is not a finite positive number: r3=-5.0"),
        ("params_active", math.nan, "params_active that is not"),
        ("tokens", -1e9, "tokens that is not a finite positive number: r3=-1000000000.0"),
        ("sparsity", 1.5, "sparsity that is not a finite number in [0, 1): r3=1.5"),
        ("params_embedding", -1.0, "params_embedding that is not a finite number >= 0"),
    ],
)
def test_bad_numbers_are_refused_naming_the_run(column, value, message):
    df = sweep_table(budgets=(1e18, 1e19), sparsities=(0.0, 0.5))
    df.loc[3, column] = value
    with pytest.raises(
        TableError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        _prepared(df)
