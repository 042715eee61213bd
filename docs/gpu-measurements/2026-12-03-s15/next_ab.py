"""Prepared for the next session's device time (not run yet): fewer Triton compiles in a cold
warm-up. Inductor compiles two configurations of every one-dimensional pointwise kernel
(``triton.autotune_pointwise``, on by default outside max-autotune) and times them on the first
call; each configuration is a Triton compile of its own. The fourteenth session's phases put
most of a cold warm-up in those compiles (the d 192 study run: 7.6 s loading the block's
forward module, 3.6 s of it waiting on the workers). ``one_config`` compiles one configuration
per pointwise kernel: the question is how much warm-up it saves and what it costs a step.

    python next_ab.py committed|one_config run_profile|profile_layer <their arguments>
"""

import sys

from experiments.benchmarks import profile_layer, run_profile

if __name__ == "__main__":
    variant, tool, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if variant == "one_config":
        import torch._inductor.config as inductor_config

        inductor_config.triton.autotune_pointwise = False
    elif variant != "committed":
        raise SystemExit(f"unknown variant {variant!r}: committed or one_config")
    {"run_profile": run_profile.main, "profile_layer": profile_layer.main}[tool](args)
