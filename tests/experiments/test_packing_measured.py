"""Packing from measured memory (issue 19): a shape that has trained in the sweep is packed by
what the allocator held for it, not by the config's estimate (1.6-2.4x the peaks measured on
the second study)."""

import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from experiments.config import ConfigError, as_dict, from_dict
from experiments.sweep import launch
from experiments.sweep.packing import (
    CONTEXT_BYTES,
    MEASURED_CONTEXT_BYTES,
    MEASURED_MARGIN,
    choose_runs_per_gpu,
    measured_memory,
    memory_shape,
    run_memory_bytes,
)
from experiments.sweep.sweep_dir import SweepDir
from tests.experiments.helpers import tiny_config

# a shape whose estimate is mostly activations (~5 GiB), not the fixed CUDA context
SHAPE = [
    "moe.num_experts=4",
    "moe.top_k=1",
    "budget.flops=1e12",
    "model.d_model=256",
    "model.n_heads=4",
    "model.n_layers=4",
    "model.d_ff=1024",
    "model.seq_len=256",
    "train.batch_size=64",
]


def _config(tmp_path, *overrides):
    return from_dict(tiny_config(tmp_path, *SHAPE, *overrides))


def _done(held_gb, allocated_gb=None, status="done"):
    return {"status": status, "peak_reserved_gb": held_gb, "peak_memory_gb": allocated_gb}


def test_a_measured_shape_packs_by_what_it_held(tmp_path):
    tc = _config(tmp_path)
    estimate = run_memory_bytes(tc)
    # a GPU on which the estimate fits 2 runs (80% of 3.2 runs' memory)
    gpu = int(3.2 * estimate)
    assert choose_runs_per_gpu([tc], gpu, 64, 1).runs_per_gpu == 2
    # two seeds of the shape held a tenth of the estimate, less the context
    held = [0.1 * (estimate - CONTEXT_BYTES) / 2**30, 0.08 * (estimate - CONTEXT_BYTES) / 2**30]
    other_seed = _config(tmp_path, "seed=7", "optim.lr=1e-2", "budget.flops=2e12")
    measured = measured_memory([(tc, _done(held[0])), (other_seed, _done(held[1]))])
    need, n = measured[memory_shape(tc)]
    assert n == 2 and need == int(MEASURED_MARGIN * max(held) * 2**30) + MEASURED_CONTEXT_BYTES
    p = choose_runs_per_gpu([tc], gpu, 64, 1, measured=measured)
    assert p.runs_per_gpu == min(8, int(0.8 * gpu / need)) > 2
    assert "measured on 2 run(s) of its shape" in p.reason
    # what the estimate refuses, the measurement allows; past it, the refusal names it
    assert choose_runs_per_gpu([tc], gpu, 64, 1, requested=3, measured=measured).runs_per_gpu == 3
    with pytest.raises(ConfigError, match="at most 2 fit"):
        choose_runs_per_gpu([tc], gpu, 64, 1, requested=3)
    with pytest.raises(ConfigError, match=r"measured on 2 run\(s\)"):
        choose_runs_per_gpu([tc], int(2.5 * need), 64, 1, requested=3, measured=measured)


def test_only_done_runs_that_recorded_what_they_held_count(tmp_path):
    tc = _config(tmp_path)
    assert measured_memory([(tc, _done(None, allocated_gb=1.0))]) == {}  # an older record
    assert measured_memory([(tc, _done(1.0, status="failed"))]) == {}
    assert measured_memory([(tc, {"status": "done"})]) == {}  # a CPU run


def test_a_shape_not_yet_trained_is_estimated_and_the_largest_need_decides(tmp_path):
    small, wide = _config(tmp_path), _config(tmp_path, "model.d_model=512")
    assert memory_shape(small) != memory_shape(wide)
    assert memory_shape(small) != memory_shape(_config(tmp_path, "train.batch_size=16"))
    # compile=auto: 2 steps train eagerly on a GPU, 220 compile (with CUDA graphs at this size)
    assert memory_shape(small) != memory_shape(_config(tmp_path, "budget.flops=1e14"))
    measured = measured_memory([(small, _done(0.001))])
    gpu = int(3.2 * run_memory_bytes(wide))
    # the wide run has no record: its estimate bounds the packing of both
    p = choose_runs_per_gpu([small, wide], gpu, 64, 1, measured=measured)
    assert p.runs_per_gpu == 2 and "(estimated)" in p.reason


def test_the_sweep_packs_by_its_done_runs(tmp_path, monkeypatch):
    """The driver's path: done summaries in the sweep folder, read as the driver reads them,
    decide the child's GPU slots."""
    tc = _config(tmp_path)
    estimate = run_memory_bytes(tc)
    monkeypatch.setattr(launch, "gpus", lambda: (1, int(3.2 * estimate), 1e15))
    monkeypatch.setattr(launch.os, "cpu_count", lambda: 64)  # cores do not bound the slots
    sweep_dir = SweepDir(Path(tmp_path) / "sw")
    for rid, held in (("a", 0.05), ("b", 0.06)):
        sweep_dir.run(rid).mkdir(parents=True)
        (sweep_dir.run(rid) / "summary.json").write_text(
            json.dumps(_done(held * (estimate - CONTEXT_BYTES) / 2**30))
        )
    (sweep_dir.run("c")).mkdir(parents=True)  # a run still training: no summary
    cfg = OmegaConf.create({"runs_per_gpu": "auto"})
    planned = {"a": tc, "b": tc, "c": tc}
    assert sorted(sweep_dir.done_summaries()) == ["a", "b"]
    estimated = launch.launch_plan(cfg, [tc], [], sweep_dir, 0)
    by_records = launch.launch_plan(cfg, [tc], [], sweep_dir, 0, planned)
    assert "run.gpu_slots=2" in estimated.overrides
    slots = [o for o in by_records.overrides if o.startswith("run.gpu_slots=")]
    assert slots and int(slots[0].split("=")[1]) > 2


def test_a_new_seed_packs_by_the_runs_its_sweep_already_has(tmp_path, monkeypatch):
    """Replicates added to a done sweep (``sweep.seeds=[1]`` after seed 0): the earlier seed's
    runs are not in the new plan, and their recorded configs key what they measured. On the
    H200 (2026-12-03) this launch packed by the estimate, reading only the planned runs."""
    seed0, seed1 = _config(tmp_path), _config(tmp_path, "seed=1")
    estimate = run_memory_bytes(seed0)
    monkeypatch.setattr(launch, "gpus", lambda: (1, int(3.2 * estimate), 1e15))
    monkeypatch.setattr(launch.os, "cpu_count", lambda: 64)
    sweep_dir = SweepDir(Path(tmp_path) / "sw")
    run = sweep_dir.run("seed0")
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(_done(0.05 * (estimate - CONTEXT_BYTES) / 2**30)))
    (run / "config.yaml").write_text(yaml.safe_dump(as_dict(seed0)))
    broken = sweep_dir.run("old")  # a record whose config no longer reads: it measures nothing
    broken.mkdir()
    (broken / "summary.json").write_text(json.dumps(_done(1000.0)))
    (broken / "config.yaml").write_text("model: {d_model: -3}\n")
    cfg = OmegaConf.create({"runs_per_gpu": "auto"})
    plan = launch.launch_plan(cfg, [seed1], [], sweep_dir, 0, {"seed1": seed1})
    slots = [o for o in plan.overrides if o.startswith("run.gpu_slots=")]
    assert slots and int(slots[0].split("=")[1]) > 2


def test_the_sweep_benchmark_keeps_each_runs_memory(tmp_path):
    """sweep_bench's rows carry each run's allocated and held peaks, to read packing against."""
    from experiments.benchmarks.sweep_bench import _summaries

    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "summary.json").write_text(
        json.dumps(
            {"run_id": "r1", "status": "done", "peak_memory_gb": 5.3, "peak_reserved_gb": 6.1}
        )
    )
    (row,) = _summaries(tmp_path, since=0)
    assert (row["run_id"], row["peak_memory_gb"], row["peak_reserved_gb"]) == ("r1", 5.3, 6.1)
