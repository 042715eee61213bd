"""Fourteenth session's A/B, measured in call 3 and landed in f553ed7: the native experts with
the router's weight applied after the down projection instead of inside the SwiGLU. Since
f553ed7 ``weight_after_experts`` is what ``models.backends.native.native_experts`` computes;
to rerun the A/B, check out f553ed7^ (its SwiGLU still takes the weight).

Call 1's profiles: the router weight's gradient, a reduction over every assignment's F hidden
units (it needs silu(g) * u * the incoming gradient), took 393 us a layer at the base model's
shape (d 768, F 3,072, E8 K1, 65,536 tokens) and 50 us at the study's d 192. The down projection
is linear, so w * down(a) = down(w * a): applied to the expert's D-wide output, the weight's
gradient is a reduction over D = F / 4 columns, which can fuse with the gather that brings the
incoming gradient to expert order. The function is the committed one up to rounding.

    python weight_after_ab.py check                          # CPU: the same values and gradients
    python weight_after_ab.py committed|after run_profile|profile_layer <their arguments>
"""

import sys

import torch
import torch.nn.functional as F

from experiments.benchmarks import profile_layer, run_profile
from models.backends import native
from models.backends.common import compute_dtype, sort_by_expert, swiglu


def _gelu(h_AF: torch.Tensor) -> torch.Tensor:
    return F.gelu(h_AF.float(), approximate="tanh").to(h_AF.dtype)


def weight_after_experts(x_TD, experts_TK, weights_TK, tokens_per_expert_E, w):
    """native.native_experts with each assignment's output scaled by its router weight after
    the down projection, in float32 with the sum over K."""
    T, K = experts_TK.shape
    D = x_TD.shape[-1]
    dtype = compute_dtype(x_TD)
    order_A = sort_by_expert(experts_TK.reshape(-1), w.w_in_EHD.shape[0])
    inverse_A = torch.empty_like(order_A)
    inverse_A[order_A] = torch.arange(order_A.numel(), device=order_A.device)
    offs_E = torch.cumsum(tokens_per_expert_E, 0, dtype=torch.int32)
    x_AD = native._GatherTokens.apply(x_TD.to(dtype), order_A, inverse_A, K)
    h_AH = torch._grouped_mm(x_AD, w.w_in_EHD.to(dtype).transpose(-2, -1), offs=offs_E)
    h_AF = native._fuse(swiglu if w.glu else _gelu, h_AH)(h_AH)
    y_AD = torch._grouped_mm(h_AF, w.w_out_EFD.to(dtype), offs=offs_E)
    y_TKD = native._Permute.apply(y_AD, inverse_A, order_A).view(T, K, D)
    weighted_TKD = y_TKD.float() * weights_TK.float().unsqueeze(-1)
    return weighted_TKD.sum(1).to(x_TD.dtype)


def check() -> None:

    from models import ModelConfig, MoEConfig
    from models.moe import MoE
    from models.router import count_tokens

    for k, expert_type in ((2, "glu"), (1, "glu"), (2, "mlp")):
        torch.manual_seed(0)
        cfg = ModelConfig(
            d_model=16,
            n_heads=2,
            d_ff=24,
            moe=MoEConfig(num_experts=8, top_k=k, expert_type=expert_type, backend="torch"),
        )
        moe = MoE(cfg)
        x = torch.randn(50, 16, requires_grad=True)  # grouped_mm on CPU: float32 at most
        with torch.no_grad():
            r = moe.router(x)
        wts = r.weights_TK.clone().requires_grad_(True)
        counts = count_tokens(r.experts_TK, 8)
        params = [x, wts, moe.w_in_EHD, moe.w_out_EFD]
        outs = [
            f(x, r.experts_TK, wts, counts, moe.weights)
            for f in (native.native_experts, weight_after_experts)
        ]
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
        for a, b in zip(*(torch.autograd.grad(y.square().sum(), params) for y in outs)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    print("weight after the down projection: the committed values and gradients (float32, CPU)")


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check()
        sys.exit()
    variant, tool, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if variant == "after":
        native.native_experts = weight_after_experts
    {"run_profile": run_profile.main, "profile_layer": profile_layer.main}[tool](args)
