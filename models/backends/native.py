"""Fast dropless experts on CUDA in plain PyTorch: one grouped GEMM per projection.

No host synchronisation: group offsets stay on the device (``torch._grouped_mm`` takes them
as a tensor), so the CPU never waits for the routing to finish. Gate and up projections are one
grouped GEMM with N = 2F (one pass over the gathered tokens instead of two). Outputs are put
back in token order by gathering with the inverse permutation and summed over K in float32:
deterministic, no atomics in the forward pass.

Shapes: T tokens, K experts per token, A = T*K assignments, E experts, F hidden, D width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.backends.common import ExpertWeights


def grouped_mm_available() -> bool:
    return hasattr(torch, "_grouped_mm")


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def native_experts(
    x_TD: torch.Tensor,
    experts_TK: torch.Tensor,
    weights_TK: torch.Tensor,
    w: ExpertWeights,
) -> torch.Tensor:
    if not grouped_mm_available():  # torch < 2.8: the portable path
        from models.backends.torch_backend import torch_experts

        return torch_experts(x_TD, experts_TK, weights_TK, w)
    T, K = experts_TK.shape
    E, Fh, D = w.w1_EFD.shape
    dtype = _compute_dtype(x_TD)
    experts_A = experts_TK.reshape(-1)
    order_A = torch.argsort(experts_A, stable=True)
    inverse_A = torch.empty_like(order_A)
    inverse_A[order_A] = torch.arange(order_A.numel(), device=order_A.device)
    offs_E = torch.cumsum(torch.bincount(experts_A, minlength=E), 0, dtype=torch.int32)
    x_AD = x_TD.to(dtype).index_select(0, order_A // K)
    if w.glu:
        w13_E2FD = torch.cat((w.w1_EFD, w.v1_EFD), dim=1).to(dtype)
        h_A2F = torch._grouped_mm(x_AD, w13_E2FD.transpose(-2, -1), offs=offs_E)
        h_AF = F.silu(h_A2F[:, :Fh]) * h_A2F[:, Fh:]
    else:
        h_AF = F.gelu(torch._grouped_mm(x_AD, w.w1_EFD.to(dtype).transpose(-2, -1),
                                        offs=offs_E), approximate="tanh")
    y_AD = torch._grouped_mm(h_AF, w.w2_EFD.to(dtype), offs=offs_E)
    y_TKD = y_AD.index_select(0, inverse_A).view(T, K, D)
    out_TD = torch.einsum("tkd,tk->td", y_TKD.float(), weights_TK.float())
    return out_TD.to(x_TD.dtype)
