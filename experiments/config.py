"""The training run's typed configuration: the one place its defaults live.

The dataclasses below (and ModelConfig/MoEConfig/DataConfig) are the schema: their defaults are
registered in Hydra's ConfigStore as ``train_defaults``, which conf/train.yaml composes first,
so the YAML presets hold only what differs. Every value is type- and range-checked on load
(models/typed.py), so a bad run or sweep fails in seconds with one line naming the field.
Fields marked LOGISTICS (where and how a run is recorded) are not part of the run's identity.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar, Literal

from experiments.data.dataset import DataConfig, DataError, with_corpus
from models import ConfigError, ModelConfig, MoEConfig, flops_per_token
from models.typed import LOGISTICS, Typed, check, choices, identity
from models.typed import from_dict as build

Schedule = Literal["cosine", "wsd", "constant"]
SCHEDULES = choices(Schedule)
KeepFinal = Literal["none", "weights", "checkpoint"]
DecayShape = Literal["linear", "1-sqrt"]
Parallel = Literal["auto", "ddp", "fsdp"]


@dataclass
class OptimConfig(Typed):
    """AdamW and its learning-rate schedule (experiments/optim.py)."""

    section: ClassVar[str] = "optim"

    lr: float = 3e-3
    """Peak learning rate."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW (beta1, beta2). Porian et al. 2024: beta2 = 0.95 is too low at small batches."""
    eps: float = 1e-8
    """AdamW epsilon."""
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices and embeddings (not on norm gains)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip; 0 turns it off."""
    schedule: Schedule = "cosine"
    """cosine (to lr * min_lr_ratio), wsd (warmup-stable-decay) or constant, after warmup."""
    warmup_fraction: float = 0.05
    """Fraction of the steps spent in linear warmup."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of lr (cosine and wsd)."""
    decay_fraction: float = 0.2
    """WSD: the last fraction of steps decays (decay_shape)."""
    decay_shape: DecayShape = "linear"
    """WSD's decay: linear, or 1-sqrt (Hägele et al. 2024: lr x (1 - sqrt(progress)), to
    min_lr_ratio), which they found to track cosine more closely."""
    warmup_steps: int | None = None
    """Warmup in steps, whatever the run's length (None: warmup_fraction of its steps). Runs
    branched from one trunk share it, so they agree with the trunk step for step."""
    name: str = "adamw"
    """The optimizer (experiments/trainer/optim.py: @register_optimizer adds one)."""
    lr_multipliers: dict = field(default_factory=dict)
    """{part of a parameter's name: factor}: those parameters train at lr x factor (e.g.
    {router: 0.5}); the first part that matches a name applies."""

    def __post_init__(self) -> None:
        super().__post_init__()
        from experiments.trainer.optim import OPTIMIZERS

        check(
            self.name in OPTIMIZERS,
            "optim.name",
            f"{self.name!r} is not a registered optimizer ({', '.join(sorted(OPTIMIZERS))})",
        )
        for part, factor in self.lr_multipliers.items():
            check(
                isinstance(part, str)
                and isinstance(factor, (int, float))
                and not isinstance(factor, bool)
                and factor > 0,
                "optim.lr_multipliers",
                f"{part!r}: {factor!r} must be a positive number for a name part",
            )
        check(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        check(all(0 <= b < 1 for b in self.betas), "optim.betas", "must be in [0, 1)")
        for name in ("weight_decay", "grad_clip", "min_lr_ratio"):
            check(getattr(self, name) >= 0, f"optim.{name}", "must be >= 0")
        for name in ("warmup_fraction", "decay_fraction"):
            check(0 <= getattr(self, name) < 1, f"optim.{name}", "must be in [0, 1)")
        check(
            self.warmup_steps is None or self.warmup_steps >= 0,
            "optim.warmup_steps",
            "must be >= 0 (or null)",
        )


@dataclass
class BudgetConfig(Typed):
    section: ClassVar[str] = "budget"

    flops: float = 3e12
    """Training compute: tokens = flops / flops_per_token (models/accounting.py), rounded to
    whole optimiser steps."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.flops > 0, "budget.flops", f"must be > 0, got {self.flops}")


@dataclass
class LoopConfig(Typed):
    section: ClassVar[str] = "train"

    batch_size: int = 16
    """Sequences per optimiser step, over all data-parallel ranks together."""
    micro_batch_size: int | None = None
    """Sequences per forward pass on each rank; the step accumulates the gradients of
    (batch_size / ranks) / micro_batch_size of them. None: the whole rank's batch at once."""
    eval_tokens: int = 16384
    """Tokens of the fixed validation sample (windows spread over every validation document)."""
    eval_every: int = field(default=0, metadata=LOGISTICS)
    """Steps between validation evaluations; 0 = only at the end."""
    divergence_factor: float = 2.0
    """Fail the run when the training loss exceeds this times its first value."""
    compile: Literal["auto", True, False] = field(default="auto", metadata=LOGISTICS)
    """torch.compile the model: auto = the measured-faster choice on CUDA, off on CPU."""
    compile_mode: Literal[
        "auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    ] = field(default="auto", metadata=LOGISTICS)
    """torch.compile's mode; reduce-overhead replays each step as CUDA graphs, which removes
    the per-kernel launch cost that bounds small models. auto: reduce-overhead for steps of
    under 1e13 FLOPs, default above (measured: experiments/trainer/compile.py). max-autotune
    (with CUDA graphs) and max-autotune-no-cudagraphs also time Triton GEMM templates, which
    can take the norms and pointwise ops around a GEMM into it; compilation takes longer. On
    Hopper GPUs with torch 2.11 they fail to compile the native experts' grouped GEMMs, so an
    MoE run there refuses them at setup (experiments/trainer/compile.py)."""
    compile_scope: Literal["blocks", "model"] = field(default="blocks", metadata=LOGISTICS)
    """blocks: compile one transformer block (shared by every layer) and the head, so
    warm-up does not grow with depth; model: the whole model as one graph."""
    nan_at_step: int | None = None
    """Fault injection for tests: the loss becomes NaN at this step."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.batch_size >= 1, "train.batch_size", f"must be >= 1, got {self.batch_size}")
        micro = self.micro_batch_size
        check(
            micro is None or (micro >= 1 and self.batch_size % micro == 0),
            "train.micro_batch_size",
            f"{micro} must be >= 1 and divide train.batch_size={self.batch_size}",
        )
        check(self.eval_tokens >= 1, "train.eval_tokens", "must be >= 1")
        check(self.eval_every >= 0, "train.eval_every", "must be >= 0")
        check(self.divergence_factor > 1, "train.divergence_factor", "must be > 1")


@dataclass
class RunConfig(Typed):
    """Where and how the run is recorded: logistics, not part of the run's identity."""

    section: ClassVar[str] = "run"

    root: str = "runs"
    """Runs go to <root>/<run id> unless run.dir is given."""
    dir: str | None = None
    """An explicit run directory; it must belong to this config (see run.overwrite)."""
    overwrite: bool = False
    """Take over a run.dir that holds another config's run, discarding its files."""
    log_every: int = 50
    """Steps between progress lines and metrics rows (also at least every 20 s)."""
    checkpoint_every_s: float = 600.0
    """Wall-clock seconds between checkpoints (written in the background)."""
    checkpoint_every: int | None = None
    """Also checkpoint every this many steps (tests; None = by time only)."""
    keep_final: KeepFinal = "none"
    """What a finished run keeps: none, its final weights (weights.pt), or the checkpoint."""
    stop_after_steps: int | None = None
    """Leave the run resumable after this many steps."""
    retry_failed: bool = False
    """Retry a run whose training failed (setup failures are always retried)."""
    device: str = "auto"
    """auto = a free GPU slot if CUDA is available, else cpu; or cpu, cuda, cuda:N."""
    gpu_slots: int = 1
    """Runs that may share one GPU (a sweep packing small runs sets this)."""
    threads: int | None = None
    """CPU threads for torch (None: torch's default); a CPU sweep running several runs at once
    gives each one thread."""
    peak_flops: float | None = None
    """Peak FLOP/s per device for MFU; default: the datasheet bf16 peak of known GPUs."""
    parallel: Parallel = "auto"
    """Under torchrun: ddp, fsdp (FSDP2 fully_shard), or auto (FSDP when the model's training
    state would not fit one GPU)."""
    callbacks: list[str] = field(default_factory=lambda: ["metrics", "console"])
    """What the training loop calls (experiments/trainer/callbacks.py): metrics (metrics.jsonl),
    console (the progress line), or package.module:ClassName for one of your own."""
    trackers: list[str] = field(default_factory=list)
    """Live trackers fed the metrics rows (experiments/trainer/trackers.py): tensorboard,
    wandb (offline unless WANDB_API_KEY or WANDB_MODE says otherwise). Never fail a run."""
    keep_steps: list[int] = field(default_factory=list)
    """Keep the training state at exactly these steps (branch-point-<step>.pt), for runs
    branched from this one; each branch removes its point once it holds its own checkpoint."""
    branch_from: str | None = None
    """Start from another run's state at run.branch_step instead of from scratch: its run id
    (a sibling directory of this run's) or its directory. That run must be this run's config
    but for its length (a WSD trunk); the branch then equals this run trained from scratch."""
    branch_step: int | None = None
    """The step of run.branch_from to start from (where this run's decay begins)."""
    branch_wait_s: float = 86400.0
    """How long a branch waits for its trunk to reach run.branch_step before failing."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.log_every >= 1, "run.log_every", "must be >= 1")
        check(self.checkpoint_every_s > 0, "run.checkpoint_every_s", "must be > 0")
        check(
            self.checkpoint_every is None or self.checkpoint_every >= 1,
            "run.checkpoint_every",
            "must be >= 1 (or null)",
        )
        check(self.gpu_slots >= 1, "run.gpu_slots", "must be >= 1")
        check(self.threads is None or self.threads >= 1, "run.threads", "must be >= 1 (or null)")
        check(all(k >= 1 for k in self.keep_steps), "run.keep_steps", "steps must be >= 1")
        check(
            (self.branch_from is None) == (self.branch_step is None),
            "run.branch_from",
            "give run.branch_from and run.branch_step together",
        )
        check(
            self.branch_step is None or self.branch_step >= 1,
            "run.branch_step",
            "must be >= 1",
        )
        check(self.branch_wait_s >= 0, "run.branch_wait_s", "must be >= 0")
        from experiments.trainer.callbacks import check_names

        wrong = check_names(self.callbacks)
        check(wrong is None, "run.callbacks", wrong or "")
        wrong = check_names(self.trackers, trackers=True)
        check(wrong is None, "run.trackers", wrong or "")


@dataclass
class TrainConfig(Typed):
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    run: RunConfig = field(default_factory=RunConfig, metadata=LOGISTICS)
    seed: int = 0
    """Seeds the initialisation and the data order."""
    sweep_name: str | None = None
    """The sweep this run belongs to (set by experiments.sweep.driver)."""
    variant: str | None = None
    """The sweep variant this run belongs to (sweep.variants: e.g. its attention or router
    kind); the analysis fits each variant apart."""

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
        return math.floor(self.budget.flops / (self.flops_per_token * self.tokens_per_step) + 0.5)

    def identity(self) -> dict:
        """The fields that define the run's result (everything but logistics); the corpus by
        its content's fingerprint, not by where it lies. Fields added after the first recorded
        runs enter only when they differ from their defaults (FIRST_IDENTITY_FIELDS), so a new
        option never re-keys the runs a sweep already has."""
        from experiments.data.dataset import corpus_identity

        d = identity(self, FIRST_IDENTITY_FIELDS)
        d["data"]["fingerprint"] = corpus_identity(self.data)
        return d


# Every identity field of the config when the first runs were recorded (70cacf9, the kernel
# study): these enter a run's id at any value, as they did then. Never add to this list: a
# field added later enters only when it differs from its default (models/typed.identity).
FIRST_IDENTITY_FIELDS = frozenset(
    [f"model.{n}" for n in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "seq_len")]
    + [f"model.{n}" for n in ("tie_embeddings", "qk_norm", "rope_theta", "norm_eps", "init_std")]
    + [
        f"model.moe.{n}"
        for n in ("num_experts", "top_k", "granularity", "num_shared_experts", "expert_type")
    ]
    + [f"model.moe.{n}" for n in ("renormalize", "load_balance_coef", "z_loss_coef", "backend")]
    + [f"data.{n}" for n in ("source", "glob", "text_key", "tokenizer", "tokenizer_file")]
    + ["data.vocab_size", "data.val_fraction"]
    + [f"optim.{n}" for n in ("lr", "betas", "eps", "weight_decay", "grad_clip", "schedule")]
    + ["optim.warmup_fraction", "optim.min_lr_ratio", "optim.decay_fraction", "budget.flops"]
    + [f"train.{n}" for n in ("batch_size", "eval_tokens", "divergence_factor", "nan_at_step")]
    + ["seed", "sweep_name"]
)

SECTIONS = {
    "model",
    "moe",
    "data",
    "optim",
    "budget",
    "train",
    "run",
    "seed",
    "sweep_name",
    "variant",
}


def as_dict(tc: TrainConfig) -> dict:
    """A config as plain data in Hydra's layout (``moe`` beside ``model``, lists for tuples):
    what config.yaml records, and what ``from_dict`` reads back into the same config."""
    d = json.loads(json.dumps(asdict(tc)))
    d["moe"] = d["model"].pop("moe")
    return d


def defaults() -> dict:
    """Every field's default as Hydra sees it: ``moe`` is its own top-level group."""
    return as_dict(TrainConfig())


def register_defaults() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="train_defaults", node=defaults())


def from_dict(cfg: dict, check_steps: bool = True, read_corpus: bool = True) -> TrainConfig:
    """Build and validate a TrainConfig from a resolved plain dict (Hydra's config).

    ``check_steps=False`` lets the planner size candidates that its budget cannot afford.
    ``read_corpus``: the one read of the disk (experiments/data/dataset.py ``with_corpus``:
    the corpus exists, a prepared corpus's vocabulary); off, the config is built from the
    values alone (a record of a run made elsewhere)."""
    cfg = dict(cfg)
    unknown = sorted(set(cfg) - SECTIONS)
    if unknown:
        raise ConfigError(f"unknown top-level config key(s) {unknown}")
    try:
        data = build(DataConfig, cfg.get("data"))
        if read_corpus:
            data = with_corpus(data)
        model = dict(cfg.get("model") or {})
        if model.get("vocab_size") == (cfg.get("data") or {}).get("vocab_size"):
            model["vocab_size"] = data.vocab_size  # tied in train.yaml; a corpus may fill it in
        moe = build(MoEConfig, cfg.pop("moe", None))
        cfg["model"] = build(ModelConfig, model | {"moe": moe})
        cfg["data"] = data
        tc = build(TrainConfig, cfg, "config")
    except DataError as e:  # DataConfig's own checks are config errors too
        raise ConfigError(str(e)) from None
    if tc.model.vocab_size != tc.data.vocab_size:
        raise ConfigError(
            f"model.vocab_size={tc.model.vocab_size} differs from "
            f"data.vocab_size={tc.data.vocab_size}"
        )
    if check_steps:
        check_budget(tc)
        from experiments.trainer.branching import check_branching

        check_branching(tc)
    return tc


def check_budget(tc: TrainConfig, min_steps: int = 1) -> None:
    if tc.steps < min_steps:
        need = min_steps * tc.flops_per_token * tc.tokens_per_step
        raise ConfigError(
            f"budget.flops={tc.budget.flops:.3g} buys {tc.steps} optimiser steps of "
            f"{tc.tokens_per_step} tokens at {tc.flops_per_token:.3g} FLOPs/token; "
            f"need at least {min_steps} (budget.flops >= {need:.3g})"
        )


__all__ = ["ConfigError", "DataError", "TrainConfig", "check_budget", "from_dict"]
