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
Score = Literal["softmax", "sigmoid"]
Balance = Literal["aux_loss", "aux_free", "both"]
AttentionKind = Literal["mha", "mla"]
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
    score: Score = "softmax"
    """Router scores: softmax over the experts, or each expert's sigmoid (DeepSeek-V3; the
    chosen experts' scores are the combine weights, normalised over them with renormalize)."""
    balance: Balance = "aux_loss"
    """aux_loss: the Switch loss (load_balance_coef). aux_free (DeepSeek-V3): a per-expert
    bias added to the scores to choose experts only, moved after every optimiser step by
    bias_update_rate toward equal load (from the step's expert counts over all ranks), with
    load_balance_coef = 0; both: the bias and the Switch loss."""
    bias_update_rate: float = 0.001
    """aux_free/both: the bias step per optimiser step (V3's gamma)."""
    seq_aux_coef: float = 0.0
    """Weight of V3's sequence-wise balance loss (the Switch form within each sequence; V3
    keeps 1e-4 beside the bias)."""
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
        check(self.seq_aux_coef >= 0, "moe.seq_aux_coef", "must be >= 0")
        check(self.bias_update_rate > 0, "moe.bias_update_rate", "must be > 0")
        check(
            self.balance != "aux_free" or self.load_balance_coef == 0,
            "moe.balance",
            "aux_free balances with the bias alone: set moe.load_balance_coef=0 (the bias "
            "beside a Switch loss is balance=both)",
        )
        check(
            self.balance != "both" or self.load_balance_coef > 0,
            "moe.balance",
            "both needs moe.load_balance_coef > 0 (without it, it is aux_free)",
        )
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
    attention: AttentionKind = "mha"
    """mha: multi-head attention; mla: multi-head latent attention (DeepSeek-V2/V3,
    models/mla.py): keys and values rebuilt from a kv_lora_rank latent per token."""
    kv_lora_rank: int | None = None
    """mla: the key/value latent's size R (None: 4 x head_dim, DeepSeek-V2's 512 = 4 x 128)."""
    q_lora_rank: int = 0
    """mla: the query's low-rank bottleneck (0: a full query projection, as V2-Lite)."""
    qk_rope_head_dim: int | None = None
    """mla: the rotary part of each head's query and key (None: head_dim / 2, as V2/V3)."""
    init_std: float = 0.02
    """Std of the normal init; residual-branch outputs use init_std / sqrt(2 n_layers)."""
    loss_chunk_tokens: int = field(default=0, metadata=LOGISTICS)
    """0: the loss from the whole (tokens x vocab) logits; C > 0: the unembedding and the loss
    C tokens at a time, the logits never held whole (models/chunked_loss.py; the same loss and
    gradients up to rounding, so not part of a run's identity). A memory option, not a speed-up:
    on the H200, a d 192 study step took 10.75 (C = 4,096) and 11.21 ms (1,024) of GPU time
    against 10.40 whole, and held 2.90 against 3.15 GiB (docs/gpu-performance.md, twelfth
    session)."""
    moe: MoEConfig = field(default_factory=MoEConfig)
    """The feed-forward layer (dense or MoE)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "seq_len"):
            value = getattr(self, name)
            check(value >= 1, f"model.{name}", f"must be >= 1, got {value}")
        check(
            self.loss_chunk_tokens >= 0,
            "model.loss_chunk_tokens",
            f"must be >= 0 (0: whole), got {self.loss_chunk_tokens}",
        )
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
        if self.attention == "mla":
            check(self.kv_rank >= 1, "model.kv_lora_rank", "must be >= 1")
            check(self.q_lora_rank >= 0, "model.q_lora_rank", "must be >= 0")
            check(
                self.rope_dim >= 2 and self.rope_dim % 2 == 0,
                "model.qk_rope_head_dim",
                f"must be even and >= 2 (rotary), got {self.rope_dim}",
            )
        else:
            extra = [
                n
                for n, d in (("kv_lora_rank", None), ("q_lora_rank", 0), ("qk_rope_head_dim", None))
                if getattr(self, n) != d
            ]
            check(not extra, "model.attention", f"{extra} are options of attention=mla")
        check(self.norm_eps > 0, "model.norm_eps", "must be > 0")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_rank(self) -> int:
        """mla: the latent's size (kv_lora_rank, or 4 x head_dim)."""
        return self.kv_lora_rank if self.kv_lora_rank is not None else 4 * self.head_dim

    @property
    def rope_dim(self) -> int:
        """Rotary features per head: head_dim (mha); qk_rope_head_dim or head_dim / 2 (mla)."""
        if self.attention == "mha":
            return self.head_dim
        if self.qk_rope_head_dim is not None:
            return self.qk_rope_head_dim
        return max(2, self.head_dim // 2 // 2 * 2)

    @property
    def expert_hidden(self) -> int:
        """Hidden size of one routed expert after granularity: d_ff / G."""
        return self.d_ff // self.moe.granularity

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return from_dict(cls, d)
