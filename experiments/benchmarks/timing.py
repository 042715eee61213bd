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


def profile_kernels(step, rows: int, warmup: int = 5, steps: int = 10) -> tuple[str, float]:
    """(torch.profiler's CUDA kernel table, GPU kernel ms a step) of ``step`` run ``steps``
    times after ``warmup`` unprofiled runs (compilation, allocator growth)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    table = prof.key_averages().table(
        sort_by="cuda_time_total", row_limit=rows, max_name_column_width=90
    )
    return table, kernel_ms_per_step(prof, steps)


def kernel_ms_per_step(prof, steps: int) -> float:
    """GPU kernel time a step over ``steps`` profiled steps (torch.profiler), summed as its
    table's "Self CUDA time total" sums it: the kernel events' own time, each once."""
    from torch.autograd import DeviceType

    events = prof.key_averages()
    kernels_us = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA)
    return kernels_us / 1e3 / steps


# The compiler's phases worth reading when a run's warm-up is long (torch._dynamo's timers,
# seconds summed over every graph compiled so far): tracing, the forward's and the backward's
# inductor compile, waiting on Triton's compile workers, and benchmarking kernel configs.
COMPILE_PHASES = (
    "_compile.compile_inner",
    "OutputGraph.call_user_compiler",
    "compile_fx.<locals>.fw_compiler_base",
    "compile_fx.<locals>.bw_compiler",
    "GraphLowering.run",
    "Scheduler.codegen",
    "async_compile.wait",
    "PyCodeCache.load_by_key_path",
    "CachingAutotuner.benchmark_all_configs",
    "min_cut_rematerialization_partition",
)


def compile_phases_s() -> dict[str, float]:
    """Seconds spent so far in each of COMPILE_PHASES that ran (phases nest: they do not sum)."""
    from torch._dynamo.utils import compile_times

    table = compile_times(repr="csv", aggregate=True)
    if not isinstance(table, tuple):
        return {}
    names, seconds = table
    spent = dict(zip(names, seconds))
    return {k: float(spent[k]) for k in COMPILE_PHASES if k in spent}
