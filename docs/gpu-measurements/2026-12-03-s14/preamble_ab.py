"""Fourteenth session: is the attention's preamble (QK-norm, rotary, the layout SDPA reads) slow
because of the interleaved rotary? An A/B of one attention layer, forward and backward, compiled
as training compiles it, under bf16 autocast with float32 weights; GPU kernel time a step.

    python preamble_ab.py check                      # CPU, float64: the variants agree
    python preamble_ab.py [--variants committed,half,...] --tokens T --seq S --d-model D
        --head-dim H [--rows N]   # one process; each variant a fresh layer, in the order given

Variants (call 1's profiles: the fused QK-norm + rotary forward kernel took 549 us a layer at
the base model's shape, ~0.9 TB/s, and 55 us at the study's d 192):
- ``committed``: models.transformer.Attention as it is (interleaved pairs, x[0::2], x[1::2]).
- ``half``: the same function computed with each head's channels permuted, evens first: the
  query and key weights' rows (and QK-norm's weights) are gathered in that order inside the
  concatenated QKV weight, and rotary rotates the two contiguous halves. A dot product does
  not change when both of its vectors are permuted alike, and the values are not rotated, so
  the attention's output is the committed one up to rounding.
- ``no-rotary`` and ``no-qknorm``: what each part costs (not the same function).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from experiments.benchmarks.timing import profile_kernels
from models import ModelConfig
from models.transformer import Attention, apply_rotary, rotary_tables


def evens_first(head_dim: int) -> torch.Tensor:
    return torch.cat((torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)))


def rotate_halves(x_BSHD, cos_SH, sin_SH):
    S, half = x_BSHD.shape[1], x_BSHD.shape[-1] // 2
    cos = cos_SH[:S, None, :].to(x_BSHD.dtype)
    sin = sin_SH[:S, None, :].to(x_BSHD.dtype)
    x1, x2 = x_BSHD[..., :half], x_BSHD[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Variant(Attention):
    def __init__(self, cfg: ModelConfig, variant: str):
        super().__init__(cfg)
        self.variant = variant
        perm = evens_first(self.head_dim)
        rows = (torch.arange(cfg.n_heads)[:, None] * self.head_dim + perm).flatten()
        self.register_buffer("perm_H", perm, persistent=False)
        self.register_buffer("rows_D", rows, persistent=False)

    def forward(self, x_BSD, cos_SH, sin_SH):
        if self.variant == "committed":
            return super().forward(x_BSD, cos_SH, sin_SH)
        B, S, D = x_BSD.shape
        shape = (B, S, self.n_heads, self.head_dim)
        dtype = torch.promote_types(x_BSD.dtype, torch.float32)
        half = self.variant == "half"
        wq, wk = self.wq.weight, self.wk.weight
        if half:
            wq, wk = wq[self.rows_D], wk[self.rows_D]
        w_3DD = torch.cat((wq, wk, self.wv.weight))
        q, k, v = F.linear(x_BSD, w_3DD).view(B, S, 3, *shape[2:]).unbind(2)
        q, k = q.to(dtype), k.to(dtype)
        if self.variant != "no-qknorm":
            eps = self.q_norm.eps
            wqn, wkn = self.q_norm.weight, self.k_norm.weight
            if half:
                wqn, wkn = wqn[self.perm_H], wkn[self.perm_H]
            q = F.rms_norm(q, (self.head_dim,), wqn, eps)
            k = F.rms_norm(k, (self.head_dim,), wkn, eps)
        if half:
            q, k = rotate_halves(q, cos_SH, sin_SH), rotate_halves(k, cos_SH, sin_SH)
        elif self.variant == "no-qknorm":
            q, k = apply_rotary(q, cos_SH, sin_SH), apply_rotary(k, cos_SH, sin_SH)
        y_BHSD = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        return self.wo(y_BHSD.transpose(1, 2).reshape(B, S, D))


def check() -> None:
    cfg = ModelConfig(d_model=64, n_heads=4, n_layers=1, seq_len=16)
    torch.manual_seed(0)
    a = Variant(cfg, "committed").double()
    b = Variant(cfg, "half").double()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():  # QK-norm weights that are not all ones, so their order matters
        for n in (a.q_norm, a.k_norm, b.q_norm, b.k_norm):
            n.weight.copy_(torch.linspace(0.5, 1.5, cfg.head_dim, dtype=torch.float64))
    cos, sin = rotary_tables(16, cfg.head_dim, 10000.0)
    x = torch.randn(2, 16, 64, dtype=torch.float64, requires_grad=True)
    ya = a(x, cos.double(), sin.double())
    yb = b(x, cos.double(), sin.double())
    ga = torch.autograd.grad(ya.square().sum(), [x, a.wq.weight, a.q_norm.weight])
    gb = torch.autograd.grad(yb.square().sum(), [x, b.wq.weight, b.q_norm.weight])
    err = max((ya - yb).abs().max().item(), *((p - q).abs().max().item() for p, q in zip(ga, gb)))
    print(f"half against committed, float64: max difference {err:.2e} (output and gradients)")
    assert err < 1e-12, err


def measure(variant: str, a) -> float:
    """GPU kernel time of one forward and backward of a fresh layer of ``variant`` (ms)."""
    cfg = ModelConfig(d_model=a.d_model, n_heads=a.d_model // a.head_dim, seq_len=a.seq)
    torch.manual_seed(0)
    layer = torch.compile(Variant(cfg, variant).cuda())
    cos, sin = (t.cuda() for t in rotary_tables(a.seq, a.head_dim, 10000.0))
    B = a.tokens // a.seq
    x = torch.randn(B, a.seq, a.d_model, device="cuda", requires_grad=True)
    gy = torch.randn(B, a.seq, a.d_model, device="cuda", dtype=torch.bfloat16)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = layer(x, cos, sin)
        y.backward(gy)

    table, ms = profile_kernels(step, a.rows)
    print(f"--- {variant}\n{table}")
    return ms


def main(argv: list[str]) -> None:
    if argv[:1] == ["check"]:
        return check()
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="committed,half,committed,half,no-rotary,no-qknorm")
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--d-model", type=int, default=192)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--rows", type=int, default=20)
    a = ap.parse_args(argv)
    results = [(v, measure(v, a)) for v in a.variants.split(",")]
    for v, ms in results:
        print(
            f"{v} d {a.d_model} hd {a.head_dim} T {a.tokens}: GPU kernel time {ms:.3f} ms (fwd+bwd)"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
