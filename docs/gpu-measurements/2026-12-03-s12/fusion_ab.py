"""A/B of the written-out backwards (call 3): the SwiGLU of the native experts and of the dense
layer, and the head's cross-entropy, as committed (``new``) or through autograd as before
(``old``), in run_profile's training step or profile_layer's layer.

    python fusion_ab.py new|old run_profile|profile_layer <their arguments>
"""

import sys

import torch
import torch.nn.functional as F

from experiments.benchmarks import profile_layer, run_profile
from models import transformer
from models.backends import common, native


def swiglu_by_autograd(h_N2F, w_N1=None):  # the activations before 2026-12-03
    if w_N1 is None:  # common.activation's
        gate_NF, up_NF = h_N2F.chunk(2, dim=-1)
        return F.silu(gate_NF) * up_NF
    f = h_N2F.shape[1] // 2  # native._swiglu_weighted
    g, u = h_N2F[:, :f].float(), h_N2F[:, f:].float()
    return (F.silu(g) * u * w_N1).to(h_N2F.dtype)


def cross_entropy_by_autograd(logits_TV, targets_T):  # the head's loss before 2026-12-03
    acc = torch.promote_types(logits_TV.dtype, torch.float32)
    return F.cross_entropy(logits_TV.to(acc), targets_T)


variant, tool, args = sys.argv[1], sys.argv[2], sys.argv[3:]
if variant == "old":
    native.swiglu = common.swiglu = swiglu_by_autograd
    transformer.cross_entropy = cross_entropy_by_autograd
{"run_profile": run_profile.main, "profile_layer": profile_layer.main}[tool](args)
