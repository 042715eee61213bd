"""SIGINT (Ctrl-C), SIGTERM and SIGUSR1/SIGUSR2 (how SLURM warns of a time limit or
pre-emption: the presets ask for ``USR2@120``) become a request to stop cleanly.

Inside ``Interrupts()`` the first signal only sets ``requested``: the training loop finishes
its step, writes a checkpoint and an ``interrupted`` record, and exits with one line. A second
signal exits at once (the last checkpoint stays valid: checkpoints are renamed into place).
A signal the loop did not act on (it came as the run ended) is raised again on leaving, after
the record is written.
A handler that was installed before (submitit's, which requeues the job on USR2) is called
once the run is saved and recorded (``Interrupted.chain``), so the scheduler still does its
part.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
# Set by a sweep's driver for its runs: a file that exists once the sweep was asked to stop.
# A queued run learns of the stop from it: a pool worker (joblib's) takes its next job after
# the signal has come and gone, and would otherwise start a run nobody is waiting for.
SWEEP_STOP_FILE = "MOE_SWEEP_STOP_FILE"


def sweep_stopping() -> bool:
    """Whether the sweep this run belongs to (if any) has been asked to stop."""
    path = os.environ.get(SWEEP_STOP_FILE)
    return bool(path) and os.path.exists(path)


class Interrupted(Exception):
    """The run stopped on a signal after saving; ``code`` is the conventional exit status."""

    def __init__(self, signum: int, message: str, summary=None):
        super().__init__(message)
        self.code = 128 + signum
        self.signum = signum
        self.summary = summary  # the run's RunSummary, status "interrupted"
        self.previous = None  # the handler installed before ours, for this signal

    def chain(self) -> None:
        """Call the handler that was there before ours (a scheduler's), if it was Python's."""
        handler = self.previous
        if callable(handler) and handler is not signal.default_int_handler:
            handler(self.signum, None)


class Interrupts:
    def __init__(self):
        self.requested: int | None = None
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:
            print(
                f"\n{signal.Signals(signum).name} again: exiting now without saving",
                file=sys.stderr,
                flush=True,
            )
            os._exit(128 + signum)
        self.requested = signum
        print(
            f"\n{signal.Signals(signum).name}: finishing this step and saving a checkpoint "
            "(again to exit at once)",
            file=sys.stderr,
            flush=True,
        )

    @property
    def name(self) -> str:
        return signal.Signals(self.requested).name if self.requested else ""

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():  # handlers live there only
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, kind, exc, tb) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        if isinstance(exc, Interrupted):
            exc.previous = self._previous.get(exc.signum)
        elif self.requested is not None:
            # It came after the loop's last look (the run ended or failed meanwhile, and its
            # record is written): it does now what it would have done without us.
            signal.raise_signal(self.requested)
