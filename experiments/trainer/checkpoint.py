"""Checkpoints that do not stall training.

``save`` snapshots the training state to host memory and returns; a background thread
serialises the snapshot and renames it into place (atomic). On CUDA the snapshot is a
non-blocking copy into reused pinned buffers, ordered on the compute stream before the next
optimiser step, so the host never waits for it; the writer thread waits for the copy's event.
On CPU the snapshot is a plain copy (small models; bit-exact resume).

Model and optimiser state go through torch.distributed.checkpoint's state-dict API with full
state dicts, so the same files load into a plain, DDP or FSDP2 model, with any number of ranks.
"""

from __future__ import annotations

import io
import threading
import time

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from experiments.files import atomic_write_bytes


def model_state(model: torch.nn.Module) -> dict:
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def training_state(model, opt) -> dict:
    full = StateDictOptions(full_state_dict=True)
    return {
        "model": get_model_state_dict(model, options=full),
        "optim": get_optimizer_state_dict(model, opt, options=full),
    }


def load_training_state(model, opt, state: dict) -> None:
    full = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, state["model"], options=full)
    set_optimizer_state_dict(model, opt, state["optim"], options=full)


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


class AsyncCheckpointer:
    """One background write at a time; ``save`` returns as soon as the snapshot is queued."""

    def __init__(self, device: torch.device):
        self.device = device
        self._pinned: dict[int, torch.Tensor] = {}  # reused host buffers, by tensor position
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.last_write_s = 0.0

    def _to_host(self, obj, counter: list[int]):
        if isinstance(obj, torch.Tensor):
            i = counter[0]
            counter[0] += 1
            if obj.device.type != "cuda":
                return obj.detach().clone()
            buf = self._pinned.get(i)
            if buf is None or buf.shape != obj.shape or buf.dtype != obj.dtype:
                buf = self._pinned[i] = torch.empty(obj.shape, dtype=obj.dtype, pin_memory=True)
            return buf.copy_(obj.detach(), non_blocking=True)
        if isinstance(obj, dict):
            return {k: self._to_host(v, counter) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self._to_host(v, counter) for v in obj)
        return obj

    def save(self, path, state: dict) -> None:
        """Snapshot ``state`` (nested dicts/lists of tensors and plain values) and write it to
        ``path`` in the background. Waits only if the previous write is still running."""
        self.wait()
        snapshot = self._to_host(state, [0])
        done = None
        if self.device.type == "cuda":
            done = torch.cuda.Event()
            done.record()
        self._thread = threading.Thread(
            target=self._write, args=(path, snapshot, done), daemon=True
        )
        self._thread.start()

    def _write(self, path, snapshot, done) -> None:
        try:
            t0 = time.perf_counter()
            if done is not None:
                done.synchronize()
            buf = io.BytesIO()
            torch.save(snapshot, buf)
            atomic_write_bytes(path, buf.getvalue())
            self.last_write_s = time.perf_counter() - t0
        except BaseException as e:  # surfaced by wait(): a lost checkpoint must be loud
            self._error = e

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"writing the checkpoint failed: {error}") from error
