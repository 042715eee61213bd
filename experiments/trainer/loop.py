"""One training run: budget -> steps, the loop, evaluation, checkpoints, the run record.

The step never waits on the host: losses stay on the device and are read when a line is
logged (the NaN/divergence check runs then, naming the step that went bad), batches are built
on the device, and checkpoints are written in the background. Resumable bit-exactly on CPU:
batches are a pure function of (seed, step), and the checkpoint holds model, optimiser, RNG
states and the loop's state (experiments/record.py LoopState).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from experiments.config import TrainConfig
from experiments.data.batches import Batches
from experiments.data.dataset import Dataset
from experiments.distributed import expert_parallel as ep_
from experiments.distributed import ranks as dist_
from experiments.record import LoopState, RunDir, RunSummary
from experiments.trainer import health
from experiments.trainer.branching import start_from_trunk
from experiments.trainer.callbacks import Callbacks
from experiments.trainer.checkpoint import (
    AsyncCheckpointer,
    load_training_state,
    model_state,
    rng_state,
    set_rng_state,
    training_state,
)
from experiments.trainer.compile import (
    checked_compile_plan,
    compiled_step,
    eager_stance,
    start_compile_workers,
    uses_cuda_graphs,
)
from experiments.trainer.evaluation import autocast, evaluate, load_stats, validation_windows
from experiments.trainer.health import TrainingFailed
from experiments.trainer.interrupts import Interrupted, Interrupts
from experiments.trainer.optim import build_optimizer, lr_at
from experiments.trainer.summary import summarize
from models import MoETransformer, account
from models.backends import resolve_backend
from models.moe import MoE
from models.transformer import post_optimizer_step_hooks

WARMUP_STEPS = 3  # steps timed as warm-up (compilation, autotuning, allocator growth)
LOG_EVERY_S = 20  # also log at least this often (single process)
AGREE_EVERY = 10  # multi-rank: steps between agreeing on interrupts and checkpoints


class Trainer:
    def __init__(
        self,
        tc: TrainConfig,
        rid: str,
        run_dir: RunDir,
        data: Dataset,
        device: torch.device,
        d: dist_.Dist | None = None,
    ):
        t0 = time.perf_counter()
        self.tc, self.rid, self.rd, self.data, self.device = tc, rid, run_dir, data, device
        self.d = d or dist_.Dist()
        self.backend = resolve_backend(tc.model.moe.backend, device)
        cfg = replace(tc.model, moe=replace(tc.model.moe, backend=self.backend))
        torch.manual_seed(tc.seed)
        self.ep = ep_.expert_groups(self.d, tc.model.moe.expert_parallel)
        self.compiled, mode = checked_compile_plan(tc, device, self.backend)
        if self.compiled:  # the workers start while the model is built
            start_compile_workers(device, tc.run.gpu_slots)
        # One process: draw the initial weights on the device itself (on the host, base's 720M
        # parameters took seconds to draw and copy). Under torchrun, on the host: FSDP shards
        # what it is given, and every rank draws the same weights there.
        with torch.device(device if self.d.world == 1 else "cpu"):
            self.model = MoETransformer(cfg, self.ep)
        self.model.to(device)
        if tc.model.moe.load_balance_scope == "global" and self.d.world > 1:
            for module in self.model.modules():
                if isinstance(module, MoE):
                    module.balance_group = torch.distributed.group.WORLD
        if device.type == "cuda":  # a sweep's worker trains run after run: this run's peak
            torch.cuda.reset_peak_memory_stats(device)
        self.setup_parts = {"model_s": time.perf_counter() - t0}
        self.acc = account(tc.model)
        self.parallel = dist_.choose_parallel(tc.run.parallel, self.acc.params_total, device)
        if self.ep and self.parallel == "fsdp":
            raise ValueError(
                "moe.expert_parallel > 1 runs with run.parallel=ddp (FSDP and "
                "expert parallelism are not combined here)"
            )
        self.total = tc.steps
        self.graphs = self.compiled and uses_cuda_graphs(mode)
        self.step_fn = compiled_step(
            self.model,
            lambda model: dist_.wrap(model, self.d, self.parallel, device),
            mode if self.compiled else None,
            tc.train.compile_scope,
        )
        # Fused AdamW does not take FSDP's sharded (DTensor) parameters.
        fused = device.type == "cuda" and self.parallel != "fsdp"
        self.opt = build_optimizer(self.model, tc.optim, device, fused=fused)
        self.setup_parts["compile_and_optimizer_s"] = time.perf_counter() - t0
        self.batches = Batches(
            data.train,
            tc.model.seq_len,
            tc.train.batch_size,
            tc.seed,
            device,
            self.d.rank,
            self.d.world,
            tc.run.gpu_slots,
        )
        self.setup_parts["batches_s"] = time.perf_counter() - t0
        self.val, self.val_docs = validation_windows(
            data.val, data.val_docs, tc.model.seq_len, tc.train.eval_tokens
        )
        self.ckpt = AsyncCheckpointer(device)
        self.state = LoopState()
        self.pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # losses not yet read
        self.last_read: tuple[float, float] | None = None  # (loss, aux) of the latest read step
        self.last_aux = None
        self.checkpointed_step = 0  # the step the latest checkpoint holds (0: none)
        self.grad_norm = torch.zeros(())  # the latest step's, before clipping (on the device)
        self.callbacks = Callbacks(tc.run.callbacks + tc.run.trackers)
        self.post_step = post_optimizer_step_hooks(self.model)
        self.bias_routers = self.model.bias_routers  # aux-loss-free routers: fed each forward
        self.setup_s = time.perf_counter() - t0

    # -- checkpoints --
    def save_checkpoint(self, wait: bool = False, path: Path | None = None) -> None:
        """The training state to run.checkpoint (or ``path``: a branch point, kept)."""
        t0 = time.perf_counter()
        state = ep_.gather_experts(  # collectives (FSDP, EP): every rank takes part
            training_state(self.model, self.opt), self.model.expert_parallel_params, self.ep
        )
        if self.d.is_main:
            self.ckpt.save(
                path or self.rd.checkpoint,
                state
                | {
                    "loop": self.state.state_dict(),
                    "rng": rng_state(self.device),
                    "run_id": self.rid,
                },
            )
            if wait:
                self.ckpt.wait()
            if path is None:
                self.callbacks.checkpoint(self, self.rd.checkpoint)
        self.state.time.checkpoint_s += time.perf_counter() - t0
        if path is None:
            self.checkpointed_step = self.state.step

    def maybe_resume(self) -> bool:
        if not self.rd.checkpoint.exists():
            if self.d.is_main:
                self.rd.metrics.unlink(missing_ok=True)
            if self.tc.run.branch_from is not None:
                start_from_trunk(self)
            return False
        # On the host: the RNG states must stay CPU tensors; weights are copied into place.
        try:
            ckpt = torch.load(self.rd.checkpoint, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several kinds for a damaged file
            if not self.tc.run.retry_failed:
                raise RuntimeError(
                    f"{self.rd.checkpoint} is unreadable ({str(e).splitlines()[0][:120]}); "
                    "pass run.retry_failed=true to set it aside and start again"
                ) from None
            aside = self.rd.checkpoint.with_name(f"checkpoint.unreadable-{int(time.time())}.pt")
            self.rd.checkpoint.replace(aside)  # kept, never deleted
            print(f"[{self.rid}] {self.rd.checkpoint.name} unreadable: set aside as {aside.name}")
            return self.maybe_resume()
        if ckpt.get("run_id", self.rid) != self.rid:
            raise RuntimeError(f"{self.rd.checkpoint} belongs to run {ckpt['run_id']}")
        load_training_state(
            self.model,
            self.opt,
            ep_.split_experts(ckpt, self.model.expert_parallel_params, self.ep),
        )
        self.state.load_state_dict(ckpt["loop"])
        self.checkpointed_step = self.state.step
        set_rng_state(ckpt["rng"], self.device)
        if self.d.is_main:
            bad = self.rd.truncate_metrics(self.state.step)
            if bad:
                print(f"[{self.rid}] metrics.jsonl: dropped unreadable line(s) {bad}", flush=True)
            print(f"[{self.rid}] resuming from step {self.state.step}/{self.total}", flush=True)
        return True

    # -- the loop --
    def train_step(self, step: int) -> None:
        tc = self.tc
        if self.graphs:  # each optimiser step is a new CUDA-graph tree step
            torch.compiler.cudagraph_mark_step_begin()
        t0 = time.perf_counter()
        x, y = self.batches.get(step)
        self.state.time.data_s += time.perf_counter() - t0
        lr = lr_at(step, self.total, tc.optim)
        for group in self.opt.param_groups:
            group["lr"] = lr * group.get("lr_multiplier", 1.0)
        micro = tc.train.micro_batch_size or len(x)
        starts = range(0, len(x), micro)  # equal micro-batches: their mean is the batch's
        loss_sum = aux_sum = None
        for i, start in enumerate(starts):
            if self.graphs and i:  # a CUDA-graph tree replays once per micro-batch
                torch.compiler.cudagraph_mark_step_begin()
            with dist_.gradient_sync(self.step_fn, sync=i == len(starts) - 1):
                with autocast(self.device):
                    out = self.step_fn(x[start : start + micro], y[start : start + micro])
                loss = out.loss
                if tc.train.nan_at_step is not None and step == tc.train.nan_at_step:
                    loss = loss * float("nan")
                ((loss + out.aux_loss) / len(starts)).backward()
            if self.bias_routers:  # before a CUDA-graph replay reuses the counts' buffer
                self.model.observe_routing(out.aux, self.bias_routers)
            # first: a copy (a CUDA-graph replay overwrites its outputs at the next micro-batch)
            loss_sum = loss.detach().clone() if loss_sum is None else loss_sum + loss.detach()
            aux = out.aux_loss.detach()
            aux_sum = aux.clone() if aux_sum is None else aux_sum + aux
        loss, aux = loss_sum / len(starts), aux_sum / len(starts)
        ep_.reduce_expert_grads(self.model, self.ep, self.d)
        self.grad_norm = ep_.clip_grad_norm_(self.model, tc.optim.grad_clip, self.ep)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        for hook in self.post_step:  # modules whose state follows the optimiser step
            hook()
        self.callbacks.step_end(self, step)
        # Copies: a CUDA-graph replay reuses its output buffers at the next step.
        self.pending.append((step, loss.clone(), aux.clone()))
        self.last_aux = out.aux

    def flush(self) -> tuple[float, float] | None:
        """Read the pending losses (one sync), check them, return the latest (loss, aux).

        A log step may find nothing pending (the warm-up flush just read it): it logs the
        latest values rather than none."""
        if not self.pending:
            return self.last_read
        steps = [s for s, _, _ in self.pending]
        values = torch.stack([torch.stack((a, b)) for _, a, b in self.pending]).float()
        dist_.all_reduce_(values, self.d)
        values = (values / self.d.world).tolist()
        self.pending.clear()
        for step, (loss, _) in zip(steps, values):
            self.check_loss(step, loss)
        self.state.recent = (self.state.recent + [v[0] for v in values])[-10:]
        self.last_read = values[-1][0], values[-1][1]
        return self.last_read

    def check_loss(self, step: int, loss: float) -> None:
        if self.state.first_loss is None and math.isfinite(loss):
            self.state.first_loss = loss
        why = health.loss_problem(loss, self.state.first_loss, self.tc.train.divergence_factor)
        if why:
            raise TrainingFailed(f"{why} at step {step}")

    def check_learning(self) -> None:
        self.flush()
        # the whole training split (every rank holds it): all ranks reach the same verdict
        floor = health.unigram_entropy(self.data.train, self.tc.model.vocab_size)
        why = health.not_learning(self.state.first_loss or 0.0, self.state.recent, floor)
        if why:
            raise TrainingFailed(f"{why} at step {self.state.step} of {self.total}", restart=True)

    def run_eval(self) -> None:
        t0 = time.perf_counter()
        st = self.state
        # Eager: compiled regions would compile (and capture) a second, inference-only graph
        # for a few forward passes.
        with eager_stance():
            ev = evaluate(
                self.model, self.val, self.val_docs, self.batches.local, self.device, self.d
            )
        st.val_loss, st.val_loss_se, st.icl_score = ev.loss, ev.loss_se, ev.icl_score
        st.time.eval_s += time.perf_counter() - t0
        if self.d.is_main:
            values = {"val_loss": ev.loss, "val_loss_se": ev.loss_se, "icl_score": ev.icl_score}
            self.callbacks.eval(self, values)

    def _decide(self, step: int, interrupts: Interrupts, since_ckpt: float) -> tuple[bool, bool]:
        """(stop, checkpoint now): local choices alone, or agreed over ranks every few steps."""
        run = self.tc.run
        due = since_ckpt >= run.checkpoint_every_s or bool(
            run.checkpoint_every and step % run.checkpoint_every == 0
        )
        stop = interrupts.requested is not None
        if self.d.world > 1:
            if step % AGREE_EVERY:
                return False, False
            flags = torch.tensor([float(stop), float(due)], device=self.device)
            dist_.all_reduce_(flags, self.d, op=torch.distributed.ReduceOp.MAX)
            stop, due = (bool(v) for v in flags.tolist())
        return stop, due

    def run(self, interrupts: Interrupts) -> RunSummary:
        self.maybe_resume()  # replaces the loop state: bind `st` after it
        tc, st = self.tc, self.state
        stop_at = self.total
        if tc.run.stop_after_steps is not None:
            stop_at = min(self.total, st.step + tc.run.stop_after_steps)
        t0 = last_log = last_ckpt = time.perf_counter()
        wall0, step0 = st.wall_time_s, st.step
        self.model.train()
        while st.step < stop_at:
            self.train_step(st.step)
            st.step += 1
            now = time.perf_counter()
            if st.step - step0 == WARMUP_STEPS:
                self.flush()
                st.time.warmup_s += time.perf_counter() - t0
            if st.step == health.check_step(self.total):
                self.check_learning()
            done = st.step == self.total
            if st.step in tc.run.keep_steps and not done:
                self.flush()  # never keep weights that a NaN has already reached
                self.save_checkpoint(wait=True, path=self.rd.branch_point(st.step))
            if tc.train.eval_every and st.step % tc.train.eval_every == 0 and not done:
                self.run_eval()
            if (
                st.step % tc.run.log_every == 0
                or done
                or (self.d.world == 1 and now - last_log > LOG_EVERY_S)
            ):
                rate = (st.step - step0) * tc.tokens_per_step / max(now - t0, 1e-9)
                self.log(st.step, *self.flush(), rate)
                last_log = now
            stop, ckpt_due = self._decide(st.step, interrupts, now - last_ckpt)
            st.wall_time_s = wall0 + time.perf_counter() - t0
            if stop and not done:
                self.flush()
                self.save_checkpoint(wait=True)
                return self.interrupted(
                    f"interrupted by {interrupts.name or 'a signal'}", interrupts.requested
                )
            if ckpt_due and not done:
                self.flush()  # never checkpoint weights that a NaN has already reached
                self.save_checkpoint()
                last_ckpt = time.perf_counter()
        self.flush()
        if st.step < self.total:  # stopped early on request: stay resumable
            self.save_checkpoint(wait=True)
            return self.interrupted("stopped after run.stop_after_steps", None)
        self.run_eval()
        st.wall_time_s = wall0 + time.perf_counter() - t0
        self.finish()
        return self.summary("done", None)

    def interrupted(self, why: str, signum: int | None) -> RunSummary:
        summary = self.summary("interrupted", f"{why} at step {self.state.step}; rerun to resume")
        if signum is not None:
            raise Interrupted(signum, summary.reason, summary)
        return summary

    def finish(self) -> None:
        """What a finished run keeps (run.keep_final): nothing, its weights, or everything."""
        keep = self.tc.run.keep_final
        if keep == "checkpoint":
            self.save_checkpoint(wait=True)
            return
        if keep == "weights":
            state = ep_.gather_experts(
                {"model": model_state(self.model), "optim": {"state": {}}},
                self.model.expert_parallel_params,
                self.ep,
            )["model"]
            if self.d.is_main:
                self.ckpt.save(self.rd.weights, {"model": state, "run_id": self.rid})
                self.ckpt.wait()
        self.ckpt.wait()
        if self.d.is_main:
            self.rd.checkpoint.unlink(missing_ok=True)

    def log(self, step: int, loss: float, aux_loss: float, rate: float) -> None:
        """Build the logged row; the callbacks record it (metrics.jsonl, the console, ...)."""
        loads = load_stats(self.last_aux, self.d)  # a collective: every rank takes part
        if not self.d.is_main:
            return
        tc, st = self.tc, self.state
        tokens = step * tc.tokens_per_step
        row = {
            "step": step,
            "tokens": tokens,
            "flops": tokens * tc.flops_per_token,
            "lr": lr_at(step - 1, self.total, tc.optim),
            "train_loss": loss,
            "aux_loss": aux_loss,
            "val_loss": st.val_loss,
            "icl_score": st.icl_score,
            "grad_norm": float(self.grad_norm),  # before clipping
            "clipped": bool(0 < tc.optim.grad_clip < float(self.grad_norm)),
            "tokens_per_s": rate,
        } | loads
        self.callbacks.log(self, row | self.callbacks.values(self, step))

    def summary(self, status: str, reason: str | None) -> RunSummary:
        return summarize(self, status, reason)
