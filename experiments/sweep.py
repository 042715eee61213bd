"""Plan, launch, track and analyse an IsoFLOP x sparsity sweep.

    python -m experiments.sweep sweep=demo                      # plan, train, report
    python -m experiments.sweep sweep=demo action=plan          # dry run: the grid table
    python -m experiments.sweep sweep=demo action=status        # done/running/failed/pending
    python -m experiments.sweep sweep=demo retry_failed=true    # also retry failed runs
    python -m experiments.sweep sweep=demo hydra/launcher=joblib hydra.launcher.n_jobs=8
    python -m experiments.sweep sweep=paper hydra/launcher=submitit_slurm ...

How it uses Hydra: the planner writes one config file per run, ``<sweep dir>/plan/planned/
<run id>.yaml`` (a ``@package _global_`` config of that run's overrides), and launches
``experiments.train --multirun +planned=<id>,<id>,...`` so Hydra's own sweeper and whichever
launcher is configured (basic, joblib, submitit) run them. The sweep's output root is Hydra's
``hydra.sweep.dir`` (default ``sweeps/<name>``); run directories go to ``<sweep dir>/runs``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import hydra
import yaml
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.config import ConfigError, DataError, from_dict
from experiments.plan import PlannedRun, SweepSpec, format_table, plan
from experiments.record import atomic_write_json, run_id
from experiments.status import format_status, sweep_states
from experiments.train import resolve

FORWARDED_HYDRA = ("hydra/launcher", "hydra.launcher", "hydra.sweeper")


def flatten(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out += flatten(v, key + ".") if isinstance(v, dict) else [f"{key}={v}"]
    return out


PLANNER_KEYS = ("model.d_model", "model.n_layers", "model.n_heads", "model.d_ff",
                "moe.num_experts", "moe.top_k", "moe.granularity", "budget.flops", "seed",
                "sweep_name")


def make_plan(spec: SweepSpec) -> list[PlannedRun]:
    clash = [o for o in spec.train if o.lstrip("+~").split("=")[0] in PLANNER_KEYS]
    if clash:
        raise ConfigError(f"sweep.train: {clash} set what the planner sets per run; "
                          "use the spec's budgets/sparsity/family/seeds instead")
    # Compose once, then merge each run's overrides on top: the same thing the child's
    # `+planned=<id>` (a @package _global_ config after _self_) does, at a fraction of the cost.
    base = compose("train", overrides=list(spec.train))

    def compose_train(overrides: dict, check_steps: bool = True):
        cfg = OmegaConf.merge(base, OmegaConf.create(overrides))
        return from_dict(resolve(cfg), check_steps=check_steps)

    runs = plan(spec, compose_train)
    for r in runs:
        r.run_id = run_id(compose_train(r.overrides).identity())
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ConfigError("sweep: the plan holds duplicate runs (same config twice)")
    return runs


def write_plan(sweep_dir: Path, spec: SweepSpec, runs: list[PlannedRun]) -> None:
    group = sweep_dir / "plan" / "planned"
    group.mkdir(parents=True, exist_ok=True)
    for r in runs:
        text = "# @package _global_\n" + yaml.safe_dump(r.overrides, sort_keys=False)
        (group / f"{r.run_id}.yaml").write_text(text)
    atomic_write_json(sweep_dir / "plan.json",
                      {"spec": asdict(spec), "runs": [asdict(r) for r in runs]})


def launch(sweep_dir: Path, spec: SweepSpec, run_ids: list[str], retry_failed: bool) -> int:
    hydra_overrides = [o for o in HydraConfig.get().overrides.hydra
                       if o.startswith(FORWARDED_HYDRA)]
    cmd = [
        sys.executable, "-m", "experiments.train", "--multirun",
        "--config-dir", str(sweep_dir / "plan"),
        f"+planned={','.join(run_ids)}",
        *spec.train,
        f"hydra.sweep.dir={sweep_dir}",
        f"run.root={sweep_dir / 'runs'}",
        *(["run.retry_failed=true"] if retry_failed else []),
        *hydra_overrides,
    ]
    print(f"launching {len(run_ids)} runs through Hydra multirun "
          f"({next((o for o in hydra_overrides if o.startswith('hydra/launcher')), 'basic launcher')})",
          flush=True)
    return subprocess.run(cmd).returncode


def report(sweep_dir: Path) -> None:
    try:
        from analysis.report import build_report
    except ImportError as e:
        print(f"analysis unavailable ({e}); runs are in {sweep_dir / 'runs'}")
        return
    try:
        out = build_report(sweep_dir / "runs", sweep_dir / "report")
        print(f"report: {out}")
    except Exception as e:  # the runs are safe; say why the report could not be made
        print(f"report not built: {type(e).__name__}: {e}")


def run_sweep(cfg: DictConfig) -> int:
    sweep_dir = Path(HydraConfig.get().sweep.dir).resolve()
    spec = SweepSpec.from_dict(OmegaConf.to_container(cfg.sweep, resolve=True))
    runs = make_plan(spec)
    names = {r.run_id: r.name for r in runs}
    states = sweep_states(sweep_dir / "runs", [r.run_id for r in runs])
    if cfg.action == "status":
        print(format_status(states, names))
        return 0 if all(s == "done" for s, _ in states.values()) else 1
    print(f"sweep {spec.name}: {len(runs)} runs in {sweep_dir}")
    print(format_table(runs, {rid: s for rid, (s, _) in states.items()}))
    write_plan(sweep_dir, spec, runs)  # plan files only: a dry run trains nothing
    if cfg.action == "plan":
        return 0
    wanted = {"pending", "interrupted"} | ({"failed"} if cfg.retry_failed else set())
    todo = [rid for rid, (s, _) in states.items() if s in wanted]
    t0 = time.time()
    if todo:
        launch(sweep_dir, spec, todo, cfg.retry_failed)
    else:
        print(f"nothing to train: {format_status(states, names).splitlines()[0]}")
    states = sweep_states(sweep_dir / "runs", [r.run_id for r in runs])
    print(format_status(states, names))
    print(f"sweep wall time {time.time() - t0:.0f}s")
    if cfg.report:
        report(sweep_dir)
    return 0 if all(s == "done" for s, _ in states.values()) else 1


@hydra.main(config_path="../conf", config_name="launch", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        code = run_sweep(cfg)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    sys.exit(code)



if __name__ == "__main__":
    main()
