"""An A/B, run in the thirteenth session and refuted (slower: E16 layer 0.757 against 0.719 ms,
the study step 10.63-10.82 against 10.09-10.18 ms; ../2026-12-03-s13/): the native experts
with gate and up interleaved.

Call 3 found the written-out SwiGLU backward at 105 us a layer (d 192, E16) where reading its
inputs once would take ~52 us: inductor lowers ``cat((dg, du), 1)`` as one pointwise kernel over
both halves, which loads g and the incoming gradient once for each half, F columns apart. Here
the experts' gate and up weights are interleaved when they are cast for the step (a copy made
anyway; the parameters, their layout and init unchanged), so h comes out [g0 u0 g1 u1 ...]
and dh is ``stack((dg, du), -1)``: a gate and its up sit side by side, so the two halves'
loads share cache lines and each input crosses HBM once.

    python interleave_ab.py check                        # CPU: the same values and gradients (float32)
    python interleave_ab.py committed|interleaved run_profile|profile_layer <their arguments>
"""

import sys

import torch
import torch.nn.functional as F

from experiments.benchmarks import profile_layer, run_profile
from models.backends import native
from models.backends.common import compute_dtype, sort_by_expert


class _SwiGLUInterleaved(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h_A2F, w_A1):
        ctx.save_for_backward(h_A2F, w_A1)
        acc = torch.promote_types(h_A2F.dtype, torch.float32)
        g, u = h_A2F[:, 0::2].to(acc), h_A2F[:, 1::2].to(acc)
        return (F.silu(g) * u * w_A1).to(h_A2F.dtype)

    @staticmethod
    def backward(ctx, gy_AF):
        h_A2F, w_A1 = ctx.saved_tensors
        acc = torch.promote_types(h_A2F.dtype, torch.float32)
        g, u, gy = h_A2F[:, 0::2].to(acc), h_A2F[:, 1::2].to(acc), gy_AF.to(acc)
        sig = torch.sigmoid(g)
        silu = g * sig
        gyw = gy * w_A1
        dg = gyw * u * sig * (1 + g * (1 - sig))
        du = gyw * silu
        dh = torch.stack((dg, du), -1).view(h_A2F.shape).to(h_A2F.dtype)
        return dh, (gy * silu * u).sum(-1, keepdim=True).to(w_A1.dtype)


def interleaved_experts(x_TD, experts_TK, weights_TK, tokens_per_expert_E, w):
    """native.native_experts, gate and up interleaved (GLU experts only)."""
    assert w.glu
    T, K = experts_TK.shape
    E, H, D = w.w_in_EHD.shape
    dtype = compute_dtype(x_TD)
    order_A = sort_by_expert(experts_TK.reshape(-1), E)
    inverse_A = torch.empty_like(order_A)
    inverse_A[order_A] = torch.arange(order_A.numel(), device=order_A.device)
    offs_E = torch.cumsum(tokens_per_expert_E, 0, dtype=torch.int32)
    x_AD = native._GatherTokens.apply(x_TD.to(dtype), order_A, inverse_A, K)
    w_A1 = weights_TK.reshape(-1)[order_A].float().unsqueeze(1)
    w_in = w.w_in_EHD.to(dtype).view(E, 2, H // 2, D).transpose(1, 2).reshape(E, H, D)
    h_AH = torch._grouped_mm(x_AD, w_in.transpose(-2, -1), offs=offs_E)
    h_AF = _SwiGLUInterleaved.apply(h_AH, w_A1)
    y_AD = torch._grouped_mm(h_AF, w.w_out_EFD.to(dtype), offs=offs_E)
    y_TKD = native._Permute.apply(y_AD, inverse_A, order_A).view(T, K, D)
    return y_TKD.sum(1, dtype=torch.float32).to(x_TD.dtype)


def check() -> None:
    from dataclasses import replace

    from models import ModelConfig, MoEConfig
    from models.moe import MoE
    from models.router import count_tokens

    torch.manual_seed(0)
    cfg = ModelConfig(d_model=16, n_heads=2, d_ff=24, moe=MoEConfig(num_experts=8, top_k=2))
    moe = MoE(replace(cfg, moe=replace(cfg.moe, backend="torch")))
    x = torch.randn(50, 16, requires_grad=True)  # grouped_mm on CPU: float32 at most
    with torch.no_grad():
        r = moe.router(x)
    wts = r.weights_TK.clone().requires_grad_(True)
    counts = count_tokens(r.experts_TK, 8)
    params = [x, wts, moe.w_in_EHD, moe.w_out_EFD]
    outs = [
        f(x, r.experts_TK, wts, counts, moe.weights)
        for f in (native.native_experts, interleaved_experts)
    ]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-6, atol=1e-6)
    for a, b in zip(*(torch.autograd.grad(y.square().sum(), params) for y in outs)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    print("interleaved experts: the committed values and gradients (float32, on CPU)")


if sys.argv[1] == "check":
    check()
    sys.exit()
variant, tool, args = sys.argv[1], sys.argv[2], sys.argv[3:]
if variant == "interleaved":
    native.native_experts = interleaved_experts
{"run_profile": run_profile.main, "profile_layer": profile_layer.main}[tool](args)
