"""The training path without host waits (issue 9), tested on CPU: checkpoints by time and in
the background, losses read only when logged, the packing planner's memory rule."""

import threading
import time
from pathlib import Path

import pytest
import torch

from experiments.config import ConfigError, from_dict
from experiments.record import read_jsonl
from experiments.sweep.packing import (
    SATURATING_FLOPS_PER_STEP,
    choose_runs_per_gpu,
    run_memory_bytes,
)
from experiments.train import execute
from experiments.trainer import checkpoint as ckpt_mod
from experiments.trainer.checkpoint import AsyncCheckpointer
from experiments.trainer.loop import Trainer
from tests.experiments.helpers import TINY, kill_resume_and_compare, tiny_config

pytestmark = pytest.mark.slow  # trains runs, sweeps, prepares corpora or fits laws

MOE = ["moe.num_experts=4", "moe.top_k=1", "budget.flops=1e10"]


def test_checkpoint_write_happens_in_the_background(tmp_path, monkeypatch):
    real = torch.save
    release = threading.Event()

    def slow_save(obj, f):
        release.wait(5)  # the disk is slow
        real(obj, f)

    monkeypatch.setattr(ckpt_mod.torch, "save", slow_save)
    w = torch.ones(4)
    saver = AsyncCheckpointer(torch.device("cpu"))
    t0 = time.perf_counter()
    saver.save(tmp_path / "c.pt", {"w": w, "step": 3})
    assert time.perf_counter() - t0 < 0.5  # the caller did not wait for the disk
    w.add_(1)  # training goes on, changing the weights in place
    assert not (tmp_path / "c.pt").exists()
    release.set()
    saver.wait()
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert torch.equal(state["w"], torch.ones(4)) and state["step"] == 3  # the snapshot


def test_a_failed_background_write_is_loud(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt_mod, "atomic_write_bytes", lambda *a: 1 / 0)
    saver = AsyncCheckpointer(torch.device("cpu"))
    saver.save(tmp_path / "c.pt", {"w": torch.ones(2)})
    with pytest.raises(RuntimeError, match="writing the checkpoint failed"):
        saver.wait()


def test_checkpoints_by_wall_time(tmp_path):
    summary = execute(
        tiny_config(
            tmp_path,
            *MOE,
            "run.checkpoint_every=null",
            "run.checkpoint_every_s=0.05",
            "run.stop_after_steps=60",
        )
    )
    ckpt = torch.load(
        Path(tmp_path) / "runs" / summary["run_id"] / "checkpoint.pt", weights_only=True
    )
    assert ckpt["loop"]["step"] == 60
    t = summary["time"]
    assert t["checkpoint_s"] > 0 and set(t) >= {
        "train_s",
        "warmup_s",
        "eval_s",
        "data_s",
        "setup_s",
        "checkpoint_s",
    }


def test_resume_after_sigkill_with_timed_checkpoints(tmp_path):
    args = [*TINY, *MOE, "budget.flops=2e10", "run.checkpoint_every=null"]
    args += ["run.checkpoint_every_s=0.3", "run.log_every=5", f"data.cache_dir={tmp_path}/cache"]

    def ready(root):
        found = list(root.glob("*/checkpoint.pt"))
        return found and torch.load(found[0], weights_only=True)["loop"]["step"] >= 20

    k, u, _ = kill_resume_and_compare(tmp_path, args, ready)
    assert (k["final_train_loss"], k["val_loss"]) == (u["final_train_loss"], u["val_loss"])


def test_losses_are_read_only_when_logged(tmp_path, monkeypatch):
    reads = []
    real = Trainer.flush

    def counting(self):
        reads.append(self.state.step)
        return real(self)

    monkeypatch.setattr(Trainer, "flush", counting)
    summary = execute(tiny_config(tmp_path, *MOE, "run.log_every=25", "run.checkpoint_every=null"))
    steps = summary["steps"]
    # warm-up, every 25th step and the end: not every step
    assert len(reads) <= steps // 25 + 4 and steps > 100


def test_nan_between_log_steps_names_its_step(tmp_path):
    summary = execute(tiny_config(tmp_path, *MOE, "train.nan_at_step=13", "run.log_every=25"))
    assert summary["status"] == "failed" and summary["failure_kind"] == "training"
    assert "non-finite training loss (nan) at step 13" in summary["reason"]
    run = Path(tmp_path) / "runs" / summary["run_id"]
    assert (
        not (run / "checkpoint.pt").exists()
        or torch.load(run / "checkpoint.pt", weights_only=True)["loop"]["step"] < 13
    )


def test_keep_final_weights(tmp_path):
    summary = execute(tiny_config(tmp_path, *MOE, "run.keep_final=weights"))
    run = Path(tmp_path) / "runs" / summary["run_id"]
    assert not (run / "checkpoint.pt").exists()
    weights = torch.load(run / "weights.pt", weights_only=True)
    assert "tok_emb.weight" in weights["model"] and "optim" not in weights
    assert summary["epochs"] == pytest.approx(summary["tokens"] / summary["unique_train_tokens"])
    assert len(read_jsonl(run / "metrics.jsonl")[0]) >= 1


def _configs(tmp_path, *overrides):
    return [from_dict(tiny_config(tmp_path, *MOE, *overrides))]


def test_packing_fills_memory_but_never_past_it(tmp_path):
    small = _configs(tmp_path)
    need = run_memory_bytes(small[0])
    gpu = 80 << 30
    p = choose_runs_per_gpu(small, gpu, cpu_cores=64, n_gpus=1)
    assert p.runs_per_gpu == 8  # tiny runs: limited by the packing cap
    p = choose_runs_per_gpu(small, int(3.2 * need), cpu_cores=64, n_gpus=1)
    assert p.runs_per_gpu == 2  # 80% of 3.2 runs' memory holds 2
    p = choose_runs_per_gpu(small, gpu, cpu_cores=6, n_gpus=1)
    assert p.runs_per_gpu == 3  # one launching core each, half the cores
    with pytest.raises(ConfigError, match="at most 2 fit"):
        choose_runs_per_gpu(small, int(3.2 * need), cpu_cores=64, n_gpus=1, requested=3)


def test_packing_leaves_big_runs_alone(tmp_path):
    big = _configs(
        tmp_path,
        "model.d_model=768",
        "model.n_heads=12",
        "model.d_ff=3072",
        "model.n_layers=12",
        "model.seq_len=1024",
        "train.batch_size=64",
        "budget.flops=1e17",
    )  # the base preset: ~5e13 FLOPs a step
    assert big[0].flops_per_token * big[0].tokens_per_step >= SATURATING_FLOPS_PER_STEP
    assert choose_runs_per_gpu(big, 80 << 30, 64, 1).runs_per_gpu == 1


def test_memory_estimate_grows_with_the_model(tmp_path):
    a = run_memory_bytes(_configs(tmp_path)[0])
    b = run_memory_bytes(_configs(tmp_path, "moe.num_experts=16")[0])
    c = run_memory_bytes(_configs(tmp_path, "train.batch_size=32")[0])
    assert b > a and c > a


@pytest.mark.parametrize(
    "compile_,mode,device,expected",
    [
        ("auto", "auto", "cuda", (True, "reduce-overhead")),  # small steps: CUDA graphs
        ("auto", "default", "cuda", (True, "default")),  # a named mode is kept (it was not)
        ("true", "auto", "cuda", (True, "reduce-overhead")),
        ("true", "auto", "cpu", (True, "default")),  # CUDA graphs need CUDA
        ("auto", "auto", "cpu", (False, "default")),
        ("false", "reduce-overhead", "cuda", (False, "reduce-overhead")),
        ("auto", "max-autotune", "cuda", (True, "max-autotune")),
    ],
)
def test_the_compile_plan_keeps_what_the_user_named(compile_, mode, device, expected):
    """train.compile and train.compile_mode: each one's auto is the measured choice, and a
    value the user names is what runs (the gate-arm probe's compile_mode=default ran CUDA
    graphs under compile=auto, without a word)."""
    from experiments.benchmarks.run_profile import train_config
    from experiments.trainer.compile import compile_plan

    tc = train_config(
        [
            "model=tiny",
            "budget.flops=1e12",
            f"train.compile={compile_}",
            f"train.compile_mode={mode}",
        ]
    )
    assert tc.steps >= 150 and tc.flops_per_token * tc.tokens_per_step < 1e13
    assert compile_plan(tc, torch.device(device)) == expected


@pytest.mark.parametrize(
    "mode,backend,dense,version,capability,refused",
    [
        ("max-autotune", "native", False, (2, 11), (9, 0), True),  # failed on the H200
        ("max-autotune-no-cudagraphs", "native", False, (2, 11), (9, 0), True),  # same templates
        ("max-autotune", "native", False, (2, 11), (10, 0), True),
        ("default", "native", False, (2, 11), (9, 0), False),  # no Triton GEMM templates
        ("reduce-overhead", "native", False, (2, 11), (9, 0), False),
        ("max-autotune", "native", True, (2, 11), (9, 0), False),  # dense: no grouped GEMM
        ("max-autotune", "megablocks", False, (2, 11), (9, 0), False),  # its own GEMMs
        ("max-autotune", "native", False, (2, 11), (8, 0), False),  # inductor: no template
        ("max-autotune", "native", False, (2, 11), None, False),  # CPU
        ("max-autotune", "native", False, (2, 12), (9, 0), False),  # not measured: let through
    ],
)
def test_max_autotune_is_refused_where_its_grouped_gemm_templates_fail(
    mode, backend, dense, version, capability, refused
):
    from experiments.trainer.compile import compile_mode_fault

    fault = compile_mode_fault(mode, backend, dense, version, capability)
    assert (fault is not None) == refused
    if refused:
        assert f"train.compile_mode={mode}" in fault and "compile_mode=default" in fault


def test_a_run_refuses_max_autotune_before_compiling_where_it_fails(monkeypatch):
    """The trainer's plan asks the device and torch's version: an E8 model in max-autotune on a
    9.0 GPU under torch 2.11 is refused with the fix; the dense model and default mode are not."""
    from experiments.benchmarks.run_profile import train_config
    from experiments.trainer import compile as compile_mod

    monkeypatch.setattr(compile_mod.torch, "__version__", "2.11.0+cu130")
    monkeypatch.setattr(compile_mod.torch.cuda, "get_device_capability", lambda device: (9, 0))
    cuda = torch.device("cuda")
    moe = ["model=tiny", "budget.flops=1e12", "train.compile=true", "moe=e8k1"]
    with pytest.raises(ValueError, match="compile_mode=max-autotune fails"):
        compile_mod.checked_compile_plan(
            train_config([*moe, "train.compile_mode=max-autotune"]), cuda, "native"
        )
    default = train_config([*moe, "train.compile_mode=default"])
    assert compile_mod.checked_compile_plan(default, cuda, "native") == (True, "default")
    dense = train_config(["model=tiny", "budget.flops=1e12", "train.compile_mode=max-autotune"])
    assert compile_mod.checked_compile_plan(dense, cuda, "native") == (True, "max-autotune")


def test_compile_workers_are_started_early_only_on_cuda(monkeypatch):
    """A compiled CUDA run asks inductor's compile pool to start (once, through inductor's own
    maybe_warm_pool); a CPU run never starts one, nor does a run packed with others on its GPU,
    and a torch without the call starts nothing."""
    from torch._inductor import async_compile

    from experiments.trainer.compile import start_compile_workers

    calls = []
    monkeypatch.setattr(async_compile, "maybe_warm_pool", lambda: calls.append(1), raising=False)
    assert start_compile_workers(torch.device("cpu"), 1) is False and calls == []
    assert start_compile_workers(torch.device("cuda"), 8) is False and calls == []
    assert start_compile_workers(torch.device("cuda"), 1) is True and calls == [1]
    monkeypatch.delattr(async_compile, "maybe_warm_pool")
    assert start_compile_workers(torch.device("cuda"), 1) is False and calls == [1]


def test_the_step_compiles_its_blocks_the_whole_model_or_nothing(monkeypatch):
    """compiled_step: eager is the wrapped model alone; scope ``blocks`` compiles each block
    (compile_regions in the run's mode) and wraps the model; scope ``model`` compiles the
    wrapped model whole. Compiling first empties dynamo's in-memory caches (a sweep's worker
    trains run after run)."""
    from experiments.trainer import compile as compile_mod

    calls: list = []

    class Model:
        def compile_regions(self, mode):
            calls.append(("regions", mode))

    def wrap(model):
        calls.append(("wrap", model))
        return ("wrapped", model)

    monkeypatch.setattr(compile_mod.torch._dynamo, "reset", lambda: calls.append(("reset",)))
    monkeypatch.setattr(
        compile_mod.torch, "compile", lambda m, mode: calls.append(("whole", mode)) or ("c", m)
    )
    model = Model()
    assert compile_mod.compiled_step(model, wrap, None, "blocks") == ("wrapped", model)
    assert calls == [("wrap", model)]
    calls.clear()
    assert compile_mod.compiled_step(model, wrap, "default", "blocks") == ("wrapped", model)
    assert calls == [("reset",), ("regions", "default"), ("wrap", model)]
    calls.clear()
    got = compile_mod.compiled_step(model, wrap, "reduce-overhead", "model")
    assert got == ("c", ("wrapped", model))
    assert calls == [("reset",), ("wrap", model), ("whole", "reduce-overhead")]
