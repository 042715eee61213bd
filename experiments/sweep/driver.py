"""Plan, launch, track and analyse an IsoFLOP x sparsity sweep.

    python -m experiments.sweep sweep=demo                      # plan, train, report
    python -m experiments.sweep sweep=demo action=plan          # dry run: the grid table
    python -m experiments.sweep sweep=demo action=status        # done/running/failed/pending
    python -m experiments.sweep sweep=demo retry_failed=true    # also retry failed runs
    python -m experiments.sweep sweep=gpu runs_per_gpu=4        # pack small runs on each GPU
    python -m experiments.sweep sweep=paper hydra/launcher=slurm action=render  # the sbatch script
    python -m experiments.sweep sweep=paper hydra/launcher=slurm hydra.launcher.partition=gpu

How it uses Hydra: the planner writes one config file per run, ``<sweep dir>/plan/planned/
<run id>.yaml`` (a ``@package _global_`` config of that run's overrides), and launches
``experiments.train --multirun +planned=<id>,<id>,...`` so Hydra's own sweeper and whichever
launcher is configured (basic, joblib, submitit) run them. On GPUs without a launcher given,
the driver uses joblib with one worker per GPU slot (``runs_per_gpu`` per GPU). The sweep's
output root is Hydra's ``hydra.sweep.dir`` (default ``sweeps/<name>``); run directories go to
``<sweep dir>/runs``; each invocation's wall time and throughput go to ``sweep_log.jsonl``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.config import ConfigError, DataError, from_dict
from experiments.files import atomic_write_json
from experiments.record import run_id
from experiments.sweep.mps import mps_daemon
from experiments.sweep.plan import PlannedRun, SweepSpec, format_table, plan
from experiments.sweep.slurm import FORWARDED_HYDRA, render_sweep
from experiments.sweep.status import format_status, sweep_states, to_train
from experiments.sweep.throughput import efficiency, format_efficiency, read_sweep_log
from experiments.train import resolve

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PLANNER_KEYS = (
    "model.d_model",
    "model.n_layers",
    "model.n_heads",
    "model.d_ff",
    "moe.num_experts",
    "moe.top_k",
    "moe.granularity",
    "budget.flops",
    "seed",
    "sweep_name",
)


def make_plan(spec: SweepSpec, lr_rule=None, budgets=None) -> tuple[list[PlannedRun], list]:
    """The planned runs and their TrainConfigs (same order); see plan.plan for the options."""
    if not SAFE_NAME.match(spec.name) or ".." in spec.name:
        raise ConfigError(
            f"sweep.name: {spec.name!r} must be letters, digits, '_', '-' or '.' "
            "(it names a folder under sweeps/)"
        )
    clash = [o for o in spec.train if o.lstrip("+~").split("=")[0] in PLANNER_KEYS]
    if clash:
        raise ConfigError(
            f"sweep.train: {clash} set what the planner sets per run; "
            "use the spec's budgets/sparsity/family/seeds instead"
        )
    # Compose once, then merge each run's overrides on top: the same thing the child's
    # `+planned=<id>` (a @package _global_ config after _self_) does, at a fraction of the cost.
    base = compose("train", overrides=list(spec.train))

    def compose_train(overrides: dict, check_steps: bool = True):
        cfg = OmegaConf.merge(base, OmegaConf.create(overrides))
        return from_dict(resolve(cfg), check_steps=check_steps)

    runs = plan(spec, compose_train, lr_rule, budgets)
    configs = [compose_train(r.overrides) for r in runs]
    for r, tc in zip(runs, configs):
        r.run_id = run_id(tc.identity())
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ConfigError("sweep: the plan holds duplicate runs (same config twice)")
    return runs, configs


def write_plan(sweep_dir: Path, spec: SweepSpec, runs: list[PlannedRun]) -> None:
    group = sweep_dir / "plan" / "planned"
    group.mkdir(parents=True, exist_ok=True)
    for r in runs:
        text = "# @package _global_\n" + yaml.safe_dump(r.overrides, sort_keys=False)
        (group / f"{r.run_id}.yaml").write_text(text)
    atomic_write_json(
        sweep_dir / "plan.json", {"spec": asdict(spec), "runs": [asdict(r) for r in runs]}
    )


def _gpus() -> tuple[int, int, float | None]:
    """(GPU count, bytes per GPU, datasheet peak FLOP/s per GPU) of this host."""
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


def compile_env(sweep_dir: Path, jobs: int) -> dict[str, str]:
    """torch.compile's caches for the sweep's runs (a setting the user made wins).

    Every run of the sweep reads and fills one on-disk cache inside the sweep folder, so a
    shape compiled once (another seed, LR or budget of the same size) loads from it, also on
    a fresh machine that receives the sweep folder. Packed runs split the host's cores
    between their compile workers instead of each starting one per core."""
    env = {"TORCHINDUCTOR_CACHE_DIR": str(sweep_dir / "compile_cache")}
    if jobs > 1:
        env["TORCHINDUCTOR_COMPILE_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return {k: v for k, v in env.items() if k not in os.environ}


def launch_plan(cfg: DictConfig, configs: list, user: list[str], sweep_dir: Path) -> LaunchPlan:
    """The launcher and packing overrides for the child, unless the user chose a launcher.

    On GPUs: runs_per_gpu runs share each GPU (joblib, one worker per slot). On CPUs: one run
    per core, one thread each (small models: two one-thread processes train ~1.8x faster
    than one with two threads, measured on the demo's models)."""
    if any(o.startswith("hydra/launcher") for o in user):
        return LaunchPlan(env=compile_env(sweep_dir, 1))
    n_gpus, gpu_bytes, _ = _gpus()
    if n_gpus == 0:
        jobs = min(os.cpu_count() or 1, len(configs))
        if jobs <= 1 or cfg.runs_per_gpu not in ("auto", None):
            return LaunchPlan()
        print(f"CPU: {jobs} runs at a time, one thread each")
        return LaunchPlan(
            ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}", "run.threads=1"]
        )
    from experiments.sweep.packing import choose_runs_per_gpu

    train_tokens = _unique_tokens(configs[0]) or 0
    pack = choose_runs_per_gpu(
        configs, gpu_bytes, os.cpu_count() or 1, n_gpus, cfg.runs_per_gpu, train_tokens
    )
    print(f"packing: {pack.runs_per_gpu} run(s) per GPU on {n_gpus} GPU(s): {pack.reason}")
    jobs = pack.runs_per_gpu * n_gpus
    # Each packed run drives its GPU from one host thread; more would fight over the cores.
    threads = max(1, (os.cpu_count() or 1) // jobs)
    out = [f"run.gpu_slots={pack.runs_per_gpu}", f"run.threads={threads}"]
    if jobs > 1:
        out += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    return LaunchPlan(out, compile_env(sweep_dir, jobs), packed=pack.runs_per_gpu > 1)


def launch(
    sweep_dir: Path,
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
        str(sweep_dir / "plan"),
        # quoted: a hex id such as 8e031234abcd would otherwise be read as a float
        "+planned=" + ",".join(f"'{rid}'" for rid in run_ids),
        *spec.train,
        f"hydra.sweep.dir={sweep_dir}",
        f"run.root={sweep_dir / 'runs'}",
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
    child = subprocess.Popen(cmd, env=os.environ | (env or {}), start_new_session=True)

    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
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
    _reap(child.pid, sweep_dir / "runs", run_ids)
    return 128 + received[0] if received else code


def _reap(group: int, runs_root: Path, run_ids: list[str], timeout_s: float = 300.0) -> None:
    """End what the multirun leaves behind once its runs are saved: a multirun stopped by a
    signal leaves its idle pool workers running (they would hold the terminal's pipes and
    live on). Waits while any run still holds its lock (saving a checkpoint), then kills."""
    from experiments.record import is_locked

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(is_locked(runs_root / r) for r in run_ids):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


def report(sweep_dir: Path, run_ids: list[str]) -> bool:
    """Build the sweep's report; False (and one line saying why) when it could not be."""
    try:
        from analysis.report import build_report
    except ImportError as e:
        print(f"analysis unavailable ({e}); runs are in {sweep_dir / 'runs'}")
        return False
    runs = sweep_dir / "runs"
    planned = set(run_ids)
    others = (
        sorted(p.name for p in runs.iterdir() if p.is_dir() and p.name not in planned)
        if runs.exists()
        else []
    )
    try:
        out = build_report(
            [runs / rid for rid in run_ids], sweep_dir / "report", not_in_plan=others
        )
        print(f"report: {out}")
        return True
    except Exception as e:  # the runs are safe; the sweep's exit code says the report failed
        print(f"report not built: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return False


def _unique_tokens(tc) -> int | None:
    """Training tokens of the sweep's corpus (prepares it once, as the runs would)."""
    from experiments.data.dataset import prepare

    try:
        return prepare(tc.data).unique_train_tokens
    except (ValueError, OSError) as e:  # DataError, PrepareError, an unreadable file
        print(f"warning: could not read the corpus to check for repeated data: {e}")
        return None


def plan_sweep(
    spec: SweepSpec, sweep_dir: Path, only: list[float] | None = None
) -> tuple[list, list, str | None]:
    """(runs, configs, note). With an LR-tuning budget, the other budgets are planned once its
    runs are done (their LRs come from them); until then only the tuning budget is. ``only``
    restricts the plan to some of the spec's budgets."""
    unknown = [b for b in only or [] if b not in spec.budgets]
    if unknown:
        raise ConfigError(f"budgets={unknown}: not among the spec's budgets {spec.budgets}")
    if spec.lr_tuning_budget is None:
        return *make_plan(spec, budgets=only or None), None
    from experiments.sweep.lr_rule import fit_lr_rule, persisted

    tune, tune_cfgs = make_plan(spec, budgets=[spec.lr_tuning_budget])
    rule = fit_lr_rule(sweep_dir / "runs", tune, spec.lrs)
    if rule is not None:
        rule = persisted(sweep_dir / "lr_rule.json", rule)
    if rule is None:
        return (
            tune,
            tune_cfgs,
            (
                f"LR tuning first: the other budgets are planned when the "
                f"{len(tune)} runs at {spec.lr_tuning_budget:.3g} are done"
            ),
        )
    rest, rest_cfgs = make_plan(
        spec,
        lr_rule=rule,
        budgets=[b for b in spec.budgets if b != spec.lr_tuning_budget and (not only or b in only)],
    )
    atomic_write_json(sweep_dir / "lr_rule.json", asdict(rule))
    return tune + rest, tune_cfgs + rest_cfgs, rule.describe()


def show_plan(spec, sweep_dir, runs, configs, states, note) -> None:
    unique = _unique_tokens(configs[0])
    print(f"sweep {spec.name}: {len(runs)} runs in {sweep_dir}")
    print(format_table(runs, {rid: s for rid, (s, _, _) in states.items()}, unique))
    if note:
        print(note)
    over = [r for r in runs if r.tokens > unique] if unique else []  # would repeat data
    if over:
        print(
            f"warning: {len(over)} run(s) would train on more than one epoch of the "
            f"{unique:,} training tokens (e.g. {over[0].name}); the report marks them"
        )
    write_plan(sweep_dir, spec, runs)  # plan files only: a dry run trains nothing


def run_sweep(cfg: DictConfig) -> int:
    sweep_dir = Path(HydraConfig.get().sweep.dir).resolve()
    if not isinstance(cfg.mps, bool):
        raise ConfigError(f"mps: expected true or false, got {cfg.mps!r}")
    spec = SweepSpec.from_dict(OmegaConf.to_container(cfg.sweep, resolve=True))
    spec.train = [*spec.train, *cfg.train_overrides]
    t0 = time.time()
    for _ in range(2):  # twice at most: an LR-tuning budget, then the budgets it informs
        runs, configs, note = plan_sweep(spec, sweep_dir, [float(b) for b in cfg.budgets])
        names = {r.run_id: r.name for r in runs}
        ids = [r.run_id for r in runs]
        states = sweep_states(sweep_dir / "runs", ids)
        if cfg.action == "status":
            print(format_status(states, names) + (f"\n{note}" if note else ""))
            log = read_sweep_log(sweep_dir)
            if log:
                print(format_efficiency(log))
            return 0 if all(s == "done" for s, _, _ in states.values()) else 1
        show_plan(spec, sweep_dir, runs, configs, states, note)
        todo = to_train(states, cfg.retry_failed)
        if cfg.action == "plan":
            return 0
        if cfg.action == "render":
            return render_sweep(sweep_dir, spec.name, spec.train, len(todo) or len(runs))
        if not todo:
            print(f"nothing to train: {format_status(states, names).splitlines()[0]}")
            break
        by_cost = {r.run_id: r.flops for r in runs}
        todo.sort(key=lambda rid: -by_cost[rid])  # largest first: packs and balances better
        cost = {r.run_id: tc for r, tc in zip(runs, configs)}
        how = launch_plan(
            cfg, [cost[rid] for rid in todo], list(HydraConfig.get().overrides.hydra), sweep_dir
        )
        t_launch = time.time()
        with mps_daemon(how.packed and cfg.mps) as mps_note:
            if how.packed:
                print(mps_note, flush=True)
            code = launch(sweep_dir, spec, todo, cfg.retry_failed, how.overrides, how.env)
        n_gpus, _, peak = _gpus()
        print(
            format_efficiency([efficiency(sweep_dir, todo, time.time() - t_launch, n_gpus, peak)])
        )
        if code >= 128:  # the runs were interrupted by a signal: stop here as well
            print(format_status(sweep_states(sweep_dir / "runs", ids), names))
            return code
        if not (note and note.startswith("LR tuning first")):
            break
    states = sweep_states(sweep_dir / "runs", ids)
    print(format_status(states, names))
    print(f"sweep wall time {time.time() - t0:.0f}s")
    reported = report(sweep_dir, ids) if cfg.report else True
    return 0 if reported and all(s == "done" for s, _, _ in states.values()) else 1


def main(cfg: DictConfig) -> None:
    """The driver's entry (``python -m experiments.sweep``, experiments/sweep/__main__.py)."""
    try:
        code = run_sweep(cfg)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    sys.exit(code)
