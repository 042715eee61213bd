"""Multi-head latent attention (MLA, DeepSeek-V2/V3): keys and values are rebuilt per head from
one small latent per token, so an inference KV cache holds the latent (and one shared rotary
key) instead of every head's keys and values.

Per token (Dh = head_dim, H heads, R = kv_lora_rank, Dr = qk_rope_head_dim):
- queries: ``wq`` (D -> H (Dh + Dr)), or with ``q_lora_rank`` Rq a low-rank pair ``wq_a``
  (D -> Rq), RMSNorm, ``wq_b`` (Rq -> H (Dh + Dr));
- ``wkv_a`` (D -> R + Dr): the latent c (RMSNorm'd) and a rotary key shared by all heads;
- ``wkv_b`` (R -> H 2 Dh): each head's position-free key part and its value, from c;
- each head attends with [q_nope, rope(q_rope)] . [k_nope, rope(k_rope)] over Dh + Dr
  dimensions (SDPA's scale 1/sqrt(Dh + Dr)); ``wo`` (H Dh -> D).
QK-norm, where on, is RMSNorm over each head's whole query and key (Dh + Dr), before rotary,
as in the MHA path. The KV cache is (R + Dr) numbers per token per layer, against 2 H Dh for
MHA (models/accounting.py ``kv_cache_bytes_per_token``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig


def apply_rotary_tail(x_BSHQ: torch.Tensor, rope_dim: int, cos_SR, sin_SR) -> torch.Tensor:
    """Rotary on the last ``rope_dim`` features of each head; the rest pass unchanged."""
    from models.transformer import apply_rotary  # a cycle at import time otherwise

    nope, rope = x_BSHQ.split([x_BSHQ.shape[-1] - rope_dim, rope_dim], dim=-1)
    return torch.cat([nope, apply_rotary(rope, cos_SR, sin_SR)], dim=-1)


class LatentAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D, H, Dh = cfg.d_model, cfg.n_heads, cfg.head_dim
        R, Dr, Rq = cfg.kv_rank, cfg.rope_dim, cfg.q_lora_rank
        self.n_heads, self.head_dim, self.kv_rank, self.rope_dim = H, Dh, R, Dr
        self.q_lora = Rq > 0
        if self.q_lora:
            self.wq_a = nn.Linear(D, Rq, bias=False)
            self.q_a_norm = nn.RMSNorm(Rq, eps=cfg.norm_eps)
            self.wq_b = nn.Linear(Rq, H * (Dh + Dr), bias=False)
        else:
            self.wq = nn.Linear(D, H * (Dh + Dr), bias=False)
        self.wkv_a = nn.Linear(D, R + Dr, bias=False)
        self.kv_norm = nn.RMSNorm(R, eps=cfg.norm_eps)
        self.wkv_b = nn.Linear(R, H * 2 * Dh, bias=False)
        self.wo = nn.Linear(H * Dh, D, bias=False)
        qk = Dh + Dr
        self.q_norm = nn.RMSNorm(qk, eps=cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(qk, eps=cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        from models.moe import init_stds

        self.init_std, self.out_std = init_stds(cfg)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        inputs = [self.wkv_a, self.wkv_b]
        inputs += [self.wq_a, self.wq_b] if self.q_lora else [self.wq]
        for w in inputs:
            nn.init.normal_(w.weight, std=self.init_std)
        nn.init.normal_(self.wo.weight, std=self.out_std)
        for norm in (self.q_norm, self.k_norm, self.kv_norm, getattr(self, "q_a_norm", None)):
            if isinstance(norm, nn.RMSNorm):
                norm.reset_parameters()

    def latent(self, x_BSD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What an inference cache holds per token: (the normed latent c, the rotary key)."""
        c_BSR, k_rope_BSR = self.wkv_a(x_BSD).split([self.kv_rank, self.rope_dim], dim=-1)
        return self.kv_norm(c_BSR), k_rope_BSR

    def forward(self, x_BSD, cos_SR, sin_SR):
        B, S, _ = x_BSD.shape
        H, Dh, Dr = self.n_heads, self.head_dim, self.rope_dim
        q = self.wq_b(self.q_a_norm(self.wq_a(x_BSD))) if self.q_lora else self.wq(x_BSD)
        c_BSR, k_rope_BSR = self.latent(x_BSD)
        k_nope_BSHD, v_BSHD = self.wkv_b(c_BSR).view(B, S, H, 2 * Dh).split([Dh, Dh], dim=-1)
        k = torch.cat([k_nope_BSHD, k_rope_BSR.unsqueeze(2).expand(B, S, H, Dr)], dim=-1)
        # norms in float32 under autocast, as in the MHA path (models/transformer.py)
        dtype = torch.promote_types(x_BSD.dtype, torch.float32)
        q = apply_rotary_tail(self.q_norm(q.view(B, S, H, Dh + Dr).to(dtype)), Dr, cos_SR, sin_SR)
        k = apply_rotary_tail(self.k_norm(k.to(dtype)), Dr, cos_SR, sin_SR)
        y_BHSD = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v_BSHD.transpose(1, 2), is_causal=True
        )
        return self.wo(y_BHSD.transpose(1, 2).reshape(B, S, H * Dh))
