"""Training batches.

A batch is a pure function of (seed, step): step ``s`` draws the window starts of all ranks
together from a generator seeded with (seed, s), so the data order is the same whatever the
device, the number of ranks or where a run was resumed. Rank r of W takes rows
[r*B/W, (r+1)*B/W) of the global batch.

On CUDA the training tokens live on the GPU (when they fit) and the starts are drawn for 1024
steps at a time and copied once: building a batch is then two small kernels and no host work.
Otherwise rows are gathered on the host and copied from pinned memory without blocking.
"""

from __future__ import annotations

import numpy as np
import torch

STARTS_CHUNK = 1024  # steps whose window starts are drawn and copied to the device at once


def batch_starts(step: int, seed: int, batch: int, n_tokens: int, seq_len: int) -> torch.Tensor:
    """The global batch's window starts for optimiser step ``step`` (int64, CPU)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(0, n_tokens - seq_len - 1, (batch,), generator=g)


def gpu_resident_fits(n_tokens: int, device: torch.device, share: int) -> bool:
    """Whether int32 tokens fit in a modest part of this process's share of the GPU."""
    if device.type != "cuda":
        return False
    total = torch.cuda.get_device_properties(device).total_memory
    return n_tokens * 4 <= min(0.15 * total / share, 8 << 30)


class Batches:
    def __init__(
        self,
        tokens: np.ndarray,
        seq_len: int,
        global_batch: int,
        seed: int,
        device: torch.device,
        rank: int = 0,
        world: int = 1,
        gpu_share: int = 1,
    ):
        self.seq_len, self.seed, self.device = seq_len, seed, device
        self.global_batch, self.n = global_batch, len(tokens)
        self.local = global_batch // world
        self.rows = slice(rank * self.local, (rank + 1) * self.local)
        self.tokens = tokens
        self.on_device = gpu_resident_fits(self.n, device, gpu_share)
        if self.on_device:
            self.tokens = torch.from_numpy(np.asarray(tokens).astype(np.int32)).to(device)
        self.offsets = torch.arange(seq_len + 1, device=device)
        self._chunk_id, self._chunk = None, None

    def _starts(self, step: int) -> torch.Tensor:
        chunk_id = step // STARTS_CHUNK
        if chunk_id != self._chunk_id:
            first = chunk_id * STARTS_CHUNK
            starts = torch.stack(
                [
                    batch_starts(s, self.seed, self.global_batch, self.n, self.seq_len)[self.rows]
                    for s in range(first, first + STARTS_CHUNK)
                ]
            )
            self._chunk, self._chunk_id = starts.to(self.device), chunk_id
        return self._chunk[step % STARTS_CHUNK]

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of shape (local batch, seq_len), int64, on the device."""
        if self.on_device:
            rows = self.tokens[self._starts(step)[:, None] + self.offsets].long()
        else:
            starts = batch_starts(step, self.seed, self.global_batch, self.n, self.seq_len)[
                self.rows
            ].numpy()
            rows = torch.from_numpy(
                np.stack([self.tokens[s : s + self.seq_len + 1] for s in starts]).astype(np.int64)
            )
            if self.device.type == "cuda":
                rows = rows.pin_memory().to(self.device, non_blocking=True)
        return rows[:, :-1], rows[:, 1:]
