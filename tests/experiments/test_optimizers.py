"""Optimizers by name and per-group learning-rate multipliers (CPU)."""

import pytest
import torch

from experiments.config import ConfigError, from_dict
from experiments.trainer import loop
from experiments.trainer.optim import OPTIMIZERS, lr_at, param_groups, register_optimizer
from tests.experiments.helpers import tiny_config

pytestmark = pytest.mark.slow  # trains runs, sweeps, prepares corpora or fits laws

MOE = ["moe.num_experts=4", "moe.top_k=1", "budget.flops=1e10", "run.stop_after_steps=3"]


def _trainer(tmp_path, *overrides):
    from experiments.data.dataset import open_dataset
    from experiments.record import RunDir

    tc = from_dict(tiny_config(tmp_path, *MOE, *overrides))
    rd = RunDir(tmp_path / "run")
    rd.create()
    return loop.Trainer(tc, "t", rd, open_dataset(tc.data), torch.device("cpu"))


def test_without_multipliers_the_groups_are_the_two_they_were(tmp_path):
    model = _trainer(tmp_path).model
    groups = param_groups(model, from_dict(tiny_config(tmp_path, *MOE)).optim)
    assert [g["lr_multiplier"] for g in groups] == [1.0, 1.0]
    assert [p.dim() >= 2 for p in groups[0]["params"]] == [True] * len(groups[0]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_a_multiplier_gives_matching_parameters_their_own_learning_rate(tmp_path):
    t = _trainer(tmp_path, "+optim.lr_multipliers={router: 0.5}")
    router = {id(p) for n, p in t.model.named_parameters() if "router" in n}
    for step in range(3):
        t.train_step(step)
        for g in t.opt.param_groups:
            mine = {id(p) for p in g["params"]}
            want = lr_at(step, t.total, t.tc.optim) * (0.5 if mine <= router else 1.0)
            assert mine <= router or not mine & router
            assert g["lr"] == pytest.approx(want)


def test_an_optimizer_is_a_registered_builder(tmp_path):
    @register_optimizer("sgd-for-a-test")
    def sgd(groups, cfg, fused):
        return torch.optim.SGD(groups, lr=cfg.lr)

    try:
        assert isinstance(_trainer(tmp_path, "optim.name=sgd-for-a-test").opt, torch.optim.SGD)
    finally:
        OPTIMIZERS.pop("sgd-for-a-test")
    with pytest.raises(ConfigError, match=r"optim.name: 'sgd-for-a-test' is not a registered"):
        from_dict(tiny_config(tmp_path, *MOE, "optim.name=sgd-for-a-test"))
    with pytest.raises(ConfigError, match=r"optim.lr_multipliers: 'router': -1"):
        from_dict(tiny_config(tmp_path, *MOE, "+optim.lr_multipliers={router: -1}"))
