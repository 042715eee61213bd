"""How many runs of a sweep share one GPU (``runs_per_gpu``), from the accounting alone.

A small run cannot fill an H100: its kernels are too small and the host launches them one at a
time. Several such runs in separate processes on one GPU overlap each other's gaps. Packing
must never run out of memory, so every run's peak memory is estimated from its config and the
GPU is filled only to PACK_MEMORY_FRACTION of its memory; runs big enough to keep the GPU busy
on their own (SATURATING_FLOPS_PER_STEP) are not packed.

Memory of one run (bytes), a deliberate over-estimate, checked against the peak that runs
record (``peak_memory_gb`` in summary.json; docs/gpu-performance.md):
- training state: 18 per parameter (fp32 weights, gradients, AdamW's two moments, bf16 copies);
- activations kept for backward, per token per layer: 64 d_model (attention, norms and the
  residual stream, partly in fp32) + K_eff (8 F + 6 d_model) (gathered tokens, the expert
  hidden layer and its activation, the expert output) + 8 E (router logits, probabilities);
- logits: tokens x vocab x 10 (bf16 logits, their fp32 copy for the loss, its gradient);
- the training tokens kept on the GPU (int32), and a fixed CONTEXT_BYTES (CUDA context,
  cuBLAS workspace, compiled kernels, the allocator's slack).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from models.accounting import account
from models.config import ConfigError

CONTEXT_BYTES = 2 << 30
PACK_MEMORY_FRACTION = 0.8
SATURATING_FLOPS_PER_STEP = 2e13  # one process keeps an H100 busy above this (measured)
MAX_RUNS_PER_GPU = 8


def run_memory_bytes(tc, train_tokens_on_gpu: int = 0) -> int:
    m, moe = tc.model, tc.model.moe
    acc = account(m)
    tokens = tc.tokens_per_step
    if moe.is_dense:
        k_eff, experts = 1, 0
    else:
        k_eff, experts = moe.active_experts + moe.num_shared_experts, moe.experts
    per_token_layer = 64 * m.d_model + k_eff * (8 * m.expert_hidden + 6 * m.d_model) + 8 * experts
    activations = tokens * m.n_layers * per_token_layer
    logits = tokens * m.vocab_size * 10
    return 18 * acc.params_total + activations + logits + 4 * train_tokens_on_gpu + CONTEXT_BYTES


def flops_per_step(tc) -> float:
    return tc.flops_per_token * tc.tokens_per_step


@dataclass
class Packing:
    runs_per_gpu: int
    reason: str


def choose_runs_per_gpu(
    configs: list,
    gpu_bytes: int,
    cpu_cores: int,
    n_gpus: int,
    requested: int | str = "auto",
    train_tokens: int = 0,
) -> Packing:
    """``requested``: a number (checked against memory) or "auto"."""
    if not configs:
        return Packing(1, "nothing to run")
    biggest = max(run_memory_bytes(tc, train_tokens) for tc in configs)
    by_memory = max(1, math.floor(PACK_MEMORY_FRACTION * gpu_bytes / biggest))
    gib = biggest / 2**30
    if requested != "auto":
        n = int(requested)
        if n > by_memory:
            raise ConfigError(
                f"runs_per_gpu={n} would need {n} x {gib:.1f} GiB on a "
                f"{gpu_bytes / 2**30:.0f} GiB GPU; at most {by_memory} fit"
            )
        return Packing(n, f"asked for {n}; the largest run needs ~{gib:.1f} GiB")
    heaviest = max(flops_per_step(tc) for tc in configs)
    if heaviest >= SATURATING_FLOPS_PER_STEP:
        return Packing(1, f"a run does {heaviest:.2g} FLOPs a step, enough to fill a GPU")
    by_cpu = max(1, cpu_cores // max(n_gpus, 1) // 2)  # each process keeps a core launching
    n = min(by_memory, by_cpu, MAX_RUNS_PER_GPU)
    return Packing(
        n,
        f"the largest run needs ~{gib:.1f} GiB (fits {by_memory}), "
        f"{cpu_cores} CPU cores for {n_gpus} GPU(s) (fits {by_cpu})",
    )
