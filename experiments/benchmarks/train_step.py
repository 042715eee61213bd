"""Whole-model training step on CUDA: tokens/s and MFU per backend, with/without torch.compile.

    python -m experiments.benchmarks.train_step [--steps 20]

Model: d_model 768, 12 layers, SwiGLU 4x, E=8 K=1 (about 113M active non-embedding parameters),
seq 1024, vocab 16384, batch 16 (16,384 tokens/step), bf16 autocast, fused AdamW, synthetic
tokens. MFU = flops_per_token (active, models/accounting.py convention) x tokens/s divided by
the bf16 matmul rate measured on the same GPU in the same run.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from experiments.benchmarks.timing import matmul_peak_tflops
from experiments.config import OptimConfig
from experiments.trainer.optim import build_optimizer
from models import ModelConfig, MoEConfig, MoETransformer, account
from models.backends import megablocks_installed


def run(
    backend: str, compile_: bool, steps: int, batch: int, E: int, K: int, profile: bool = False
) -> dict:
    cfg = ModelConfig(
        vocab_size=16384,
        d_model=768,
        n_layers=12,
        n_heads=12,
        d_ff=3072,
        seq_len=1024,
        moe=MoEConfig(num_experts=E, top_k=K, backend=backend),
    )
    torch.manual_seed(0)
    model = MoETransformer(cfg).cuda()
    opt = build_optimizer(model, OptimConfig(), torch.device("cuda"))
    fwd = torch.compile(model) if compile_ else model
    idx = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len + 1), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = fwd(idx[:, :-1], idx[:, 1:])
        (out.loss + out.aux_loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        with prof(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as p:
            for _ in range(3):
                step()
            torch.cuda.synchronize()
        print(
            p.key_averages().table(
                sort_by="cuda_time_total", row_limit=25, max_name_column_width=60
            )
        )
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    acc = account(cfg)
    tok_s = batch * cfg.seq_len / dt
    return {
        "backend": backend,
        "compile": compile_,
        "step_ms": dt * 1e3,
        "tokens_per_s": tok_s,
        "flops_per_token": acc.flops_per_token,
        "params_active": acc.params_active,
        "params_active_non_embedding": acc.params_active_non_embedding,
        "params_total": acc.params_total,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=1)
    ap.add_argument("--backends", default="native,megablocks,torch")
    ap.add_argument("--json", default=None)
    ap.add_argument("--profile", action="store_true", help="print the CUDA kernel table")
    a = ap.parse_args()
    peak = matmul_peak_tflops() * 1e12
    print(
        f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"measured bf16 matmul peak {peak / 1e12:.0f} TFLOP/s"
    )
    rows = []
    for backend in a.backends.split(","):
        if backend == "megablocks" and not megablocks_installed():
            continue
        for compile_ in (False, True):
            try:
                torch.cuda.empty_cache()  # the previous configuration's model is gone
                r = run(
                    backend,
                    compile_,
                    a.steps,
                    a.batch,
                    a.experts,
                    a.top_k,
                    a.profile and not compile_,
                )
            except Exception as e:  # report, keep measuring the others
                print(
                    f"{backend} compile={compile_}: failed: {type(e).__name__}: "
                    f"{str(e).splitlines()[0][:200]}"
                )
                continue
            r["mfu"] = r["tokens_per_s"] * r["flops_per_token"] / peak
            rows.append(r)
            print(
                f"{backend:<11} compile={compile_!s:<5} {r['step_ms']:8.1f} ms/step "
                f"{r['tokens_per_s']:>10,.0f} tok/s  MFU {100 * r['mfu']:5.1f}%",
                flush=True,
            )
    if rows:
        r = rows[0]
        print(
            f"\nmodel: {r['params_active_non_embedding'] / 1e6:.0f}M active non-embedding, "
            f"{r['params_total'] / 1e6:.0f}M total params, E={a.experts} K={a.top_k}, "
            f"{r['flops_per_token'] / 1e9:.2f} GFLOP/token"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
