"""Token-choice top-k router and its auxiliary losses.

Shapes: T tokens, D model width, E experts (after granularity), K experts per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Routing:
    weights_TK: torch.Tensor  # float32 (or float64) combine weights of the chosen experts
    experts_TK: torch.Tensor  # int64 expert ids
    probs_TE: torch.Tensor  # float32 softmax over all experts
    logits_TE: torch.Tensor  # float32 router logits


def count_tokens(experts_TK: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Assignments per expert, int64 (E,). A scatter-add, not torch.bincount: CUDA's bincount
    reads the maximum id back to the host to size its output, a sync on every layer."""
    experts_A = experts_TK.reshape(-1)
    counts_E = torch.zeros(num_experts, dtype=torch.int64, device=experts_A.device)
    return counts_E.scatter_add_(0, experts_A, torch.ones_like(experts_A))


def load_balancing_loss(probs_TE: torch.Tensor, tokens_per_expert_E: torch.Tensor) -> torch.Tensor:
    """Switch Transformer / MegaBlocks form: E * sum_e f_e * P_e.

    f_e is the fraction of the T*K assignments sent to expert e, P_e the mean router probability
    of expert e. Perfectly uniform routing gives exactly 1.0; routing that concentrates both
    assignments and probability on few experts gives up to E. The layer multiplies by
    ``moe.load_balance_coef``. f_e is a count, so only P_e carries gradient (as in Switch).
    """
    num_experts = probs_TE.shape[-1]
    counts_E = tokens_per_expert_E.to(probs_TE.dtype)
    f_E = counts_E / counts_E.sum()
    P_E = probs_TE.mean(dim=0)
    return num_experts * torch.sum(f_E * P_E)


def router_z_loss(logits_TE: torch.Tensor) -> torch.Tensor:
    """ST-MoE's z-loss: mean over tokens of logsumexp(logits)^2; keeps logits small."""
    return torch.logsumexp(logits_TE, dim=-1).square().mean()


class Router(nn.Module):
    """linear -> softmax over all experts -> top-k (optionally renormalised)."""

    def __init__(
        self, d_model: int, num_experts: int, top_k: int, renormalize: bool, init_std: float = 0.02
    ):
        super().__init__()
        self.weight_ED = nn.Parameter(torch.empty(num_experts, d_model))
        self.top_k = top_k
        self.renormalize = renormalize
        self.init_std = init_std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight_ED, std=self.init_std)

    def forward(self, x_TD: torch.Tensor) -> Routing:
        # Routing decisions are made in float32 even under bf16 autocast: ties and tiny
        # logit differences decide which expert a token gets.
        with torch.autocast(device_type=x_TD.device.type, enabled=False):
            dtype = torch.promote_types(x_TD.dtype, torch.float32)
            logits_TE = F.linear(x_TD.to(dtype), self.weight_ED.to(dtype))
            probs_TE = torch.softmax(logits_TE, dim=-1)
            if self.top_k == 1:  # a max-reduction that fuses with the softmax; topk does not
                weights_T, experts_T = probs_TE.max(dim=-1)
                weights_TK, experts_TK = weights_T.unsqueeze(1), experts_T.unsqueeze(1)
            else:
                weights_TK, experts_TK = torch.topk(probs_TE, self.top_k, dim=-1)
            if self.renormalize:
                weights_TK = weights_TK / weights_TK.sum(dim=-1, keepdim=True)
        return Routing(weights_TK, experts_TK, probs_TE, logits_TE)
