"""Launching a sweep's runs: the packing and environment of the child multirun, the child
itself (Hydra's ``experiments.train --multirun``), and stopping it cleanly.

The child gets a process group of its own, and every stop signal the driver receives
(Ctrl-C, SIGTERM, SIGHUP, SLURM's USR1/USR2) is passed to all of it: the runs save their
checkpoints and stop, and no orphaned multirun trains the rest of the sweep. What the
multirun leaves behind (its idle pool) is ended once the runs are saved.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.record import CONFIG
from experiments.sweep.plan import PlannedRun
from experiments.sweep.slurm import FORWARDED_HYDRA
from experiments.sweep.spec import SweepSpec
from experiments.sweep.sweep_dir import RunWork, SweepDir
from experiments.trainer.interrupts import SWEEP_STOP_FILE

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def nvidia_driver_present() -> bool:
    """Whether this host could have a CUDA GPU: the NVIDIA kernel driver is loaded (its /proc
    entry; device nodes may appear only at the first CUDA call), its device files are exposed
    (a container, gVisor), or WSL's GPU device is there."""
    return (
        Path("/proc/driver/nvidia").exists()
        or Path("/dev/nvidiactl").exists()
        or any(Path("/dev").glob("nvidia[0-9]*"))
        or Path("/dev/dxg").exists()
    )


def gpus() -> tuple[int, int, float | None]:
    """(GPU count, bytes per GPU, datasheet peak FLOP/s per GPU) of this host."""
    if not nvidia_driver_present():
        # no CUDA possible: said without importing torch, which took 1.3 s of every driver's
        # start on CPU hosts
        return 0, 0, None
    import torch

    from experiments.distributed.devices import peak_flops

    if not torch.cuda.is_available():
        return 0, 0, None
    dev = torch.device("cuda:0")
    return (
        torch.cuda.device_count(),
        torch.cuda.get_device_properties(dev).total_memory,
        peak_flops(dev, None),
    )


@dataclass
class LaunchPlan:
    """How the child multirun is started: its overrides and environment."""

    overrides: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    packed: bool = False  # several runs share a GPU
    jobs: int = 1  # runs training at once


def compile_env(sweep_dir: SweepDir, jobs: int) -> dict[str, str]:
    """torch.compile's caches for the sweep's runs (a setting the user made wins).

    Every run of the sweep reads and fills one on-disk cache inside the sweep folder, so a
    shape compiled once (another seed, LR or budget of the same size) loads from it, also on
    a fresh machine that receives the sweep folder. Packed runs split the host's cores
    between their compile workers instead of each starting one per core."""
    env = {"TORCHINDUCTOR_CACHE_DIR": str(sweep_dir.compile_cache)}
    if jobs > 1:
        env["TORCHINDUCTOR_COMPILE_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return {k: v for k, v in env.items() if k not in os.environ}


def launch_plan(
    cfg: DictConfig,
    configs: list,
    user: list[str],
    sweep_dir: SweepDir,
    train_tokens: int,
    planned: dict | None = None,
) -> LaunchPlan:
    """The launcher and packing overrides for the child, unless the user chose a launcher.

    On GPUs: runs_per_gpu runs share each GPU (joblib, one worker per slot), sized by what
    the sweep folder's done runs measured where a shape has trained (``planned``: run id ->
    config of this invocation's runs; the summaries are read only here, where packing uses
    them). On CPUs:
    one run per core, one thread each (small models: two one-thread processes train ~1.8x
    faster than one with two threads, measured on the demo's models)."""
    if any(o.startswith("hydra/launcher") for o in user):
        given = [o.split("=", 1)[1] for o in user if o.startswith("hydra.launcher.n_jobs=")]
        jobs = int(given[-1]) if given and given[-1].isdigit() else 1
        return LaunchPlan(env=compile_env(sweep_dir, 1), jobs=jobs)
    n_gpus, gpu_bytes, _ = gpus()
    if n_gpus == 0:
        jobs = min(os.cpu_count() or 1, len(configs))
        if jobs <= 1 or cfg.runs_per_gpu not in ("auto", None):
            return LaunchPlan()
        print(f"CPU: {jobs} runs at a time, one thread each")
        return LaunchPlan(
            ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}", "run.threads=1"],
            jobs=jobs,
        )
    from experiments.sweep.packing import choose_runs_per_gpu, measured_memory

    pack = choose_runs_per_gpu(
        configs,
        gpu_bytes,
        os.cpu_count() or 1,
        n_gpus,
        cfg.runs_per_gpu,
        train_tokens,
        measured_memory(done_runs(sweep_dir, planned or {})),
    )
    print(f"packing: {pack.runs_per_gpu} run(s) per GPU on {n_gpus} GPU(s): {pack.reason}")
    jobs = pack.runs_per_gpu * n_gpus
    # Each packed run drives its GPU from one host thread; more would fight over the cores.
    threads = max(1, (os.cpu_count() or 1) // jobs)
    out = [f"run.gpu_slots={pack.runs_per_gpu}", f"run.threads={threads}"]
    if jobs > 1:
        out += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    return LaunchPlan(out, compile_env(sweep_dir, jobs), pack.runs_per_gpu > 1, jobs)


def done_runs(sweep_dir: SweepDir, planned: dict) -> list[tuple]:
    """(config, summary) of every done run in the sweep folder: a planned run by its planned
    config, any other (a replicate seed's first seed, a budget left out now) by the config it
    recorded. A record that no longer reads as a config measures nothing."""
    from experiments.config import ConfigError, from_dict

    out = []
    for rid, summary in sweep_dir.done_summaries().items():
        tc = planned.get(rid)
        if tc is None:
            try:
                recorded = yaml.safe_load((sweep_dir.run(rid) / CONFIG).read_text())
                tc = from_dict(recorded, read_corpus=False)
            except (OSError, yaml.YAMLError, ConfigError, TypeError, ValueError):
                continue
        out.append((tc, summary))
    return out


def work_of(runs: list[PlannedRun]) -> dict[str, RunWork]:
    """Each planned run's steps and FLOPs and tokens a step (the throughput record's units)."""
    out = {}
    for r in runs:
        out[r.run_id] = RunWork(
            first_step=r.trunk_step if r.role == "branch" else 0,
            last_step=r.steps,
            flops_per_step=r.flops / max(r.steps, 1),
            tokens_per_step=r.tokens / max(r.steps, 1),
        )
    return out


def launch_order(runs: list[PlannedRun]):
    """Sort key of run ids: the largest budget first (packs and balances better), then the
    plan's order (its groups by sparsity and variant, each size's seeds side by side), so a
    sweep stopped halfway holds whole groups rather than runs scattered by the few FLOPs that
    rounding to whole steps adds or removes; branches after every trunk has started."""
    rank = {r.run_id: (r.role == "branch", -r.budget, i) for i, r in enumerate(runs)}
    return rank.__getitem__


def of_variants(todo: list[str], runs: list[PlannedRun], names: list[str]) -> list[str]:
    """The run ids of ``todo`` that belong to the variants ``names`` (``variants=[...]``)."""
    chosen = {r.run_id for r in runs if r.overrides.get("variant") in names}
    return [rid for rid in todo if rid in chosen]


def unplanned(train: list[str], planned: list[dict]) -> list[str]:
    """The sweep's train overrides less those a run's planned config sets.

    The planner merges each run's values over the train overrides (an LR of ``sweep.lrs`` over
    the train list's ``optim.lr``, a variant's value over the same key there), and names the
    run by that config. On the child's command line an override would win over the planned
    config (Hydra applies command-line overrides last), so the run would train another config
    under another id than the plan's: the planner's values must be the only ones given."""
    keys = {k for overrides in planned for k in dotted_keys(overrides)}
    return [o for o in train if o.split("=", 1)[0].lstrip("+~") not in keys]


def state_every_planned_key(runs: list[PlannedRun], composed: list) -> None:
    """What any run's planned config sets leaves the child's command line (``unplanned``), so
    every run's planned config states its own value of it: a variant's value for its runs, the
    train list's for the others, whichever runs are launched together. ``composed``: each
    run's config before its own overrides (the train list and its variant's values)."""
    planned = {k for r in runs for k in dotted_keys(r.overrides)}
    for r, cfg in zip(runs, composed):
        missing = planned - set(dotted_keys(r.overrides))
        if missing:
            own = OmegaConf.create(r.overrides)
            for k in sorted(missing):
                OmegaConf.update(own, k, OmegaConf.select(cfg, k), force_add=True)
            r.overrides = OmegaConf.to_container(own)


def dotted_keys(tree: dict, prefix: str = "") -> list[str]:
    """The leaves of nested overrides as dotted keys ({"optim": {"lr": 1}} -> ["optim.lr"])."""
    out = []
    for k, v in tree.items():
        key = f"{prefix}{k}"
        out += dotted_keys(v, f"{key}.") if isinstance(v, dict) else [key]
    return out


def launch(
    sweep_dir: SweepDir,
    spec: SweepSpec,
    run_ids: list[str],
    retry_failed: bool,
    extra: list[str],
    env: dict[str, str] | None = None,
) -> int:
    hydra_overrides = [
        o for o in HydraConfig.get().overrides.hydra if o.startswith(FORWARDED_HYDRA)
    ]
    cmd = [
        sys.executable,
        "-m",
        "experiments.train",
        "--multirun",
        "--config-dir",
        str(sweep_dir.plan_configs),
        # quoted: a hex id such as 8e031234abcd would otherwise be read as a float
        "+planned=" + ",".join(f"'{rid}'" for rid in run_ids),
        *unplanned(spec.train, [sweep_dir.planned_overrides(rid) for rid in run_ids]),
        f"hydra.sweep.dir={sweep_dir.path}",
        f"run.root={sweep_dir.runs}",
        *(["run.retry_failed=true"] if retry_failed else []),
        *extra,
        *hydra_overrides,
    ]
    launcher = next(
        (o for o in hydra_overrides + extra if o.startswith("hydra/launcher")), "basic launcher"
    )
    print(f"launching {len(run_ids)} runs through Hydra multirun ({launcher})", flush=True)
    # The runs get a process group of their own, and every stop signal the driver receives
    # (Ctrl-C, SIGTERM, SIGHUP, SLURM's USR1/USR2) is passed to all of it: they save their
    # checkpoints and stop, and no orphaned multirun trains the rest of the sweep.
    stop_file = sweep_dir.path / f".stopping.{os.getpid()}"
    stop_file.unlink(missing_ok=True)  # a killed driver's, whose pid this one reuses
    env = (env or {}) | {SWEEP_STOP_FILE: str(stop_file.resolve())}
    child = subprocess.Popen(cmd, env=os.environ | env, start_new_session=True)

    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        with contextlib.suppress(OSError):
            stop_file.touch()  # before the signal: no queued run starts after it
        print(
            f"{signal.Signals(signum).name}: passed to the runs; waiting while they save "
            "their checkpoints",
            flush=True,
        )
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    previous = {s: signal.signal(s, forward) for s in FORWARDED_SIGNALS}
    try:
        code = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    _reap(child.pid, sweep_dir, run_ids)
    stop_file.unlink(missing_ok=True)
    return 128 + received[0] if received else code


def _reap(group: int, sweep_dir: SweepDir, run_ids: list[str], timeout_s: float = 300.0) -> None:
    """End what the multirun leaves behind once its runs are saved: a multirun stopped by a
    signal leaves its idle pool workers running (they would hold the terminal's pipes and
    live on). Waits while any run still holds its lock (saving a checkpoint), then kills."""
    from experiments.record import is_locked

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(is_locked(sweep_dir.run(r)) for r in run_ids):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
