"""The small model config the model tests share (each test changes what it is about)."""

from models import ModelConfig, MoEConfig


def small_config(moe: MoEConfig | None = None, **changes) -> ModelConfig:
    """Two layers of width 32 (two heads of 16), d_ff 64, vocabulary 50, sequences of 12."""
    shape = dict(vocab_size=50, d_model=32, n_layers=2, n_heads=2, d_ff=64, seq_len=12)
    return ModelConfig(**(shape | changes), moe=moe or MoEConfig(num_experts=4, top_k=2))
