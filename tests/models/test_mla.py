"""Multi-head latent attention (models/mla.py): shapes, causality, the KV cache it holds, and
its accounting against the model it builds and the FLOPs it computes."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from models import ConfigError, ModelConfig, MoEConfig, MoETransformer, account
from models.accounting import attention_params, shape_of
from models.mla import LatentAttention
from models.transformer import rotary_tables

MLA = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=64, seq_len=16)


def _cfg(**kw):
    return ModelConfig(**(MLA | {"attention": "mla"} | kw))


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"q_lora_rank": 12},
        {"kv_lora_rank": 8, "qk_rope_head_dim": 2, "qk_norm": False},
        {"moe": MoEConfig(num_experts=4, top_k=2, balance="aux_free", load_balance_coef=0)},
    ],
)
def test_mla_accounting_equals_the_parameters_it_builds(kw):
    cfg = _cfg(**kw)
    model = MoETransformer(cfg)
    assert account(cfg).params_total == sum(p.numel() for p in model.parameters())
    attn = model.blocks[0].attn
    assert isinstance(attn, LatentAttention)
    assert attention_params(shape_of(cfg)) == sum(p.numel() for p in attn.parameters())


def test_mla_is_causal_and_keeps_its_shapes():
    torch.manual_seed(0)
    cfg = _cfg(q_lora_rank=12)
    attn = LatentAttention(cfg).double()
    cos, sin = rotary_tables(cfg.seq_len, cfg.rope_dim, cfg.rope_theta)
    x = torch.randn(2, 16, 32, dtype=torch.float64)
    y = attn(x, cos.double(), sin.double())
    assert y.shape == x.shape
    later = x.clone()
    later[:, 9:] = torch.randn(2, 7, 32, dtype=torch.float64)  # change only the future
    y2 = attn(later, cos.double(), sin.double())
    assert torch.equal(y[:, :9], y2[:, :9]) and not torch.allclose(y[:, 9:], y2[:, 9:])


def test_the_kv_cache_is_the_latent_and_the_shared_rotary_key():
    cfg = _cfg()  # R = 4 x head_dim = 32, rotary part head_dim / 2 = 4
    attn = LatentAttention(cfg)
    c, k_rope = attn.latent(torch.randn(3, 16, 32))
    assert c.shape == (3, 16, cfg.kv_rank) and k_rope.shape == (3, 16, cfg.rope_dim)
    per_token = cfg.n_layers * (c.shape[-1] + k_rope.shape[-1]) * 2  # bf16 bytes
    assert account(cfg).kv_cache_bytes_per_token == per_token == 2 * 36 * 2
    mha = ModelConfig(**MLA)
    assert account(mha).kv_cache_bytes_per_token == mha.n_layers * 2 * mha.d_model * 2
    # the point of MLA: with DeepSeek-V2's ratios (R = 4 Dh, Dr = Dh / 2, 32 heads) the
    # cache is 4.5 Dh per token and layer against MHA's 2 x 32 Dh
    big = dict(MLA, d_model=1024, n_heads=32)
    ratio = (
        account(ModelConfig(**big)).kv_cache_bytes_per_token
        / account(ModelConfig(**big, attention="mla")).kv_cache_bytes_per_token
    )
    assert ratio == pytest.approx(64 / 4.5)


@pytest.mark.parametrize("attention", ["mha", "mla"])
def test_attention_flops_are_what_the_layer_computes(attention):
    """Forward FLOPs counted by torch (matmuls and SDPA, which it counts unmasked) against
    the accounting's convention: 6 x active weights + attention, causal (half the scores)."""
    kw = {"attention": attention} if attention == "mla" else {}
    cfg = ModelConfig(**MLA, **kw)
    attn = MoETransformer(cfg).blocks[0].attn
    cos, sin = rotary_tables(cfg.seq_len, cfg.rope_dim, cfg.rope_theta)
    B, S = 2, cfg.seq_len
    # the math kernel: its batched matmuls are counted (a fused CPU kernel is not)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        attn(torch.randn(B, S, cfg.d_model), cos, sin)
    counts = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
    sdpa, matmul = counts["aten.bmm"], counts["aten.mm"]  # the scores and values; projections
    norms = sum(p.numel() for n, p in attn.named_parameters() if "norm" in n)
    weights = attention_params(shape_of(cfg)) - norms
    assert matmul == 2 * weights * B * S  # 2 FLOPs per weight per token, forward
    s = shape_of(cfg)
    per_token_training = 3 * (sdpa / 2) / (B * S)  # causal half, forward + backward = 3x
    acc = account(cfg)
    attention_term = acc.flops_per_token - 6 * acc.params_active_non_embedding
    attention_term -= 6 * cfg.vocab_size * cfg.d_model
    assert per_token_training * s.n_layers == attention_term


def test_mla_options_without_mla_are_refused():
    with pytest.raises(ConfigError, match="options of attention=mla"):
        ModelConfig(**MLA, kv_lora_rank=8)
    with pytest.raises(ConfigError, match="qk_rope_head_dim"):
        _cfg(qk_rope_head_dim=3)
