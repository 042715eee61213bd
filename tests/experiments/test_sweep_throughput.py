"""The sweep's throughput record (sweep_log.jsonl) counts the work each invocation did."""

from __future__ import annotations

import json

import pytest

from experiments.sweep.sweep_dir import RunWork, SweepDir, format_efficiency


def _record(sweep: SweepDir, rid: str, step: int, done: bool) -> None:
    d = sweep.run(rid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "progress.json").write_text(json.dumps({"step": step}))
    if done:
        (d / "summary.json").write_text(json.dumps({"status": "done", "steps": step}))


def test_a_resumed_sweep_counts_each_step_in_the_invocation_that_trained_it(tmp_path):
    """Invocation 1 finished run a and left b at step 40 (interrupted); invocation 2 finishes b,
    takes c to step 30 and trains the branch d from its trunk's step 50 to its end. Invocation 2
    trained 60 + 30 + 50 steps. The old record credited it with every run done at its end (a's
    100 steps again, b's whole 100) and nothing for c."""
    sweep = SweepDir(tmp_path)
    work = {
        "a": RunWork(0, 100, 2e12, 1000.0),
        "b": RunWork(0, 100, 2e12, 1000.0),
        "c": RunWork(0, 200, 1e12, 500.0),
        "d": RunWork(50, 100, 4e12, 1000.0),
    }
    _record(sweep, "a", 100, done=True)
    _record(sweep, "b", 40, done=False)
    before = sweep.steps_done(list(work))
    assert before == {"a": 100, "b": 40, "c": 0, "d": 0}
    _record(sweep, "b", 100, done=True)
    _record(sweep, "c", 30, done=False)
    _record(sweep, "d", 100, done=True)
    under = {"runs_at_once": 8, "mps": "MPS: started for this sweep's packed runs"}
    entry = sweep.record_throughput(before, work, wall=10.0, gpus=1, peak=1e15, conditions=under)
    assert entry["runs_at_once"] == 8 and entry["mps"].startswith("MPS: started")
    assert entry["steps"] == 60 + 30 + 50
    assert entry["runs"] == 2  # b and d finished here; a had finished before
    assert entry["flops"] == pytest.approx(60 * 2e12 + 30 * 1e12 + 50 * 4e12)
    assert entry["tokens"] == pytest.approx(60 * 1000 + 30 * 500 + 50 * 1000)
    assert sweep.throughput_log() == [entry]
    text = format_efficiency([entry])
    assert "2 runs finished" in text and "aggregate MFU 3.5%" in text  # 3.5e14 / (10 s x 1e15)


def test_steps_trained_again_after_a_kill_count_nowhere(tmp_path):
    """A run killed before its checkpoint resumes behind the step it had recorded: the steps
    it trains again up to that step are waste, not work."""
    sweep = SweepDir(tmp_path)
    work = {"a": RunWork(0, 100, 1e12, 1.0)}
    _record(sweep, "a", 70, done=False)  # recorded step 70, checkpoint at 50
    before = sweep.steps_done(["a"])
    _record(sweep, "a", 80, done=False)  # resumed at 50: 30 steps trained, 10 of them new
    assert sweep.record_throughput(before, work, 1.0, 1, None)["steps"] == 10
