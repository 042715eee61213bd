import pytest

from models import ConfigError, ModelConfig, MoEConfig


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: MoEConfig(num_experts=4, top_k=5), "moe.top_k"),
        (lambda: MoEConfig(num_experts=4, top_k=0), "moe.top_k"),
        (lambda: MoEConfig(num_experts=0), "moe.num_experts"),
        (lambda: MoEConfig(backend="cuda-magic"), "moe.backend"),
        (lambda: MoEConfig(expert_type="relu2"), "moe.expert_type"),
        (lambda: MoEConfig(load_balance_coef=-0.1), "moe.load_balance_coef"),
        (lambda: MoEConfig(z_loss_coef=-1.0), "moe.z_loss_coef"),
        (lambda: MoEConfig(granularity=0), "moe.granularity"),
        (lambda: ModelConfig(d_model=48, n_heads=5), "model.n_heads"),
        (
            lambda: ModelConfig(d_ff=100, moe=MoEConfig(num_experts=4, granularity=3)),
            "moe.granularity",
        ),
        (lambda: ModelConfig(vocab_size=0), "model.vocab_size"),
        (lambda: ModelConfig(init_std=-1.0), "model.init_std"),
        (lambda: ModelConfig.from_dict({"d_model": 64, "n_head": 4}), "unknown field"),
    ],
)
def test_invalid_configs_name_the_field(make, field):
    with pytest.raises(ConfigError, match=field):
        make()


def test_moe_config_from_dict_in_model():
    cfg = ModelConfig(moe={"num_experts": 8, "top_k": 2})
    assert cfg.moe.sparsity == 0.75 and not cfg.moe.is_dense
