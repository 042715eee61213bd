"""The training run's typed configuration, built from Hydra's YAML and validated on load.

Everything that can be checked without touching data or torch is checked here, so a bad run
(or a bad sweep) fails in seconds with one line naming the field.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from experiments.data import DataConfig, DataError
from models import ConfigError, ModelConfig, MoEConfig, flops_per_token

SCHEDULES = ("cosine", "wsd", "constant")


@dataclass
class OptimConfig:
    lr: float = 3e-3
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    schedule: str = "cosine"
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    decay_fraction: float = 0.2  # WSD: the last fraction of steps decays linearly

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule: unknown {self.schedule!r}; choose one of {SCHEDULES}")
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        for name in ("weight_decay", "grad_clip", "min_lr_ratio"):
            if getattr(self, name) < 0:
                raise ConfigError(f"optim.{name} must be >= 0")
        for name in ("warmup_fraction", "decay_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"optim.{name} must be in [0, 1)")


@dataclass
class BudgetConfig:
    flops: float = 3e12

    def __post_init__(self) -> None:
        self.flops = float(self.flops)
        if not self.flops > 0:
            raise ConfigError(f"budget.flops must be > 0, got {self.flops}")


@dataclass
class LoopConfig:
    batch_size: int = 16  # sequences per optimiser step
    eval_tokens: int = 16384  # size of the fixed held-out validation set
    eval_every: int = 0  # steps between validation evaluations; 0 = only at the end
    divergence_factor: float = 2.0  # fail when the loss exceeds this x the first loss
    compile: bool = False
    nan_at_step: int | None = None  # fault injection (tests): the loss becomes NaN at this step

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("train.batch_size must be >= 1")
        if self.eval_tokens < 1:
            raise ConfigError("train.eval_tokens must be >= 1")
        if self.divergence_factor <= 1:
            raise ConfigError("train.divergence_factor must be > 1")


@dataclass
class RunConfig:
    """Where and how the run is recorded; not part of the run's identity (its hash)."""

    root: str = "runs"
    dir: str | None = None  # default: <root>/<run_id>
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoint: bool = True
    stop_after_steps: int | None = None  # leave the run resumable after this many steps
    retry_failed: bool = False
    device: str = "auto"
    peak_flops: float | None = None  # for MFU; default: datasheet bf16 peak of known GPUs

    def __post_init__(self) -> None:
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise ConfigError("run.log_every and run.checkpoint_every must be >= 1")


@dataclass
class TrainConfig:
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    run: RunConfig = field(default_factory=RunConfig)
    seed: int = 0
    sweep_name: str | None = None

    # -- derived quantities (the budget defines the run) --
    @property
    def tokens_per_step(self) -> int:
        return self.train.batch_size * self.model.seq_len

    @property
    def flops_per_token(self) -> int:
        return flops_per_token(self.model)

    @property
    def steps(self) -> int:
        """Optimiser steps the budget buys, rounded to the nearest whole step."""
        return int(math.floor(self.budget.flops / (self.flops_per_token * self.tokens_per_step) + 0.5))

    def identity(self) -> dict:
        """The fields that define the run's result (everything but `run`)."""
        d = asdict(self)
        d.pop("run")
        d["data"].pop("cache_dir")
        return d


def _build(cls, section: str, values: dict | None, **extra):
    values = dict(values or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{section}: unknown field(s) {unknown}; known: {sorted(known)}")
    return cls(**values, **extra)


def from_dict(cfg: dict, check_steps: bool = True) -> TrainConfig:
    """Build and validate a TrainConfig from a resolved plain dict (Hydra's config).

    ``check_steps=False`` lets the planner size candidates that its budget cannot afford."""
    cfg = dict(cfg)
    allowed = {"model", "moe", "data", "optim", "budget", "train", "run", "seed", "sweep_name"}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ConfigError(f"unknown top-level config key(s) {unknown}")
    try:
        data = _build(DataConfig, "data", cfg.get("data"))
    except TypeError as e:
        raise ConfigError(f"data: {e}") from None
    moe = _build(MoEConfig, "moe", cfg.get("moe"))
    model = _build(ModelConfig, "model", cfg.get("model"), moe=moe)
    if model.vocab_size != data.vocab_size:
        raise ConfigError(
            f"model.vocab_size={model.vocab_size} differs from data.vocab_size={data.vocab_size}"
        )
    tc = TrainConfig(
        model=model,
        data=data,
        optim=_build(OptimConfig, "optim", cfg.get("optim")),
        budget=_build(BudgetConfig, "budget", cfg.get("budget")),
        train=_build(LoopConfig, "train", cfg.get("train")),
        run=_build(RunConfig, "run", cfg.get("run")),
        seed=int(cfg.get("seed", 0)),
        sweep_name=cfg.get("sweep_name"),
    )
    if check_steps:
        check_budget(tc)
    return tc


def check_budget(tc: TrainConfig, min_steps: int = 1) -> None:
    if tc.steps < min_steps:
        need = min_steps * tc.flops_per_token * tc.tokens_per_step
        raise ConfigError(
            f"budget.flops={tc.budget.flops:.3g} buys {tc.steps} optimiser steps of "
            f"{tc.tokens_per_step} tokens at {tc.flops_per_token:.3g} FLOPs/token; "
            f"need at least {min_steps} (budget.flops >= {need:.3g})"
        )


__all__ = ["TrainConfig", "from_dict", "check_budget", "ConfigError", "DataError"]
