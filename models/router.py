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


def sequence_balance_loss(
    probs_BSE: torch.Tensor, experts_BSK: torch.Tensor, num_experts: int
) -> torch.Tensor:
    """DeepSeek-V3's sequence-wise balance loss: the Switch form (E * sum_e f_e P_e, 1.0 when
    balanced) within each sequence, averaged over sequences. ``probs``: scores normalised to
    sum to one over the experts."""
    B, S, K = experts_BSK.shape
    counts_BE = torch.zeros(B, num_experts, dtype=probs_BSE.dtype, device=probs_BSE.device)
    counts_BE.scatter_add_(
        1, experts_BSK.reshape(B, S * K), torch.ones_like(counts_BE[:, :1]).expand(B, S * K)
    )
    f_BE = counts_BE / (S * K)
    return (num_experts * (f_BE * probs_BSE.mean(dim=1)).sum(-1)).mean()


def router_z_loss(logits_TE: torch.Tensor) -> torch.Tensor:
    """ST-MoE's z-loss: mean over tokens of logsumexp(logits)^2; keeps logits small."""
    return torch.logsumexp(logits_TE, dim=-1).square().mean()


class Router(nn.Module):
    """linear -> scores (softmax over all experts, or each expert's sigmoid) -> top-k
    (optionally renormalised over the chosen).

    Auxiliary-loss-free balancing (DeepSeek-V3; ``bias_rate`` > 0): a per-expert bias is added
    to the scores to *choose* experts only (the combine weights stay the scores, so the bias
    never enters the gradient). The trainer hands the router each forward's expert counts
    (``observe``); after the optimiser step, ``post_optimizer_step`` sums them over all ranks
    (so every rank moves the same bias) and moves each expert's bias by ``bias_rate`` toward
    equal load: up if it got fewer than the mean, down if more. The bias is a persistent
    buffer: it is checkpointed and resumed with the weights."""

    bias_E: torch.Tensor  # buffers (aux-loss-free balancing only)
    step_counts_E: torch.Tensor

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        top_k: int,
        renormalize: bool,
        init_std: float = 0.02,
        score: str = "softmax",
        bias_rate: float = 0.0,
    ):
        super().__init__()
        self.weight_ED = nn.Parameter(torch.empty(num_experts, d_model))
        self.top_k = top_k
        self.renormalize = renormalize
        self.init_std = init_std
        self.score, self.bias_rate = score, bias_rate
        if bias_rate > 0:
            self.register_buffer("bias_E", torch.zeros(num_experts))
            self.register_buffer("step_counts_E", torch.zeros(num_experts), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight_ED, std=self.init_std)
        if self.bias_rate > 0:
            self.bias_E.zero_()
            self.step_counts_E.zero_()

    @torch.no_grad()
    def observe(self, tokens_per_expert_E: torch.Tensor) -> None:
        """One forward's expert counts (called eagerly by the trainer, outside any compiled
        graph, so a CUDA-graph replay never mutates this buffer)."""
        self.step_counts_E += tokens_per_expert_E.to(self.step_counts_E.dtype)

    @property
    def has_post_optimizer_step(self) -> bool:
        """Only a bias-balanced router has state to update after the optimiser step."""
        return self.bias_rate > 0

    @torch.no_grad()
    def post_optimizer_step(self) -> None:
        if self.bias_rate <= 0:
            return
        counts_E = self.step_counts_E
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts_E)  # every rank's tokens: one bias for all
        self.bias_E += self.bias_rate * torch.sign(counts_E.mean() - counts_E)
        counts_E.zero_()

    def forward(self, x_TD: torch.Tensor) -> Routing:
        # Routing decisions are made in float32 even under bf16 autocast: ties and tiny
        # logit differences decide which expert a token gets.
        with torch.autocast(device_type=x_TD.device.type, enabled=False):
            dtype = torch.promote_types(x_TD.dtype, torch.float32)
            logits_TE = F.linear(x_TD.to(dtype), self.weight_ED.to(dtype))
            if self.score == "softmax":
                scores_TE = probs_TE = torch.softmax(logits_TE, dim=-1)
            else:  # sigmoid: per-expert affinities; the balance losses read them normalised
                scores_TE = torch.sigmoid(logits_TE)
                probs_TE = scores_TE / scores_TE.sum(dim=-1, keepdim=True)
            if self.bias_rate > 0:  # the bias chooses; the weights stay the scores
                choice_TE = scores_TE + self.bias_E.to(dtype)
                _, experts_TK = torch.topk(choice_TE, self.top_k, dim=-1)
                weights_TK = scores_TE.gather(-1, experts_TK)
            elif self.top_k == 1:  # a max-reduction that fuses with the softmax; topk does not
                weights_T, experts_T = scores_TE.max(dim=-1)
                weights_TK, experts_TK = weights_T.unsqueeze(1), experts_T.unsqueeze(1)
            else:
                weights_TK, experts_TK = torch.topk(scores_TE, self.top_k, dim=-1)
            if self.renormalize:
                weights_TK = weights_TK / weights_TK.sum(dim=-1, keepdim=True)
        return Routing(weights_TK, experts_TK, probs_TE, logits_TE)
