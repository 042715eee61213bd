"""One source of truth (issue 14): the dataclasses hold every default; presets only differ."""

import itertools
import math
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from experiments.config import OptimConfig, defaults, from_dict
from experiments.train import resolve
from experiments.trainer.optim import lr_at
from tests.experiments.helpers import CONF

GROUPS = ("model", "moe", "data", "optim")


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        v = list(v) if isinstance(v, tuple) else v  # YAML has lists where Python has tuples
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def test_composed_defaults_are_the_dataclass_defaults(tmp_path):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = resolve(compose("train", overrides=["model.vocab_size=2048"]))
    want = defaults()
    want["model"]["vocab_size"] = 2048  # tied to data.vocab_size in train.yaml
    assert _flat(cfg) == _flat(want)
    tc = from_dict(cfg)
    assert asdict(tc.optim) == asdict(OptimConfig())


@pytest.mark.parametrize("group", GROUPS)
def test_every_preset_composes_and_only_changes_what_differs(group):
    base = _flat(defaults())
    for preset in sorted(p.stem for p in (Path(CONF) / group).glob("*.yaml")):
        overrides = [f"{group}={preset}"]
        if group == "data" and preset in ("text", "bin"):
            continue  # need a path; tested in test_data
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            cfg = resolve(compose("train", overrides=overrides))
        from_dict(cfg, check_steps=False)
        text = (Path(CONF) / group / f"{preset}.yaml").read_text()
        raw = yaml.safe_load(text) or {}
        if "# @package _global_" in text:
            raw = _flat(raw)
        else:
            raw = {f"{group}.{k}": v for k, v in _flat(raw).items()}
        for key, value in raw.items():
            assert key in base, f"{group}/{preset}: {key} is not a config field"
            assert value != base[key], f"{group}/{preset}: {key}={value} repeats the default"


def test_logistics_do_not_change_the_run_id(tmp_path):
    from tests.experiments.helpers import tiny_config

    base = from_dict(tiny_config(tmp_path)).identity()
    for override in (
        "run.log_every=3",
        "run.dir=/tmp/x",
        "train.compile=true",
        "train.eval_every=7",
        "run.keep_final=weights",
        "data.cache_dir=/tmp/c",
    ):
        assert from_dict(tiny_config(tmp_path, override)).identity() == base, override
    for override in ("seed=1", "optim.lr=1e-3", "train.batch_size=4", "moe.num_experts=2"):
        assert from_dict(tiny_config(tmp_path, override)).identity() != base, override


def test_train_config_fields_are_documented():
    import ast
    import inspect

    import experiments.config as module

    tree = ast.parse(inspect.getsource(module))
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name != "TrainConfig"):
        body = cls.body
        for i, node in enumerate(body):
            if isinstance(node, ast.AnnAssign) and node.target.id != "section":
                nxt = body[i + 1] if i + 1 < len(body) else None
                assert isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant), (
                    f"{cls.name}.{node.target.id} has no docstring"
                )


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "constant"])
def test_lr_schedules(schedule):
    cfg = OptimConfig(
        lr=1.0, schedule=schedule, warmup_fraction=0.1, min_lr_ratio=0.1, decay_fraction=0.2
    )
    total = 100
    lrs = [lr_at(s, total, cfg) for s in range(total)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warmup
    assert all(b > a for a, b in itertools.pairwise(lrs[:10]))
    if schedule == "constant":
        assert all(v == 1.0 for v in lrs[10:])
    elif schedule == "cosine":
        assert lrs[10] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1)
        mid = 10 + (total - 10 - 1) / 2
        assert lr_at(math.floor(mid), total, cfg) == pytest.approx(0.55, abs=0.02)
        assert all(b <= a for a, b in itertools.pairwise(lrs[10:]))
    else:  # warmup, stable until the last 20%, linear decay to 10%
        assert all(v == 1.0 for v in lrs[10:80])
        assert lrs[-1] == pytest.approx(0.1) and lrs[90] == pytest.approx(1 - 0.9 * 11 / 20)


@pytest.mark.slow
def test_the_same_corpus_at_another_path_is_the_same_run(tmp_path):
    import shutil

    import numpy as np

    from tests.experiments.helpers import tiny_config

    a = tmp_path / "here"
    a.mkdir()
    (np.arange(5000) % 256).astype(np.uint16).tofile(a / "train.bin")
    (np.arange(800) % 256).astype(np.uint16).tofile(a / "val.bin")
    (a / "meta.json").write_text('{"key": "abc123", "vocab_size": 256, "dtype": "uint16"}')
    shutil.copytree(a, tmp_path / "there")
    ids = [
        from_dict(tiny_config(tmp_path, "data=bin", f"data.path={p}")).identity()
        for p in (a, tmp_path / "there")
    ]
    assert ids[0] == ids[1] and ids[0]["data"]["fingerprint"] == "abc123"
    (tmp_path / "there" / "meta.json").write_text('{"key": "other", "vocab_size": 256}')
    from experiments.data.dataset import _identities

    _identities.clear()  # one process remembers a corpus's identity
    other = from_dict(tiny_config(tmp_path, "data=bin", f"data.path={tmp_path / 'there'}"))
    assert other.identity() != ids[0]
