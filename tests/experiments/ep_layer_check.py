"""Run by test_scaleout under torchrun (2 ranks, gloo): a 2-way expert-parallel MoE layer
against the same layer unsharded, with identical weights and routing."""

import torch
import torch.distributed as dist

from models import ModelConfig, MoEConfig
from models.expert_parallel import EPGroup
from models.moe import MoE

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
cfg = ModelConfig(
    d_model=16,
    n_heads=2,
    n_layers=1,
    d_ff=24,
    moe=MoEConfig(num_experts=8, top_k=2, backend="torch"),
)
torch.manual_seed(0)
full = MoE(cfg).double()
torch.manual_seed(0)
ep = MoE(cfg, EPGroup(dist.group.WORLD, world, rank)).double()
ep.router.load_state_dict(full.router.state_dict())
torch.testing.assert_close(ep.w_in_EHD, full.w_in_EHD[rank * 4 : (rank + 1) * 4])  # same init

xs = [
    torch.randn(13, 16, generator=torch.Generator().manual_seed(10 + r), dtype=torch.float64)
    for r in range(world)
]
x = xs[rank].clone().requires_grad_(True)
y, _ = ep(x)
gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(20 + rank), dtype=y.dtype)
y.backward(gy)

# the unsharded layer on every rank's tokens: outputs per rank, weight gradients summed
ref_x = [xi.clone().requires_grad_(True) for xi in xs]
for r, xi in enumerate(ref_x):
    yr, _ = full(xi)
    yr.backward(
        torch.randn(yr.shape, generator=torch.Generator().manual_seed(20 + r), dtype=yr.dtype)
    )
    if r == rank:
        torch.testing.assert_close(y, yr, rtol=1e-10, atol=1e-12)
torch.testing.assert_close(x.grad, ref_x[rank].grad, rtol=1e-10, atol=1e-12)
for name in ("w_in_EHD", "w_out_EFD"):
    got = getattr(ep, name).grad  # each rank's experts collect every rank's contributions
    want = getattr(full, name).grad[rank * 4 : (rank + 1) * 4]
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
g = ep.router.weight_ED.grad.clone()  # replicated: its gradient is per rank until DDP sums
dist.all_reduce(g)
torch.testing.assert_close(g, full.router.weight_ED.grad, rtol=1e-10, atol=1e-12)
print(f"rank {rank}: ep layer ok", flush=True)
dist.destroy_process_group()
