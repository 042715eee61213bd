"""Gradient accumulation: micro-batches sum to the step the whole batch makes (float64, CPU),
and a bad micro-batch size is refused before anything runs."""

import pytest
import torch

from experiments.config import ConfigError, from_dict
from experiments.data.dataset import open_dataset
from experiments.record import RunDir
from experiments.trainer.loop import Trainer
from tests.experiments.helpers import tiny_config

COMMON = ["budget.flops=1e10", "train.batch_size=8", "optim.warmup_fraction=0"]


def _after_steps(tmp_path, name, *overrides, steps=3):
    tc = from_dict(tiny_config(tmp_path, *COMMON, *overrides))
    rd = RunDir(tmp_path / name)
    rd.create()
    t = Trainer(tc, name, rd, open_dataset(tc.data), torch.device("cpu"))
    t.model.double()  # in place: the optimiser keeps the same parameters
    for step in range(steps):
        t.train_step(step)
    t.flush()
    return t


@pytest.mark.parametrize(
    "model",
    [
        [],  # dense
        # MoE: routing is per token; the balance losses are per micro-batch, so off here
        ["moe.num_experts=4", "moe.top_k=2", "moe.load_balance_coef=0", "moe.z_loss_coef=0"],
    ],
)
def test_micro_batches_make_the_same_step_as_the_whole_batch(tmp_path, model):
    whole = _after_steps(tmp_path, "whole", *model)
    parts = _after_steps(tmp_path, "parts", *model, "train.micro_batch_size=2")
    for (name, a), b in zip(whole.model.named_parameters(), parts.model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=name)
    # the logged losses are read back in float32 (Trainer.flush): equal to its rounding
    assert parts.state.recent == pytest.approx(whole.state.recent, rel=1e-6)


def test_a_micro_batch_that_does_not_divide_the_batch_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"train.micro_batch_size: 3 must be >= 1 and divide"):
        from_dict(tiny_config(tmp_path, *COMMON, "train.micro_batch_size=3"))
