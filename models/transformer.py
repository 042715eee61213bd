"""Decoder-only transformer LM whose feed-forward is dense or MoE (nanoGPT in spirit).

RMSNorm pre-norm blocks, rotary position embeddings, QK-norm (as in Abnar et al. 2025),
causal attention through scaled_dot_product_attention. Shapes: B batch, S sequence,
H heads, Dh head dim, D width, V vocab.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.chunked_loss import chunked_cross_entropy
from models.config import ModelConfig
from models.cross_entropy import cross_entropy
from models.expert_parallel import EPGroup
from models.mla import LatentAttention
from models.moe import DenseMLP, FFNAux, MoE, init_stds


def rotary_tables(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles_SH = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    return angles_SH.cos().float(), angles_SH.sin().float()


def apply_rotary(x_BSHD: torch.Tensor, cos_SH: torch.Tensor, sin_SH: torch.Tensor) -> torch.Tensor:
    S = x_BSHD.shape[1]
    cos = cos_SH[:S, None, :].to(x_BSHD.dtype)
    sin = sin_SH[:S, None, :].to(x_BSHD.dtype)
    x1, x2 = x_BSHD[..., 0::2], x_BSHD[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.d_model
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.wq = nn.Linear(D, D, bias=False)
        self.wk = nn.Linear(D, D, bias=False)
        self.wv = nn.Linear(D, D, bias=False)
        self.wo = nn.Linear(D, D, bias=False)
        # QK-norm: RMSNorm over each head's query/key, which keeps attention logits bounded.
        self.q_norm = nn.RMSNorm(cfg.head_dim, eps=cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(cfg.head_dim, eps=cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        self.init_std, self.out_std = init_stds(cfg)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for w in (self.wq, self.wk, self.wv):
            nn.init.normal_(w.weight, std=self.init_std)
        nn.init.normal_(self.wo.weight, std=self.out_std)
        for norm in (self.q_norm, self.k_norm):
            if isinstance(norm, nn.RMSNorm):
                norm.reset_parameters()

    def forward(self, x_BSD, cos_SH, sin_SH):
        B, S, D = x_BSD.shape
        shape = (B, S, self.n_heads, self.head_dim)
        # QK-norm in float32 (float64 stays float64): under bf16 autocast the projections come
        # out in bf16, and RMSNorm with a float32 weight on a bf16 input falls back to an
        # unfused kernel chain.
        dtype = torch.promote_types(x_BSD.dtype, torch.float32)
        # The three projections as one GEMM over their concatenated weights (the parameters and
        # the state dict stay three). At the studies' widths (d 96-384) each projection is
        # memory-bound: one GEMM reads x once forward and writes one gradient of x backward,
        # where three wrote three and summed them (docs/gpu-performance.md, eleventh session).
        w_3DD = torch.cat((self.wq.weight, self.wk.weight, self.wv.weight))
        q, k, v = F.linear(x_BSD, w_3DD).view(B, S, 3, *shape[2:]).unbind(2)
        q = apply_rotary(self.q_norm(q.to(dtype)), cos_SH, sin_SH)
        k = apply_rotary(self.k_norm(k.to(dtype)), cos_SH, sin_SH)
        y_BHSD = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        return self.wo(y_BHSD.transpose(1, 2).reshape(B, S, D))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, ep: EPGroup | None = None):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = LatentAttention(cfg) if cfg.attention == "mla" else Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        glu = cfg.moe.expert_type == "glu"
        self.ffn = (
            DenseMLP(cfg.d_model, cfg.d_ff, glu, *init_stds(cfg))
            if cfg.moe.is_dense
            else MoE(cfg, ep)
        )

    def reset_parameters(self) -> None:
        self.attn_norm.reset_parameters()
        self.attn.reset_parameters()
        self.ffn_norm.reset_parameters()
        self.ffn.reset_parameters()

    def forward(self, x_BSD, cos_SH, sin_SH) -> tuple[torch.Tensor, FFNAux]:
        x_BSD = x_BSD + self.attn(self.attn_norm(x_BSD), cos_SH, sin_SH)
        h_BSD, aux = self.ffn(self.ffn_norm(x_BSD))
        return x_BSD + h_BSD, aux


@dataclass
class LMOutput:
    logits: torch.Tensor | None  # (B, S, V), only when no targets were given (see head)
    loss: torch.Tensor | None  # cross-entropy (nats/token), without auxiliary losses
    aux_loss: torch.Tensor  # sum over layers of the weighted router losses
    aux: list[FFNAux]


class MoETransformer(nn.Module):
    """``ep``: this rank's expert-parallel group, when the experts are split over ranks."""

    def __init__(self, cfg: ModelConfig, ep: EPGroup | None = None):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, ep) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        cos, sin = rotary_tables(cfg.seq_len, cfg.rope_dim, cfg.rope_theta)
        self.register_buffer("cos_SH", cos, persistent=False)
        self.register_buffer("sin_SH", sin, persistent=False)
        self._reset_embeddings()  # the blocks initialised themselves

    def _reset_embeddings(self) -> None:
        nn.init.normal_(self.tok_emb.weight, std=self.cfg.init_std)
        if not self.cfg.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, std=self.cfg.init_std)

    def reset_parameters(self) -> None:
        """Re-draw every weight: each module initialises its own."""
        for block in self.blocks:
            assert isinstance(block, Block)
            block.reset_parameters()
        self.norm.reset_parameters()
        self._reset_embeddings()

    @property
    def expert_parallel_params(self) -> list[str]:
        """Names of the parameters split over an expert-parallel group (not replicated)."""
        return [
            f"{name}.{p}"
            for name, m in self.named_modules()
            if isinstance(m, MoE) and m.ep is not None
            for p in ("w_in_EHD", "w_out_EFD")
        ]

    def compile_regions(self, mode: str = "default", backend: str = "inductor") -> None:
        """torch.compile each block and the head in place (regional compilation).

        The blocks share one code object and their weights are graph inputs, so one block is
        traced and compiled for all layers: warm-up no longer grows with depth. State-dict keys
        are unchanged (``Module.compile`` compiles in place). ``backend``: tests use aot_eager."""
        inductor = backend == "inductor"  # mode is inductor's option only
        for block in self.blocks:
            block.compile(backend=backend, dynamic=False, mode=mode if inductor else None)
        self.head = torch.compile(  # type: ignore[method-assign]
            self.head, backend=backend, dynamic=False, mode=mode if inductor else None
        )

    @property
    def bias_routers(self) -> list:
        """(layer index, router) of the routers that balance by a bias (aux-loss-free)."""
        return [
            (i, b.ffn.router)
            for i, b in enumerate(self.blocks)
            if isinstance(b.ffn, MoE) and b.ffn.router.bias_rate > 0
        ]

    def observe_routing(self, aux: list[FFNAux], routers: list | None = None) -> None:
        """Hand each bias-balanced router its layer's expert counts from one forward."""
        for i, router in self.bias_routers if routers is None else routers:
            router.observe(aux[i].tokens_per_expert_E)

    def head(
        self, x_BSD: torch.Tensor, targets_BS: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Final norm and unembedding: (logits, None) without targets, (None, mean cross-entropy
        in float32, float64 in a float64 model) with them; with ``model.loss_chunk_tokens`` the
        loss comes from chunks of tokens, the logits never held whole (models/chunked_loss.py).
        Training gets no logits: an output of the compiled head that the loss does not use is
        handed a zero gradient by autograd, a logits-sized fill and add every step (537 MB at
        32,768 tokens x 8,192 tokens of vocabulary, ~3% of the second study's d 192 step on the
        H200: docs/gpu-performance.md)."""
        h_BSD = self.norm(x_BSD)
        if targets_BS is not None and self.cfg.loss_chunk_tokens:
            h_TD = h_BSD.reshape(-1, h_BSD.shape[-1])
            chunk = self.cfg.loss_chunk_tokens
            return None, chunked_cross_entropy(
                h_TD, self.lm_head.weight, targets_BS.reshape(-1), chunk
            )
        logits_BSV = self.lm_head(h_BSD)
        if targets_BS is None:
            return logits_BSV, None
        # in float32 from bf16 logits; a float64 model (the exactness tests) stays float64
        loss = cross_entropy(logits_BSV.view(-1, logits_BSV.shape[-1]), targets_BS.reshape(-1))
        return None, loss

    def forward(self, idx_BS: torch.Tensor, targets_BS: torch.Tensor | None = None) -> LMOutput:
        x = self.tok_emb(idx_BS)
        aux_list = []
        for block in self.blocks:
            x, aux = block(x, self.cos_SH, self.sin_SH)
            aux_list.append(aux)
        logits_BSV, loss = self.head(x, targets_BS)
        aux_loss = torch.stack([a.aux_loss for a in aux_list]).sum()
        return LMOutput(logits_BSV, loss, aux_loss, aux_list)


def post_optimizer_step_hooks(model: nn.Module) -> list:
    """The ``post_optimizer_step`` methods of the model's modules, called by the trainer after
    every optimiser step: for state that follows the weights but is not learned by gradient
    (an auxiliary-loss-free router's selection bias, models/router.py). A module that has
    nothing to update this run says so (``has_post_optimizer_step``) and is not called."""
    return [
        m.post_optimizer_step
        for m in model.modules()
        if hasattr(m, "post_optimizer_step") and getattr(m, "has_post_optimizer_step", True)
    ]
