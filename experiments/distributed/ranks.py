"""Data parallelism on torch.distributed: torchrun (one or several nodes) or SLURM tasks.

A run started by ``torchrun --nproc_per_node=N -m experiments.train ...`` (or as N SLURM
tasks, whose environment is turned into torch.distributed's) trains one model over N
processes: DDP, or FSDP2's ``fully_shard`` when the model's training state would not fit one
GPU (``run.parallel``). The global batch and the budget are counted over all ranks; rank 0
alone writes the run record. Without those launchers everything here is a no-op (world 1).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launched: bool = False  # under torchrun / SLURM tasks: the process group exists

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _slurm_to_torch_env() -> None:
    """SLURM tasks (hydra's submitit launcher with tasks_per_node > 1) -> torchrun's variables."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    import submitit  # installed with the [slurm] extra

    env = submitit.JobEnvironment()
    # One port per job, so two jobs sharing a node do not collide.
    port = 20000 + int(env.job_id.split("_")[0]) % 20000 if env.job_id[:1].isdigit() else 29500
    os.environ.update(
        RANK=str(env.global_rank),
        LOCAL_RANK=str(env.local_rank),
        WORLD_SIZE=str(env.num_tasks),
        MASTER_ADDR=env.hostnames[0],
        MASTER_PORT=os.environ.get("MASTER_PORT", str(port)),
    )


def init() -> Dist:
    """Join the process group when launched by torchrun or as SLURM tasks."""
    _slurm_to_torch_env()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Dist()
    d = Dist(
        int(os.environ["RANK"]),
        int(os.environ["WORLD_SIZE"]),
        int(os.environ.get("LOCAL_RANK", "0")),
        launched=True,
    )
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(d.local_rank)
        dist.init_process_group(backend)
    return d


def device_for(d: Dist) -> torch.device | None:
    """The device a launched rank must use (None: choose as usual)."""
    if not d.launched:
        return None
    return (
        torch.device(f"cuda:{d.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    )


def all_reduce_(t: torch.Tensor, d: Dist, op=dist.ReduceOp.SUM) -> torch.Tensor:
    if d.launched and d.world > 1:
        dist.all_reduce(t, op=op)
    return t


def any_rank(flag: bool, d: Dist, device: torch.device) -> bool:
    """True on every rank if it is true on any (one collective; a host sync)."""
    if not (d.launched and d.world > 1):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj, d: Dist):
    if not (d.launched and d.world > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Dist) -> None:
    if d.launched and d.world > 1:
        dist.barrier()


def training_bytes(params_total: int) -> int:
    """fp32 weights + gradients + AdamW's two moments + a bf16 copy: 18 bytes a parameter."""
    return 18 * params_total


def choose_parallel(choice: str, params_total: int, device: torch.device) -> str:
    if choice != "auto":
        return choice
    if device.type != "cuda":
        return "ddp"
    total = torch.cuda.get_device_properties(device).total_memory
    return "fsdp" if training_bytes(params_total) > 0.6 * total else "ddp"


def wrap(model: torch.nn.Module, d: Dist, strategy: str, device: torch.device):
    """The model as the training step sees it: DDP or FSDP2 when launched, itself otherwise."""
    if not d.launched:
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    ignored = getattr(model, "expert_parallel_params", [])  # reduced by their own group
    if ignored:
        DDP._set_params_and_buffers_to_ignore_for_model(model, ignored)
    return DDP(model, device_ids=ids)


@contextlib.contextmanager
def gradient_sync(wrapped: torch.nn.Module, sync: bool) -> Iterator[None]:
    """Accumulating micro-batches: no gradient all-reduce (DDP) or reduce-scatter (FSDP2)
    until the last one, whose backward synchronises the sum."""
    if sync:
        yield
        return
    if hasattr(wrapped, "no_sync"):  # DDP
        with wrapped.no_sync():
            yield
        return
    if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)
        return
    yield  # one process: nothing to synchronise


# What a collective raises when another rank is gone (killed, pre-empted, its host lost).
PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "NCCL")


def lost_peer(e: BaseException, d: Dist) -> bool:
    """Whether a multi-rank run stopped because another rank is gone, not because training
    failed: such a run is resumable from its last checkpoint, never a failure to retry."""
    if d.world <= 1:
        return False
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    return isinstance(e, RuntimeError) and any(s in str(e) for s in PEER_LOST)


def close(d: Dist) -> None:
    if d.launched and dist.is_initialized():
        dist.destroy_process_group()


# ---- expert parallelism ---------------------------------------------------------------------
# Ranks [g*P, (g+1)*P) share one copy of the experts (rank g*P + p holds block p); the ranks
# holding the same block form its expert-data-parallel group. DDP skips expert weights (they
# differ between ranks); their gradients are summed over the expert-data-parallel group here.
