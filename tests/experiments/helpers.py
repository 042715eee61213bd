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


def kill_resume_and_compare(tmp_path: Path, args: list[str], ready) -> tuple[dict, dict, Path]:
    """SIGKILL a real ``experiments.train`` process once ``ready(run_root)`` holds, resume it,
    train the same config uninterrupted beside it; returns (resumed summary, uninterrupted
    summary, the killed run's directory). The caller compares what it needs to."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "experiments.train", *args]
    killed = subprocess.Popen(
        [*cmd, f"run.root={tmp_path}/k"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and killed.poll() is None and not ready(tmp_path / "k"):
        time.sleep(0.05)
    assert killed.poll() is None, "the run finished before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    (run_dir,) = [p.parent for p in (tmp_path / "k").glob("*/run.json")]
    assert not (run_dir / "summary.json").exists()
    subprocess.run([*cmd, f"run.root={tmp_path}/k"], env=env, check=True, capture_output=True)
    subprocess.run([*cmd, f"run.root={tmp_path}/u"], env=env, check=True, capture_output=True)
    resumed = json.loads((run_dir / "summary.json").read_text())
    fresh = json.loads(next((tmp_path / "u").glob("*/summary.json")).read_text())
    return resumed, fresh, run_dir
