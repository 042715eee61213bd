"""The committed GPU study (docs/studies/kernel) is what its runs table gives today: a change
to the analysis that moves its point estimates must come with a regenerated report."""

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis.report import build_report

STUDY = Path(__file__).resolve().parents[2] / "docs" / "studies" / "kernel"


def test_committed_report_matches_its_runs_table(tmp_path):
    build_report(STUDY / "runs.csv", tmp_path, laws=(), n_boot=20)
    new = json.loads((tmp_path / "fits.json").read_text())["isoflop"]
    old = json.loads((STUDY / "report" / "fits.json").read_text())["isoflop"]
    assert len(new["groups"]) == len(old["groups"]) == 15
    for a, b in zip(new["groups"], old["groups"]):
        assert (a["budget"], a["sparsity"], a["bracketed"]) == (
            b["budget"],
            b["sparsity"],
            b["bracketed"],
        )
        assert a["loss_star"] == pytest.approx(b["loss_star"], abs=1e-9)
        assert a["n_star"] == pytest.approx(b["n_star"], rel=1e-9)
    # the same noise per budget, to the last bits a different CPU's BLAS may round otherwise
    assert new["noise_by_budget"].keys() == old["noise_by_budget"].keys()
    for budget, noise in old["noise_by_budget"].items():
        assert new["noise_by_budget"][budget] == {
            k: pytest.approx(v, rel=1e-9) if isinstance(v, float) else v for k, v in noise.items()
        }
    runs = pd.read_csv(STUDY / "runs.csv")
    assert len(runs) == 140 and (runs["status"] == "done").all() and runs["epochs"].max() < 1


def test_the_second_studys_table_is_every_run_record(tmp_path):
    """docs/studies/study2/runs.csv is `python -m analysis.collect` of its runs/: every run
    record, of every variant (the report of one variant refuses a table of several unless
    told which), and a folder without records is refused with exit 2."""
    from analysis.collect import main

    study2 = STUDY.parent / "study2"
    assert main([str(study2 / "runs"), "--out", str(tmp_path / "runs.csv")]) == 0
    table = pd.read_csv(tmp_path / "runs.csv")
    committed = pd.read_csv(study2 / "runs.csv")
    assert sorted(table["run_id"]) == sorted(committed["run_id"])
    assert len(table) == len(list((study2 / "runs").glob("*/summary.json")))
    assert set(table["variant"]) == {"top1", "g2renorm"}
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "none.csv")]) == 2


def test_the_second_studys_verdict_is_what_its_runs_give():
    """docs/studies/study2/verdict/ (the README's verdict) is `python -m analysis.verdict` of
    the committed run records under the committed reading."""
    from analysis.verdict import Reading, evaluate

    study2 = STUDY.parent / "study2"
    sources = [study2 / "runs", study2 / "lr_check" / "runs"]  # the LR check's folder of its own
    new = evaluate(sources, Reading.load(study2 / "reading.json"))
    old = json.loads((study2 / "verdict" / "verdict.json").read_text())
    assert (new["verdict"], new["why"]) == (old["verdict"], old["why"])
    assert [c["detail"] for c in new["conditions"]] == [c["detail"] for c in old["conditions"]]
    assert new["primary"]["estimate"] == pytest.approx(old["primary"]["estimate"], abs=1e-9)
