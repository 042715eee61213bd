"""NVIDIA MPS for a sweep's packed runs: start the daemon if it can be started, stop it after.

Without MPS, processes sharing a GPU are time-sliced: one process's kernels run at a time, so
packed small runs overlap only their host work. Under MPS their kernels run side by side
(measured on an H200: 8 packed runs of 6-layer models, 3.5% -> 5.1% aggregate MFU). The
daemon needs ``nvidia-cuda-mps-control`` and a GPU in the default compute mode; where it
cannot start, the sweep says why in one line and packs without it. A daemon that is already
running (another sweep's, or the cluster's) is used and left running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

CONTROL = "nvidia-cuda-mps-control"
DEFAULT_PIPE_DIR = "/tmp/nvidia-mps"
START_TIMEOUT_S = 5.0
ASK_TIMEOUT_S = 10.0
QUIT_TIMEOUT_S = 60.0


def pipe_dir() -> Path:
    return Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", DEFAULT_PIPE_DIR))


def running() -> bool:
    """Whether a control daemon answers on this user's pipe directory. Its control pipe alone
    does not say so: a daemon that has quit leaves ``control``, ``control_lock`` and
    ``control_privileged`` behind (seen on the H200, 2026-12-03). A sweep launched after another
    there took the pipe for a daemon, and its packed runs, finding none, were time-sliced
    (9.9% against 11.5% aggregate MFU)."""
    if not (pipe_dir() / "control").exists():
        return False
    try:
        return _control(text="get_server_list\n", timeout=ASK_TIMEOUT_S).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _control(
    *args: str, text: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CONTROL, *args], input=text, capture_output=True, text=True, check=False, timeout=timeout
    )


def _stop() -> None:
    """Tell the daemon to quit and wait until it no longer answers (it waits for running
    clients first): the next sweep on this machine must find a daemon that serves it or none,
    which it then starts."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        _control(text="quit\n")  # lets running clients finish before the daemon exits
    deadline = time.monotonic() + QUIT_TIMEOUT_S
    while running():
        if time.monotonic() > deadline:
            print(f"MPS: the daemon still answers {QUIT_TIMEOUT_S:.0f} s after quit", flush=True)
            return
        time.sleep(0.2)


@contextlib.contextmanager
def mps_daemon(wanted: bool) -> Iterator[str]:
    """Yields a one-line note of what happened (for the sweep's log)."""
    if not wanted:
        yield "MPS: off"
        return
    if shutil.which(CONTROL) is None:
        yield f"MPS: {CONTROL} not found; packed runs share the GPU by time-slicing"
        return
    if running():
        yield f"MPS: a daemon is already running ({pipe_dir()}); using it"
        return
    try:
        out = _control("-d")
    except (OSError, subprocess.SubprocessError) as e:
        yield f"MPS: could not start ({e}); packed runs share the GPU by time-slicing"
        return
    deadline = time.monotonic() + START_TIMEOUT_S
    while out.returncode == 0 and not running() and time.monotonic() < deadline:
        time.sleep(0.05)
    if out.returncode != 0 or not running():
        why = (out.stderr or out.stdout).strip().splitlines()[-1:] or [f"exit {out.returncode}"]
        yield f"MPS: could not start ({why[0]}); packed runs share the GPU by time-slicing"
        return
    try:
        yield "MPS: started for this sweep's packed runs"
    finally:
        _stop()
