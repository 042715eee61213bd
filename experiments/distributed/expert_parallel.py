"""Expert parallelism, the training side: the groups a rank's experts are split over, their
gradients (averaged like DDP's), global gradient clipping that counts each expert block once,
and checkpoints that hold full expert tensors (gathered on save, split on load), so a run
resumes with any number of ranks. The layer's side (the all-to-all dispatch) is
models/expert_parallel.py: models know nothing of training.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from experiments.distributed.ranks import Dist
from models.expert_parallel import EPGroup


def expert_groups(d: Dist, size: int):
    """This rank's EPGroup; every rank creates every group, in the same order."""

    if size <= 1:
        return None
    if not d.launched or d.world % size:
        raise ValueError(
            f"moe.expert_parallel={size} needs torchrun with a multiple of {size} "
            f"ranks (this run has {d.world})"
        )
    mine = dp_mine = None
    for g in range(d.world // size):
        ranks = list(range(g * size, (g + 1) * size))
        group = dist.new_group(ranks)
        if d.rank in ranks:
            mine = group
    for p in range(size):
        ranks = list(range(p, d.world, size))
        group = dist.new_group(ranks)
        if d.rank in ranks:
            dp_mine = group
    return EPGroup(mine, size, d.rank % size, dp_mine)


def _expert_params(model, ep) -> list:
    if ep is None:
        return []
    names = set(model.expert_parallel_params)
    return [p for n, p in model.named_parameters() if n in names]


def reduce_expert_grads(model, ep, d: Dist) -> None:
    """Expert gradients, averaged the way DDP averages the others (over all ranks)."""
    for p in _expert_params(model, ep):
        if p.grad is not None:
            dist.all_reduce(p.grad, group=ep.dp_group)
            p.grad.div_(d.world)


def clip_grad_norm_(model, max_norm: float, ep) -> torch.Tensor:
    """The global gradient norm before clipping (a device tensor: nothing waits for it), and
    the gradients clipped to ``max_norm`` (0: not clipped). With experts split over an EP
    group, each block counts once (its shard's squared norm is summed over the group)."""
    params = [p for p in model.parameters() if p.grad is not None]
    if ep is None:
        if max_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        full = getattr(norm, "full_tensor", None)  # FSDP2: a sharded (DTensor) norm
        return full() if full else norm
    experts = {id(p) for p in _expert_params(model, ep)}
    sq = {"shared": params[0].grad.new_zeros((), dtype=torch.float32)}
    sq["sharded"] = sq["shared"].clone()
    for p in params:
        key = "sharded" if id(p) in experts else "shared"
        sq[key] = sq[key] + p.grad.float().pow(2).sum()
    dist.all_reduce(sq["sharded"], group=ep.group)
    norm = (sq["shared"] + sq["sharded"]).sqrt()
    if max_norm > 0:
        scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for p in params:
            p.grad.mul_(scale.to(p.grad.dtype))
    return norm


def gather_experts(state: dict, names: list[str], ep) -> dict:
    """A training state with every expert shard replaced by the full tensor (collective)."""
    if ep is None:
        return state

    def full(t: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(t) for _ in range(ep.size)]
        dist.all_gather(parts, t.contiguous(), group=ep.group)
        return torch.cat(parts)

    model = {k: full(v) if k in names else v for k, v in state["model"].items()}
    optim = dict(state["optim"])
    optim["state"] = {
        k: (
            {n: full(v) if torch.is_tensor(v) and v.dim() else v for n, v in s.items()}
            if k in names
            else s
        )
        for k, s in state["optim"]["state"].items()
    }
    return {"model": model, "optim": optim}


def split_experts(state: dict, names: list[str], ep) -> dict:
    """The inverse of gather_experts: keep this rank's block of every expert tensor."""
    if ep is None:
        return state
    from models.expert_parallel import shard

    model = {k: shard(v, ep) if k in names else v for k, v in state["model"].items()}
    optim = dict(state["optim"])
    optim["state"] = {
        k: (
            {n: shard(v, ep) if torch.is_tensor(v) and v.dim() else v for n, v in s.items()}
            if k in names
            else s
        )
        for k, s in state["optim"]["state"].items()
    }
    return {"model": model, "optim": optim}
