"""A sweep's spec (conf/sweep/*.yaml), typed and checked before anything is planned: budgets,
sparsities, the model family, the sizes rule, seeds, LRs and replicate groups."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from models import ConfigError
from models.typed import Typed, check
from models.typed import from_dict as build

ParamCount = Literal["params_active_non_embedding", "params_active"]


@dataclass
class SparsitySpec(Typed):
    section: ClassVar[str] = "sweep.sparsity"

    pairs: list[list[int]] | None = None
    """Explicit (E, K) pairs."""
    values: list[float] | None = None
    """S values, with E = top_k / (1 - S)."""
    top_k: int = 1
    """K used with ``values``."""

    def expert_pairs(self) -> list[tuple[int, int]]:
        if (self.pairs is None) == (self.values is None):
            raise ConfigError("sweep.sparsity: give exactly one of pairs or values")
        if self.pairs is not None:
            out = [tuple(p) for p in self.pairs]
            for p in out:
                check(len(p) == 2, "sweep.sparsity.pairs", f"{list(p)} is not an (E, K) pair")
            return out
        out = []
        for s in self.values:
            check(0 <= s < 1, "sweep.sparsity.values", f"S={s} must be in [0, 1)")
            e = self.top_k / (1 - s)
            check(
                abs(e - round(e)) <= 1e-6,
                "sweep.sparsity.values",
                f"S={s} with top_k={self.top_k} needs E={e:.3f}, not an integer; "
                "choose S = 1 - top_k/E",
            )
            out.append((round(e), self.top_k))
        return out


@dataclass
class FamilySpec(Typed):
    """How the family's members are shaped from d_model alone (the one free size knob):
    n_layers = max(1, round(d_model / aspect_ratio)) (or a fixed ``n_layers``), n_heads =
    d_model / head_dim, d_ff = ffn_ratio * d_model. Aspect ratio 64 gives GPT-2-like shapes
    (768 -> 12 layers). At very small widths the rounded depth jumps (1 -> 2 layers doubles N),
    too coarse a ladder to centre sizes on; a fixed depth keeps N growing smoothly with d^2."""

    section: ClassVar[str] = "sweep.family"

    aspect_ratio: int = 64
    n_layers: int | None = None
    head_dim: int = 64
    ffn_ratio: int = 4
    d_model_min: int = 64
    d_model_max: int = 4096
    d_model_step: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("aspect_ratio", "head_dim", "ffn_ratio", "d_model_min", "d_model_step"):
            check(getattr(self, name) >= 1, f"sweep.family.{name}", "must be >= 1")
        check(
            self.n_layers is None or self.n_layers >= 1,
            "sweep.family.n_layers",
            "must be >= 1 (or null)",
        )
        check(self.head_dim % 2 == 0, "sweep.family.head_dim", "must be even (rotary)")
        check(
            self.d_model_max >= self.d_model_min,
            "sweep.family.d_model_max",
            "must be >= d_model_min",
        )

    def member(self, d_model: int) -> dict:
        """The model overrides of the family member of width d_model."""
        check(
            d_model % self.head_dim == 0,
            "model.d_model",
            f"d_model={d_model} must be a multiple of family.head_dim={self.head_dim}",
        )
        layers = self.n_layers or max(1, math.floor(d_model / self.aspect_ratio + 0.5))
        return {
            "d_model": d_model,
            "n_layers": layers,
            "n_heads": d_model // self.head_dim,
            "d_ff": self.ffn_ratio * d_model,
        }

    def widths(self, granularity: int) -> list[int]:
        return [
            d
            for d in range(self.d_model_min, self.d_model_max + 1, self.d_model_step)
            if d % self.head_dim == 0 and (self.ffn_ratio * d) % granularity == 0
        ]


@dataclass
class SizesSpec(Typed):
    section: ClassVar[str] = "sweep.sizes"

    count: int = 5
    """Sizes per (budget, sparsity); >= 4 lets the parabola's interval be estimated."""
    spacing: float | Literal["consecutive"] = 1.7
    """Ratio of N between neighbouring sizes; ``consecutive``: neighbouring members of the
    family (the ladder's own spacing, for a coarse ladder such as d in steps of a head_dim)."""
    tokens_per_param: float | list[float] = 20.0
    """The rule for the predicted optimum: tokens = tokens_per_param x N; one value, or one
    per sparsity level (in the order of sweep.sparsity)."""
    tokens_per_param_exponent: float = 0.0
    """A prior for sparse optima: at E = 1/(1-S) the rule's tokens_per_param is multiplied by
    E^exponent, so sparser groups centre on fewer active parameters trained on more tokens
    (Abnar et al.; the joint-MoE law at 1e16 has D/N ~8 dense vs ~180 at E=16: exponent ~1.1).
    0: every sparsity is centred on the same active sizes."""
    param_count: ParamCount = "params_active_non_embedding"
    """Which N the rule is about."""
    min_steps: int = 100
    """Refuse sizes that would train for fewer optimiser steps."""
    extend: int = 0
    """Up to this many sizes added beyond a group's smallest or largest size when, its runs
    all done, its lowest loss sits there (experiments/sweep/edges.py); 0: the sizes above."""
    max_epochs: float | None = 1.0
    """Refuse a plan with a run that would see its corpus's training tokens more than this
    many times (a scaling-law point that repeats its data is another experiment); null: warn."""

    def __post_init__(self) -> None:
        super().__post_init__()
        tpp = (
            self.tokens_per_param
            if isinstance(self.tokens_per_param, list)
            else [self.tokens_per_param]
        )
        check(
            self.count >= 1
            and (self.spacing == "consecutive" or self.spacing > 1)
            and min(tpp) > 0,
            "sweep.sizes",
            "need count >= 1, spacing > 1 (or consecutive), tokens_per_param > 0",
        )
        check(self.extend >= 0, "sweep.sizes.extend", "must be >= 0")
        check(
            self.max_epochs is None or self.max_epochs > 0,
            "sweep.sizes.max_epochs",
            "must be > 0 (or null)",
        )

    def rule(self, level: int, n_levels: int, experts: float) -> float:
        """The tokens per parameter the optimum rule uses at sparsity level ``level``."""
        tpp = self.tokens_per_param
        if isinstance(tpp, list):
            check(
                len(tpp) == n_levels,
                "sweep.sizes.tokens_per_param",
                f"give one value per sparsity level ({n_levels}), got {len(tpp)}",
            )
            tpp = tpp[level]
        return float(tpp) * experts**self.tokens_per_param_exponent


@dataclass
class ReplicateSpec(Typed):
    section: ClassVar[str] = "sweep.replicates"

    seeds: list[int]
    """Seeds run in addition to the spec's seeds."""
    groups: list[list[float]]
    """[budget, sparsity] pairs whose every size gets the extra seeds."""


@dataclass
class ScheduleSpec(Typed):
    section: ClassVar[str] = "sweep.schedule"

    kind: Literal["cosine", "wsd_branches"] = "cosine"
    """cosine: every run its own cosine schedule (the train overrides' optim). wsd_branches:
    one WSD trunk per (size, sparsity, seed, LR) to the largest budget it is planned at, and a
    cooldown branch from it at each smaller budget (experiments/sweep/branches.py)."""
    cooldown: float = 0.2
    """The decay's share of each WSD run's steps (Hägele et al. 2024: ~20% tracks cosine)."""
    decay_shape: Literal["linear", "1-sqrt"] = "1-sqrt"
    """The decay's shape (optim.decay_shape)."""
    cosine_controls: list[float] = field(default_factory=list)
    """Budgets at which every point also gets its cosine run: the report prints the paired
    WSD-minus-cosine difference per sparsity."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.cooldown < 1, "sweep.schedule.cooldown", "must be in (0, 1)")
        check(
            self.kind == "wsd_branches" or not self.cosine_controls,
            "sweep.schedule.cosine_controls",
            "controls compare against WSD branches: set kind=wsd_branches",
        )


@dataclass
class SweepSpec(Typed):
    section: ClassVar[str] = "sweep"

    name: str
    budgets: list[float]
    sparsity: SparsitySpec
    family: FamilySpec = field(default_factory=FamilySpec)
    sizes: SizesSpec = field(default_factory=SizesSpec)
    granularity: int = 1
    seeds: list[int] = field(default_factory=lambda: [0])
    lrs: list[float] | None = None
    """Learning rates to try at every point (None: the optim.lr of the train overrides)."""
    lr_tuning_budget: float | None = None
    """Try ``lrs`` at this budget only; every other budget's runs take the LR that a log-linear
    fit in (N_active, E) of the best tuned LRs predicts (experiments/sweep/lr_rule.py)."""
    lr_grid: Literal["fixed", "auto"] = "fixed"
    """auto: where a tuned point's best LR is the smallest or largest it tried, the sweep tries
    one grid step beyond it (up to two steps past the spec's grid), then fits the rule."""
    lr_rule_at_edge: Literal["refuse", "warn"] = "refuse"
    """An LR rule fitted on more than a third of its points at the edge of their grids is
    refused (with the grid that would fix it); warn: planned with a warning."""
    replicates: ReplicateSpec | None = None
    """Extra seeds at a few (budget, sparsity) groups: the noise floor the fits are read
    against."""
    batch_sizes: list[int] | None = None
    """One train.batch_size per budget (None: the train overrides' batch size for all)."""
    train: list[str] = field(default_factory=list)
    """experiments.train overrides applied to every run."""
    variants: dict[str, list[str]] | None = None
    """Named sets of train overrides, each a variant of the whole grid (an axis beside
    sparsity), e.g. {mha: [], mla: [model.attention=mla]}: every run is planned once per
    variant, records its variant, and the analysis fits each apart (analysis.compare sets
    them side by side)."""
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    """The LR schedule of the sweep's runs: each its own (cosine), or WSD trunks and branches."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.budgets) >= 1, "sweep.budgets", "give at least one budget")
        if self.variants is not None:
            check(len(self.variants) >= 1, "sweep.variants", "give at least one variant")
            bad = [v for v in self.variants if not str(v).replace("_", "").isalnum()]
            check(not bad, "sweep.variants", f"{bad}: name variants with letters, digits, '_'")
            check(
                self.lr_tuning_budget is None,
                "sweep.variants",
                "an LR-tuning budget fits one LR rule; tune each variant in a sweep of its own",
            )
        unknown = [
            b
            for b in self.schedule.cosine_controls
            if not any(abs(b - x) <= 1e-9 * x for x in self.budgets)
        ]
        check(
            not unknown,
            "sweep.schedule.cosine_controls",
            f"{unknown} are not among sweep.budgets {self.budgets}",
        )
        check(len(self.seeds) >= 1, "sweep.seeds", "give at least one seed")
        if self.sizes.extend:
            check(
                self.lr_tuning_budget is None and self.schedule.kind != "wsd_branches",
                "sweep.sizes.extend",
                "extends sizes of independent runs only: not with an LR-tuning budget (its "
                "points make the LR rule) or WSD branches (a size shares its trunk)",
            )
        if self.lr_tuning_budget is not None:
            check(
                self.lr_tuning_budget in self.budgets and bool(self.lrs),
                "sweep.lr_tuning_budget",
                "must be one of sweep.budgets, with a grid in sweep.lrs",
            )
        if self.batch_sizes is not None:
            check(
                len(self.batch_sizes) == len(self.budgets),
                "sweep.batch_sizes",
                f"give one batch size per budget ({len(self.budgets)})",
            )
        if self.replicates is not None:
            sparsities = [1 - K / E for E, K in self.sparsity.expert_pairs()]
            for group in self.replicates.groups:
                check(
                    len(group) == 2,
                    "sweep.replicates.groups",
                    f"{group} is not a [budget, sparsity] pair",
                )
                # A group that matches nothing would silently plan no noise-floor runs.
                check(
                    self.replicated(*group, among=(self.budgets, sparsities)),
                    "sweep.replicates.groups",
                    f"{group} matches no (budget, sparsity) of the spec: budgets "
                    f"{self.budgets}, sparsities {[round(x, 6) for x in sparsities]}",
                )

    def replicated(self, budget: float, sparsity: float, among=None) -> bool:
        """Whether (budget, sparsity) is one of the replicate groups, or with ``among`` =
        (budgets, sparsities), whether it is one of those pairs. Budgets agree to 1e-9
        relative and sparsities to 1e-6: S = 1 - K/E need not equal the written 0.9375 bit
        for bit."""
        if among is not None:
            pairs = [(b, x) for b in among[0] for x in among[1]]
        else:
            pairs = self.replicates.groups if self.replicates else []
        return any(
            abs(budget - b) <= 1e-9 * max(abs(budget), abs(b)) and abs(sparsity - x) <= 1e-6
            for b, x in pairs
        )

    @classmethod
    def from_dict(cls, d: dict) -> SweepSpec:
        return build(cls, d)
