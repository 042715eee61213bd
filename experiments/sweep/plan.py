"""Sweep spec -> IsoFLOP grid of runs (budgets x sparsities x sizes x lrs x seeds), no model built.

For each budget C and sparsity S the planner predicts the compute-optimal size with a simple
rule (tokens = tokens_per_param x N, N = active non-embedding params by default) and picks
``sizes.count`` family members spaced ``sizes.spacing``x apart in N around it, so the IsoFLOP
parabola's minimum can be bracketed. It refuses a grid it cannot centre on that prediction
(the family is too narrow) rather than silently shifting it. Every run is a complete set of
experiments.train overrides.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from experiments.sweep.branches import branch_plan
from experiments.sweep.edges import Extensions
from experiments.sweep.spec import SweepSpec
from models import ConfigError
from models.accounting import account


@dataclass
class PlannedRun:
    name: str  # human-readable: b<budget>_E<e>k<k>_d<d_model>[_lr<lr>]_s<seed>
    overrides: dict  # nested dict of experiments.train values
    budget: float
    d_model: int
    n_layers: int
    num_experts: int
    top_k: int
    sparsity: float
    params_total: int
    params_active: int
    n_rule: int  # the N the size rule is about
    n_target: float  # the rule's predicted optimum N at this budget
    tokens: int
    steps: int
    flops: float
    lr: float
    batch_size: int
    run_id: str = ""
    role: str = "run"  # run | trunk | branch | control (experiments/sweep/branches.py)
    trunk: str = ""  # a branch's trunk (its planned name)
    trunk_step: int = 0  # the trunk's step a branch starts from
    trained_flops: float = 0.0  # what the run computes itself (a branch: its decay); 0: flops


def size_overrides(
    spec: SweepSpec,
    d_model: int,
    E: int,
    K: int,
    seed: int,
    budget: float,
    lr: float | None,
    batch: int | None,
    variant: str | None = None,
) -> dict:
    out = {
        "model": spec.family.member(d_model),
        "moe": {"num_experts": E, "top_k": K, "granularity": spec.granularity},
        "budget": {"flops": budget},
        "seed": seed,
        "sweep_name": spec.name,
    }
    if variant is not None:
        out["variant"] = variant
    if lr is not None:
        out["optim"] = {"lr": lr}
    if batch is not None:
        out["train"] = {"batch_size": batch}
    return out


Compose = Callable[..., object]  # (overrides, check_steps) -> TrainConfig


def plan(
    spec: SweepSpec,
    compose: Compose,
    lr_rule: Callable | None = None,
    budgets: list[float] | None = None,
    extra_lrs: dict | None = None,
    variant: str | None = None,
    extensions: Extensions | None = None,
) -> list[PlannedRun]:
    """``compose(overrides, check_steps) -> TrainConfig`` builds the exact config
    experiments.train will see for those overrides. ``lr_rule(TrainConfig) -> lr`` sets the
    learning rate of budgets other than ``lr_tuning_budget``; ``budgets`` plans a subset;
    ``extra_lrs`` {(d_model, E/K): [lr, ...]}: LRs tried beyond the grid at tuned points;
    ``extensions``: sizes added beyond the edges of groups (experiments/sweep/edges.py)."""
    widths = spec.family.widths(spec.granularity)
    if not widths:
        raise ConfigError("sweep.family: no d_model in [d_model_min, d_model_max] fits the rule")
    runs: list[PlannedRun] = []
    for b, budget in enumerate(spec.budgets):
        if budgets is not None and budget not in budgets:
            continue
        batch = spec.batch_sizes[b] if spec.batch_sizes else None
        tuned = spec.lr_tuning_budget is not None and budget != spec.lr_tuning_budget
        if tuned and lr_rule is None:
            raise ConfigError(
                f"budget {budget:.3g}: its learning rates come from the tuning "
                f"budget {spec.lr_tuning_budget:.3g}, whose runs are not done"
            )
        for E, K in spec.sparsity.expert_pairs():
            cands = [
                compose(
                    size_overrides(spec, d, E, K, spec.seeds[0], budget, None, batch, variant),
                    check_steps=False,
                )
                for d in widths
            ]
            pairs = spec.sparsity.expert_pairs()
            tpp = spec.sizes.rule(pairs.index((E, K)), len(pairs), E / K)
            chosen, target = bracket(spec, budget, cands, tpp)
            if extensions is not None:
                chosen = extensions.widen((variant, budget, E, K), cands, chosen, spec)
            seeds = list(spec.seeds)
            if spec.replicated(budget, 1 - K / E):
                seeds += [s for s in spec.replicates.seeds if s not in seeds]
            for tc in chosen:
                key = (tc.model.d_model, E / K)
                lrs = [lr_rule(tc)] if tuned else (spec.lrs or [None])
                if not tuned and spec.lrs:
                    lrs = [*lrs, *[x for x in (extra_lrs or {}).get(key, []) if x not in lrs]]
                for lr in lrs:
                    for seed in seeds:
                        ov = size_overrides(
                            spec, tc.model.d_model, E, K, seed, budget, lr, batch, variant
                        )
                        runs.append(_planned(spec, compose(ov), ov, target))
    if spec.schedule.kind == "wsd_branches":
        runs = branch_plan(spec, runs, compose, lambda tc, ov, t: _planned(spec, tc, ov, t))
    return runs


def rule_n(spec: SweepSpec, tc) -> int:
    return getattr(account(tc.model), spec.sizes.param_count)


def bracket(spec: SweepSpec, budget: float, cands: list, tpp: float) -> tuple[list, float]:
    """The ``count`` candidates centred on the rule's optimum at this budget, and that optimum.

    The optimum is the N where C / (flops_per_token(N) * N) = tpp (the tokens per parameter
    of this sparsity, SizesSpec.rule), interpolated in log N between family members."""
    sz = spec.sizes
    ratios = [math.log(budget / (tc.flops_per_token * rule_n(spec, tc)) / tpp) for tc in cands]
    ns = [math.log(rule_n(spec, tc)) for tc in cands]
    where = f"budget {budget:.3g}, E={cands[0].model.moe.num_experts} K={cands[0].model.moe.top_k}"
    if ratios[0] < 0:
        raise ConfigError(
            f"{where}: even the smallest model (d_model={cands[0].model.d_model}) gets fewer "
            f"than {tpp:.3g} tokens/param; raise the budget or lower "
            "sweep.family.d_model_min"
        )
    i = next((j for j, r in enumerate(ratios) if r < 0), None)
    if i is None:
        raise ConfigError(f"{where}: the optimum lies above d_model_max; raise it")
    t = ratios[i - 1] / (ratios[i - 1] - ratios[i])
    target = math.exp(ns[i - 1] + t * (ns[i] - ns[i - 1]))
    if sz.spacing == "consecutive":
        return _check_steps(sz, where, _window(sz.count, ns, target, where, cands)), target
    wanted = [
        math.log(target) + math.log(sz.spacing) * (k - (sz.count - 1) / 2) for k in range(sz.count)
    ]
    picked = sorted({min(range(len(cands)), key=lambda j: abs(ns[j] - w)) for w in wanted})
    centre = sum(ns[j] for j in picked) / max(len(picked), 1)
    if len(picked) < sz.count or abs(centre - math.log(target)) > math.log(sz.spacing) / 2:
        lo, hi = cands[0].model.d_model, cands[-1].model.d_model
        raise ConfigError(
            f"{where}: the family cannot centre {sz.count} sizes spaced x{sz.spacing} on the "
            f"rule's optimum N~{_human(target)} (members span d_model {lo}-{hi}, "
            f"N {_human(math.exp(ns[0]))}-{_human(math.exp(ns[-1]))}, step "
            f"{spec.family.d_model_step}); widen sweep.family.d_model_min/d_model_max, use a "
            "finer d_model_step, or change sizes.spacing/count"
        )
    return _check_steps(sz, where, [cands[j] for j in picked]), target


def _window(count: int, ns: list[float], target: float, where: str, cands: list) -> list:
    """The ``count`` neighbouring members whose mean log N is nearest log(target); refused
    when the family has fewer members or the target is not inside the window."""
    if len(ns) < count:
        raise ConfigError(
            f"{where}: the family has {len(ns)} members, fewer than sizes.count={count}; "
            "widen sweep.family.d_model_min/d_model_max"
        )
    starts = range(len(ns) - count + 1)
    best = min(starts, key=lambda a: abs(sum(ns[a : a + count]) / count - math.log(target)))
    last = best + count - 1
    # the window's ends reach half way to the members outside it
    lo = (ns[best] + ns[best - 1]) / 2 if best > 0 else ns[best]
    hi = (ns[last] + ns[last + 1]) / 2 if last + 1 < len(ns) else ns[last]
    if not lo <= math.log(target) <= hi:
        raise ConfigError(
            f"{where}: the rule's optimum N~{_human(target)} is not inside {count} neighbouring "
            "members of the family; widen sweep.family.d_model_min/d_model_max"
        )
    return cands[best : best + count]


def _check_steps(sz, where: str, chosen: list) -> list:
    for tc in chosen:
        if tc.steps < sz.min_steps:
            raise ConfigError(
                f"{where}: d_model={tc.model.d_model} gets only {tc.steps} steps (< "
                f"sweep.sizes.min_steps={sz.min_steps}); raise the budget, shrink the batch, or "
                "narrow the sizes"
            )
    return chosen


def _planned(spec: SweepSpec, tc, overrides: dict, target: float) -> PlannedRun:
    acc = account(tc.model)
    m = tc.model
    tokens = tc.steps * tc.tokens_per_step
    lr = f"_lr{tc.optim.lr:g}" if spec.lrs else ""
    wsd = "_wsd" if tc.optim.schedule == "wsd" else ""
    wsd += f"_{tc.variant}" if tc.variant else ""
    return PlannedRun(
        name=f"b{tc.budget.flops:.2g}_E{m.moe.num_experts}k{m.moe.top_k}_d{m.d_model}{lr}"
        f"_s{tc.seed}{wsd}",
        overrides=overrides,
        budget=tc.budget.flops,
        d_model=m.d_model,
        n_layers=m.n_layers,
        num_experts=m.moe.num_experts,
        top_k=m.moe.top_k,
        sparsity=acc.sparsity,
        params_total=acc.params_total,
        params_active=acc.params_active,
        n_rule=rule_n(spec, tc),
        n_target=target,
        tokens=tokens,
        steps=tc.steps,
        flops=tokens * tc.flops_per_token,
        lr=tc.optim.lr,
        batch_size=tc.train.batch_size,
    )


def _human(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def format_table(
    runs: list[PlannedRun], statuses: dict[str, str], unique_tokens: int | None = None
) -> str:
    lines = []
    head = (
        f"{'run':<34} {'d':>5} {'L':>3} {'E':>4} {'K':>3} {'S':>6} {'N_total':>9} "
        f"{'N_active':>9} {'tokens':>9} {'D/N':>6} {'steps':>6} {'epochs':>6}  status"
    )
    for budget in sorted({r.budget for r in runs}):
        group = [r for r in runs if r.budget == budget]
        lines.append(
            f"\nbudget C = {budget:.3g} FLOPs  (rule optimum N ~ "
            f"{_human(group[0].n_target)} at sparsity {group[0].sparsity:.3f})"
        )
        lines.append(head)
        for r in group:
            epochs = f"{r.tokens / unique_tokens:6.2f}" if unique_tokens else f"{'?':>6}"
            role = {"trunk": "trunk, ", "control": "cosine control, "}.get(r.role, "")
            if r.role == "branch":
                role = f"branch of {r.trunk} at step {r.trunk_step}, "
            lines.append(
                f"{r.name:<34} {r.d_model:>5} {r.n_layers:>3} {r.num_experts:>4} {r.top_k:>3} "
                f"{r.sparsity:>6.3f} {_human(r.params_total):>9} {_human(r.params_active):>9} "
                f"{_human(r.tokens):>9} {r.tokens / r.n_rule:>6.1f} {r.steps:>6} {epochs}  "
                f"{role}{statuses.get(r.run_id, 'pending')}"
            )
    return "\n".join(lines)
