"""What a sweep's launch gives its runs: the config each was planned with (nothing on the
child's command line overrides it), no start once the sweep is stopped, and no round launched
again that changed nothing."""

import json
import os
import subprocess
import sys

import pytest

from tests.experiments.test_sweep import _python, _sweep


@pytest.mark.slow
def test_runs_train_the_planned_values_when_the_train_list_sets_others(tmp_path):
    """`sweep.lrs` replaces the train list's optim.lr in the plan (conf/sweep/study2_lr.yaml
    inherits its study's optim.lr=2e-3), and a variant's value replaces the train list's for
    its runs: every run must train the planned config, under the planned id. The command line
    once carried the train list's LR past the planned config: both LRs trained at it, as one
    id the sweep never saw done. Launched together, the variant's runs and the others each
    keep their own eval_tokens."""
    train = "['data=sotu_bytes','model.seq_len=32','train.batch_size=8','optim.lr=5e-3',"
    train += "'train.eval_tokens=2048']"
    narrow = [
        "sweep.budgets=[1e10]",
        "sweep.sparsity.pairs=[[1,1]]",
        "sweep.sizes.count=1",
        "+sweep.lrs=[1e-3,3e-3]",
        "+sweep.variants={plain:[],half_eval:['train.eval_tokens=1024']}",
        f"sweep.train={train}",
    ]
    out = _sweep(tmp_path, *narrow)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "4 runs: 4 done" in out.stdout
    planned = json.loads((tmp_path / "sw" / "plan.json").read_text())["runs"]
    summaries = [
        json.loads(p.read_text()) for p in (tmp_path / "sw" / "runs").glob("*/summary.json")
    ]
    assert {(s["run_id"], s["lr"]) for s in summaries} == {(r["run_id"], r["lr"]) for r in planned}
    assert sorted(s["lr"] for s in summaries) == [1e-3, 1e-3, 3e-3, 3e-3]
    eval_tokens = {"plain": 2048, "half_eval": 1024}
    assert all(s["eval_tokens"] == eval_tokens[s["variant"]] for s in summaries)


def _tiny_run(tmp_path, *args, env=None):
    """experiments.train on a tiny byte-level config, runs under tmp_path/runs."""
    tiny = ["data=sotu_bytes", "model.seq_len=32", f"run.root={tmp_path / 'runs'}"]
    return _python(tmp_path, "experiments.train", *args, *tiny, env=env, timeout=300)


def test_a_run_given_an_override_that_changes_its_planned_config_is_refused(tmp_path):
    """The guard behind the test above: a run whose config, with what the command line adds,
    is not the one its sweep planned (named by ``+planned=<id>``) stops before training."""
    (tmp_path / "planned").mkdir()
    (tmp_path / "planned" / "a1b2c3d4e5f6.yaml").write_text(
        "# @package _global_\noptim:\n  lr: 0.001\n"
    )
    out = _tiny_run(tmp_path, "--config-dir", str(tmp_path), "+planned='a1b2c3d4e5f6'")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "planned run a1b2c3d4e5f6 would train as" in out.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_round_that_changes_no_run_is_not_launched_again(tmp_path):
    """With sizes.extend the driver plans round after round; runs that cannot start (here: a
    GPU asked for on a machine without one, a setup failure retried at every launch) end the
    second round as the first left them, and the driver stops instead of relaunching them."""
    out = _sweep(
        tmp_path,
        "sweep.budgets=[1e10]",
        "sweep.sparsity.pairs=[[1,1]]",
        "sweep.sizes.count=1",
        "+sweep.sizes.extend=2",
        "train_overrides=['run.device=cuda']",
    )
    assert out.returncode == 1
    assert out.stdout.count("launching 1 runs") == 2, out.stdout[-3000:]
    assert "a round trained nothing and changed no run" in out.stdout
    assert "1 failed" in out.stdout


def test_a_run_queued_behind_a_stopped_sweep_does_not_start(tmp_path):
    """A pool worker may take its next run after the sweep's stop signal came and went (the
    second study's LR sweep on the H200 started a 4,000-step run so): the driver's stop marker
    keeps it from starting, with nothing written but its claim."""
    from experiments.trainer.interrupts import SWEEP_STOP_FILE

    marker = tmp_path / ".stopping.1"
    marker.touch()
    out = _tiny_run(tmp_path, env=dict(os.environ, **{SWEEP_STOP_FILE: str(marker)}))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "not started: its sweep was asked to stop" in out.stdout
    (run,) = (tmp_path / "runs").iterdir()
    assert not (run / "progress.json").exists() and not (run / "summary.json").exists()


def test_a_sweep_launch_imports_no_torch_before_its_runs(tmp_path):
    """The multirun parent imports experiments.train only to hand runs to its workers, and the
    driver asks for GPUs: on a host with no NVIDIA device neither imports torch (1.3 s each at
    every sweep launch); the runs import it when they execute."""
    check = (
        "import sys; import experiments.train; from experiments.sweep.launch import gpus; "
        "n = gpus(); print(n, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=120, check=True
    )
    from experiments.sweep.launch import nvidia_driver_present

    if nvidia_driver_present():
        assert out.stdout.split()[-1] == "True"  # a GPU host: gpus() asked torch
    else:
        assert out.stdout.strip() == "(0, 0, None) False", out.stdout
