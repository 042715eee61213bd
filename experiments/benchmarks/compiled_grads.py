"""Do compiled training steps give the eager model's gradients? (prints a table, writes JSON)

    python -m experiments.benchmarks.compiled_grads [--json OUT] [--steps 3]
        [--case NAME:K:MODE[:VARIANT]]...

Why: the second study's gate arm (top-2) trained with gradient norms of 1e3-1e12 on the H200
while its eager first step gave 10.6 (docs/studies/study2/STATUS.md). Each case builds a
two-layer model of the arm's width (d 160, 32 experts of F = 2d, K = 2; or 16 experts of
F = 4d, K = 1), keeps an eager copy, compiles the other as the trainer does
(``compile_regions(MODE)``: ``default`` or ``reduce-overhead``, the latter replayed as CUDA
graphs) and takes ``--steps`` training steps as ``Trainer.train_step`` does (a new CUDA-graph
step, the forward under bf16 autocast, the backward of loss + aux), without updating the
weights: every step's gradients should be the eager ones, to bf16 rounding. A VARIANT swaps one
piece of the layer for a plainer one, to find the piece at fault (``a+b`` applies both):
``plain_index`` (the native backend's gathers as plain autograd indexing instead of its custom
autograd functions), ``max_top2`` (the router's top-2 as two max-reductions instead of
``torch.topk``), ``router_eager`` / ``experts_eager`` (the router / the native experts left out
of the compiled graph), ``one_graph`` (a top-k > 1 router compiled into the experts' graph, as
before the fix; the layer now breaks the graph between them, models/moe.py: the diagnosis's
cases add it), ``detach_weights`` (no gradient from the experts into the router weights),
``no_renorm`` (top-2 weights not renormalised), ``no_aux`` (no load-balancing or z-loss),
``chunked_loss`` (not a suspect: the head's loss in chunks of 4,096 tokens,
``model.loss_chunk_tokens``, checked compiled as every other path is).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch

from experiments.trainer.compile import uses_cuda_graphs
from models import ModelConfig, MoEConfig, MoETransformer, moe
from models.backends import native
from models.router import Router

DEFAULT_CASES = [
    "top1-default:1:default",
    "top1-graphs:1:reduce-overhead",
    "top2-default:2:default",
    "top2-graphs:2:reduce-overhead",
    # the fault and its diagnosis (docs/studies/study2/STATUS.md): router and experts in one graph
    "top2-one-graph:2:default:one_graph",
    "top2-one-graph-graphs:2:reduce-overhead:one_graph",
    "top2-graphs-plain-index:2:reduce-overhead:one_graph+plain_index",
    "top2-graphs-max-top2:2:reduce-overhead:one_graph+max_top2",
    *(f"top2-{v}:2:default:one_graph+{v}" for v in ("experts_eager", "router_eager")),
    *(f"top2-{v}:2:default:one_graph+{v}" for v in ("detach_weights", "no_renorm", "no_aux")),
]


def arm_config(top_k: int) -> ModelConfig:
    """The study's width at two layers: top-2 as the gate arm (granularity 2, renormalised)."""
    moe = (
        MoEConfig(num_experts=16, top_k=1, granularity=2, renormalize=True, backend="native")
        if top_k == 2
        else MoEConfig(num_experts=16, top_k=1, backend="native")
    )
    return ModelConfig(
        vocab_size=8192, d_model=160, n_layers=2, n_heads=5, d_ff=640, seq_len=512, moe=moe
    )


CONFIG_VARIANTS = {
    "no_renorm": {"renormalize": False},
    "no_aux": {"load_balance_coef": 0.0, "z_loss_coef": 0.0},
}
# variants of the model's own config (the others change its MoE config)
MODEL_VARIANTS = {"chunked_loss": {"loss_chunk_tokens": 4096}}


@contextlib.contextmanager
def _patched(owner, attr: str, value) -> Iterator[None]:
    saved = getattr(owner, attr)
    setattr(owner, attr, value)
    try:
        yield
    finally:
        setattr(owner, attr, saved)


def _two_max(scores_TE, k, dim=-1):
    """torch.topk for k = 2 as two max-reductions (the top-1 router's reduction)."""
    assert k == 2 and dim == -1
    v1_T, i1_T = scores_TE.max(dim=-1)
    rest_TE = scores_TE.scatter(-1, i1_T.unsqueeze(-1), float("-inf"))
    v2_T, i2_T = rest_TE.max(dim=-1)
    return torch.stack((v1_T, v2_T), -1), torch.stack((i1_T, i2_T), -1)


def _patches(name: str) -> list[tuple[object, str, object]]:
    """(owner, attribute, replacement) of each code variant."""
    experts = native.native_experts

    def detached(x_TD, experts_TK, weights_TK, counts_E, w):
        return experts(x_TD, experts_TK, weights_TK.detach(), counts_E, w)

    table = {
        "experts_eager": [(native, "native_experts", torch.compiler.disable(experts))],
        "router_eager": [(Router, "forward", torch.compiler.disable(Router.forward))],
        "detach_weights": [(native, "native_experts", detached)],
        "one_graph": [(moe, "_route_in_its_own_graph", moe._route)],
        "max_top2": [(torch, "topk", _two_max)],
        "plain_index": [
            (native._GatherTokens, "apply", lambda x, order, inverse, k: x[order // k]),
            (native._Permute, "apply", lambda x, index, inverse: x[index]),
        ],
    }
    if name not in table:
        raise SystemExit(f"unknown variant {name!r}")
    return table[name]


@contextlib.contextmanager
def variant(names: list[str]) -> Iterator[None]:
    """The native backend with pieces swapped (restored on exit); models are built inside."""
    with contextlib.ExitStack() as stack:
        for name in names:
            if name not in CONFIG_VARIANTS | MODEL_VARIANTS:
                for owner, attr, value in _patches(name):
                    stack.enter_context(_patched(owner, attr, value))
        yield


def grads_of_steps(model, idx, steps: int, graphs: bool) -> list[dict[str, torch.Tensor]]:
    """Each step's gradients (copies), the step taken as Trainer.train_step takes it."""
    out_steps = []
    for _ in range(steps):
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(idx.device.type, dtype=torch.bfloat16):
            out = model(idx, idx)
        (out.loss + out.aux_loss).backward()
        out_steps.append({n: p.grad.detach().float().clone() for n, p in model.named_parameters()})
        model.zero_grad(set_to_none=True)
    return out_steps


def compare(case: str, steps: int, batch: int = 64, device: str = "cuda") -> dict:
    name, k, mode, *rest = case.split(":")
    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = arm_config(int(k))
    names = rest[0].split("+") if rest else []
    for config_variant in set(names) & set(CONFIG_VARIANTS):
        cfg = replace(cfg, moe=replace(cfg.moe, **CONFIG_VARIANTS[config_variant]))
    for model_variant in set(names) & set(MODEL_VARIANTS):
        cfg = replace(cfg, **MODEL_VARIANTS[model_variant])
    with variant(names):
        eager = MoETransformer(cfg).to(device)
        compiled = copy.deepcopy(eager)
        compiled.compile_regions(mode)
        idx = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len), device=device)
        (reference,) = grads_of_steps(eager, idx, 1, graphs=False)
        observed = grads_of_steps(compiled, idx, steps, graphs=uses_cuda_graphs(mode))
    rows = []
    for step, grads in enumerate(observed):
        worst, worst_err = "", 0.0
        for n, g in grads.items():
            err = ((g - reference[n]).norm() / reference[n].norm().clamp_min(1e-30)).item()
            if not err <= worst_err:  # NaN counts as the worst
                worst, worst_err = n, err
        norm = torch.stack([g.norm() for g in grads.values()]).norm().item()
        rows.append({"step": step, "grad_norm": norm, "worst": worst, "worst_rel_err": worst_err})
    eager_norm = torch.stack([g.norm() for g in reference.values()]).norm().item()
    return {
        "case": name,
        "top_k": int(k),
        "mode": mode,
        "eager_grad_norm": eager_norm,
        "steps": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", default=None)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    results = []
    print(f"{'case':<28} {'step':>4} {'grad norm':>11} {'eager':>9} {'worst rel err':>13}  param")
    for case in a.case or DEFAULT_CASES:
        r = compare(case, a.steps)
        results.append(r)
        for s in r["steps"]:
            print(
                f"{r['case']:<28} {s['step']:>4} {s['grad_norm']:>11.5g} "
                f"{r['eager_grad_norm']:>9.4g} {s['worst_rel_err']:>13.3g}  {s['worst']}"
            )
        if a.json:  # after every case: a call cut short keeps what it measured
            a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
