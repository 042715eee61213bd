"""Is a run's first training step repeatable? (prints a table, writes JSON)

    python -m experiments.benchmarks.first_step [--repeats 20] [--tolerance 0.05]
        [--by-param N] [--json OUT] <experiments.train overrides>

Builds the run's Trainer as ``experiments.train`` does (compilation and CUDA graphs included),
keeps its initial weights and optimiser state, then trains step 0 ``--repeats`` times,
restoring that state before each: the same weights and the same batch every time, so every
repeat's loss and gradient norm should agree (on a CPU to float32 rounding: the tests saw the
last bits of a gradient norm differ once; on a GPU to the rounding of bf16 and atomics). Why:
in the second study's pilot one run's first gradient norm was 2,349 where its twin's, from the
same weights and batch, was 7.5, while their first losses agreed to four decimals
(docs/studies/study2/PILOT.md). A repeat whose gradient norm is more than
``--tolerance`` (relative) from the median is an outlier; the exit status is 1 if any is.

``--by-param N`` says where a large norm comes from: each repeat also records the N parameters
with the largest gradient norms (read as autograd accumulates them, before clipping) and, for
every MoE layer, its fewest and most assignments per expert (an expert with none is where a
grouped GEMM's empty group would show).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path

import torch

from experiments.benchmarks.run_profile import scratch_trainer, train_config
from experiments.data.dataset import open_dataset
from experiments.distributed.devices import gpu_slot


def _record_grad_norms(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Each parameter's gradient norm, filled in as autograd accumulates it (a hook: it sees
    the gradient before clipping and before the optimiser clears it). Kept on the device."""
    norms: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:

            def hook(p: torch.Tensor, name: str = name) -> None:
                assert p.grad is not None
                norms[name] = p.grad.detach().float().norm()

            p.register_post_accumulate_grad_hook(hook)
    return norms


def _expert_loads(aux: list) -> list[list[int]]:
    """[fewest, most] assignments per expert of each MoE layer (dense layers have no counts)."""
    return [
        [int(a.tokens_per_expert_E.min()), int(a.tokens_per_expert_E.max())]
        for a in aux
        if a.tokens_per_expert_E is not None
    ]


def repeat_first_step(
    overrides: list[str], repeats: int, by_param: int = 0
) -> tuple[list[dict], dict]:
    """(one row per repeat: loss and gradient norm, what ran); with ``by_param`` each row also
    names the largest per-parameter gradient norms and each MoE layer's expert loads."""
    tc = train_config(overrides)
    rows = []
    with gpu_slot(tc.run.device, 1) as device:
        trainer = scratch_trainer(tc, "first-step", open_dataset(tc.data), device)
        weights = copy.deepcopy(trainer.model.state_dict())
        optimiser = copy.deepcopy(trainer.opt.state_dict())
        norms = _record_grad_norms(trainer.model) if by_param else {}
        for i in range(repeats):
            trainer.model.load_state_dict(weights)  # in place: CUDA graphs keep their addresses
            trainer.opt.load_state_dict(optimiser)
            norms.clear()
            trainer.train_step(0)
            _, loss, _ = trainer.pending.pop()
            row = {"repeat": i, "loss": float(loss), "grad_norm": float(trainer.grad_norm)}
            if by_param:
                largest = sorted(((float(v), k) for k, v in norms.items()), reverse=True)
                row["largest"] = [[k, v] for v, k in largest[:by_param]]
                row["expert_loads"] = _expert_loads(trainer.last_aux)
            rows.append(row)
    what = {
        "overrides": overrides,
        "device": str(device),
        "compiled": trainer.compiled,
        "graphs": trainer.graphs,
        "backend": trainer.backend,
    }
    return rows, what


def verdict(rows: list[dict], tolerance: float) -> dict:
    norms = [r["grad_norm"] for r in rows]
    median = statistics.median(norms)
    deviation = [abs(n - median) / median if median else float("inf") for n in norms]
    return {
        "median_grad_norm": median,
        "max_relative_deviation": max(deviation),
        "outliers": [r["repeat"] for r, d in zip(rows, deviation) if d > tolerance],
        "losses_identical": len({r["loss"] for r in rows}) == 1,
        "grad_norms_identical": len(set(norms)) == 1,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--by-param", type=int, default=0, metavar="N")
    ap.add_argument("--json", type=Path, default=None)
    a, overrides = ap.parse_known_args(argv)
    rows, what = repeat_first_step(overrides, a.repeats, a.by_param)
    v = verdict(rows, a.tolerance)
    print(f"{'repeat':>6} {'loss':>12} {'grad norm':>12}")
    for r in rows:
        print(f"{r['repeat']:>6} {r['loss']:>12.6f} {r['grad_norm']:>12.6g}")
        for name, norm in r.get("largest", []):
            print(f"{'':>6} {norm:>12.6g}  {name}")
        if "expert_loads" in r:
            print(f"{'':>6} assignments per expert [fewest, most] by layer: {r['expert_loads']}")
    print(
        f"median grad norm {v['median_grad_norm']:.6g}, max relative deviation "
        f"{v['max_relative_deviation']:.3g}, outliers {v['outliers'] or 'none'} "
        f"({what['device']}, compiled={what['compiled']}, graphs={what['graphs']})"
    )
    if a.json:
        a.json.write_text(json.dumps({"what": what, "rows": rows, "verdict": v}, indent=1))
    return 1 if v["outliers"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
