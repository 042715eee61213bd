"""CUDA timing helpers shared by the benchmarks: median of event-timed repeats after warm-up, and
the kernel time of profiled steps."""

from __future__ import annotations

import torch


def bench_ms(fn, warmup: int = 10, rep: int = 40) -> float:
    try:
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=100, rep=400, return_mode="median"))
    except ImportError:
        pass
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rep):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def matmul_peak_tflops(n: int = 8192) -> float:
    """Measured bf16 dense matmul rate of this GPU (random data, not zeros)."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = bench_ms(lambda: a @ b)
    return 2 * n**3 / ms / 1e9


def kernel_ms_per_step(prof, steps: int) -> float:
    """GPU kernel time a step over ``steps`` profiled steps (torch.profiler), summed as its
    table's "Self CUDA time total" sums it: the kernel events' own time, each once."""
    from torch.autograd import DeviceType

    events = prof.key_averages()
    kernels_us = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA)
    return kernels_us / 1e3 / steps
