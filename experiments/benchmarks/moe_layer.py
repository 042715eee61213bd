"""MoE layer fwd+bwd on CUDA: dense-equivalent MLP vs each backend (prints a table).

    python -m experiments.benchmarks.moe_layer [--tokens 16384 --d-model 1024 --ffn 1024]

Dense-equivalent: a GLU MLP of hidden K*F (the same active FLOPs per token). bf16 weights and
activations, as MegaBlocks benchmarks itself. Routing is the real router (random init), so loads
are near-uniform, not perfectly balanced. 'ratio' = dense ms / backend ms (1.0 = as fast as
dense). 'grouped GEMMs only' times the three expert GEMMs on pre-sorted, perfectly balanced
tokens through torch._grouped_mm and through torch.bmm, the floor under the native backend.
'compiled' rows time the layer inside torch.compile (default mode), as training runs steps of
1e13 FLOPs or more, against the faster of the eager and compiled dense layers; 'graphed' rows
replay it as CUDA graphs (mode reduce-overhead), as training runs smaller steps and the studies'
runs, against the dense layer graphed: the GPU's time with the host's launches taken away.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from experiments.benchmarks.timing import bench_ms, matmul_peak_tflops
from models import ModelConfig, MoEConfig
from models.backends import megablocks_installed
from models.moe import DenseMLP, MoE


def fwd_bwd(module, x, gy, graphed: bool = False):
    def step():
        if graphed:  # a new CUDA-graph tree step: the last step's outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        y, _ = module(x)
        y.backward(gy)

    return step


def grouped_gemm_floor(T, K, E, D, Fh):
    A = T * K
    x = torch.randn(A, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w13 = torch.randn(E, 2 * Fh, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w2 = torch.randn(E, Fh, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    offs = torch.arange(1, E + 1, device="cuda", dtype=torch.int32) * (A // E)
    gy = torch.randn(A, D, device="cuda", dtype=torch.bfloat16)

    def grouped():
        h = torch._grouped_mm(x, w13.transpose(-2, -1), offs=offs)
        h = F.silu(h[:, :Fh]) * h[:, Fh:]
        torch._grouped_mm(h, w2, offs=offs).backward(gy)

    def batched():
        xb = x.view(E, A // E, D)
        h = torch.bmm(xb, w13.transpose(-2, -1))
        h = F.silu(h[..., :Fh]) * h[..., Fh:]
        torch.bmm(h, w2).view(A, D).backward(gy)

    return bench_ms(grouped), bench_ms(batched)


def reference_ms(name: str, results: dict[str, float]) -> float:
    """The dense layer a row is compared with: graphed with graphed; compiled with the faster of
    the eager and compiled dense layers; the rest with the eager dense layer."""
    dense_ms = results["dense-equivalent"]
    if "graphed" in name:
        return results["dense graphed"]
    if "compiled" in name:
        return min(dense_ms, results["dense compiled"])
    return dense_ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--shapes", default="8x1,8x2,64x8,256x8,64x1")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-compiled", dest="compiled", action="store_false")
    a = ap.parse_args()
    T, D, Fh = a.tokens, a.d_model, a.ffn
    backends = ["native", "torch"] + (["megablocks"] if megablocks_installed() else [])
    print(
        f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"bf16 matmul peak {matmul_peak_tflops():.0f} TFLOP/s (measured)"
    )
    print(f"T={T} tokens, d_model={D}, expert hidden={Fh}, SwiGLU, fwd+bwd, bf16\n")
    head = f"{'E':>4} {'K':>3} {'layer':<22} {'ms':>8} {'TFLOP/s':>8} {'vs dense':>9}"
    print(head + "\n" + "-" * len(head))
    rows = []
    for shape in a.shapes.split(","):
        E, K = map(int, shape.split("x"))
        flops = 3 * 2 * T * K * 3 * D * Fh
        x = torch.randn(T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        gy = torch.randn(T, D, device="cuda", dtype=torch.bfloat16)
        torch.manual_seed(0)
        dense = DenseMLP(D, K * Fh, glu=True).cuda().to(torch.bfloat16)
        dense_ms = bench_ms(fwd_bwd(dense, x, gy))
        results = {"dense-equivalent": dense_ms}
        if a.compiled:  # as training runs them: the layer inside a compiled region
            results["dense compiled"] = bench_ms(fwd_bwd(torch.compile(dense), x, gy))
            graphed = torch.compile(dense, mode="reduce-overhead")
            results["dense graphed"] = bench_ms(fwd_bwd(graphed, x, gy, graphed=True))
        cfg = ModelConfig(
            d_model=D, n_heads=max(1, D // 64), d_ff=Fh, moe=MoEConfig(num_experts=E, top_k=K)
        )
        for backend in backends:
            if backend == "torch" and E > 64:
                continue  # a Python loop over experts: minutes, and no news
            torch.manual_seed(0)
            moe = MoE(replace(cfg, moe=replace(cfg.moe, backend=backend)))
            moe = moe.cuda().to(torch.bfloat16)
            results[f"MoE {backend}"] = bench_ms(fwd_bwd(moe, x, gy))
            if a.compiled and backend == "native":
                results["MoE native compiled"] = bench_ms(fwd_bwd(torch.compile(moe), x, gy))
                graphed = torch.compile(moe, mode="reduce-overhead")
                results["MoE native graphed"] = bench_ms(fwd_bwd(graphed, x, gy, graphed=True))
        if E >= 8:
            g_ms, b_ms = grouped_gemm_floor(T, K, E, D, Fh)
            results["grouped GEMMs only"] = g_ms
            results["bmm GEMMs only"] = b_ms
        for name, ms in results.items():
            ref_ms = reference_ms(name, results)
            print(
                f"{E:>4} {K:>3} {name:<22} {ms:>8.3f} {flops / ms / 1e9:>8.0f} {ref_ms / ms:>9.2f}"
            )
            rows.append(
                {
                    "E": E,
                    "K": K,
                    "layer": name,
                    "ms": ms,
                    "tflops": flops / ms / 1e9,
                    "ratio_vs_dense": ref_ms / ms,
                }
            )
        print()
        if a.json:  # after every shape: a call cut short keeps the shapes it finished
            Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
