"""The chunked unembedding + cross-entropy (model.loss_chunk_tokens) gives the whole head's loss
and gradients: in float64 to rounding, under bf16 autocast to bf16's, compiled as eager."""

import pytest
import torch
import torch.nn.functional as F

from models import ModelConfig, MoETransformer
from models.chunked_loss import chunked_cross_entropy
from models.typed import ConfigError
from tests.models.helpers import small_config


def _inputs(T=37, D=8, V=29, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, D, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(V, D, generator=g, dtype=dtype, requires_grad=True)
    return x, w, torch.randint(0, V, (T,), generator=g)


@pytest.mark.parametrize("chunk", [1, 10, 37, 64])
def test_chunks_give_the_whole_loss_and_its_gradients_in_float64(chunk):
    x, w, t = _inputs()
    (F.cross_entropy(x @ w.t(), t) * 1.7).backward()
    want = (x.grad.clone(), w.grad.clone())
    x.grad = w.grad = None
    loss = chunked_cross_entropy(x, w, t, chunk)
    (loss * 1.7).backward()
    torch.testing.assert_close(loss, F.cross_entropy(x @ w.t(), t), rtol=1e-13, atol=0)
    torch.testing.assert_close((x.grad, w.grad), want, rtol=1e-12, atol=1e-15)


def _model_grads(cfg: ModelConfig, state=None):
    torch.manual_seed(0)
    model = MoETransformer(cfg).double()
    if state is not None:
        model.load_state_dict(state)
    idx = torch.randint(
        0, cfg.vocab_size, (3, cfg.seq_len), generator=torch.Generator().manual_seed(1)
    )
    out = model(idx, idx.roll(-1, dims=1))
    (out.loss + out.aux_loss).backward()
    return out.loss, {n: p.grad for n, p in model.named_parameters()}, model.state_dict()


@pytest.mark.parametrize("tie", [False, True])
def test_a_model_with_a_chunked_head_trains_as_the_whole_head(tie):
    whole, grads, state = _model_grads(small_config(tie_embeddings=tie))
    chunked, chunked_grads, _ = _model_grads(
        small_config(tie_embeddings=tie, loss_chunk_tokens=5), state
    )
    torch.testing.assert_close(chunked, whole, rtol=1e-13, atol=0)
    torch.testing.assert_close(chunked_grads, grads, rtol=1e-10, atol=1e-14)


def test_under_bf16_autocast_it_rounds_as_the_whole_head_does():
    x, w, t = _inputs(T=64, D=32, V=50, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        whole = F.cross_entropy(F.linear(x, w).float(), t)
        chunked = chunked_cross_entropy(x, w, t, 16)
    assert chunked.dtype == torch.float32
    # both take bf16 logits (x and w rounded to bf16, products summed in float32)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=0)
    exact = F.cross_entropy(x @ w.t(), t)
    assert (
        abs(float(whole.detach() - exact.detach())) > 1e-5
    )  # the autocast rounding the test above matches


def test_compiled_it_computes_what_it_does_eagerly():
    x, w, t = _inputs()
    compiled = torch.compile(chunked_cross_entropy, backend="aot_eager", fullgraph=True)
    loss = compiled(x, w, t, 10)
    loss.backward()
    want_x, want_w = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    torch.testing.assert_close(loss, chunked_cross_entropy(x, w, t, 10), rtol=1e-14, atol=0)
    chunked_cross_entropy(x, w, t, 10).backward()
    torch.testing.assert_close((want_x, want_w), (x.grad, w.grad), rtol=1e-14, atol=0)


def test_a_negative_chunk_is_refused():
    with pytest.raises(ConfigError, match="model.loss_chunk_tokens: must be >= 0"):
        small_config(loss_chunk_tokens=-1)


def test_a_compiled_head_with_chunks_trains_as_the_eager_one():
    """The head compiled as the trainer compiles it (compile_regions; aot_eager on CPU), in
    float64: dynamo traces the chunked loss's autograd function without changing a gradient."""
    cfg = small_config(loss_chunk_tokens=5)
    eager_loss, eager_grads, state = _model_grads(cfg)
    torch.manual_seed(0)
    model = MoETransformer(cfg).double()
    model.load_state_dict(state)
    model.compile_regions(backend="aot_eager")
    idx = torch.randint(
        0, cfg.vocab_size, (3, cfg.seq_len), generator=torch.Generator().manual_seed(1)
    )
    out = model(idx, idx.roll(-1, dims=1))
    (out.loss + out.aux_loss).backward()
    torch.testing.assert_close(out.loss, eager_loss, rtol=1e-13, atol=0)
    grads = {n: p.grad for n, p in model.named_parameters()}
    torch.testing.assert_close(grads, eager_grads, rtol=1e-12, atol=1e-15)
