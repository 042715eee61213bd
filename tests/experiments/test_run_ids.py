"""Run ids survive new options: every committed run of docs/studies resolves to the id it was
trained under, and a field added at its default leaves every id unchanged."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from experiments import config as config_module
from experiments.config import OptimConfig, TrainConfig, from_dict
from experiments.data import dataset
from experiments.record import run_id

STUDIES = Path(__file__).resolve().parents[2] / "docs" / "studies"
COMMITTED = sorted(STUDIES.glob("*/runs/*/config.yaml")) + sorted(
    STUDIES.glob("*/*/runs/*/config.yaml")
)


def _recorded(config_yaml: Path) -> tuple[TrainConfig, str]:
    """The config a committed run trained with, rebuilt from its record alone. The corpus is
    not here: its key is the study's corpus record (corpus.json), its vocabulary the one the
    run's summary recorded (config.yaml then held Hydra's unresolved 0)."""
    cfg = yaml.safe_load(config_yaml.read_text())
    summary = json.loads((config_yaml.parent / "summary.json").read_text())
    cfg["model"]["vocab_size"] = cfg["data"]["vocab_size"] = summary["vocab_size"]
    study = next(p for p in config_yaml.parents if (p / "corpus.json").exists())
    key = json.loads((study / "corpus.json").read_text())["tokenized"]["key"]
    return from_dict(cfg, read_corpus=False), key


def test_every_committed_run_id_still_resolves(monkeypatch):
    assert len(COMMITTED) >= 200
    moved = []
    for path in COMMITTED:
        tc, key = _recorded(path)
        monkeypatch.setattr(dataset, "corpus_identity", lambda cfg, key=key: key)
        if run_id(tc.identity()) != path.parent.name:
            moved.append(str(path.parent))
    assert not moved, f"{len(moved)} committed runs would train again: {moved[:3]}"


def test_a_field_added_at_its_default_leaves_the_id_unchanged(monkeypatch):
    tc, key = _recorded(COMMITTED[0])
    monkeypatch.setattr(dataset, "corpus_identity", lambda cfg: key)
    before = run_id(tc.identity())

    @dataclasses.dataclass
    class OptimWithMore(OptimConfig):
        nesterov: bool = False  # a new option, at its default

    more = dataclasses.replace(tc, optim=OptimWithMore(**dataclasses.asdict(tc.optim)))
    assert run_id(more.identity()) == before
    more.optim.nesterov = True  # changed from its default: a new run
    assert run_id(more.identity()) != before
    # a field that existed when the first runs were recorded enters at any value, default too
    assert "optim.lr" in config_module.FIRST_IDENTITY_FIELDS


@pytest.mark.slow
def test_config_yaml_is_the_validated_config(tmp_path):
    """config.yaml records the config that ran (a corpus's vocabulary filled in, not Hydra's
    0) and rebuilds it, run id included, from the record alone."""
    import numpy as np

    from experiments.train import execute
    from tests.experiments.helpers import tiny_config

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (np.arange(20000) % 256).astype(np.uint16).tofile(corpus / "train.bin")
    (np.arange(4000) % 256).astype(np.uint16).tofile(corpus / "val.bin")
    (corpus / "meta.json").write_text('{"key": "k1", "vocab_size": 256, "dtype": "uint16"}')
    overrides = ["data=bin", f"data.path={corpus}", "budget.flops=3e9", "moe.num_experts=4"]
    summary = execute(tiny_config(tmp_path, *overrides))
    record = yaml.safe_load((tmp_path / "runs" / summary["run_id"] / "config.yaml").read_text())
    assert record["data"]["vocab_size"] == record["model"]["vocab_size"] == 256
    rebuilt = from_dict(record, read_corpus=False)
    assert run_id(rebuilt.identity()) == summary["run_id"]


def test_the_summary_keeps_every_column_the_committed_runs_have(tmp_path):
    """RunSummary derives its config columns from the config: none of the runs table's
    columns may go missing, and a new option is a new column by itself."""
    from experiments.record import RunSummary
    from tests.experiments.helpers import tiny_config

    committed = json.loads((COMMITTED[0].parent / "summary.json").read_text())
    tc = from_dict(tiny_config(tmp_path, "moe.num_experts=4", "+optim.lr_multipliers={router: 2}"))
    row = RunSummary.planned(tc, "r").to_dict()
    assert set(committed) <= set(row), sorted(set(committed) - set(row))
    assert row["lr_multipliers"] == '{"router": 2}' and row["optimizer"] == "adamw"
