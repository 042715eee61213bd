import pytest

from models import ModelConfig, MoEConfig, MoETransformer, account
from models.accounting import expert_params, flops_per_token
from tests.models.helpers import small_config

CASES = {
    "dense": MoEConfig(),
    "E8K1": MoEConfig(num_experts=8, top_k=1),
    "E64K8": MoEConfig(num_experts=64, top_k=8),
    "E8K2_G4": MoEConfig(num_experts=8, top_k=2, granularity=4),
    "E8K1_shared": MoEConfig(num_experts=8, top_k=1, num_shared_experts=1),
    "E4K2_mlp": MoEConfig(num_experts=4, top_k=2, expert_type="mlp"),
}


def _cfg(moe, tie=False):
    return small_config(moe, vocab_size=97, n_layers=3, seq_len=16, tie_embeddings=tie)


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("name", list(CASES))
def test_total_equals_numel(name, tie):
    cfg = _cfg(CASES[name], tie)
    model = MoETransformer(cfg)
    assert account(cfg).params_total == sum(p.numel() for p in model.parameters())


def _hand_active(cfg: ModelConfig) -> int:
    """Active parameters derived by hand: count what one token touches in a built model."""
    model = MoETransformer(cfg)
    moe = cfg.moe
    n = 0
    for name, p in model.named_parameters():
        if name.endswith(("w_in_EHD", "w_out_EFD")):
            # only K*G of the E*G routed experts touch a token
            n += p[: moe.active_experts].numel()
        else:
            n += p.numel()
    return n


@pytest.mark.parametrize("name", list(CASES))
def test_active_matches_hand_count(name):
    cfg = _cfg(CASES[name])
    acc = account(cfg)
    assert acc.params_active == _hand_active(cfg)
    assert acc.params_embedding == 2 * 97 * 32
    assert acc.params_active_non_embedding == acc.params_active - acc.params_embedding


def test_active_by_formula_e64k8():
    cfg = _cfg(CASES["E64K8"])
    D, F, L, V = 32, 64, 3, 97
    per_layer = 4 * D * D + 2 * (D // 2) + 2 * D + 8 * 3 * D * F + 64 * D
    assert account(cfg).params_active == 2 * V * D + L * per_layer + D


def test_granularity_keeps_active_params():
    base = _cfg(MoEConfig(num_experts=8, top_k=2))
    fine = _cfg(MoEConfig(num_experts=8, top_k=2, granularity=4))
    router_delta = 3 * 32 * (32 - 8)  # router grows from E to E*G outputs
    assert account(fine).params_active - account(base).params_active == router_delta
    assert account(fine).params_total - account(base).params_total == router_delta
    assert expert_params(fine) * 4 == expert_params(base)


def test_sparsity_and_flops():
    cfg = _cfg(CASES["E64K8"])
    assert account(cfg).sparsity == pytest.approx(1 - 8 / 64)
    assert account(_cfg(CASES["dense"])).sparsity == 0.0
    acc = account(cfg)
    expected = 6 * acc.params_active_non_embedding + 6 * 3 * 16 * 32 + 6 * 97 * 32
    assert flops_per_token(cfg) == expected
