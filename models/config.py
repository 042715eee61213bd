"""Typed, validated model configuration.

Every invalid configuration fails at construction with a message naming the field, so a bad
sweep dies in the planner, not thirty minutes into a run inside torch. The dataclass defaults
are the only defaults: Hydra's presets (conf/model, conf/moe) list only what differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from models.typed import LOGISTICS, ConfigError, Typed, check, choices, from_dict

Backend = Literal["auto", "torch", "native", "megablocks"]
ExpertType = Literal["glu", "mlp"]
BACKENDS = choices(Backend)

__all__ = ["BACKENDS", "ConfigError", "MoEConfig", "ModelConfig"]


@dataclass
class MoEConfig(Typed):
    """Feed-forward layer configuration. Dense is num_experts = top_k = 1, granularity 1.

    Granularity G (Krajewski et al. 2024) splits every expert's hidden size by G and multiplies
    the number of experts and top_k by G: active parameters are unchanged, routing gets finer.
    """

    section: ClassVar[str] = "moe"

    num_experts: int = 1
    """E: routed experts at granularity 1 (dense: 1)."""
    top_k: int = 1
    """K: experts each token is sent to at granularity 1."""
    granularity: int = 1
    """G: each expert split into G experts of hidden size d_ff/G; E and K scale by G."""
    num_shared_experts: int = 0
    """Always-active experts, each the size of one routed expert (after granularity)."""
    expert_type: ExpertType = "glu"
    """glu: SwiGLU experts (3 matrices); mlp: tanh-GELU MLP experts (2 matrices)."""
    renormalize: bool = False
    """Rescale the top-k weights to sum to one (Mixtral). With K=1 that makes them exactly 1,
    which cuts the router off from the LM loss; off, as in Switch and MegaBlocks."""
    load_balance_coef: float = 0.01
    """Weight of the Switch load-balancing loss (1.0 at perfectly uniform routing)."""
    z_loss_coef: float = 0.001
    """Weight of the router z-loss (ST-MoE)."""
    load_balance_scope: Literal["rank", "global"] = "rank"
    """Which tokens the load-balancing loss counts: each rank's own (rank), or every rank's
    (global: one all-reduce of the expert counts a layer, so N ranks train what one process
    would; Megatron's global_aux_loss)."""
    backend: Backend = "auto"
    """Expert computation: auto (native on CUDA, torch elsewhere), torch, native, megablocks."""
    expert_parallel: int = field(default=1, metadata=LOGISTICS)
    """Ranks that share one layer's experts (all-to-all dispatch, models/expert_parallel.py);
    1 = every rank holds all experts. Needs torchrun with a multiple of this many ranks."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.num_experts >= 1, "moe.num_experts", f"must be >= 1, got {self.num_experts}")
        check(self.top_k >= 1, "moe.top_k", f"must be >= 1, got {self.top_k}")
        check(
            self.top_k <= self.num_experts,
            "moe.top_k",
            f"top_k={self.top_k} exceeds num_experts={self.num_experts}",
        )
        check(self.granularity >= 1, "moe.granularity", f"must be >= 1, got {self.granularity}")
        check(self.num_shared_experts >= 0, "moe.num_shared_experts", "must be >= 0")
        check(self.load_balance_coef >= 0, "moe.load_balance_coef", "must be >= 0")
        check(self.z_loss_coef >= 0, "moe.z_loss_coef", "must be >= 0")
        check(self.expert_parallel >= 1, "moe.expert_parallel", "must be >= 1")
        check(
            self.experts % self.expert_parallel == 0,
            "moe.expert_parallel",
            f"{self.experts} experts cannot be split over {self.expert_parallel} ranks",
        )
        check(
            self.expert_parallel == 1 or self.backend in ("auto", "torch", "native"),
            "moe.expert_parallel",
            f"is built for the torch and native backends, not "
            f"{self.backend!r} (MegaBlocks' own expert parallelism is not wired in)",
        )

    @property
    def is_dense(self) -> bool:
        return (
            self.num_experts == 1
            and self.top_k == 1
            and self.granularity == 1
            and self.num_shared_experts == 0
        )

    @property
    def experts(self) -> int:
        """Routed experts after granularity: E * G."""
        return self.num_experts * self.granularity

    @property
    def active_experts(self) -> int:
        """Experts each token is sent to after granularity: K * G."""
        return self.top_k * self.granularity

    @property
    def sparsity(self) -> float:
        """Fraction of expert (FFN) parameters a token does not use.

        S = 1 - (K*G + shared) / (E*G + shared), in units of one fine-grained expert: 1 - K/E
        without shared experts (Abnar et al.'s definition; granularity cancels). Shared experts
        are always active, so counting them keeps S the inactive fraction of FFN weights."""
        shared = self.num_shared_experts
        return 1.0 - (self.active_experts + shared) / (self.experts + shared)


@dataclass
class ModelConfig(Typed):
    """Decoder-only transformer shape. ``moe`` is built from the top-level ``moe`` config."""

    section: ClassVar[str] = "model"

    vocab_size: int = 256
    """Token vocabulary (conf/train.yaml ties it to data.vocab_size)."""
    d_model: int = 64
    """Residual stream width."""
    n_layers: int = 2
    """Transformer blocks."""
    n_heads: int = 4
    """Attention heads; d_model / n_heads must be even (rotary)."""
    d_ff: int = 256
    """Hidden size of one expert at granularity 1 (= the dense MLP's)."""
    seq_len: int = 128
    """Training context length."""
    tie_embeddings: bool = False
    """Share the token embedding with the unembedding."""
    qk_norm: bool = True
    """RMSNorm on each head's queries and keys (as in Abnar et al. 2025)."""
    rope_theta: float = 10000.0
    """Rotary embedding base."""
    norm_eps: float = 1e-6
    """RMSNorm epsilon."""
    init_std: float = 0.02
    """Std of the normal init; residual-branch outputs use init_std / sqrt(2 n_layers)."""
    moe: MoEConfig = field(default_factory=MoEConfig)
    """The feed-forward layer (dense or MoE)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "seq_len"):
            value = getattr(self, name)
            check(value >= 1, f"model.{name}", f"must be >= 1, got {value}")
        check(
            self.d_model % self.n_heads == 0,
            "model.n_heads",
            f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}",
        )
        check(
            (self.d_model // self.n_heads) % 2 == 0,
            "model.n_heads",
            f"head dim {self.d_model // self.n_heads} must be even for rotary embeddings",
        )
        check(
            self.d_ff % self.moe.granularity == 0,
            "moe.granularity",
            f"granularity={self.moe.granularity} does not divide the expert hidden size "
            f"d_ff={self.d_ff}",
        )
        check(self.init_std > 0, "model.init_std", "must be > 0")
        check(self.norm_eps > 0, "model.norm_eps", "must be > 0")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def expert_hidden(self) -> int:
        """Hidden size of one routed expert after granularity: d_ff / G."""
        return self.d_ff // self.moe.granularity

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return from_dict(cls, d)
