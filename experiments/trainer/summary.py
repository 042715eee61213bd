"""A run's summary (summary.json, one row of the runs table) from its Trainer's state."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from experiments.distributed.devices import peak_flops
from experiments.provenance import hardware
from experiments.record import RunSummary


def summarize(trainer, status: str, reason: str | None) -> RunSummary:
    """The run's summary.json: its config's columns and accounting, results, time breakdown,
    throughput and provenance."""
    tc, st = trainer.tc, trainer.state
    tokens = st.step * tc.tokens_per_step
    own_tokens = (st.step - st.start_step) * tc.tokens_per_step  # a branch: since its trunk step
    wall = st.wall_time_s
    rate = own_tokens / wall if wall > 0 else None
    peak = peak_flops(trainer.device, tc.run.peak_flops)
    t = st.time
    t.train_s = max(0.0, wall - t.warmup_s - t.eval_s - t.checkpoint_s - t.data_s)
    t.setup_s = trainer.setup_s
    return replace(
        RunSummary.planned(tc, trainer.rid),
        status=status,
        reason=reason,
        steps=st.step,
        flops=tokens * tc.flops_per_token,
        trained_flops=own_tokens * tc.flops_per_token,
        branch_of=Path(tc.run.branch_from).name if tc.run.branch_from else None,
        trunk_step=tc.run.branch_step,
        tokens=tokens,
        epochs=tokens / max(trainer.data.unique_train_tokens, 1),
        unique_train_tokens=trainer.data.unique_train_tokens,
        final_train_loss=float(np.mean(st.recent)) if st.recent else None,
        val_loss=st.val_loss,
        val_loss_se=st.val_loss_se,
        icl_score=st.icl_score,
        val_tokens=len(trainer.val) * tc.model.seq_len,
        val_documents=len(np.unique(trainer.val_docs)),
        backend=trainer.backend,
        device=str(trainer.device),
        world_size=trainer.d.world,
        compile=trainer.compiled,
        wall_time_s=wall,
        tokens_per_s=rate,
        mfu=(rate * tc.flops_per_token / (peak * trainer.d.world)) if (rate and peak) else None,
        time=vars(t).copy(),
        peak_memory_gb=(
            torch.cuda.max_memory_allocated(trainer.device) / 2**30
            if trainer.device.type == "cuda"
            else None
        ),
        peak_reserved_gb=(
            torch.cuda.max_memory_reserved(trainer.device) / 2**30
            if trainer.device.type == "cuda"
            else None
        ),
        data_key=trainer.data.key,
        hardware=hardware(),
    )
