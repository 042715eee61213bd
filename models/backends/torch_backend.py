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
    w: ExpertWeights,
) -> torch.Tensor:
    num_experts = w.w1_EFD.shape[0]
    x_AD, token_A, order_A, tokens_per_expert_E = permute(x_TD, experts_TK, num_experts)
    # One host sync for the split sizes; fine for the reference/CPU path.
    chunks = x_AD.split(tokens_per_expert_E.tolist())
    outs = []
    for e, x_eD in enumerate(chunks):
        if x_eD.shape[0] == 0:
            continue
        v1 = w.v1_EFD[e] if w.v1_EFD is not None else None
        outs.append(expert_mlp(x_eD, w.w1_EFD[e], v1, w.w2_EFD[e]))
    y_AD = torch.cat(outs) if outs else x_AD.new_zeros(0, x_TD.shape[-1])
    return combine(y_AD, token_A, order_A, weights_TK, x_TD)
