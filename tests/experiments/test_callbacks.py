"""The Trainer's callbacks: a user's own, by name, sees every hook; one that fails is switched
off with one line and the run goes on; the metrics file and console are callbacks too (CPU)."""

import json

import pytest

from experiments.config import ConfigError, from_dict
from experiments.train import execute
from tests.experiments.helpers import tiny_config

pytestmark = pytest.mark.slow  # trains runs, sweeps, prepares corpora or fits laws

MOE = ["moe.num_experts=4", "moe.top_k=1", "budget.flops=1e10", "train.eval_every=20"]
SEEN: list[tuple[str, object]] = []


class Recorder:
    """A user callback (duck-typed: no base class needed)."""

    def on_step_end(self, trainer, step):
        SEEN.append(("step", step))

    def log_values(self, trainer, step):
        return {"my_metric": 2 * step}

    def on_log(self, trainer, row):
        SEEN.append(("log", row["my_metric"]))

    def on_eval(self, trainer, values):
        SEEN.append(("eval", round(values["val_loss"], 6)))

    def on_checkpoint(self, trainer, path):
        SEEN.append(("checkpoint", path.name))

    def on_finish(self, trainer, summary):
        SEEN.append(("finish", summary.status))


class Broken:
    def on_log(self, trainer, row):
        raise RuntimeError("tracker server unreachable")


def test_a_callback_of_ones_own_sees_every_hook(tmp_path):
    SEEN.clear()
    cb = "run.callbacks=[metrics,console,tests.experiments.test_callbacks:Recorder]"
    summary = execute(tiny_config(tmp_path, *MOE, cb))
    steps = summary["steps"]
    assert [v for k, v in SEEN if k == "step"] == list(range(steps))
    rows = [json.loads(x) for x in (tmp_path / "runs" / summary["run_id"] / "metrics.jsonl").open()]
    assert [r["my_metric"] for r in rows] == [2 * r["step"] for r in rows]  # values reach the file
    assert [v for k, v in SEEN if k == "log"] == [2 * r["step"] for r in rows]
    assert len([k for k, _ in SEEN if k == "eval"]) == steps // 20 + (steps % 20 != 0)
    assert ("checkpoint", "checkpoint.pt") in SEEN  # run.checkpoint_every=40 in the tiny config
    assert SEEN[-1] == ("finish", "done")


def test_a_failing_callback_is_switched_off_and_the_run_goes_on(tmp_path, capsys):
    cb = "run.callbacks=[metrics,console,tests.experiments.test_callbacks:Broken]"
    assert execute(tiny_config(tmp_path, *MOE, cb))["status"] == "done"
    err = capsys.readouterr().err
    assert err.count("callback Broken.on_log failed") == 1 and "switched off" in err


def test_callbacks_by_name_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match=r"run.callbacks: unknown callback 'tensorbord'"):
        from_dict(tiny_config(tmp_path, *MOE, "run.callbacks=[metrics,tensorbord]"))


def test_without_the_console_callback_the_run_is_silent(tmp_path, capsys):
    execute(tiny_config(tmp_path, *MOE, "run.callbacks=[metrics]"))
    assert "| loss" not in capsys.readouterr().out
