"""The attention block's two kernel choices at the studies' shapes, on CUDA (prints a table,
writes JSON).

    python -m experiments.benchmarks.attention_kernels [--json OUT] [--tokens 32768]
        [--seq 512] [--widths 96,192,384] [--head-dims 32,64]

1. **SDPA backend.** Causal ``scaled_dot_product_attention`` forward + backward in bf16 through
   each backend torch has for it (flash, cuDNN, memory-efficient) and through torch's own pick
   (``default``, what training runs), for B = tokens / seq sequences of H = width / head_dim
   heads. At head_dim 32 the kernels are far from the GEMM peak; which one is fastest there is
   a measurement, not a default.
2. **Q, K, V projections.** ``x @ [Wq; Wk; Wv]^T`` as one GEMM over the concatenated weights
   (what models/transformer.Attention does) against three GEMMs, forward + backward, each
   compiled as training compiles a block (``torch.compile``, default mode), under bf16
   autocast with fp32 weights.

Times are medians of CUDA-event-timed repeats (experiments/benchmarks/timing.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from experiments.benchmarks.timing import bench_ms

BACKENDS = ("default", "flash", "cudnn", "efficient")


def sdpa_ms(B: int, H: int, S: int, hd: int, backend: str) -> float | None:
    """Forward + backward of causal SDPA in ms, or None where the backend refuses the shape."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q_BHSd, k_BHSd, v_BHSd = (
        torch.randn(B, H, S, hd, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        for _ in range(3)
    )
    gy_BHSd = torch.randn_like(q_BHSd)

    def step():
        y = F.scaled_dot_product_attention(q_BHSd, k_BHSd, v_BHSd, is_causal=True)
        y.backward(gy_BHSd)

    if backend == "default":
        return bench_ms(step)
    chosen = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
    }[backend]
    with sdpa_kernel([chosen]):
        try:
            step()
        except RuntimeError:  # "No available kernel": this backend does not take the shape
            return None
        return bench_ms(step)


def qkv_ms(T: int, D: int, fused: bool) -> float:
    """Forward + backward of the three projections of x (T, D), compiled, in ms."""
    x_TD = torch.randn(T, D, device="cuda", requires_grad=True)
    w_DD = [(torch.randn(D, D, device="cuda") * D**-0.5).requires_grad_() for _ in range(3)]
    gy_TD = [torch.randn(T, D, device="cuda", dtype=torch.bfloat16) for _ in range(3)]

    def project(x, wq, wk, wv):
        if fused:
            return F.linear(x, torch.cat((wq, wk, wv))).split(D, dim=-1)
        return F.linear(x, wq), F.linear(x, wk), F.linear(x, wv)

    compiled = torch.compile(project, dynamic=False)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            qkv = compiled(x_TD, *w_DD)
        torch.autograd.backward(qkv, gy_TD)

    return bench_ms(step)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--widths", default="96,192,384")
    ap.add_argument("--head-dims", default="32,64")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("attention_kernels times CUDA kernels: no GPU here")
    widths = [int(w) for w in a.widths.split(",")]
    B, rows = a.tokens // a.seq, []
    print(f"SDPA, causal, fwd+bwd, bf16, {B} x {a.seq} tokens (ms)")
    print(f"{'d':>5} {'hd':>4} {'H':>4} " + " ".join(f"{b:>10}" for b in BACKENDS))
    for D in widths:
        for hd in (int(h) for h in a.head_dims.split(",")):
            if D % hd:
                continue
            H = D // hd
            ms = {b: sdpa_ms(B, H, a.seq, hd, b) for b in BACKENDS}
            rows.append({"kind": "sdpa", "d_model": D, "head_dim": hd, "heads": H} | ms)
            cells = " ".join(f"{v:>10.3f}" if v is not None else f"{'-':>10}" for v in ms.values())
            print(f"{D:>5} {hd:>4} {H:>4} {cells}", flush=True)
    print(f"\nQ, K, V projections, compiled, fwd+bwd, {a.tokens} tokens (ms)")
    print(f"{'d':>5} {'3 GEMMs':>10} {'1 GEMM':>10} {'gain':>7}")
    for D in widths:
        three, one = qkv_ms(a.tokens, D, fused=False), qkv_ms(a.tokens, D, fused=True)
        rows.append({"kind": "qkv", "d_model": D, "three_gemms": three, "one_gemm": one})
        print(f"{D:>5} {three:>10.3f} {one:>10.3f} {1 - one / three:>6.1%}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
