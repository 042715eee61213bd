"""Where one training run's time goes, on the trainer's own path (prints a table).

    python -m experiments.benchmarks.run_profile [--json OUT] [--no-profile] [--rows N]
        <overrides...>

Builds the run's Trainer as ``experiments.train`` does, then times: setup (model, data,
optimiser), the first steps (compilation, allocator growth), and steady steps (host time per
step, and device time with a synchronise per step), and prints torch.profiler's top operators
over ten steady steps, on the host and on the GPU. Where the run compiles, it also prints the
compiler's phases in the first steps (``compile_phases_s``: tracing, inductor's forward and
backward, waiting on Triton's compile workers), which is what a cold warm-up is made of.
Nothing is written to a run directory.

The JSON's ``gpu_ms_per_step`` is the profiled steps' kernel time (the table's "Self CUDA time
total" over ten steps): what one step costs the GPU with the host taken away, as packed runs
under MPS pay it. Kernels inside CUDA graphs may not be seen by the profiler, so compare it under
``train.compile_mode=default``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from experiments.benchmarks.timing import compile_phases_s, kernel_ms_per_step
from experiments.config import from_dict
from experiments.data.dataset import open_dataset
from experiments.distributed.devices import DATASHEET_BF16_PEAK, gpu_slot, peak_flops
from experiments.record import RunDir
from experiments.train import resolve
from experiments.trainer.loop import Trainer

CONF = str(Path(__file__).resolve().parents[2] / "conf")


def train_config(overrides: list[str]):
    """The TrainConfig ``experiments.train <overrides>`` would run."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return from_dict(resolve(compose("train", overrides=overrides)))


def scratch_trainer(tc, name: str, data, device) -> Trainer:
    """The run's Trainer as experiments.train builds it, writing to a throwaway directory."""
    return Trainer(tc, name, RunDir(Path(tempfile.mkdtemp())), data, device)


def main(argv: list[str]) -> None:
    # Our own flags, then experiments.train overrides.
    json_path, profile, rows, overrides = None, True, 12, []
    args = iter(argv)
    for a in args:
        if a == "--json":
            json_path = next(args)
        elif a == "--no-profile":
            profile = False
        elif a == "--rows":  # of the GPU table (under train.compile_mode=default, every kernel)
            rows = int(next(args))
        else:
            overrides.append(a)
    tc = train_config(overrides)
    with gpu_slot(tc.run.device, 1) as device:
        t0 = time.perf_counter()
        data = open_dataset(tc.data)
        t_data = time.perf_counter() - t0
        trainer = scratch_trainer(tc, "profile", data, device)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        t_setup = time.perf_counter() - t0
        t0 = time.perf_counter()
        for step in range(3):
            trainer.train_step(step)
        trainer.flush()
        t_first = time.perf_counter() - t0
        phases = compile_phases_s()
        n = 50
        t0 = time.perf_counter()
        for step in range(3, 3 + n):
            trainer.train_step(step)
        t_host = (time.perf_counter() - t0) / n
        trainer.flush()
        sync()
        t_async = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for step in range(3 + n, 3 + 2 * n):
            trainer.train_step(step)
            sync()
        t_synced = (time.perf_counter() - t0) / n
        tokens = tc.tokens_per_step
        # summary.mfu's peak; the H200's datasheet where the GPU is not in the table (and on CPU)
        peak = peak_flops(device, tc.run.peak_flops) or DATASHEET_BF16_PEAK["H200"]
        print(
            f"{tc.model.d_model=} {tc.model.n_layers=} E={tc.model.moe.num_experts} "
            f"batch={tc.train.batch_size}x{tc.model.seq_len} backend={trainer.backend} "
            f"compiled={trainer.compiled} device={device}"
        )
        print(
            f"data {t_data:.2f}s, setup (incl. data) {t_setup:.2f}s, first 3 steps {t_first:.2f}s"
        )
        if phases:
            print(
                "compiler phases in the first 3 steps (s; nested): "
                + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
            )
        print(
            f"steady step: {1e3 * t_async:.2f} ms ({tokens / t_async:,.0f} tok/s, MFU "
            f"{tokens * tc.flops_per_token / t_async / peak:.2%}); host alone "
            f"{1e3 * t_host:.2f} ms; with a sync per step {1e3 * t_synced:.2f} ms"
        )
        record = {
            "overrides": overrides,
            "d_model": tc.model.d_model,
            "n_layers": tc.model.n_layers,
            "num_experts": tc.model.moe.num_experts,
            "tokens_per_step": tokens,
            "compiled": trainer.compiled,
            "graphs": trainer.graphs,
            "data_s": t_data,
            "setup_s": t_setup,
            "setup_parts_cumulative_s": trainer.setup_parts,
            "first_3_steps_s": t_first,
            "compile_phases_s": phases,
            "step_ms": 1e3 * t_async,
            "host_ms": 1e3 * t_host,
            "synced_step_ms": 1e3 * t_synced,
            "steady_mfu": tokens * tc.flops_per_token / t_async / peak,
        }
        if device.type == "cuda":
            record["peak_allocated_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            record["peak_reserved_gb"] = torch.cuda.max_memory_reserved(device) / 2**30
            if profile:
                record.update(profile_steps(trainer, rows, tokens * tc.flops_per_token / peak))
        if json_path:
            Path(json_path).write_text(json.dumps(record, indent=1))


def profile_steps(trainer: Trainer, rows: int, peak_seconds_per_step: float) -> dict:
    """Print torch.profiler's tables over ten steady steps; their GPU kernel time a step, and
    the step's MFU over that time (``peak_seconds_per_step``: what its FLOPs take at the peak)."""
    from torch.profiler import ProfilerActivity, profile

    n = 10
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for step in range(200, 200 + n):
            trainer.train_step(step)
        torch.cuda.synchronize()
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=50))
    print(events.table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=90))
    gpu_ms = kernel_ms_per_step(prof, n)
    gpu_mfu = peak_seconds_per_step / (gpu_ms / 1e3)
    print(f"GPU kernel time: {gpu_ms:.2f} ms a step ({gpu_mfu:.2%} MFU)")
    return {"gpu_ms_per_step": gpu_ms, "gpu_mfu": gpu_mfu}


if __name__ == "__main__":
    main(sys.argv[1:])
