"""The benchmarks' timing helpers that run without a GPU."""

import torch

from experiments.benchmarks.timing import COMPILE_PHASES, compile_phases_s


def test_compile_phases_name_the_timers_torch_keeps():
    """run_profile reads a cold warm-up's parts from torch._dynamo's timers by name; a torch
    that renamed them would leave its JSON's compile_phases_s silently empty."""
    before = compile_phases_s()

    def fresh(x):  # a function of its own: dynamo compiles it here, whatever ran before
        return torch.sin(x) * 2 + 1

    torch.compile(fresh, backend="aot_eager")(torch.randn(8))
    after = compile_phases_s()
    assert set(after) <= set(COMPILE_PHASES)
    for phase in ("_compile.compile_inner", "OutputGraph.call_user_compiler"):
        assert after[phase] > before.get(phase, 0.0), phase
