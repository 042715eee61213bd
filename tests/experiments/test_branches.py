"""Branches (run.branch_from): a WSD run started from a longer trunk's kept state equals the
same run trained from scratch, resumes after a kill, and never loses its starting point."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from experiments.config import ConfigError, from_dict
from experiments.record import RunDir
from experiments.train import execute
from experiments.trainer.optim import decay_start
from tests.experiments.helpers import TINY, tiny_config

pytestmark = pytest.mark.slow

WSD = [
    "optim.schedule=wsd",
    "optim.warmup_steps=5",
    "optim.decay_fraction=0.5",
    "moe.num_experts=4",
    "moe.top_k=1",
]
SHORT, LONG = "budget.flops=4e9", "budget.flops=8e9"


def _steps(tmp_path, budget) -> int:
    return from_dict(tiny_config(tmp_path, *WSD, budget)).steps


def _read(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_branch_equals_its_run_trained_from_scratch(tmp_path):
    k = decay_start(_steps(tmp_path, SHORT), from_dict(tiny_config(tmp_path, *WSD, SHORT)).optim)
    trunk = execute(tiny_config(tmp_path / "t", *WSD, LONG, f"run.keep_steps=[{k}]"))
    root = tmp_path / "t" / "runs"
    assert (root / trunk["run_id"] / f"branch-point-{k}.pt").exists()
    branch = execute(
        tiny_config(
            tmp_path / "t",
            *WSD,
            SHORT,
            f"run.branch_from={trunk['run_id']}",
            f"run.branch_step={k}",
        )
    )
    scratch = execute(tiny_config(tmp_path / "s", *WSD, SHORT))
    assert branch["run_id"] == scratch["run_id"]  # a branch is that run: the same id
    assert (branch["final_train_loss"], branch["val_loss"]) == (
        scratch["final_train_loss"],
        scratch["val_loss"],
    )
    assert branch["branch_of"] == trunk["run_id"] and branch["trunk_step"] == k
    assert branch["trained_flops"] == pytest.approx(
        branch["flops"] * (branch["steps"] - k) / branch["steps"]
    )
    # the trunk's kept state went once the branch held a checkpoint of its own
    assert not (root / trunk["run_id"] / f"branch-point-{k}.pt").exists()
    rows = _read(root / branch["run_id"] / "metrics.jsonl")
    fresh = _read(tmp_path / "s" / "runs" / scratch["run_id"] / "metrics.jsonl")
    same = [r for r in fresh if r["step"] > k]
    strip = lambda rs: [{x: v for x, v in r.items() if x != "tokens_per_s"} for r in rs]
    assert strip(rows) == strip(same)


def test_a_branch_killed_in_its_cooldown_resumes_bit_exactly(tmp_path):
    k = decay_start(_steps(tmp_path, SHORT), from_dict(tiny_config(tmp_path, *WSD, SHORT)).optim)
    trunk = execute(tiny_config(tmp_path, *WSD, LONG, f"run.keep_steps=[{k}]"))
    args = [*TINY, *WSD, SHORT, "run.checkpoint_every=5", f"data.cache_dir={tmp_path}/cache"]
    args += [f"run.root={tmp_path}/runs", f"run.branch_from={trunk['run_id']}"]
    args += [f"run.branch_step={k}"]
    cmd = [sys.executable, "-m", "experiments.train", *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    scratch = execute(tiny_config(tmp_path / "s", *WSD, SHORT))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = tmp_path / "runs" / scratch["run_id"] / "progress.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        step = (json.loads(progress.read_text()) or {}).get("step", 0) if progress.exists() else 0
        if step >= k + 7:  # in the cooldown, past a checkpoint of the branch's own
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the branch finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "runs" / scratch["run_id"] / "summary.json").exists()
    subprocess.run(cmd, env=env, check=True, capture_output=True)  # resumes its own checkpoint
    resumed = json.loads((tmp_path / "runs" / scratch["run_id"] / "summary.json").read_text())
    assert resumed["status"] == "done" and resumed["branch_of"] == trunk["run_id"]
    assert (resumed["final_train_loss"], resumed["val_loss"]) == (
        scratch["final_train_loss"],
        scratch["val_loss"],
    )


def test_a_branch_waits_for_its_trunk_and_a_killed_trunk_loses_no_branch(tmp_path):
    """The trunk stops (as if killed) before the branch point; the branch, started meanwhile,
    waits; the resumed trunk reaches the point and the branch completes from it."""
    k = decay_start(_steps(tmp_path, SHORT), from_dict(tiny_config(tmp_path, *WSD, SHORT)).optim)
    keep = f"run.keep_steps=[{k}]"
    first = execute(tiny_config(tmp_path, *WSD, LONG, keep, f"run.stop_after_steps={k - 3}"))
    assert first["status"] == "interrupted"
    branch_cfg = tiny_config(
        tmp_path, *WSD, SHORT, f"run.branch_from={first['run_id']}", f"run.branch_step={k}"
    )
    out: dict = {}
    waiting = threading.Thread(target=lambda: out.update(execute(branch_cfg)))
    waiting.start()
    time.sleep(3)
    assert waiting.is_alive()  # no point yet: it waits
    trunk = execute(tiny_config(tmp_path, *WSD, LONG, keep))
    waiting.join(timeout=120)
    assert trunk["status"] == "done" and out["status"] == "done"
    scratch = execute(tiny_config(tmp_path / "s", *WSD, SHORT))
    assert out["val_loss"] == scratch["val_loss"]


def test_a_branch_of_a_finished_trunk_without_its_point_fails_saying_why(tmp_path):
    trunk = execute(tiny_config(tmp_path, *WSD, LONG))  # kept nothing
    k = decay_start(_steps(tmp_path, SHORT), from_dict(tiny_config(tmp_path, *WSD, SHORT)).optim)
    out = execute(
        tiny_config(
            tmp_path, *WSD, SHORT, f"run.branch_from={trunk['run_id']}", f"run.branch_step={k}"
        )
    )
    assert out["status"] == "failed" and "without its state at step" in out["reason"]


@pytest.mark.parametrize(
    "override,message",
    [
        (["optim.schedule=cosine"], "optim.schedule=wsd or constant"),
        (["optim.warmup_steps=null"], "set optim.warmup_steps"),
        (["run.branch_step=10000"], "past this run's decay start"),
    ],
)
def test_a_branch_that_could_not_equal_its_run_is_refused(tmp_path, override, message):
    cfg = tiny_config(tmp_path, *WSD, SHORT, "run.branch_from=x", "run.branch_step=10", *override)
    with pytest.raises(ConfigError, match=message):
        from_dict(cfg)


def test_branch_options_at_their_defaults_change_no_run_id(tmp_path):
    a = from_dict(tiny_config(tmp_path, SHORT))
    b = from_dict(tiny_config(tmp_path, SHORT, "run.keep_steps=[3]", "run.branch_wait_s=5"))
    assert a.identity() == b.identity()
    assert Path(RunDir(tmp_path).branch_point(3)).name == "branch-point-3.pt"
