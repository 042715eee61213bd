"""Pieces shared by every expert backend: the weight layout, permute/combine, one expert's MLP.

Weight layout: ``w_in_EHD`` holds each expert's input projections as rows, H = 2F for SwiGLU
(rows [:F] the gate, rows [F:] the up projection, so one GEMM computes both) and H = F for the
GELU MLP; ``w_out_EFD`` is the down projection. An expert computes
``(silu(x w_gate^T) * (x w_up^T)) w_out`` (GLU) or ``gelu(x w_in^T) w_out`` (MLP).
MegaBlocks' GroupedGLU stores the same matrices as (E*F, D) each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ExpertWeights:
    w_in_EHD: torch.Tensor  # (E, 2F, D) for GLU, (E, F, D) for MLP
    w_out_EFD: torch.Tensor  # (E, F, D)
    glu: bool

    @property
    def hidden(self) -> int:
        return self.w_out_EFD.shape[1]


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype expert GEMMs run in: autocast's when it is on (grouped GEMMs do not autocast)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _gate_up(h_N2F: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The gate and up halves of h_N2F in float32 (float64 stays float64)."""
    f = h_N2F.shape[-1] // 2
    acc = torch.promote_types(h_N2F.dtype, torch.float32)
    return h_N2F[..., :f].to(acc), h_N2F[..., f:].to(acc)


class _SwiGLU(torch.autograd.Function):
    """y_NF = silu(g_NF) * u_NF with h_N2F = [g | u], its backward written out.

    In float32 (float64 stays float64), rounded to h's dtype once. Autograd's own backward of
    this expression made inductor emit a kernel that wrote the two halves of dh through a
    slice-backward, 2-3x what reading the inputs once costs; written out, the study step's
    kernels took 1.5% less (docs/gpu-performance.md, twelfth session). It is still not one read
    of each input: inductor lowers the concatenation of dg and du as one pointwise kernel over
    both halves, which loads g and the incoming gradient once for each half (interleaving the
    halves was slower: thirteenth session). The native experts apply the router's weight after
    the down projection, not here (models/backends/native.py says why)."""

    @staticmethod
    def forward(ctx, h_N2F):  # type: ignore[override]
        ctx.save_for_backward(h_N2F)
        g, u = _gate_up(h_N2F)
        return (F.silu(g) * u).to(h_N2F.dtype)

    @staticmethod
    def backward(ctx, gy_NF):  # type: ignore[override]
        (h_N2F,) = ctx.saved_tensors
        g, u = _gate_up(h_N2F)
        gy = gy_NF.to(g.dtype)
        sig = torch.sigmoid(g)
        dg = gy * u * sig * (1 + g * (1 - sig))  # silu'(g) = sig (1 + g (1 - sig))
        du = gy * g * sig
        return torch.cat((dg, du), -1).to(h_N2F.dtype)


def swiglu(h_N2F: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up of h_N2F = [gate | up] (see _SwiGLU)."""
    return _SwiGLU.apply(h_N2F)


def activation(h_NH: torch.Tensor, glu: bool) -> torch.Tensor:
    if glu:
        return swiglu(h_NH)
    # tanh-approximate GELU: MegaBlocks' default activation, so backends agree.
    return F.gelu(h_NH, approximate="tanh")


def expert_mlp(
    x_ND: torch.Tensor, w_in_HD: torch.Tensor, w_out_FD: torch.Tensor, glu: bool
) -> torch.Tensor:
    return activation(x_ND @ w_in_HD.t(), glu) @ w_out_FD


def sort_by_expert(experts_A: torch.Tensor, num_experts: int) -> torch.Tensor:
    """The stable order of assignments by expert id: ``argsort(experts_A, stable=True)``.

    The ids are sorted as the narrowest integer type that holds them: CUDA's radix sort makes
    one pass per digit of the key's width, so uint8 keys (E <= 256) take one or two passes
    where int64 keys take eight or more. The order is the same (tested)."""
    if num_experts <= 256:
        key_A = experts_A.to(torch.uint8)
    elif num_experts <= 32768:
        key_A = experts_A.to(torch.int16)
    else:
        key_A = experts_A
    return torch.argsort(key_A, stable=True)


def permute(x_TD: torch.Tensor, experts_TK: torch.Tensor):
    """Gather token rows into expert-sorted order.

    Returns x_AD (rows sorted by expert), token_A (source token of each row) and order_A (index
    of each row in the flattened T*K assignment list).
    """
    k = experts_TK.shape[1]
    # Stable sort keeps tokens in their original order inside an expert: deterministic.
    order_A = torch.argsort(experts_TK.reshape(-1), stable=True)
    token_A = order_A // k
    return x_TD[token_A], token_A, order_A


def combine(
    y_AD: torch.Tensor,
    token_A: torch.Tensor,
    order_A: torch.Tensor,
    weights_TK: torch.Tensor,
    x_TD: torch.Tensor,
) -> torch.Tensor:
    """Weight each expert output by its router weight and scatter-add back to its token.

    Accumulates in float32 so a token's K contributions are summed before rounding to bf16.
    """
    w_A = weights_TK.reshape(-1)[order_A].unsqueeze(-1)
    acc_TD = torch.zeros(
        x_TD.shape, dtype=torch.promote_types(y_AD.dtype, torch.float32), device=x_TD.device
    )
    acc_TD.index_add_(0, token_A, y_AD.to(acc_TD.dtype) * w_A.to(acc_TD.dtype))
    return acc_TD.to(x_TD.dtype)
