"""Issue 23: sweep directories shared by a group, and filesystems without flock (CPU)."""

import builtins
import errno
import fcntl
import os
import stat

import pytest

from experiments import files, record
from experiments.record import RunBusy, RunDir
from experiments.sweep.sweep_dir import run_state
from experiments.train import RunError, execute
from tests.experiments.helpers import tiny_config

pytestmark = pytest.mark.slow  # trains runs, sweeps, prepares corpora or fits laws

MOE = ["moe.num_experts=4", "moe.top_k=1", "budget.flops=1e10"]


def test_run_records_are_readable_by_the_group(tmp_path):
    old = os.umask(0o022)
    try:
        summary = execute(tiny_config(tmp_path, *MOE))
    finally:
        os.umask(old)
    run_dir = tmp_path / "runs" / summary["run_id"]
    for name in ("summary.json", "run.json", "config.yaml", "metrics.jsonl"):
        mode = stat.S_IMODE((run_dir / name).stat().st_mode)
        assert mode == files.FILE_MODE == 0o644, (name, oct(mode))


def test_status_of_a_run_needs_no_write_access(tmp_path, monkeypatch):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / ".lock").write_text("pid 1 on elsewhere")
    (run_dir / "summary.json").write_text('{"status": "done"}')
    real = builtins.open

    def read_only(path, mode="r", *a, **k):  # another user's sweep directory
        if any(c in mode for c in "wa+"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", read_only)
    assert run_state(run_dir)[0] == "done"


def test_a_held_lock_and_a_filesystem_without_flock_are_told_apart(tmp_path, monkeypatch):
    first = RunDir(tmp_path / "r")
    first.create()
    first.lock()
    with pytest.raises(RunBusy):
        RunDir(tmp_path / "r").lock()
    first.release()

    def no_flock(f, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with pytest.raises(files.LocksUnsupported, match="does not support flock"):
        RunDir(tmp_path / "r").lock()
    assert record.is_locked(tmp_path / "r") is False
    with pytest.raises(RunError, match="does not support flock"):
        execute(tiny_config(tmp_path, *MOE))
