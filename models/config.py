"""Typed, validated model configuration.

Every invalid configuration fails at construction with a message naming the field, so a bad
sweep dies in the planner, not thirty minutes into a run inside torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

BACKENDS = ("torch", "native", "megablocks", "auto")
EXPERT_TYPES = ("glu", "mlp")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def _check(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{field_name}: {message}")


@dataclass
class MoEConfig:
    """Feed-forward layer configuration. Dense is num_experts = top_k = 1, granularity 1.

    Granularity G (Krajewski et al. 2024) splits every expert's hidden size by G and multiplies
    the number of experts and top_k by G: active parameters are unchanged, routing gets finer.
    """

    num_experts: int = 1
    top_k: int = 1
    granularity: int = 1
    num_shared_experts: int = 0  # always-active experts, each of the routed expert's size
    expert_type: str = "glu"  # "glu" (SwiGLU) or "mlp" (GELU MLP)
    # Renormalising the top-k weights to sum to one (Mixtral) makes them exactly 1 when K=1,
    # which cuts the router off from the LM loss; off by default, as in Switch and MegaBlocks.
    renormalize: bool = False
    load_balance_coef: float = 0.01
    z_loss_coef: float = 0.001
    backend: str = "torch"

    def __post_init__(self) -> None:
        _check(self.num_experts >= 1, "moe.num_experts", f"must be >= 1, got {self.num_experts}")
        _check(self.top_k >= 1, "moe.top_k", f"must be >= 1, got {self.top_k}")
        _check(
            self.top_k <= self.num_experts,
            "moe.top_k",
            f"top_k={self.top_k} exceeds num_experts={self.num_experts}",
        )
        _check(self.granularity >= 1, "moe.granularity", f"must be >= 1, got {self.granularity}")
        _check(self.num_shared_experts >= 0, "moe.num_shared_experts", "must be >= 0")
        _check(
            self.expert_type in EXPERT_TYPES,
            "moe.expert_type",
            f"unknown expert type {self.expert_type!r}; choose one of {EXPERT_TYPES}",
        )
        _check(
            self.backend in BACKENDS,
            "moe.backend",
            f"unknown backend {self.backend!r}; choose one of {BACKENDS}",
        )
        _check(self.load_balance_coef >= 0, "moe.load_balance_coef", "must be >= 0")
        _check(self.z_loss_coef >= 0, "moe.z_loss_coef", "must be >= 0")

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
        """S = 1 - K/E (granularity cancels)."""
        return 1.0 - self.top_k / self.num_experts


@dataclass
class ModelConfig:
    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256  # hidden size of one expert at granularity 1 (= the dense MLP's)
    seq_len: int = 128
    tie_embeddings: bool = False
    qk_norm: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    init_std: float = 0.02
    moe: MoEConfig = field(default_factory=MoEConfig)

    def __post_init__(self) -> None:
        if isinstance(self.moe, dict):  # built from YAML
            self.moe = MoEConfig(**self.moe)
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "seq_len"):
            value = getattr(self, name)
            _check(
                isinstance(value, int) and value >= 1, f"model.{name}", f"must be >= 1, got {value}"
            )
        _check(
            self.d_model % self.n_heads == 0,
            "model.n_heads",
            f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}",
        )
        _check(
            (self.d_model // self.n_heads) % 2 == 0,
            "model.n_heads",
            f"head dim {self.d_model // self.n_heads} must be even for rotary embeddings",
        )
        _check(
            self.d_ff % self.moe.granularity == 0,
            "moe.granularity",
            f"granularity={self.moe.granularity} does not divide the expert hidden size "
            f"d_ff={self.d_ff}",
        )
        _check(self.init_std > 0, "model.init_std", "must be > 0")
        _check(self.norm_eps > 0, "model.norm_eps", "must be > 0")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def expert_hidden(self) -> int:
        """Hidden size of one routed expert after granularity: d_ff / G."""
        return self.d_ff // self.moe.granularity

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"model: unknown field(s) {unknown}")
        return cls(**d)


@dataclass
class FamilyRule:
    """How a model family is sized from d_model alone (the planner's one free size knob).

    n_layers = max(1, round(d_model / aspect_ratio)); n_heads = d_model / head_dim;
    d_ff = ffn_ratio * d_model. Aspect ratio 64 gives GPT-2-like shapes (768 -> 12 layers);
    CPU demos use smaller head_dim and aspect ratio so tiny models still have >1 layer.
    """

    aspect_ratio: int = 64
    head_dim: int = 64
    ffn_ratio: int = 4

    def __post_init__(self) -> None:
        for name in ("aspect_ratio", "head_dim", "ffn_ratio"):
            _check(getattr(self, name) >= 1, f"family.{name}", "must be >= 1")
        _check(self.head_dim % 2 == 0, "family.head_dim", "must be even (rotary embeddings)")


def size_model(d_model: int, rule: FamilyRule, **overrides) -> ModelConfig:
    """The family member with this d_model. `overrides` set the other ModelConfig fields."""
    _check(
        d_model % rule.head_dim == 0,
        "model.d_model",
        f"d_model={d_model} must be a multiple of family.head_dim={rule.head_dim}",
    )
    n_layers = max(1, int(math.floor(d_model / rule.aspect_ratio + 0.5)))
    return ModelConfig(
        d_model=d_model,
        n_layers=n_layers,
        n_heads=d_model // rule.head_dim,
        d_ff=rule.ffn_ratio * d_model,
        **overrides,
    )
