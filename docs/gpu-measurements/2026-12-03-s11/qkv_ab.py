"""A/B of the fused Q, K, V projection in a study step (call 3): run_profile's steady step of a
d 192, 6-layer, E16 top-1 model (64 x 512 tokens, CUDA graphs), with the model as committed
(one GEMM over the concatenated weights) or with the three GEMMs it replaced (``three``).

    python qkv_ab.py one|three <run_profile arguments>
"""

import sys

import torch
import torch.nn.functional as F

from experiments.benchmarks import run_profile
from models import transformer
from models.transformer import apply_rotary


def three_gemms(self, x_BSD, cos_SH, sin_SH):  # Attention.forward before 2026-12-03
    B, S, D = x_BSD.shape
    shape = (B, S, self.n_heads, self.head_dim)
    dtype = torch.promote_types(x_BSD.dtype, torch.float32)
    q = apply_rotary(self.q_norm(self.wq(x_BSD).view(shape).to(dtype)), cos_SH, sin_SH)
    k = apply_rotary(self.k_norm(self.wk(x_BSD).view(shape).to(dtype)), cos_SH, sin_SH)
    v = self.wv(x_BSD).view(shape)
    y_BHSD = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
    )
    return self.wo(y_BHSD.transpose(1, 2).reshape(B, S, D))


if sys.argv[1] == "three":
    transformer.Attention.forward = three_gemms
run_profile.main(sys.argv[2:])
