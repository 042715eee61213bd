"""One training run: budget -> steps, the loop, evaluation, checkpoints, the run record.

Resumable bit-exactly on CPU: batches are a pure function of (seed, step), and the checkpoint
holds model, optimiser, RNG states and the loop's running statistics.
"""

from __future__ import annotations

import contextlib
import io
import math
import time

import numpy as np
import torch

from experiments.config import TrainConfig
from experiments.data import Dataset
from experiments.devices import peak_flops
from experiments.optim import build_optimizer, lr_at
from experiments.record import RunDir, atomic_write_bytes, git_sha, versions
from models import MoETransformer, account
from models.backends import resolve_backend


class TrainingFailed(RuntimeError):
    """The run cannot go on (non-finite or diverging loss); the message is the reason."""


def get_batch(data: np.ndarray, step: int, seed: int, batch: int, seq_len: int):
    """The batch of optimiser step ``step``: a pure function of (seed, step)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(0, len(data) - seq_len - 1, (batch,), generator=g).numpy()
    rows = np.stack([data[s : s + seq_len + 1] for s in starts]).astype(np.int64)
    t = torch.from_numpy(rows)
    return t[:, :-1], t[:, 1:]


def validation_set(val: np.ndarray, seq_len: int, eval_tokens: int) -> torch.Tensor:
    """Fixed held-out sequences: the first eval_tokens tokens of the validation split."""
    n = min(eval_tokens // seq_len, (len(val) - 1) // seq_len)
    if n < 1:
        raise ValueError(
            f"model.seq_len={seq_len} is larger than the validation split ({len(val)} tokens)"
        )
    rows = np.asarray(val[: n * seq_len + 1], dtype=np.int64)
    idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return torch.from_numpy(rows[idx])


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model, val_NS1: torch.Tensor, batch: int, device: torch.device) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for chunk in val_NS1.split(batch):
        chunk = chunk.to(device)
        with _autocast(device):
            out = model(chunk[:, :-1], chunk[:, 1:])
        total += out.loss.item() * chunk.shape[0]
        count += chunk.shape[0]
    model.train(was_training)
    return total / count


def _load_stats(aux_list) -> dict:
    counts = [a.tokens_per_expert_E for a in aux_list if a.tokens_per_expert_E is not None]
    if not counts:
        return {}
    loads = [c.float() / c.float().mean() for c in counts]
    return {
        "expert_load_max": [round(x.max().item(), 4) for x in loads],
        "expert_load_cv": [round(x.std(unbiased=False).item(), 4) for x in loads],
    }


def _fmt(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


class Trainer:
    def __init__(self, tc: TrainConfig, rid: str, run_dir: RunDir, data: Dataset, device):
        self.tc, self.rid, self.rd, self.data, self.device = tc, rid, run_dir, data, device
        self.backend = resolve_backend(tc.model.moe.backend, device)
        torch.manual_seed(tc.seed)
        self.model = MoETransformer(tc.model).to(device)
        self.step_fn = torch.compile(self.model) if tc.train.compile else self.model
        self.opt = build_optimizer(self.model, tc.optim, device)
        self.val = validation_set(data.val, tc.model.seq_len, tc.train.eval_tokens)
        self.acc = account(tc.model)
        self.total = tc.steps
        self.state = {"step": 0, "first_loss": None, "wall_time_s": 0.0, "recent": [],
                      "val_loss": None}

    # -- checkpoints --
    def save_checkpoint(self) -> None:
        buf = io.BytesIO()
        torch.save({"model": self.model.state_dict(), "optim": self.opt.state_dict(),
                    "state": self.state, "rng": _rng_state(self.device)}, buf)
        atomic_write_bytes(self.rd.checkpoint, buf.getvalue())

    def maybe_resume(self) -> bool:
        if not self.rd.checkpoint.exists():
            self.rd.metrics.unlink(missing_ok=True)
            return False
        ckpt = torch.load(self.rd.checkpoint, map_location=self.device, weights_only=False)
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optim"])
        self.state = ckpt["state"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        if "cuda" in ckpt["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.device)
        self.rd.truncate_metrics(self.state["step"])
        print(f"[{self.rid}] resuming from step {self.state['step']}/{self.total}", flush=True)
        return True

    # -- the loop --
    def train_step(self, step: int) -> tuple[float, float, list]:
        tc = self.tc
        x, y = get_batch(self.data.train, step, tc.seed, tc.train.batch_size, tc.model.seq_len)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        lr = lr_at(step, self.total, tc.optim)
        for group in self.opt.param_groups:
            group["lr"] = lr
        with _autocast(self.device):
            out = self.step_fn(x, y)
        loss = out.loss
        if tc.train.nan_at_step is not None and step == tc.train.nan_at_step:
            loss = loss * float("nan")
        (loss + out.aux_loss).backward()
        if tc.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.optim.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item(), out.aux_loss.item(), out.aux

    def check_loss(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            raise TrainingFailed(f"non-finite training loss ({loss}) at step {step}")
        first = self.state["first_loss"]
        if first is None:
            self.state["first_loss"] = loss
        elif loss > self.tc.train.divergence_factor * first:
            raise TrainingFailed(
                f"diverged: loss {loss:.3f} > {self.tc.train.divergence_factor} x initial "
                f"{first:.3f} at step {step}"
            )

    def run(self) -> dict:
        self.maybe_resume()  # replaces self.state: bind `st` after it
        tc, st = self.tc, self.state
        tokens_per_step = tc.tokens_per_step
        stop_at = self.total
        if tc.run.stop_after_steps is not None:
            stop_at = min(self.total, st["step"] + tc.run.stop_after_steps)
        t0 = last_log = time.time()
        wall0, step0 = st["wall_time_s"], st["step"]
        self.model.train()
        while st["step"] < stop_at:
            step = st["step"]
            loss, aux_loss, aux = self.train_step(step)
            self.check_loss(step, loss)
            st["recent"] = (st["recent"] + [loss])[-10:]
            st["step"] = step + 1
            st["wall_time_s"] = wall0 + time.time() - t0
            done = st["step"] == self.total
            if tc.train.eval_every and st["step"] % tc.train.eval_every == 0 and not done:
                st["val_loss"] = evaluate(self.model, self.val, tc.train.batch_size, self.device)
            now = time.time()
            if st["step"] % tc.run.log_every == 0 or done or now - last_log > 20:
                rate = (st["step"] - step0) * tokens_per_step / max(now - t0, 1e-9)
                self.log(step + 1, loss, aux_loss, aux, rate)
                last_log = now
            if st["step"] % tc.run.checkpoint_every == 0 and not done:
                self.save_checkpoint()
        if st["step"] < self.total:  # stopped early on request: stay resumable
            self.save_checkpoint()
            return {"status": "interrupted", "step": st["step"]}
        st["val_loss"] = evaluate(self.model, self.val, tc.train.batch_size, self.device)
        summary = self.summary("done", None)
        if tc.run.keep_checkpoint:
            self.save_checkpoint()
        else:
            self.rd.checkpoint.unlink(missing_ok=True)
        return summary

    def log(self, step: int, loss: float, aux_loss: float, aux, rate: float) -> None:
        tc, st = self.tc, self.state
        tokens = step * tc.tokens_per_step
        row = {
            "step": step, "tokens": tokens, "flops": tokens * tc.flops_per_token,
            "lr": lr_at(step - 1, self.total, tc.optim), "train_loss": loss,
            "aux_loss": aux_loss, "val_loss": st["val_loss"], "tokens_per_s": rate,
        } | _load_stats(aux)
        self.rd.append_metrics(row)
        eta = (self.total - step) * tc.tokens_per_step / max(rate, 1e-9)
        val = f" | val {st['val_loss']:.4f}" if st["val_loss"] is not None else ""
        print(
            f"[{self.rid}] step {step}/{self.total} | tok {_fmt(tokens)} | loss {loss:.4f}"
            f" | aux {aux_loss:.4f}{val} | lr {row['lr']:.2e} | {_fmt(rate)} tok/s"
            f" | ETA {eta:.0f}s",
            flush=True,
        )
        self.rd.write_progress({"step": step, "total_steps": self.total, "train_loss": loss})

    def summary(self, status: str, reason: str | None) -> dict:
        tc, st = self.tc, self.state
        tokens = st["step"] * tc.tokens_per_step
        wall = st["wall_time_s"]
        rate = tokens / wall if wall > 0 else None
        peak = peak_flops(self.device, tc.run.peak_flops)
        return base_summary(tc, self.rid) | {
            "status": status, "reason": reason, "steps": st["step"],
            "flops": tokens * tc.flops_per_token, "tokens": tokens,
            "final_train_loss": float(np.mean(st["recent"])) if st["recent"] else None,
            "val_loss": st["val_loss"], "backend": self.backend, "device": str(self.device),
            "wall_time_s": wall, "tokens_per_s": rate,
            "mfu": (rate * tc.flops_per_token / peak) if (rate and peak) else None,
        }


def base_summary(tc: TrainConfig, rid: str) -> dict:
    """Summary fields known from the config alone (also written for runs that never started)."""
    acc = account(tc.model)
    m = tc.model
    return {
        "run_id": rid, "status": None, "reason": None, "sweep": tc.sweep_name,
        "budget_flops": tc.budget.flops, "flops": 0, "tokens": 0, "steps": 0,
        "planned_steps": tc.steps, "sparsity": acc.sparsity,
        "num_experts": m.moe.num_experts, "top_k": m.moe.top_k,
        "granularity": m.moe.granularity, "num_shared_experts": m.moe.num_shared_experts,
        "expert_type": m.moe.expert_type, "d_model": m.d_model, "n_layers": m.n_layers,
        "n_heads": m.n_heads, "d_ff": m.d_ff, "seq_len": m.seq_len, "vocab_size": m.vocab_size,
        "batch_size": tc.train.batch_size, "lr": tc.optim.lr,
        "params_total": acc.params_total, "params_active": acc.params_active,
        "params_embedding": acc.params_embedding,
        "params_active_non_embedding": acc.params_active_non_embedding,
        "flops_per_token": acc.flops_per_token, "flops_convention": acc.flops_convention,
        "final_train_loss": None, "val_loss": None, "seed": tc.seed,
        "backend": tc.model.moe.backend, "device": None, "wall_time_s": 0.0,
        "tokens_per_s": None, "mfu": None, "data": tc.data.source,
        "tokenizer": tc.data.tokenizer, "git_sha": git_sha(), "versions": versions(),
    }
