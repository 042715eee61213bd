"""Sweep spec -> IsoFLOP grid of runs (budgets x sparsities x sizes x seeds), with no model built.

For each budget C and sparsity S the planner predicts the compute-optimal size with a simple
rule (tokens = tokens_per_param x N, N = active non-embedding params by default) and picks
``sizes.count`` family members spaced ``sizes.spacing``x apart in N around it, so the IsoFLOP
parabola's minimum is bracketed. Every run is a complete set of experiments.train overrides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from models import ConfigError, FamilyRule
from models.accounting import account


@dataclass
class SparsitySpec:
    pairs: list[list[int]] | None = None  # explicit (E, K) pairs
    values: list[float] | None = None  # S values, with E = top_k / (1 - S)
    top_k: int = 1

    def expert_pairs(self) -> list[tuple[int, int]]:
        if (self.pairs is None) == (self.values is None):
            raise ConfigError("sweep.sparsity: give exactly one of pairs or values")
        if self.pairs is not None:
            out = [tuple(int(v) for v in p) for p in self.pairs]
            for p in out:
                if len(p) != 2:
                    raise ConfigError(f"sweep.sparsity.pairs: {p} is not an (E, K) pair")
            return out
        out = []
        for s in self.values:
            if not 0 <= s < 1:
                raise ConfigError(f"sweep.sparsity.values: S={s} must be in [0, 1)")
            e = self.top_k / (1 - s)
            if abs(e - round(e)) > 1e-6:
                raise ConfigError(
                    f"sweep.sparsity.values: S={s} with top_k={self.top_k} needs "
                    f"E={e:.3f}, not an integer; choose S = 1 - top_k/E"
                )
            out.append((int(round(e)), self.top_k))
        return out


@dataclass
class FamilySpec(FamilyRule):
    d_model_min: int = 64
    d_model_max: int = 4096
    d_model_step: int = 64


@dataclass
class SizesSpec:
    count: int = 5
    spacing: float = 1.7  # ratio of N between neighbouring sizes
    tokens_per_param: float = 20.0  # rule for the predicted optimum
    param_count: str = "params_active_non_embedding"
    min_steps: int = 100

    def __post_init__(self) -> None:
        if self.count < 1 or self.spacing <= 1 or self.tokens_per_param <= 0:
            raise ConfigError("sweep.sizes: need count >= 1, spacing > 1, tokens_per_param > 0")
        if self.param_count not in ("params_active_non_embedding", "params_active"):
            raise ConfigError(f"sweep.sizes.param_count: unknown {self.param_count!r}")


@dataclass
class SweepSpec:
    name: str
    budgets: list[float]
    sparsity: SparsitySpec
    family: FamilySpec = field(default_factory=FamilySpec)
    sizes: SizesSpec = field(default_factory=SizesSpec)
    granularity: int = 1
    seeds: list[int] = field(default_factory=lambda: [0])
    train: list[str] = field(default_factory=list)  # experiments.train overrides for every run

    @classmethod
    def from_dict(cls, d: dict) -> "SweepSpec":
        d = dict(d)
        try:
            return cls(
                name=d.pop("name"),
                budgets=[float(b) for b in d.pop("budgets")],
                sparsity=SparsitySpec(**d.pop("sparsity")),
                family=FamilySpec(**d.pop("family", {})),
                sizes=SizesSpec(**d.pop("sizes", {})),
                **d,
            )
        except (TypeError, KeyError) as e:
            raise ConfigError(f"sweep spec: {e}") from None


@dataclass
class PlannedRun:
    name: str  # human-readable: b<budget>_E<e>k<k>_d<d_model>_s<seed>
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
    run_id: str = ""


def size_overrides(d_model: int, rule: FamilyRule, E: int, K: int, G: int, seed: int,
                   budget: float, sweep: str) -> dict:
    n_layers = max(1, int(math.floor(d_model / rule.aspect_ratio + 0.5)))
    return {
        "model": {"d_model": d_model, "n_layers": n_layers, "n_heads": d_model // rule.head_dim,
                  "d_ff": rule.ffn_ratio * d_model},
        "moe": {"num_experts": E, "top_k": K, "granularity": G},
        "budget": {"flops": budget},
        "seed": seed,
        "sweep_name": sweep,
    }


def plan(spec: SweepSpec, compose: Callable[[dict], object]) -> list[PlannedRun]:
    """``compose(overrides, check_steps) -> TrainConfig`` builds the exact config
    experiments.train will see for those overrides."""
    fam = spec.family
    widths = [d for d in range(fam.d_model_min, fam.d_model_max + 1, fam.d_model_step)
              if d % fam.head_dim == 0 and (fam.ffn_ratio * d) % spec.granularity == 0]
    if not widths:
        raise ConfigError("sweep.family: no d_model in [d_model_min, d_model_max] fits the rule")
    runs: list[PlannedRun] = []
    for budget in spec.budgets:
        for E, K in spec.sparsity.expert_pairs():
            cands = [compose(size_overrides(d, fam, E, K, spec.granularity, spec.seeds[0],
                                            budget, spec.name), check_steps=False)
                     for d in widths]
            chosen, target = _bracket(spec, budget, cands)
            for tc in chosen:
                for seed in spec.seeds:
                    ov = size_overrides(tc.model.d_model, fam, E, K, spec.granularity, seed,
                                        budget, spec.name)
                    runs.append(_planned(spec, compose(ov), ov, target))
    return runs


def _rule_n(spec: SweepSpec, tc) -> int:
    return getattr(account(tc.model), spec.sizes.param_count)


def _bracket(spec: SweepSpec, budget: float, cands: list) -> tuple[list, float]:
    sz = spec.sizes
    # The rule's optimum: the N where C / (fpt(N) * N) = tokens_per_param, interpolated in log N.
    ratios = [math.log(budget / (tc.flops_per_token * _rule_n(spec, tc)) / sz.tokens_per_param)
              for tc in cands]
    ns = [math.log(_rule_n(spec, tc)) for tc in cands]
    if ratios[0] < 0:
        raise ConfigError(
            f"budget {budget:.3g}: even the smallest model (d_model={cands[0].model.d_model}) "
            f"gets fewer than {sz.tokens_per_param} tokens/param; raise the budget or lower "
            "sweep.family.d_model_min"
        )
    i = next((j for j, r in enumerate(ratios) if r < 0), None)
    if i is None:
        raise ConfigError(f"budget {budget:.3g}: the optimum lies above d_model_max; raise it")
    t = ratios[i - 1] / (ratios[i - 1] - ratios[i])
    target = math.exp(ns[i - 1] + t * (ns[i] - ns[i - 1]))
    wanted = [target * sz.spacing ** (k - (sz.count - 1) / 2) for k in range(sz.count)]
    picked: list[int] = []
    for w in wanted:
        order = sorted(range(len(cands)), key=lambda j: abs(ns[j] - math.log(w)))
        picked.append(next((j for j in order if j not in picked), order[0]))
    chosen = [cands[j] for j in sorted(set(picked))]
    for tc in chosen:
        if tc.steps < sz.min_steps:
            raise ConfigError(
                f"budget {budget:.3g}, E={tc.model.moe.num_experts} K={tc.model.moe.top_k}: "
                f"d_model={tc.model.d_model} gets only {tc.steps} steps (< sweep.sizes.min_steps="
                f"{sz.min_steps}); raise the budget, shrink the batch, or narrow the sizes"
            )
    return chosen, target


def _planned(spec: SweepSpec, tc, overrides: dict, target: float) -> PlannedRun:
    acc = account(tc.model)
    m = tc.model
    tokens = tc.steps * tc.tokens_per_step
    return PlannedRun(
        name=f"b{tc.budget.flops:.0e}_E{m.moe.num_experts}k{m.moe.top_k}_d{m.d_model}_s{tc.seed}",
        overrides=overrides, budget=tc.budget.flops, d_model=m.d_model, n_layers=m.n_layers,
        num_experts=m.moe.num_experts, top_k=m.moe.top_k, sparsity=acc.sparsity,
        params_total=acc.params_total, params_active=acc.params_active,
        n_rule=_rule_n(spec, tc), n_target=target, tokens=tokens, steps=tc.steps,
        flops=tokens * tc.flops_per_token,
    )


def _human(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def format_table(runs: list[PlannedRun], statuses: dict[str, str]) -> str:
    lines = []
    head = (f"{'run':<30} {'d':>5} {'L':>3} {'E':>4} {'K':>3} {'S':>6} {'N_total':>9} "
            f"{'N_active':>9} {'tokens':>9} {'D/N':>6} {'steps':>6}  status")
    for budget in sorted({r.budget for r in runs}):
        group = [r for r in runs if r.budget == budget]
        lines.append(f"\nbudget C = {budget:.3g} FLOPs  (rule optimum N ~ "
                     f"{_human(group[0].n_target)} at sparsity {group[0].sparsity:.3f})")
        lines.append(head)
        for r in group:
            lines.append(
                f"{r.name:<30} {r.d_model:>5} {r.n_layers:>3} {r.num_experts:>4} {r.top_k:>3} "
                f"{r.sparsity:>6.3f} {_human(r.params_total):>9} {_human(r.params_active):>9} "
                f"{_human(r.tokens):>9} {r.tokens / r.n_rule:>6.1f} {r.steps:>6}  "
                f"{statuses.get(r.run_id, 'pending')}"
            )
    return "\n".join(lines)
