"""Where a backend's MoE layer spends its time: torch.profiler's CUDA kernel table, fwd+bwd.

python -m experiments.benchmarks.profile_layer --backend native --experts 64 --top-k 8 [--compile]

``--compile`` profiles the layer inside ``torch.compile`` (default mode: no CUDA graphs, so the
profiler sees every kernel), as a training run executes it. ``--experts 1`` profiles the dense
layer of the same active size (hidden top_k x ffn) instead: what the MoE layer is measured against.
"""

from __future__ import annotations

import argparse
import sys

import torch

from experiments.benchmarks.timing import profile_kernels
from models import ModelConfig, MoEConfig
from models.moe import DenseMLP, MoE


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="native")
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--rows", type=int, default=30)
    a = ap.parse_args(argv)
    cfg = ModelConfig(
        d_model=a.d_model,
        n_heads=max(1, a.d_model // 64),
        d_ff=a.ffn,
        moe=MoEConfig(num_experts=a.experts, top_k=a.top_k, backend=a.backend),
    )
    # float32 weights under bf16 autocast, as training keeps them
    dense = a.experts == 1
    moe = (DenseMLP(a.d_model, a.top_k * a.ffn, glu=True) if dense else MoE(cfg)).cuda()
    x = torch.randn(a.tokens, a.d_model, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    gy = torch.randn_like(x)
    layer = torch.compile(moe) if a.compile else moe

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y, aux = layer(x)
        # the router's losses take part, as in training (a dense layer has none)
        outputs, grads = [y], [gy]
        if aux.aux_loss.requires_grad:
            outputs, grads = [y, aux.aux_loss], [gy, torch.ones_like(aux.aux_loss)]
        torch.autograd.backward(outputs, grads)

    table, ms = profile_kernels(step, a.rows)
    print(table)
    print(f"GPU kernel time: {ms:.3f} ms a step (fwd+bwd)")


if __name__ == "__main__":
    main(sys.argv[1:])
