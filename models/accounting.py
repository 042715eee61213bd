"""Parameter and FLOP accounting from a ModelConfig alone (no model is built).

Counting convention (the one every fitted law in this project uses):

- ``params_total``: every parameter of the model, as ``sum(p.numel())`` counts them.
- ``params_embedding``: the token embedding, plus the unembedding when it is untied.
- ``params_active``: parameters used for one token: everything except the routed experts,
  plus top_k * granularity routed experts. The router and shared experts are active.
- ``params_active_non_embedding``: ``params_active - params_embedding``.
- ``flops_per_token`` (training, forward + backward):
  ``6 * params_active_non_embedding + 6 * n_layers * seq_len * d_model + 6 * vocab * d_model``.
  The first term is the usual 2 (forward) + 4 (backward) FLOPs per multiply-accumulate of every
  active weight; the second is attention's QK^T and AV (Kaplan et al. 2020's 2 * n_layer *
  n_ctx * d_attn per forward, times 3); the third is the unembedding matmul (the embedding
  lookup costs no FLOPs). Norm and softmax FLOPs are ignored. A budget C buys
  ``tokens = C / flops_per_token``.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.config import ModelConfig

FLOPS_CONVENTION = (
    "6*params_active_non_embedding + 6*n_layers*seq_len*d_model + 6*vocab*d_model per token"
)


def expert_params(cfg: ModelConfig) -> int:
    """Parameters of one routed expert (after granularity)."""
    matrices = 3 if cfg.moe.expert_type == "glu" else 2
    return matrices * cfg.d_model * cfg.expert_hidden


def _attention_params(cfg: ModelConfig) -> int:
    qk_norm = 2 * cfg.head_dim if cfg.qk_norm else 0
    return 4 * cfg.d_model * cfg.d_model + qk_norm


def _ffn_params(cfg: ModelConfig, active: bool) -> int:
    moe = cfg.moe
    if moe.is_dense:
        return expert_params(cfg)
    routed = moe.active_experts if active else moe.experts
    router = cfg.d_model * moe.experts
    shared = moe.num_shared_experts * expert_params(cfg)
    return routed * expert_params(cfg) + router + shared


def params_embedding(cfg: ModelConfig) -> int:
    return cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)


def _params(cfg: ModelConfig, active: bool) -> int:
    per_layer = _attention_params(cfg) + _ffn_params(cfg, active) + 2 * cfg.d_model  # 2 norms
    return params_embedding(cfg) + cfg.n_layers * per_layer + cfg.d_model  # final norm


def params_total(cfg: ModelConfig) -> int:
    return _params(cfg, active=False)


def params_active(cfg: ModelConfig) -> int:
    return _params(cfg, active=True)


def params_active_non_embedding(cfg: ModelConfig) -> int:
    return params_active(cfg) - params_embedding(cfg)


def sparsity(cfg: ModelConfig) -> float:
    return cfg.moe.sparsity


def flops_per_token(cfg: ModelConfig) -> int:
    attention = 6 * cfg.n_layers * cfg.seq_len * cfg.d_model
    unembedding = 6 * cfg.vocab_size * cfg.d_model
    return 6 * params_active_non_embedding(cfg) + attention + unembedding


@dataclass(frozen=True)
class Accounting:
    params_total: int
    params_active: int
    params_embedding: int
    params_active_non_embedding: int
    sparsity: float
    flops_per_token: int
    flops_convention: str = FLOPS_CONVENTION


def account(cfg: ModelConfig) -> Accounting:
    return Accounting(
        params_total=params_total(cfg),
        params_active=params_active(cfg),
        params_embedding=params_embedding(cfg),
        params_active_non_embedding=params_active_non_embedding(cfg),
        sparsity=sparsity(cfg),
        flops_per_token=flops_per_token(cfg),
    )
