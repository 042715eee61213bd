"""Pure-PyTorch dropless expert computation: sort assignments by expert, one matmul per expert.

Runs on any device; it is the CPU backend and the float64 reference for the GPU backends.
Shapes: T tokens, K experts per token, A = T*K assignments, E experts, F expert hidden, D width.
"""

from __future__ import annotations

import torch

from models.backends.common import ExpertWeights, combine, expert_mlp, permute


def torch_experts(
    x_TD: torch.Tensor,
    experts_TK: torch.Tensor,
    weights_TK: torch.Tensor,
    tokens_per_expert_E: torch.Tensor,
    w: ExpertWeights,
) -> torch.Tensor:
    x_AD, token_A, order_A = permute(x_TD, experts_TK)
    # One host sync for the split sizes; fine for the reference/CPU path.
    chunks = x_AD.split(tokens_per_expert_E.tolist())
    outs = [
        expert_mlp(x_eD, w.w_in_EHD[e], w.w_out_EFD[e], w.glu)
        for e, x_eD in enumerate(chunks)
        if x_eD.shape[0]
    ]
    y_AD = torch.cat(outs) if outs else x_AD.new_zeros(0, x_TD.shape[-1])
    return combine(y_AD, token_A, order_A, weights_TK, x_TD)
