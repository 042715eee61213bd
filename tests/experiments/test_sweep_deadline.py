"""finish_within: a sweep whose machine will be gone launches only the runs that finish."""

from __future__ import annotations

import json
import time

import pytest
from hydra import initialize_config_dir

from experiments.record import CHECKPOINT
from experiments.sweep.deadline import (
    MARGIN,
    START_S,
    Pace,
    finishing,
    fitting,
    measured_pace,
    resumed_first,
    within_deadline,
)
from experiments.sweep.driver import make_plan
from experiments.sweep.launch import work_of
from experiments.sweep.sweep_dir import SweepDir
from tests.experiments.helpers import CONF
from tests.experiments.test_sweep import _spec, _sweep


def test_runs_are_held_back_where_their_slot_would_end_past_the_deadline():
    """Two slots, 200 s left: a and b fill both until 100 s; c (300 s) would end at 400 and is
    held back without taking a slot; d starts at 100 and ends at 150; e (80 s) would start at
    100 on the other slot and end at 180; f (60 s) would start at 150 and end at 210."""
    seconds = {"a": 100, "b": 100, "c": 300, "d": 50, "e": 80, "f": 60}
    keep, held = fitting(list(seconds), seconds.__getitem__, slots=2, time_left=200)
    assert keep == ["a", "b", "d", "e"]
    assert held == ["c", "f"]
    assert fitting(list(seconds), seconds.__getitem__, slots=1, time_left=49) == (
        [],
        list(seconds),
    )


def _summary(root, rid, experts, wall, flops, status="done"):
    d = root / rid
    d.mkdir(parents=True)
    s = {"status": status, "num_experts": experts, "top_k": 1, "granularity": 1}
    (d / "summary.json").write_text(json.dumps(s | {"wall_time_s": wall, "trained_flops": flops}))


def test_the_pace_is_each_kinds_median_and_an_unmeasured_kind_takes_the_slowest(tmp_path):
    _summary(tmp_path, "a", 1, 100.0, 1e15)
    _summary(tmp_path, "b", 1, 300.0, 1e15)
    _summary(tmp_path, "c", 1, 900.0, 1e15)  # median of 1e-13, 3e-13, 9e-13
    _summary(tmp_path, "d", 4, 500.0, 1e15)
    _summary(tmp_path, "e", 4, 10.0, 1e15, status="failed")  # not a finished run's pace
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "summary.json").write_text('{"status": "do')  # torn: not a measurement
    pace = measured_pace(tmp_path)
    assert pace is not None and pace.runs == 4
    assert pace.by_kind == {(1, 1, 1): pytest.approx(3e-13), (4, 1, 1): pytest.approx(5e-13)}
    assert pace.seconds((1, 1, 1), 1e15) == pytest.approx(START_S + MARGIN * 300)
    assert pace.seconds((16, 1, 1), 1e15) == pytest.approx(START_S + MARGIN * 500)
    assert measured_pace(tmp_path / "nothing") is None


def test_without_a_finished_run_nothing_is_held_back():
    keep, line = within_deadline(["a", "b"], {}, {}, None, 1, 1.0)
    assert keep == ["a", "b"] and "no finished run" in line
    pace = Pace({(1, 1, 1): 1e-13}, 1)
    kinds = {"a": (1, 1, 1), "b": (1, 1, 1)}
    keep, line = within_deadline(["a", "b"], {"a": 1e14, "b": 1e16}, kinds, pace, 1, 100.0)
    assert keep == ["a"] and "1 of 2 runs" in line and "1 left for the next" in line


def test_resumed_runs_go_first_in_their_launch_order():
    assert resumed_first(["a", "b", "c", "d"], {"c": 5, "a": 0, "d": 1}) == ["c", "d", "a", "b"]


def test_the_driver_counts_what_is_left_of_a_resumed_run_and_only_with_its_checkpoint(tmp_path):
    """Micro at 2e10 (6 runs), one slot, a pace from finished runs at 1e10: the last run in
    launch order is 90% trained with a checkpoint, so it goes first and needs a tenth of its
    time; a run with progress but no checkpoint starts again and needs all of its time."""
    spec = _spec("micro")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        runs, configs = make_plan(spec)
    sweep = SweepDir(tmp_path)
    for r in runs[:2]:  # two finished runs set the pace: 1e-8 s per FLOP
        _summary(sweep.runs, r.run_id, 1 if r.sparsity == 0 else 4, r.flops * 1e-8, r.flops)
    todo = [r for r in runs if r.budget == 2e10]
    last, torn = todo[-1], todo[0]
    (sweep.run(last.run_id)).mkdir(parents=True)
    (sweep.run(last.run_id) / CHECKPOINT).write_bytes(b"")
    (sweep.run(torn.run_id)).mkdir(parents=True)
    before = {r.run_id: 0 for r in todo} | {last.run_id: int(0.9 * last.steps), torn.run_id: 50}
    cost = {r.run_id: tc for r, tc in zip(runs, configs)}
    need = {r.run_id: START_S + MARGIN * 1e-8 * r.flops for r in todo}
    left_of_last = START_S + MARGIN * 1e-8 * last.flops * (1 - int(0.9 * last.steps) / last.steps)
    # time for the resumed run and the first in launch order; any third needs START_S at least
    budget = left_of_last + need[torn.run_id] + START_S / 2
    ids = [r.run_id for r in todo]
    keep = finishing(sweep, ids, work_of(runs), cost, before, 1, time.time() + budget)
    # the torn run's 50 steps without a checkpoint are not counted as done
    assert keep == [last.run_id, torn.run_id]


@pytest.mark.parametrize("bad", ["0", "-5", "true", "soon"])
def test_a_finish_within_that_is_not_seconds_is_refused_before_anything_runs(tmp_path, bad):
    out = _sweep(tmp_path, f"finish_within={bad}", "action=plan")
    assert out.returncode == 2
    assert "finish_within: expected seconds > 0" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_a_sweep_launches_only_what_its_measured_pace_says_will_finish(tmp_path):
    """The micro sweep's 2e10 runs finished (their records say 60 s each, slower than they
    really train), one slot: a 1e10 run is then estimated at 30 s + 1.15 x 30 s. With 50 s
    left none is launched; with 100 s one fits (two would end at 129 s), and it trains and
    finishes."""
    spec = _spec("micro")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        runs, _ = make_plan(spec)
    for r in runs:
        if r.budget == 2e10:
            _summary(tmp_path / "sw" / "runs", r.run_id, 1 if r.sparsity == 0 else 4, 60.0, 2e10)
    args = ("budgets=[1e10]", "runs_per_gpu=1")
    out = _sweep(tmp_path, *args, "finish_within=50")
    assert "finish_within: 0 of 6 runs finish" in out.stdout, out.stdout + out.stderr
    assert "launching" not in out.stdout and out.returncode == 1
    out = _sweep(tmp_path, *args, "finish_within=100")
    assert "finish_within: 1 of 6 runs finish" in out.stdout, out.stdout + out.stderr
    assert "5 left for the next invocation" in out.stdout
    finished = [
        s
        for p in (tmp_path / "sw" / "runs").glob("*/summary.json")
        if (s := json.loads(p.read_text())).get("budget_flops") == 1e10
    ]
    assert [s["status"] for s in finished] == ["done"]
    assert finished[0]["run_id"] == next(r.run_id for r in runs if r.budget == 1e10)
