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
in=$(cat)
echo "$@ $in" >> "{log}"
{body}
"""
# As the real daemon: -d creates the control pipe, a query answers while the pipe is there,
# "quit" removes it (after {delay} s: the daemon waits for its server to exit).
DAEMON = """case "$1 $in" in
  "-d "*) touch {pipe}/control ;;
  *quit*) (sleep {delay}; rm -f {pipe}/control) >/dev/null 2>&1 & ;;
  *) [ -e {pipe}/control ] ;;
esac"""


def _calls(log: Path) -> list[str]:
    """What the sweep told the daemon to do (its queries left out)."""
    said = log.read_text().splitlines() if log.exists() else []
    return [c for c in said if "get_server_list" not in c]


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


@pytest.mark.parametrize("delay", [0, 0.6])
def test_the_sweep_starts_mps_and_stops_it_after(tmp_path, monkeypatch, delay):
    """The sweep returns once its daemon is gone, not when it was told to quit: a sweep launched
    next must not take a quitting daemon for one that will serve it."""
    log = _fake_control(tmp_path, monkeypatch, DAEMON.replace("{delay}", str(delay)))
    with mps.mps_daemon(True) as note:
        assert note.startswith("MPS: started") and mps.running()
    assert not mps.running()
    assert _calls(log) == ["-d ", " quit"]
    with mps.mps_daemon(True) as note:  # the next sweep starts its own
        assert note.startswith("MPS: started")


def test_a_running_daemon_is_used_and_left_alone(tmp_path, monkeypatch):
    log = _fake_control(tmp_path, monkeypatch, DAEMON.replace("{delay}", "0"))
    (tmp_path / "pipe" / "control").touch()
    with mps.mps_daemon(True) as note:
        assert "already running" in note
    assert _calls(log) == [] and mps.running()  # never started, never stopped


def test_a_control_pipe_that_nothing_answers_is_not_a_daemon(tmp_path, monkeypatch):
    """A daemon that died leaves its pipe: the sweep starts one rather than run without."""
    # this stand-in answers once -d has started it, whatever the pipe says
    daemon = DAEMON.replace("[ -e {pipe}/control ]", "[ -e {pipe}/up ]").replace("{delay}", "0")
    log = _fake_control(
        tmp_path, monkeypatch, daemon.replace("touch {pipe}/control", "touch {pipe}/up")
    )
    (tmp_path / "pipe" / "control").touch()
    assert not mps.running()
    with mps.mps_daemon(True) as note:
        assert note.startswith("MPS: started") and mps.running()
    assert _calls(log) == ["-d ", " quit"]


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
