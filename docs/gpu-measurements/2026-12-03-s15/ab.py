"""The fifteenth session's first two A/Bs (call1.sh, call2.sh) that this session's
profiles point to, each a variant of the committed code set up in-process before the benchmark
runs, as ../2026-12-03-s12/interleave_ab.py did.

- ``concat``: the SwiGLU backward (89 us a layer at d 192 where reading its inputs once would
  take ~55 us) builds dh = cat((dg, du), -1). Inductor lowers that cat as one pointwise kernel
  over both halves, which loads g and the incoming gradient once per half. With pointwise cats
  off (``max_pointwise_cat_inputs`` and ``max_complex_pointwise_cat_inputs`` at 1), the cat
  becomes a ConcatKernel: each half is computed into its slice of dh, and the two halves, over
  one iteration space, may fuse into one kernel with two stores that reads each input once.
  The setting applies to every cat the compiled model holds (the QKV weights' too).
- ``warm``: inductor starts its pool of compile workers when the first graph reaches it, after
  the run's setup (5-7 s) and dynamo's tracing; the cold d 192 study run then waited 3.6 s on
  those workers. Started first (``maybe_warm_pool``, what inductor itself calls), the workers
  would start during the setup. Measure with a fresh TORCHINDUCTOR_CACHE_DIR per process.

    python ab.py committed|concat|warm run_profile|profile_layer <their arguments>
"""

import sys

from experiments.benchmarks import profile_layer, run_profile

if __name__ == "__main__":
    variant, tool, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if variant == "concat":
        import torch._inductor.config as inductor_config

        # torch 2.11 has only the first of these; later versions add the second
        for name in ("max_pointwise_cat_inputs", "max_complex_pointwise_cat_inputs"):
            if hasattr(inductor_config, name):
                setattr(inductor_config, name, 1)
    elif variant == "warm":
        from torch._inductor.async_compile import maybe_warm_pool

        maybe_warm_pool()
    elif variant != "committed":
        raise SystemExit(f"unknown variant {variant!r}: committed, concat or warm")
    {"run_profile": run_profile.main, "profile_layer": profile_layer.main}[tool](args)
