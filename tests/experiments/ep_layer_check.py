"""Run by test_scaleout under torchrun (2 ranks): a 2-way expert-parallel MoE layer against the
same layer unsharded, with identical weights and routing. gloo on CPU; with EP_CHECK_CUDA=1,
NCCL with one GPU per rank (the all-to-all a multi-GPU run uses)."""

import os

import torch
import torch.distributed as dist

from models import ModelConfig, MoEConfig
from models.expert_parallel import EPGroup
from models.moe import MoE

cuda = os.environ.get("EP_CHECK_CUDA") == "1"
dist.init_process_group("nccl" if cuda else "gloo")
rank, world = dist.get_rank(), dist.get_world_size()
dev = torch.device("cuda", rank) if cuda else torch.device("cpu")
if cuda:
    torch.cuda.set_device(dev)
cfg = ModelConfig(
    d_model=16,
    n_heads=2,
    n_layers=1,
    d_ff=24,
    moe=MoEConfig(num_experts=8, top_k=2, backend="torch"),
)


def check(case: str) -> None:
    torch.manual_seed(0)
    full = MoE(cfg).double().to(dev)
    torch.manual_seed(0)
    ep = MoE(cfg, EPGroup(dist.group.WORLD, world, rank)).double().to(dev)
    xs = [
        torch.randn(13, 16, generator=torch.Generator().manual_seed(10 + r), dtype=torch.float64)
        for r in range(world)
    ]
    if case == "rank 0 idle":  # every token routed to experts 4-7: rank 0 receives nothing
        with torch.no_grad():
            full.router.weight_ED[:, 0] = torch.where(torch.arange(8) < 4, -20.0, 20.0)
        for xi in xs:
            xi[:, 0] = xi[:, 0].abs() + 1
    ep.router.load_state_dict(full.router.state_dict())
    torch.testing.assert_close(ep.w_in_EHD, full.w_in_EHD[rank * 4 : (rank + 1) * 4])  # same init
    xs = [xi.to(dev) for xi in xs]
    grads = [
        torch.randn(13, 16, generator=torch.Generator().manual_seed(20 + r), dtype=torch.float64)
        for r in range(world)
    ]
    grads = [g.to(dev) for g in grads]

    x = xs[rank].clone().requires_grad_(True)
    y, _ = ep(x)
    y.backward(grads[rank])

    # the unsharded layer on every rank's tokens: outputs per rank, weight gradients summed
    ref_x = [xi.clone().requires_grad_(True) for xi in xs]
    for r, xi in enumerate(ref_x):
        yr, _ = full(xi)
        yr.backward(grads[r])
        if r == rank:
            torch.testing.assert_close(y, yr, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x.grad, ref_x[rank].grad, rtol=1e-10, atol=1e-12)
    for name in ("w_in_EHD", "w_out_EFD"):
        got = getattr(ep, name).grad  # each rank's experts collect every rank's contributions
        want = getattr(full, name).grad[rank * 4 : (rank + 1) * 4]
        assert got is not None, f"{case}: no gradient for {name} on rank {rank}"
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    g = ep.router.weight_ED.grad.clone()  # replicated: its gradient is per rank until DDP sums
    dist.all_reduce(g)
    torch.testing.assert_close(g, full.router.weight_ED.grad, rtol=1e-10, atol=1e-12)


for case in ("random routing", "rank 0 idle"):
    check(case)
print(f"rank {rank}: ep layer ok", flush=True)
dist.barrier()  # no rank tears down gloo while its peer still talks to it
dist.destroy_process_group()
