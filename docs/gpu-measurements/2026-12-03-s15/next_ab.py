"""Prepared for the next session's device time (not run yet): fewer Triton compiles in a cold
warm-up. Inductor compiles two configurations of every one-dimensional pointwise kernel
(``triton.autotune_pointwise``, on by default outside max-autotune) and times them on the first
call; each configuration is a Triton compile of its own. The fourteenth session's phases put
most of a cold warm-up in those compiles (the d 192 study run: 7.6 s loading the block's
forward module, 3.6 s of it waiting on the workers). ``one_config`` compiles one configuration
per pointwise kernel: the question is how much warm-up it saves and what it costs a step.

``clip_in_adam``: gradient clipping scales every gradient in a pass of its own (a foreach
multiply, 1.6 ms of the base e8k1 step), then fused AdamW reads them again. Fused AdamW
divides each gradient by ``grad_scale`` (a device tensor; torch's GradScaler unscales so) as it
reads it: set to max(1, (norm + 1e-6) / max_norm), the same clipping without the pass.

    python next_ab.py committed|one_config|clip_in_adam run_profile|profile_layer <arguments>
"""

import sys

from experiments.benchmarks import profile_layer, run_profile

if __name__ == "__main__":
    variant, tool, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if variant == "one_config":
        import torch._inductor.config as inductor_config

        inductor_config.triton.autotune_pointwise = False
    elif variant == "clip_in_adam":
        import torch

        import experiments.trainer.loop as loop

        made = {}
        build = loop.build_optimizer

        def build_and_keep(model, cfg, device, fused=None):
            # fused as the trainer builds it on a GPU (and on the CPU too, where torch has a
            # fused AdamW: a smoke test there reaches the same code)
            made["opt"] = build(model, cfg, device, fused=True)
            return made["opt"]

        def clip_in_adam(model, max_norm, ep):
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads)
            made["opt"].grad_scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0)
            return norm

        loop.build_optimizer = build_and_keep
        loop.ep_.clip_grad_norm_ = clip_in_adam  # type: ignore[assignment]
    elif variant != "committed":
        raise SystemExit(f"unknown variant {variant!r}: committed, one_config or clip_in_adam")
    {"run_profile": run_profile.main, "profile_layer": profile_layer.main}[tool](args)
