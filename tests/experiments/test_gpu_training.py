"""The training path on CUDA (run on the device): device-built batches, background checkpoints
from pinned memory, resume, torchrun with one rank, two runs sharing one GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.data.batches import Batches
from experiments.record import read_jsonl
from experiments.train import execute
from experiments.trainer.checkpoint import AsyncCheckpointer
from tests.experiments.helpers import TINY, tiny_config

pytestmark = pytest.mark.gpu
MOE = ["moe.num_experts=4", "moe.top_k=1", "budget.flops=2e10"]


def test_device_batches_equal_host_batches():
    tokens = (np.arange(100_000) * 7919 % 50_000).astype(np.uint16)
    gpu = Batches(tokens, 64, 16, seed=3, device=torch.device("cuda"), rank=1, world=2)
    cpu = Batches(tokens, 64, 16, seed=3, device=torch.device("cpu"), rank=1, world=2)
    assert gpu.on_device and not cpu.on_device
    for step in (0, 5, 1023, 1024, 3000):
        for a, b in zip(gpu.get(step), cpu.get(step)):
            assert torch.equal(a.cpu(), b), step


def test_background_checkpoint_snapshots_cuda_tensors(tmp_path):
    w = torch.randn(1000, 1000, device="cuda")
    want = w.clone().cpu()
    saver = AsyncCheckpointer(torch.device("cuda"))
    saver.save(tmp_path / "c.pt", {"w": w})
    w.mul_(0)  # the next step changes the weights in place, on the same stream
    saver.wait()
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["w"], want)


def test_resume_on_gpu_reaches_the_uninterrupted_result(tmp_path):
    full = execute(tiny_config(tmp_path / "a", *MOE))
    half = execute(tiny_config(tmp_path / "b", *MOE, "run.stop_after_steps=60"))
    assert half["status"] == "interrupted"
    resumed = execute(tiny_config(tmp_path / "b", *MOE))
    assert resumed["status"] == "done" and resumed["steps"] == full["steps"]
    assert resumed["device"].startswith("cuda") and resumed["backend"] == "native"
    # bf16 and atomics in the embedding's backward: close, not bit-equal
    assert abs(resumed["val_loss"] - full["val_loss"]) < 2e-2
    assert resumed["time"]["checkpoint_s"] < 5 and resumed["peak_memory_gb"] > 0


def test_torchrun_one_rank_matches_the_plain_run(tmp_path):
    """One torchrun rank trains what a plain process trains. bf16 and atomics make any two
    runs on a GPU drift apart, so the bound is measured, not assumed: the torchrun run must
    be as close to a plain run as a second plain run is (on any machine, any GPU)."""
    env = dict(os.environ, MOE_SCALING_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    args = ["-m", "experiments.train", *TINY, *MOE, "run.log_every=10"]
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    for name, launcher in (("plain", []), ("again", []), ("ddp", torchrun)):
        cmd = [sys.executable, *launcher, *args, f"run.root={tmp_path}/{name}"]
        subprocess.run(cmd, env=env, check=True, capture_output=True)

    def losses(name):
        rows = read_jsonl(next((tmp_path / name).glob("*/metrics.jsonl")))[0]
        # the log_every steps only: a slow first step adds a time-based line to one run
        return {r["step"]: r["train_loss"] for r in rows if r["step"] % 10 == 0}

    def gap(a, b):
        assert a.keys() == b.keys() and len(a) >= 5
        return max(abs(a[s] - b[s]) for s in a)

    plain, again, ddp = losses("plain"), losses("again"), losses("ddp")
    noise = gap(plain, again)
    # 2e-3: two runs that happen to be identical still allow last-bit differences.
    assert min(gap(ddp, plain), gap(ddp, again)) <= 2 * noise + 2e-3, (noise, plain, ddp)
    s = json.loads(next((tmp_path / "ddp").glob("*/summary.json")).read_text())
    assert s["world_size"] == 1 and s["status"] == "done"


def test_two_runs_share_one_gpu(tmp_path):
    env = dict(
        os.environ,
        MOE_SCALING_CACHE=str(tmp_path / "cache"),
        PYTHONUNBUFFERED="1",
        MOE_GPU_LOCK_DIR=str(tmp_path),
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "experiments.train",
                *TINY,
                *MOE,
                f"seed={s}",
                "run.gpu_slots=2",
                f"run.root={tmp_path}/runs",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for s in (0, 1)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    summaries = [json.loads(p.read_text()) for p in Path(tmp_path / "runs").glob("*/summary.json")]
    assert len(summaries) == 2 and {s["device"] for s in summaries} == {"cuda:0"}


@pytest.mark.parametrize(
    "options",
    [
        ["model.attention=mla", "model.q_lora_rank=16"],
        ["moe.score=sigmoid", "moe.balance=aux_free", "moe.load_balance_coef=0"],
    ],
)
def test_deepseek_options_train_under_the_default_compile_mode(tmp_path, options):
    """MLA and the aux-loss-free router through experiments.train, native backend, compiled
    (CUDA graphs at this step size): they train, and the router's bias moves on the GPU."""
    out = execute(
        tiny_config(tmp_path, *MOE, *options, "train.compile=true", "run.keep_final=checkpoint")
    )
    assert out["status"] == "done" and out["backend"] == "native" and out["compile"]
    assert out["val_loss"] < 5.0
    state = torch.load(tmp_path / "runs" / out["run_id"] / "checkpoint.pt", weights_only=True)[
        "model"
    ]
    bias = [v for k, v in state.items() if k.endswith("bias_E")]
    assert all(b.abs().sum() > 0 for b in bias)  # (none for the MLA case)
