"""Trackers with the real libraries on CPU: TensorBoard event files read back with its reader,
W&B in offline mode; a tracker that fails never fails the run; the export command."""

import json
import sys

import pytest

from experiments.config import ConfigError, from_dict
from experiments.export_runs import main as export_main
from experiments.train import execute
from tests.experiments.helpers import tiny_config

pytestmark = pytest.mark.slow  # trains runs
MOE = ["moe.num_experts=4", "moe.top_k=1", "budget.flops=1e10", "train.eval_every=40"]


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").open()]


def test_tensorboard_gets_the_rows_of_metrics_jsonl(tmp_path):
    summary = execute(tiny_config(tmp_path, *MOE, "run.trackers=[tensorboard]"))
    run_dir = tmp_path / "runs" / summary["run_id"]
    got = _scalars(run_dir / "tensorboard")
    rows = _rows(run_dir)
    assert [s for s, _ in got["train_loss"]] == [r["step"] for r in rows]
    assert [v for _, v in got["train_loss"]] == pytest.approx([r["train_loss"] for r in rows])
    assert "grad_norm" in got and "expert_load_max/layer0" in got and "eval/val_loss" in got


def test_wandb_offline_is_the_same_run_id_and_never_needs_a_network(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    summary = execute(tiny_config(tmp_path, *MOE, "run.trackers=[wandb]"))
    assert summary["status"] == "done"
    offline = list((tmp_path / "runs" / summary["run_id"] / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and offline[0].name.endswith(summary["run_id"])
    assert list(offline[0].glob(f"run-{summary['run_id']}.wandb"))


def test_a_tracker_that_fails_never_fails_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    summary = execute(tiny_config(tmp_path, *MOE, "run.trackers=[tensorboard]"))
    assert summary["status"] == "done"
    assert "callback TensorBoard.on_log failed" in capsys.readouterr().err


def test_trackers_by_name_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match=r"run.trackers: unknown tracker\(s\) \['mlflow'\]"):
        from_dict(tiny_config(tmp_path, *MOE, "run.trackers=[mlflow]"))


def test_export_replays_finished_runs_into_tensorboard(tmp_path, capsys):
    summary = execute(tiny_config(tmp_path, *MOE))
    export_main([str(tmp_path / "runs"), "--out", str(tmp_path / "tb")])
    (log,) = (tmp_path / "tb").iterdir()
    assert log.name.endswith(summary["run_id"]) and log.name.startswith("b1e+10_E4k1_d32")
    got = _scalars(log)
    rows = _rows(tmp_path / "runs" / summary["run_id"])
    assert [v for _, v in got["train_loss"]] == pytest.approx([r["train_loss"] for r in rows])
    assert got["final/val_loss"][0][1] == pytest.approx(summary["val_loss"])
    with pytest.raises(SystemExit) as e:
        export_main([str(tmp_path / "nothing"), "--out", str(tmp_path / "tb2")])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err
