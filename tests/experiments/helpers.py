"""Compose the real Hydra config (conf/train.yaml) with overrides, as the CLI would."""

from pathlib import Path

from hydra import compose, initialize_config_dir

from experiments.train import resolve

CONF = str(Path(__file__).resolve().parents[2] / "conf")

TINY = [
    "data=sotu_bytes",
    "model.d_model=32",
    "model.n_layers=1",
    "model.n_heads=2",
    "model.d_ff=128",
    "model.seq_len=32",
    "train.batch_size=8",
    "train.eval_tokens=2048",
    "run.log_every=10",
    "run.checkpoint_every=40",
]


def tiny_config(tmp_path: Path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *TINY,
                f"data.cache_dir={tmp_path}/cache",
                f"run.root={tmp_path}/runs",
                *overrides,
            ],
        )
    return resolve(cfg)
