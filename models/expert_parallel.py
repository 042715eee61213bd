"""Expert parallelism: each rank of an expert-parallel group of size P holds E/P experts.

A layer routes its own tokens as usual, then sends each assignment to the rank that holds its
expert and gets the results back, both with all-to-all (differentiable, so gradients travel
the same way in reverse). Rank p holds experts [p E/P, (p+1) E/P). Dropless: every assignment
is computed. The split sizes must be known on the host, so each layer synchronises once per
direction (as every all-to-all MoE does).

Shapes: T tokens, K experts per token, A = T*K assignments sent, R assignments received,
E experts, El = E/P local experts, P ranks in the group, D width, H = 2F (GLU) or F.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed._functional_collectives import all_to_all_single_autograd

from models.backends.common import (
    ExpertWeights,
    activation,
    combine,
    expert_mlp,
    sort_by_expert,
)


@dataclass
class EPGroup:
    """This rank's expert-parallel group (shares the experts) and expert-data-parallel group
    (ranks holding the same experts, whose gradients are averaged)."""

    group: dist.ProcessGroup
    size: int
    rank: int  # position in ``group``: which block of experts this rank holds
    dp_group: dist.ProcessGroup | None = None


def shard(full_E: torch.Tensor, ep: EPGroup) -> torch.Tensor:
    n = full_E.shape[0] // ep.size
    return full_E[ep.rank * n : (ep.rank + 1) * n]


def local_experts(x_RD: torch.Tensor, counts_El: torch.Tensor, w: ExpertWeights) -> torch.Tensor:
    """Each local expert on its (contiguous) rows: grouped GEMMs on CUDA, a loop elsewhere."""
    if x_RD.is_cuda and hasattr(torch, "_grouped_mm"):
        from models.backends.common import compute_dtype

        dtype = compute_dtype(x_RD)
        offs = torch.cumsum(counts_El, 0, dtype=torch.int32)
        h = torch._grouped_mm(x_RD.to(dtype), w.w_in_EHD.to(dtype).transpose(-2, -1), offs=offs)
        return torch._grouped_mm(activation(h, w.glu), w.w_out_EFD.to(dtype), offs=offs)
    # Empty experts are computed too (0 rows): the output must depend on x_RD even when this
    # rank received nothing, or its backward would skip the all-to-all its peers wait in.
    chunks = x_RD.split(counts_El.tolist())
    return torch.cat(
        [expert_mlp(x, w.w_in_EHD[e], w.w_out_EFD[e], w.glu) for e, x in enumerate(chunks)]
    )


def ep_experts(
    x_TD: torch.Tensor,
    experts_TK: torch.Tensor,
    weights_TK: torch.Tensor,
    counts_E: torch.Tensor,
    w_local: ExpertWeights,
    ep: EPGroup,
) -> torch.Tensor:
    K = experts_TK.shape[1]
    E = counts_E.numel()
    El = E // ep.size
    order_A = sort_by_expert(experts_TK.reshape(-1), E)  # by expert, hence by rank
    token_A = order_A // K
    x_AD = x_TD[token_A]
    send_PE = counts_E.view(ep.size, El)
    recv_PE = torch.empty_like(send_PE)
    dist.all_to_all_single(recv_PE, send_PE, group=ep.group)
    send = send_PE.sum(1).tolist()  # the host needs the split sizes: one sync
    recv = recv_PE.sum(1).tolist()
    x_RD = all_to_all_single_autograd(x_AD, recv, send, ep.group)
    # Received rows come grouped by source rank, each group sorted by local expert: regroup
    # by expert so each local expert's rows are contiguous.
    expert_R = torch.repeat_interleave(
        torch.arange(El, device=x_RD.device).repeat(ep.size), recv_PE.reshape(-1)
    )
    order_R = torch.argsort(expert_R, stable=True)
    y_sorted = local_experts(x_RD[order_R], recv_PE.sum(0), w_local)
    y_RD = y_sorted.new_empty(y_sorted.shape).index_copy(0, order_R, y_sorted)
    y_AD = all_to_all_single_autograd(y_RD, send, recv, ep.group)
    return combine(y_AD, token_A, order_A, weights_TK, x_TD)
