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
A shape that has already trained in the sweep is packed by what it measured instead
(``measured_memory``): the most the allocator held (``peak_reserved_gb``) over its done runs,
times MEASURED_MARGIN, plus MEASURED_CONTEXT_BYTES (what a CUDA process holds outside its
allocator: 0.67 GiB measured on the H200, context and cuBLAS, before compiled kernels' code;
the estimate's CONTEXT_BYTES also covers the allocator's slack, which what was held already
counts). What the allocator *held*, not its allocated peak:
on the H200 (2026-12-03, the study slice, 18 runs) it held 1.8-2.2x its allocated peak (CUDA
graphs keep pools of their own), and the estimate above came to 0.93-1.16x what was held. The
second study's "estimate 1.6-2.4x the peak" compared it with the allocated peak only. The
margin covers the spread between seeds of one shape: dropless experts make each run's peak
depend on its routing (held: up to 6% between two seeds on the slice; allocated: up to 1.3
GiB of ~8 GiB on the second study's E32).
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
MEASURED_MARGIN = 1.15
MEASURED_CONTEXT_BYTES = 1 << 30


def memory_shape(tc) -> str:
    """What a run's GPU memory depends on: the model, the micro-batch, the optimiser and how
    it is compiled on a GPU and parallelised; not its seed, LR or budget (runs of one shape at
    other budgets, seeds and LRs hold the same tensors), except where the budget changes
    whether it compiles (``compile=auto``: CUDA graphs hold memory of their own)."""
    import torch

    from experiments.trainer.compile import compile_plan

    t = tc.train
    compiled = compile_plan(tc, torch.device("cuda"))
    return repr(
        (tc.model, t.batch_size, t.micro_batch_size, compiled, t.compile_scope, tc.optim.name,
         tc.run.parallel)
    )  # fmt: skip


def measured_memory(done: list[tuple]) -> dict[str, tuple[int, int]]:
    """(config, summary) of done runs -> {memory shape: (bytes one such run needs, runs that
    measured it)}. Only CUDA runs that recorded what the allocator held count: the allocated
    peak alone (older records) leaves out the allocator's cache."""
    peaks: dict[str, list[float]] = {}
    for tc, summary in done:
        summary = summary or {}
        held = summary.get("peak_reserved_gb")
        if summary.get("status") == "done" and isinstance(held, int | float) and held > 0:
            peaks.setdefault(memory_shape(tc), []).append(float(held))
    return {
        shape: (int(MEASURED_MARGIN * max(gb) * 2**30) + MEASURED_CONTEXT_BYTES, len(gb))
        for shape, gb in peaks.items()
    }


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
    measured: dict[str, tuple[int, int]] | None = None,
) -> Packing:
    """``requested``: a number (checked against memory) or "auto". ``measured``: what shapes
    that already trained needed (``measured_memory``); the others are estimated."""
    if not configs:
        return Packing(1, "nothing to run")
    measured = measured or {}

    def need(tc) -> tuple[int, int]:
        return measured.get(memory_shape(tc)) or (run_memory_bytes(tc, train_tokens), 0)

    biggest, n_measured = max(need(tc) for tc in configs)
    by_memory = max(1, math.floor(PACK_MEMORY_FRACTION * gpu_bytes / biggest))
    gib = (
        f"{biggest / 2**30:.1f} GiB (measured on {n_measured} run(s) of its shape)"
        if n_measured
        else f"{biggest / 2**30:.1f} GiB (estimated)"
    )
    if requested != "auto":
        n = int(requested)
        if n > by_memory:
            raise ConfigError(
                f"runs_per_gpu={n} would need {n} x {gib} on a "
                f"{gpu_bytes / 2**30:.0f} GiB GPU; at most {by_memory} fit"
            )
        return Packing(n, f"asked for {n}; the largest run needs ~{gib}")
    heaviest = max(flops_per_step(tc) for tc in configs)
    if heaviest >= SATURATING_FLOPS_PER_STEP:
        return Packing(1, f"a run does {heaviest:.2g} FLOPs a step, enough to fill a GPU")
    by_cpu = max(1, cpu_cores // max(n_gpus, 1) // 2)  # each process keeps a core launching
    n = min(by_memory, by_cpu, MAX_RUNS_PER_GPU)
    return Packing(
        n,
        f"the largest run needs ~{gib}, {by_memory} fit; "
        f"{cpu_cores} CPU cores for {n_gpus} GPU(s) (fits {by_cpu})",
    )
