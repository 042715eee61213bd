"""The hand-written backwards (the SwiGLU of the experts and dense layers, the head's cross-entropy) give
autograd's gradients of the expressions they replace: in float64 to rounding, in bf16 to bf16's
rounding, and traced by torch.compile as training traces them."""

import pytest
import torch
import torch.nn.functional as F

from models.backends.common import swiglu
from models.cross_entropy import cross_entropy


def _swiglu_by_autograd(h_A2F):
    f = h_A2F.shape[1] // 2
    acc = torch.promote_types(h_A2F.dtype, torch.float32)
    g, u = h_A2F[:, :f].to(acc), h_A2F[:, f:].to(acc)
    return (F.silu(g) * u).to(h_A2F.dtype)


def _swiglu_inputs(dtype, A=37, f=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h = (3 * torch.randn(A, 2 * f, generator=gen, dtype=torch.float64)).to(dtype)
    gy = torch.randn(A, f, generator=gen, dtype=torch.float64).to(dtype)
    return h.requires_grad_(), gy


def _grads(fn, h, gy):
    y = fn(h)
    return (y, *torch.autograd.grad(y, (h,), gy))


def test_swiglu_matches_autograd_in_float64():
    h, gy = _swiglu_inputs(torch.float64)
    for ours, ref in zip(_grads(swiglu, h, gy), _grads(_swiglu_by_autograd, h, gy)):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_swiglu_passes_gradcheck():
    h, _ = _swiglu_inputs(torch.float64, A=6, f=4)
    assert torch.autograd.gradcheck(swiglu, (h,))


def test_swiglu_in_bf16_is_autograds_to_bf16_rounding():
    h, gy = _swiglu_inputs(torch.bfloat16)
    ours = _grads(swiglu, h, gy)
    ref = _grads(_swiglu_by_autograd, h, gy)
    assert ours[1].dtype == torch.bfloat16
    # both round float32 arithmetic to bf16 once per element: at most a unit in the last place
    # (2**-8 relative) apart
    torch.testing.assert_close(ours[0], ref[0], rtol=0, atol=0)  # the same forward
    torch.testing.assert_close(ours[1], ref[1], rtol=2**-7, atol=1e-6)


def _ce_inputs(dtype, T=29, V=50, seed=1):
    gen = torch.Generator().manual_seed(seed)
    logits = (4 * torch.randn(T, V, generator=gen, dtype=torch.float64)).to(dtype)
    targets = torch.randint(0, V, (T,), generator=gen)
    return logits.requires_grad_(), targets


def _ce_by_autograd(logits, targets):
    return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), targets)


def test_cross_entropy_matches_torchs_in_float64():
    logits, targets = _ce_inputs(torch.float64)
    ours, ref = cross_entropy(logits, targets), _ce_by_autograd(logits, targets)
    torch.testing.assert_close(ours, ref, rtol=1e-13, atol=0)
    (g_ours,), (g_ref,) = (torch.autograd.grad(3 * v, logits) for v in (ours, ref))
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-15)


def test_cross_entropy_passes_gradcheck():
    logits, targets = _ce_inputs(torch.float64, T=5, V=7)
    assert torch.autograd.gradcheck(lambda x: cross_entropy(x, targets), (logits,))


def test_cross_entropy_of_bf16_logits_is_float32_and_its_gradient_bf16():
    logits, targets = _ce_inputs(torch.bfloat16)
    ours, ref = cross_entropy(logits, targets), _ce_by_autograd(logits, targets)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    (g_ours,), (g_ref,) = (torch.autograd.grad(v, logits) for v in (ours, ref))
    assert g_ours.dtype == torch.bfloat16
    torch.testing.assert_close(g_ours, g_ref, rtol=2**-7, atol=1e-7)


@pytest.mark.parametrize("which", ["swiglu", "cross_entropy"])
def test_compiled_as_training_traces_them_they_give_the_eager_gradients(which):
    """Dynamo and AOTAutograd trace the autograd Functions into the joint graph (aot_eager:
    the tracing, without a C++ compiler)."""
    if which == "swiglu":
        h, gy = _swiglu_inputs(torch.float64)
        eager = _grads(swiglu, h, gy)
        compiled = _grads(torch.compile(swiglu, backend="aot_eager", fullgraph=True), h, gy)
    else:
        logits, targets = _ce_inputs(torch.float64)
        fn = torch.compile(cross_entropy, backend="aot_eager", fullgraph=True)
        eager = (cross_entropy(logits, targets),)
        compiled = (fn(logits, targets),)
        eager += torch.autograd.grad(eager[0], logits)
        compiled += torch.autograd.grad(compiled[0], logits)
    for c, e in zip(compiled, eager):
        torch.testing.assert_close(c, e, rtol=1e-12, atol=1e-14)
