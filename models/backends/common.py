"""Pieces shared by every expert backend: the weight layout, permute/combine, one expert's MLP.

Weight layout (the same as MegaBlocks' grouped MLP, so its kernels can use our parameters):
``w1_EFD`` gate (or the MLP's input) projection, ``v1_EFD`` up projection (GLU only),
``w2_EFD`` down projection; an expert computes ``(silu(x w1^T) * (x v1^T)) w2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ExpertWeights:
    w1_EFD: torch.Tensor
    v1_EFD: torch.Tensor | None  # None for the plain (GELU) MLP
    w2_EFD: torch.Tensor

    @property
    def glu(self) -> bool:
        return self.v1_EFD is not None


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype expert GEMMs run in: autocast's when it is on (grouped GEMMs do not autocast)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def expert_mlp(
    x_ND: torch.Tensor, w1_FD: torch.Tensor, v1_FD: torch.Tensor | None, w2_FD: torch.Tensor
) -> torch.Tensor:
    if v1_FD is None:
        # tanh-approximate GELU: MegaBlocks' default activation, so backends agree.
        h_NF = F.gelu(x_ND @ w1_FD.t(), approximate="tanh")
    else:
        h_NF = F.silu(x_ND @ w1_FD.t()) * (x_ND @ v1_FD.t())
    return h_NF @ w2_FD


def permute(x_TD: torch.Tensor, experts_TK: torch.Tensor, num_experts: int):
    """Gather token rows into expert-sorted order.

    Returns x_AD (rows sorted by expert), token_A (source token of each row), order_A (index of
    each row in the flattened T*K assignment list) and tokens_per_expert_E.
    """
    k = experts_TK.shape[1]
    experts_A = experts_TK.reshape(-1)
    # Stable sort keeps tokens in their original order inside an expert: deterministic.
    order_A = torch.argsort(experts_A, stable=True)
    token_A = order_A // k
    tokens_per_expert_E = torch.bincount(experts_A, minlength=num_experts)
    return x_TD[token_A], token_A, order_A, tokens_per_expert_E


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
    acc_TD = torch.zeros(x_TD.shape, dtype=torch.promote_types(y_AD.dtype, torch.float32),
                         device=x_TD.device)
    acc_TD.index_add_(0, token_A, y_AD.to(acc_TD.dtype) * w_A.to(acc_TD.dtype))
    return acc_TD.to(x_TD.dtype)
