"""Parameter and FLOP accounting from a model's shape alone (no model is built, no torch).

Counting convention (the one every fitted law in this project uses):

- ``params_total``: every parameter of the model, as ``sum(p.numel())`` counts them.
- ``params_embedding``: the token embedding, plus the unembedding when it is untied.
- ``params_active``: parameters used for one token: everything except the routed experts,
  plus top_k * granularity routed experts. The router and shared experts are active.
- ``params_active_non_embedding``: ``params_active - params_embedding``.
- ``flops_per_token`` (training, forward + backward):
  ``6 * params_active_non_embedding + 6 * n_layers * seq_len * d_model + 6 * vocab * d_model``
  (MHA). With MLA (models/mla.py) the attention term is ``3 * n_layers * seq_len * n_heads *
  (2 * head_dim + rope_dim)``: the scores run over head_dim + rope_dim features, the values
  over head_dim (with rope_dim = 0 that is MHA's 6 L T d).
  The first term is the usual 2 (forward) + 4 (backward) FLOPs per multiply-accumulate of every
  active weight; the second is attention's QK^T and AV (Kaplan et al. 2020's 2 * n_layer *
  n_ctx * d_attn per forward, times 3); the third is the unembedding matmul (the embedding
  lookup costs no FLOPs). Norm and softmax FLOPs are ignored. A budget C buys
  ``tokens = C / flops_per_token``.

- ``kv_cache_bytes_per_token`` (inference, bf16, all layers): what a KV cache holds per token:
  ``2 bytes * n_layers * 2 * d_model`` (MHA: every head's key and value), ``2 bytes *
  n_layers * (kv_lora_rank + rope_dim)`` (MLA: the latent and the shared rotary key).

``shape_counts`` is the arithmetic itself on plain numbers, so the analysis can evaluate it for
continuous widths and expert counts (E = K / (1 - S)) when it optimises a fitted law.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.config import ModelConfig

FLOPS_CONVENTION = (
    "6*params_active_non_embedding + 6*n_layers*seq_len*d_model + 6*vocab*d_model per token"
)


@dataclass(frozen=True)
class Shape:
    """A model's dimensions as numbers (floats allowed: E and d_model may be continuous)."""

    d_model: float
    n_layers: float
    d_ff: float  # one expert's hidden size at granularity 1
    seq_len: float
    vocab_size: float
    num_experts: float = 1  # E
    top_k: float = 1  # K
    granularity: float = 1  # G
    num_shared_experts: float = 0
    glu: bool = True
    tie_embeddings: bool = False
    qk_norm_params: float = 0  # 2 * head_dim (MLA: 2 * (head_dim + rope_dim)) when QK-norm is on
    mla: bool = False  # multi-head latent attention (then the four fields below apply)
    n_heads: float = 1
    kv_rank: float = 0  # R, the key/value latent
    q_rank: float = 0  # the query's bottleneck (0: none)
    rope_dim: float = 0  # rotary features per head beside head_dim

    @property
    def dense(self) -> bool:
        return (
            self.num_experts == 1
            and self.top_k == 1
            and self.granularity == 1
            and self.num_shared_experts == 0
        )


def shape_of(cfg: ModelConfig) -> Shape:
    m = cfg.moe
    mla = cfg.attention == "mla"
    qk = cfg.head_dim + (cfg.rope_dim if mla else 0)
    return Shape(
        cfg.d_model,
        cfg.n_layers,
        cfg.d_ff,
        cfg.seq_len,
        cfg.vocab_size,
        m.num_experts,
        m.top_k,
        m.granularity,
        m.num_shared_experts,
        m.expert_type == "glu",
        cfg.tie_embeddings,
        2 * qk if cfg.qk_norm else 0,
        mla,
        cfg.n_heads,
        cfg.kv_rank if mla else 0,
        cfg.q_lora_rank if mla else 0,
        cfg.rope_dim if mla else 0,
    )


def attention_params(s: Shape) -> float:
    """One layer's attention weights (MHA: wq, wk, wv, wo; MLA: models/mla.py's)."""
    if not s.mla:
        return 4 * s.d_model * s.d_model + s.qk_norm_params
    H, Dh, R, Rq, Dr = s.n_heads, s.d_model / s.n_heads, s.kv_rank, s.q_rank, s.rope_dim
    q_out = H * (Dh + Dr)
    query = s.d_model * Rq + Rq + Rq * q_out if Rq else s.d_model * q_out
    kv = s.d_model * (R + Dr) + R + R * H * 2 * Dh  # wkv_a, the latent's norm, wkv_b
    return query + kv + H * Dh * s.d_model + s.qk_norm_params


def attention_flops(s: Shape) -> float:
    """Training FLOPs per token of the attention scores and values (causal: half of them)."""
    if not s.mla:
        return 6 * s.n_layers * s.seq_len * s.d_model
    head_dim = s.d_model / s.n_heads
    return 3 * s.n_layers * s.seq_len * s.n_heads * (2 * head_dim + s.rope_dim)


def kv_cache_bytes(s: Shape, bytes_per_number: int = 2) -> float:
    per_layer = (s.kv_rank + s.rope_dim) if s.mla else 2 * s.d_model
    return bytes_per_number * s.n_layers * per_layer


def shape_counts(s: Shape) -> dict[str, float]:
    """params_total, params_active, params_embedding, params_active_non_embedding,
    flops_per_token of a shape (the convention above)."""
    expert = (3 if s.glu else 2) * s.d_model * s.d_ff / s.granularity  # one routed expert
    attention = attention_params(s)
    norms = 2 * s.d_model
    if s.dense:
        ffn_total = ffn_active = expert
    else:
        shared = s.num_shared_experts * expert
        router = s.d_model * s.num_experts * s.granularity
        ffn_total = s.num_experts * s.granularity * expert + router + shared
        ffn_active = s.top_k * s.granularity * expert + router + shared
    embedding = s.vocab_size * s.d_model * (1 if s.tie_embeddings else 2)
    total = embedding + s.n_layers * (attention + ffn_total + norms) + s.d_model
    active = embedding + s.n_layers * (attention + ffn_active + norms) + s.d_model
    non_embedding = active - embedding
    flops = 6 * non_embedding + attention_flops(s) + 6 * s.vocab_size * s.d_model
    return {
        "params_total": total,
        "params_active": active,
        "params_embedding": embedding,
        "params_active_non_embedding": non_embedding,
        "flops_per_token": flops,
        "kv_cache_bytes_per_token": kv_cache_bytes(s),
    }


def _int_counts(cfg: ModelConfig) -> dict[str, int]:
    return {k: round(v) for k, v in shape_counts(shape_of(cfg)).items()}


def expert_params(cfg: ModelConfig) -> int:
    """Parameters of one routed expert (after granularity)."""
    matrices = 3 if cfg.moe.expert_type == "glu" else 2
    return matrices * cfg.d_model * cfg.expert_hidden


def params_total(cfg: ModelConfig) -> int:
    return _int_counts(cfg)["params_total"]


def params_active(cfg: ModelConfig) -> int:
    return _int_counts(cfg)["params_active"]


def params_embedding(cfg: ModelConfig) -> int:
    return _int_counts(cfg)["params_embedding"]


def params_active_non_embedding(cfg: ModelConfig) -> int:
    return _int_counts(cfg)["params_active_non_embedding"]


def sparsity(cfg: ModelConfig) -> float:
    return cfg.moe.sparsity


def flops_per_token(cfg: ModelConfig) -> int:
    return _int_counts(cfg)["flops_per_token"]


def kv_cache_bytes_per_token(cfg: ModelConfig) -> int:
    return _int_counts(cfg)["kv_cache_bytes_per_token"]


@dataclass(frozen=True)
class Accounting:
    params_total: int
    params_active: int
    params_embedding: int
    params_active_non_embedding: int
    sparsity: float
    flops_per_token: int
    kv_cache_bytes_per_token: int = 0  # bf16, all layers (inference)
    flops_convention: str = FLOPS_CONVENTION


def account(cfg: ModelConfig) -> Accounting:
    counts = _int_counts(cfg)
    return Accounting(**counts, sparsity=sparsity(cfg))  # type: ignore[arg-type]
