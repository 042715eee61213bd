"""Whether and how a run is compiled (``train.compile``, ``train.compile_mode``), compiling
it (its compile workers started early, its blocks or the whole model compiled), and running
its compiled regions eagerly for a while (evaluation)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch

from experiments.config import TrainConfig
from models import MoETransformer

# train.compile=auto on CUDA, measured on an H100 and an H200 (docs/gpu-performance.md):
# regional compilation costs 18-21 s a shape on a cold machine (6 s from a carried cache) and
# pays off after about a hundred steps (model=base e8k1: 311 ms a step eager, 162 ms compiled).
# Steps of under ~1e13 FLOPs are bound by kernel launches (eager: 25-38 ms a step for 4-layer
# d=64-112 models, 3.3 ms as CUDA graphs), so they are replayed as CUDA graphs; larger steps
# compile in the default mode.
COMPILE_MIN_STEPS = 150
GRAPHS_MAX_FLOPS_PER_STEP = 1e13
# torch.compile's modes that replay each step as CUDA graphs: the step must mark its start
# (torch.compiler.cudagraph_mark_step_begin), or a graph's outputs are overwritten under it
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def uses_cuda_graphs(mode: str) -> bool:
    return mode in CUDA_GRAPH_MODES


# Measured on the H200 with torch 2.11 (docs/gpu-performance.md, thirteenth session): in the
# max-autotune modes inductor generates Triton templates for the native experts' grouped GEMMs
# for one stride order of an operand and compiles them against another (the weight's cast, a
# gradient's transpose), and the compile fails ("Tensor descriptor last dim must be 1") after
# minutes of autotuning, in the top-1 and top-2 layers tested, also without prologue fusion.
# Inductor uses these templates on compute capability 9.0 and above (its
# can_use_triton_kernel). Versions after 2.11 are not refused: none has been run on a GPU here.
GROUPED_MM_TEMPLATES_FIXED = (2, 12)


def compile_mode_fault(
    mode: str,
    backend: str,
    dense: bool,
    torch_version: tuple[int, int],
    capability: tuple[int, int] | None,
) -> str | None:
    """Why this compile mode cannot compile this model here (None: it can). ``capability``:
    the CUDA device's compute capability, None off CUDA."""
    if not mode.startswith("max-autotune") or dense or backend != "native":
        return None
    if capability is None or capability < (9, 0) or torch_version >= GROUPED_MM_TEMPLATES_FIXED:
        return None
    return (
        f"train.compile_mode={mode} fails to compile the native experts' grouped GEMMs with "
        f"torch {torch_version[0]}.{torch_version[1]} on this GPU (inductor's Triton templates: "
        "docs/gpu-performance.md); use train.compile_mode=default or auto"
    )


def torch_version() -> tuple[int, int]:
    """The installed torch's (major, minor)."""
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def checked_compile_plan(tc: TrainConfig, device: torch.device, backend: str) -> tuple[bool, str]:
    """compile_plan for a run about to train on ``device`` with the MoE ``backend``: a compile
    mode measured to fail on this model here is refused before anything compiles."""
    compiled, mode = compile_plan(tc, device)
    if compiled:
        capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
        fault = compile_mode_fault(
            mode, backend, tc.model.moe.is_dense, torch_version(), capability
        )
        if fault is not None:
            raise ValueError(fault)
    return compiled, mode


def start_compile_workers(device: torch.device, gpu_slots: int) -> bool:
    """Start inductor's pool of Triton compile workers now (True: asked to start).

    Inductor starts them when the first graph reaches it, after the run's setup and dynamo's
    tracing, and the cold d 192 study run then waited 3.6 s on them (fourteenth session).
    Started before the model is built, they come up during the setup: the d256 run as users
    launch it took 1.0-3.6 s less in each of 3 pairs alternated on the H200, training alike
    (fifteenth session, docs/gpu-performance.md). Only on CUDA, where the pool compiles Triton
    kernels; started once a process (a sweep's worker keeps its pool from run to run).

    Not for runs packed several to a GPU (``gpu_slots`` > 1): there 8 runs compile at once on
    16 cores, and starting each one's workers during its setup made the setups ~1 s longer
    with no shorter warm-up (the study slice, fifteenth session, call 3)."""
    from torch._inductor import async_compile

    # what inductor calls itself (it honours TORCH_WARM_POOL=0); absent from older versions,
    # where the pool starts when the first graph reaches inductor, as it did before
    warm = getattr(async_compile, "maybe_warm_pool", None)
    if device.type != "cuda" or gpu_slots > 1 or warm is None:
        return False
    warm()
    return True


def compiled_step(
    model: MoETransformer,
    wrap: Callable[[torch.nn.Module], torch.nn.Module],
    mode: str | None,
    scope: str,
) -> torch.nn.Module:
    """What a training step calls: the model wrapped for its ranks (``wrap``), its blocks
    compiled in ``mode`` (``scope`` blocks) or the whole of it compiled; None: eager."""
    if mode is None:
        return wrap(model)
    # A sweep's worker trains run after run in one process: start from empty in-memory compile
    # caches (and CUDA-graph pools) rather than pile up every earlier run's. The on-disk caches
    # stay, so a shape seen before compiles from them in seconds.
    torch._dynamo.reset()
    if scope == "blocks":
        model.compile_regions(mode)
        return wrap(model)
    return torch.compile(wrap(model), mode=mode)


def compile_plan(tc: TrainConfig, device: torch.device) -> tuple[bool, str]:
    """(compile?, mode): the user's choices, or the measured-faster ones where they are
    ``auto``. A mode the user names is kept also when ``compile=auto`` decides to compile
    (it used to be replaced by the measured one without a word)."""
    choice, mode = tc.train.compile, tc.train.compile_mode
    if mode == "auto":
        small = tc.flops_per_token * tc.tokens_per_step < GRAPHS_MAX_FLOPS_PER_STEP
        mode = "reduce-overhead" if small and device.type == "cuda" else "default"
    if choice != "auto":
        return bool(choice), mode
    if device.type != "cuda" or tc.steps < COMPILE_MIN_STEPS:
        return False, mode
    return True, mode


_eager_lock = threading.Lock()
_eager: dict = {"users": 0, "stance": None}  # the first user's set_stance, undone by the last


@contextlib.contextmanager
def eager_stance() -> Iterator[None]:
    """Compiled code runs eagerly inside (``torch.compiler.set_stance("force_eager")``).

    The stance is one per process and ``set_stance`` restores what it saw on entry, so two
    runs evaluating at once in one process (``execute`` in threads: tests, notebooks) left it
    at force_eager for good when they exited out of order, and every later compile silently
    ran eagerly. Here the first user sets it and the last one, whichever it is, restores the
    stance from before the first."""
    with _eager_lock:
        if _eager["users"] == 0:
            _eager["stance"] = torch.compiler.set_stance("force_eager")
        _eager["users"] += 1
    try:
        yield
    finally:
        with _eager_lock:
            _eager["users"] -= 1
            if _eager["users"] == 0:
                _eager["stance"].__exit__(None, None, None)
                _eager["stance"] = None
