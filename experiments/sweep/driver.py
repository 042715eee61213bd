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

import faulthandler
import re
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import yaml
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.config import ConfigError, DataError, from_dict
from experiments.files import atomic_write_json
from experiments.record import run_id
from experiments.sweep.branches import flops_summary, link_branches
from experiments.sweep.deadline import finishing
from experiments.sweep.edges import extended_plan
from experiments.sweep.launch import (
    gpus,
    launch,
    launch_order,
    launch_plan,
    of_variants,
    state_every_planned_key,
    work_of,
)
from experiments.sweep.lr_rule import MAX_LR_EXTENSIONS
from experiments.sweep.mps import mps_daemon
from experiments.sweep.plan import PlannedRun, format_table, plan
from experiments.sweep.slurm import render_sweep
from experiments.sweep.spec import SweepSpec
from experiments.sweep.sweep_dir import SweepDir, format_efficiency, format_status, to_train
from experiments.train import resolve
from models.typed import from_dict as build

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
# What a variant may reshape besides train values: what the planner draws its grid from.
SPEC_FIELDS = ("granularity", "family", "sparsity", "sizes")
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
BRANCH_RUN_KEYS = ("run.keep_steps", "run.branch_from", "run.branch_step")
BRANCH_KEYS = ("optim.schedule", "optim.decay_fraction", "optim.decay_shape", "optim.warmup_steps")


def make_plan(
    spec: SweepSpec, lr_rule=None, budgets=None, extra_lrs=None, extensions=None
) -> tuple[list[PlannedRun], list]:
    """The planned runs and their TrainConfigs (same order); see plan.plan for the options."""
    if not SAFE_NAME.match(spec.name) or ".." in spec.name:
        raise ConfigError(
            f"sweep.name: {spec.name!r} must be letters, digits, '_', '-' or '.' "
            "(it names a folder under sweeps/)"
        )
    keys = PLANNER_KEYS + (BRANCH_KEYS if spec.schedule.kind == "wsd_branches" else ())
    clash = [o for o in spec.train if o.lstrip("+~").split("=")[0] in keys + BRANCH_RUN_KEYS]
    if clash:
        raise ConfigError(
            f"sweep.train: {clash} set what the planner sets per run; "
            "use the spec's budgets/sparsity/family/seeds instead"
        )
    # Compose once, then merge each run's overrides on top: the same thing the child's
    # `+planned=<id>` (a @package _global_ config after _self_) does, at a fraction of the cost.
    base = compose("train", overrides=list(spec.train))
    runs, configs, composed_by = [], [], []
    for variant, (values, shaped) in variant_values(spec, keys).items():
        # a variant's values ride in each of its runs' overrides (the planned config)
        with_variant = OmegaConf.merge(base, values)

        def compose_train(overrides: dict, check_steps: bool = True, b=with_variant):
            cfg = OmegaConf.merge(b, OmegaConf.create(overrides))
            return from_dict(resolve(cfg), check_steps=check_steps)

        mine = plan(shaped, compose_train, lr_rule, budgets, extra_lrs, variant, extensions)
        for r in mine:
            r.overrides = OmegaConf.to_container(OmegaConf.merge(values, r.overrides))
        runs += mine
        configs += [compose_train(r.overrides) for r in mine]
        composed_by += [with_variant] * len(mine)
    state_every_planned_key(runs, composed_by)
    for r, tc in zip(runs, configs):
        r.run_id = run_id(tc.identity())
    link_branches(runs)
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ConfigError("sweep: the plan holds duplicate runs (same config twice)")
    return runs, configs


def variant_values(spec: SweepSpec, planner_keys) -> dict:
    """{variant name (None: no variants): (its values as a config, the spec it is planned
    with)}. Variants set values (model.attention=mla), never config groups or what the
    planner sets; or they reshape what the planner draws from: the granularity, the model
    family, the sparsities or the sizes rule (sweep.granularity=2, sweep.family.head_dim=16,
    sweep.sparsity.values=[0.9375])."""
    out = {}
    for name, overrides in (spec.variants or {None: []}).items():
        values, shape = [], {}
        for o in overrides:
            key = o.split("=")[0]
            if "=" not in o or "." not in key or o[:1] in "+~":
                raise ConfigError(
                    f"sweep.variants.{name}: {o!r} must set a value (e.g. model.attention=mla), "
                    "not a config group"
                )
            if key in planner_keys:
                raise ConfigError(f"sweep.variants.{name}: {key} is set by the planner")
            if not key.startswith("sweep."):
                values.append(o)
                continue
            path = key.split(".")[1:]
            if path[0] not in SPEC_FIELDS or len(path) != (1 if path[0] == "granularity" else 2):
                raise ConfigError(
                    f"sweep.variants.{name}: {key} cannot vary by variant; a variant may set "
                    "sweep.granularity, sweep.family.*, sweep.sparsity.* or sweep.sizes.*"
                )
            shape[tuple(path)] = yaml.safe_load(o.split("=", 1)[1])
        reshaped = asdict(spec)
        for path, value in shape.items():
            reshaped[path[0]] = value if len(path) == 1 else {**reshaped[path[0]], path[1]: value}
        where = f"sweep.variants.{name}"
        out[name] = (OmegaConf.from_dotlist(values), build(SweepSpec, reshaped, where))
    return out


def write_plan(sweep_dir: SweepDir, spec: SweepSpec, runs: list[PlannedRun]) -> None:
    for r in runs:
        text = "# @package _global_\n" + yaml.safe_dump(r.overrides, sort_keys=False)
        path = sweep_dir.planned_config(r.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    atomic_write_json(sweep_dir.plan, {"spec": asdict(spec), "runs": [asdict(r) for r in runs]})


def report(sweep_dir: SweepDir, run_ids: list[str], variants: list[str] | None = None) -> bool:
    """Build the sweep's report (with variants: one per variant, report/<variant>/, and
    their comparison, report/compare/); False (and one line saying why) when it could not
    be."""
    try:
        from analysis.compare import compare
        from analysis.laws import Columns
        from analysis.report import build_report
    except ImportError as e:
        print(f"analysis unavailable ({e}); runs are in {sweep_dir.runs}")
        return False
    runs = sweep_dir.runs
    planned = set(run_ids)
    others = (
        sorted(p.name for p in runs.iterdir() if p.is_dir() and p.name not in planned)
        if runs.exists()
        else []
    )
    dirs = [runs / rid for rid in run_ids]
    try:
        for v in variants or [None]:
            where = sweep_dir.report / v if v else sweep_dir.report
            out = build_report(dirs, where, not_in_plan=others, variant=v)
            print(f"report: {out}")
        if variants and len(variants) > 1:
            cmp = sweep_dir.report / "compare"
            compare(
                [sweep_dir.runs],
                ["chinchilla"],
                Columns(),
                False,
                200,
                None,
                out=cmp,
                by_variant=True,
            )
            print(f"comparison of the variants: {cmp / 'compare.md'}")
        return True
    except Exception as e:  # the runs are safe; the sweep's exit code says the report failed
        print(f"report not built: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return False


def _unique_tokens(tc) -> int | None:
    """Training tokens of the sweep's corpus (prepares it once, as the runs would)."""
    from experiments.data.dataset import open_dataset

    try:
        return open_dataset(tc.data).unique_train_tokens
    except (ValueError, OSError) as e:  # DataError, PrepareError, an unreadable file
        print(f"warning: could not read the corpus to check for repeated data: {e}")
        return None


def plan_sweep(
    spec: SweepSpec, sweep_dir: SweepDir, only: list[float] | None = None
) -> tuple[list, list, str | None]:
    """(runs, configs, note). With an LR-tuning budget, the other budgets are planned once its
    runs are done (their LRs come from them); until then only the tuning budget is. ``only``
    restricts the plan to some of the spec's budgets."""
    unknown = [b for b in only or [] if b not in spec.budgets]
    if unknown:
        raise ConfigError(f"budgets={unknown}: not among the spec's budgets {spec.budgets}")
    if spec.lr_tuning_budget is None and spec.sizes.extend:
        cap = spec.sizes.max_epochs

        def max_tokens(configs) -> float | None:
            unique = _unique_tokens(configs[0])
            return cap * unique if unique and cap is not None else None

        return extended_plan(
            spec,
            sweep_dir.runs,
            lambda ext: make_plan(spec, budgets=only or None, extensions=ext),
            max_tokens,
        )
    if spec.lr_tuning_budget is None:
        return *make_plan(spec, budgets=only or None), None
    from experiments.sweep.lr_rule import (
        MAX_LR_EXTENSIONS,
        extensions,
        fit_lr_rule,
        persisted,
        refusal,
    )

    extra: dict = {}  # lr_grid=auto: derived again from the finished runs on every plan
    tune, tune_cfgs = make_plan(spec, budgets=[spec.lr_tuning_budget])
    for _ in range(MAX_LR_EXTENSIONS if spec.lr_grid == "auto" else 0):
        more = extensions(sweep_dir.runs, tune, spec.lrs, extra)
        if not more:
            break
        extra |= more
        tune, tune_cfgs = make_plan(spec, budgets=[spec.lr_tuning_budget], extra_lrs=extra)
    rule = fit_lr_rule(sweep_dir.runs, tune, spec.lrs)
    if rule is not None:
        rule = persisted(sweep_dir.lr_rule, rule)
    if rule is None:
        grown = f" (the grid extended at {len(extra)} point(s))" if extra else ""
        return (
            tune,
            tune_cfgs,
            (
                f"LR tuning first: the other budgets are planned when the "
                f"{len(tune)} runs at {spec.lr_tuning_budget:.3g} are done{grown}"
            ),
        )
    why = refusal(sweep_dir.runs, tune, spec.lrs)
    if why and spec.lr_rule_at_edge == "refuse":
        raise ConfigError(why)
    rest, rest_cfgs = make_plan(
        spec,
        lr_rule=rule,
        budgets=[b for b in spec.budgets if b != spec.lr_tuning_budget and (not only or b in only)],
    )
    atomic_write_json(sweep_dir.lr_rule, asdict(rule))
    note = rule.describe() + (f"\nwarning: {why}" if why else "")
    return tune + rest, tune_cfgs + rest_cfgs, note


def show_plan(spec, sweep_dir, runs, configs, states, note) -> int | None:
    """Print the plan, write its files; returns the corpus's unique training tokens (the one
    time the sweep opens its corpus)."""
    unique = _unique_tokens(configs[0])
    print(f"sweep {spec.name}: {len(runs)} runs in {sweep_dir.path}")
    print(format_table(runs, {rid: s for rid, (s, _, _) in states.items()}, unique))
    for line in (flops_summary(runs), note):
        if line:
            print(line)
    cap = spec.sizes.max_epochs
    over = [r for r in runs if r.tokens > (cap or 1.0) * unique] if unique else []
    if over and cap is not None:  # a point that repeats its data is another experiment
        worst = max(over, key=lambda r: r.tokens)
        raise ConfigError(
            f"sweep.sizes.max_epochs={cap:g}: {len(over)} run(s) would train on more than "
            f"{cap:g} epoch(s) of the corpus's {unique:,} training tokens (e.g. {worst.name}: "
            f"{worst.tokens / unique:.2f} epochs); use a larger corpus, lower the budgets, or "
            "shift the sizes (sizes.tokens_per_param)"
        )
    if over:
        print(
            f"warning: {len(over)} run(s) would train on more than one epoch of the "
            f"{unique:,} training tokens (e.g. {over[0].name}); the report marks them"
        )
    write_plan(sweep_dir, spec, runs)  # plan files only: a dry run trains nothing
    return unique


def run_sweep(cfg: DictConfig) -> int:
    sweep_dir = SweepDir(Path(HydraConfig.get().sweep.dir).resolve())
    if not isinstance(cfg.mps, bool):
        raise ConfigError(f"mps: expected true or false, got {cfg.mps!r}")
    within = cfg.get("finish_within")
    if within is not None and (
        isinstance(within, bool) or not isinstance(within, int | float) or within <= 0
    ):
        raise ConfigError(f"finish_within: expected seconds > 0 or null, got {within!r}")
    spec = SweepSpec.from_dict(OmegaConf.to_container(cfg.sweep, resolve=True))
    spec.train = [*spec.train, *cfg.train_overrides]
    only_variants = list(cfg.get("variants") or [])
    unknown = [v for v in only_variants if v not in (spec.variants or {})]
    if unknown:
        raise ConfigError(
            f"variants={unknown}: not among the spec's variants {list(spec.variants or [])}"
        )
    t0 = time.time()
    # An LR-tuning budget (and, with lr_grid=auto, up to two extensions of its grid), then the
    # budgets it informs; with sizes.extend, a round for each size added beyond a group's edge.
    for _ in range(2 + MAX_LR_EXTENSIONS + spec.sizes.extend):
        runs, configs, note = plan_sweep(spec, sweep_dir, [float(b) for b in cfg.budgets])
        names = {r.run_id: r.name for r in runs}
        ids = [r.run_id for r in runs]
        states = sweep_dir.states(ids)
        if cfg.action == "status":
            print(format_status(states, names) + (f"\n{note}" if note else ""))
            log = sweep_dir.throughput_log()
            if log:
                print(format_efficiency(log))
            return 0 if all(s == "done" for s, _, _ in states.values()) else 1
        unique = show_plan(spec, sweep_dir, runs, configs, states, note)
        todo = to_train(states, cfg.retry_failed)
        if only_variants:  # the others stay planned (and reported) but wait
            todo = of_variants(todo, runs, only_variants)
        if cfg.action == "plan":
            return 0
        if cfg.action == "render":
            return render_sweep(sweep_dir.path, spec.name, spec.train, len(todo) or len(runs))
        if not todo:
            print(f"nothing to train: {format_status(states, names).splitlines()[0]}")
            break
        todo.sort(key=launch_order(runs))
        cost = {r.run_id: tc for r, tc in zip(runs, configs)}
        user = list(HydraConfig.get().overrides.hydra)
        how = launch_plan(cfg, [cost[rid] for rid in todo], user, sweep_dir, unique or 0, cost)
        before = sweep_dir.steps_done(todo)
        work = work_of(runs)
        if within is not None:
            todo = finishing(sweep_dir, todo, work, cost, before, how.jobs, t0 + within)
            if not todo:
                break
        launched = ({r: before[r] for r in todo}, {r: states[r] for r in todo})
        t_launch = time.time()
        with mps_daemon(how.packed and cfg.mps) as mps_note:
            if how.packed:
                print(mps_note, flush=True)
            code = launch(sweep_dir, spec, todo, cfg.retry_failed, how.overrides, how.env)
        n_gpus, _, peak = gpus()
        under = {"runs_at_once": how.jobs, "mps": mps_note if how.packed else None}
        entry = sweep_dir.record_throughput(
            before, work, time.time() - t_launch, n_gpus, peak, under
        )
        print(format_efficiency([entry]))
        if code >= 128:  # the runs were interrupted by a signal: stop here as well
            print(format_status(sweep_dir.states(ids), names))
            return code
        if (sweep_dir.steps_done(todo), sweep_dir.states(todo)) == launched:
            # nothing trained and nothing changed (runs refused before training, say): another
            # round would launch the same runs to the same end
            print("a round trained nothing and changed no run: not launching it again")
            break
        if not (note and note.startswith("LR tuning first")) and not spec.sizes.extend:
            break
    states = sweep_dir.states(ids)
    print(format_status(states, names))
    print(f"sweep wall time {time.time() - t0:.0f}s")
    reported = report(sweep_dir, ids, list(spec.variants or [])) if cfg.report else True
    return 0 if reported and all(s == "done" for s, _, _ in states.values()) else 1


def main(cfg: DictConfig) -> None:
    """The driver's entry (``python -m experiments.sweep``, experiments/sweep/__main__.py)."""
    try:
        code = run_sweep(cfg)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    # Should exiting ever take over 60 s, every thread's stack goes to stderr. (The one such
    # wait seen, 240 s on the H200 on 2026-12-02, turned out to be the device script's timer
    # holding the call's pipe after the driver had exited.)
    faulthandler.dump_traceback_later(60, exit=False)
    sys.exit(code)
