"""The sweep's MPS daemon handling and compile-cache environment, with a stand-in control
binary on PATH (CPU)."""

import os
import stat
from pathlib import Path

import pytest

from experiments.sweep import mps
from experiments.sweep.launch import compile_env
from experiments.sweep.sweep_dir import SweepDir

FAKE = """#!/usr/bin/env bash
echo "$@ $(cat)" >> "{log}"
{body}
"""


def _fake_control(tmp_path: Path, monkeypatch, body: str) -> Path:
    bin_dir, pipe, log = tmp_path / "bin", tmp_path / "pipe", tmp_path / "calls.log"
    bin_dir.mkdir()
    pipe.mkdir()
    tool = bin_dir / mps.CONTROL
    tool.write_text(FAKE.format(log=log, body=body.format(pipe=pipe)))
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(pipe))
    return log


def test_the_sweep_starts_mps_and_stops_it_after(tmp_path, monkeypatch):
    # -d creates the control pipe as the real daemon does; "quit" on stdin removes it.
    log = _fake_control(
        tmp_path,
        monkeypatch,
        'if [ "$1" = "-d" ]; then touch {pipe}/control; else rm -f {pipe}/control; fi',
    )
    with mps.mps_daemon(True) as note:
        assert note.startswith("MPS: started") and mps.running()
    assert not mps.running()
    assert log.read_text().split("\n")[:2] == ["-d ", " quit"]


def test_a_running_daemon_is_used_and_left_alone(tmp_path, monkeypatch):
    log = _fake_control(tmp_path, monkeypatch, "exit 0")
    (tmp_path / "pipe" / "control").touch()
    with mps.mps_daemon(True) as note:
        assert "already running" in note
    assert not log.exists() and mps.running()  # never started, never stopped


def test_a_daemon_that_cannot_start_is_one_line_and_no_stop(tmp_path, monkeypatch):
    log = _fake_control(tmp_path, monkeypatch, 'echo "permission denied" >&2; exit 1')
    with mps.mps_daemon(True) as note:
        assert (
            note
            == "MPS: could not start (permission denied); packed runs share the GPU by time-slicing"
        )
    assert len(log.read_text().splitlines()) == 1  # no "quit" for a daemon we did not start


def test_no_control_binary(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with mps.mps_daemon(True) as note:
        assert "not found" in note
    with mps.mps_daemon(False) as note:
        assert note == "MPS: off"


@pytest.mark.parametrize("jobs", [1, 8])
def test_compile_caches_live_in_the_sweep_folder(tmp_path, monkeypatch, jobs):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TORCHINDUCTOR_COMPILE_THREADS", raising=False)
    env = compile_env(SweepDir(tmp_path), jobs)
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "compile_cache")
    assert ("TORCHINDUCTOR_COMPILE_THREADS" in env) == (jobs > 1)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/mine")  # the user's choice wins
    assert "TORCHINDUCTOR_CACHE_DIR" not in compile_env(SweepDir(tmp_path), jobs)
