"""Regional compilation (one compiled block shared by every layer) and the fast routing paths,
against the eager model and the general-purpose operations, on CPU."""

import pytest
import torch
from torch._dynamo.utils import counters

from models import MoEConfig, MoETransformer
from models.backends.common import sort_by_expert
from models.router import Router
from tests.models.helpers import small_config


@pytest.mark.parametrize("num_experts", [1, 5, 256, 300, 40000])
def test_narrow_key_sort_is_the_stable_argsort(num_experts):
    g = torch.Generator().manual_seed(num_experts)
    experts_A = torch.randint(0, num_experts, (4099,), generator=g)
    expected = torch.argsort(experts_A, stable=True)
    assert torch.equal(sort_by_expert(experts_A, num_experts), expected)


def test_top1_router_picks_what_topk_picks():
    torch.manual_seed(0)
    router = Router(d_model=32, num_experts=16, top_k=1, renormalize=False).double()
    x_TD = torch.randn(500, 32, dtype=torch.float64)
    r = router(x_TD)
    weights_TK, experts_TK = torch.topk(r.probs_TE, 1, dim=-1)
    assert r.experts_TK.shape == (500, 1) and r.experts_TK.dtype == torch.int64
    assert torch.equal(r.experts_TK, experts_TK)
    assert torch.equal(r.weights_TK, weights_TK)


def _model(n_layers: int, num_experts: int = 4) -> MoETransformer:
    torch.manual_seed(0)
    moe = MoEConfig(num_experts=num_experts, top_k=min(2, num_experts), backend="torch")
    return MoETransformer(small_config(moe, vocab_size=64, n_layers=n_layers, seq_len=16)).double()


def test_regions_compute_what_the_eager_model_computes():
    eager, compiled = _model(3), _model(3)
    compiled.compile_regions(backend="aot_eager")
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints unchanged
    idx = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1))
    for m in (eager, compiled):
        out = m(idx, idx)
        (out.loss + out.aux_loss).backward()
    a, b = eager(idx, idx), compiled(idx, idx)
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(b.aux_loss, a.aux_loss, rtol=1e-12, atol=0)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("n_layers", [2, 6])
def test_one_block_is_compiled_for_every_layer(n_layers):
    """Warm-up does not grow with depth: one block graph and one head graph, at any depth.
    (Dense: the CPU expert backend reads split sizes on the host, a graph break by design.)"""
    torch._dynamo.reset()
    counters.clear()
    model = _model(n_layers, num_experts=1)
    model.compile_regions(backend="aot_eager")
    idx = torch.randint(0, 64, (2, 16))
    out = model(idx, idx)
    (out.loss + out.aux_loss).backward()
    assert counters["stats"]["unique_graphs"] == 2


def test_evaluations_that_overlap_in_threads_leave_compilation_on():
    """Two runs evaluating at once in one process (test_branches trains a branch in a thread
    beside its trunk) exited torch's set_stance out of order and left force_eager set for
    the rest of the process: a later compile ran eagerly and this file's graph counts read
    0 in a CI run. The trainer's eager_stance is shared: the last to leave restores it."""
    import torch._dynamo.eval_frame as eval_frame

    from experiments.trainer.compile import eager_stance

    first, second = eager_stance(), eager_stance()
    first.__enter__()
    second.__enter__()
    assert eval_frame._stance.stance == "force_eager"
    first.__exit__(None, None, None)  # out of order: the first to enter leaves first
    assert eval_frame._stance.stance == "force_eager"  # the second still evaluates
    second.__exit__(None, None, None)
    assert eval_frame._stance.stance == "default"
    torch._dynamo.reset()
    counters.clear()
    model = _model(2, num_experts=1)
    model.compile_regions(backend="aot_eager")
    out = model(torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16)))
    (out.loss + out.aux_loss).backward()
    assert counters["stats"]["unique_graphs"] == 2


@pytest.mark.skipif(
    not hasattr(torch, "_grouped_mm"), reason="the native experts need torch._grouped_mm"
)
@pytest.mark.parametrize("top_k", [1, 2])
def test_top_k_above_one_compiles_router_and_experts_as_separate_graphs(top_k, monkeypatch):
    """Compiled on a GPU with the native experts in one graph, top-2 routing got gradients
    1e3-1e5 times eager's (tests/models/test_gpu_backends.py, ...eager_gradients, checks the
    outcome there); compiled as separate graphs, it matched. A CPU cannot show that fault, so
    here: with the native experts (torch._grouped_mm runs on CPU too), no graph of a top-k > 1
    model holds both the router's weights and the experts', and top-1's one graph does."""
    import models.moe as moe_module
    from models.backends.native import native_experts

    graphs: list[set[str]] = []

    def recording_backend(gm, example_inputs):
        graphs.append({n.name for n in gm.graph.nodes if n.op == "placeholder"})
        return gm.forward  # run the traced graph as it is

    torch._dynamo.reset()
    model = MoETransformer(small_config(MoEConfig(num_experts=4, top_k=top_k)))
    for block in model.blocks:  # the backend's CPU check refuses native; its function runs here
        monkeypatch.setattr(block.ffn, "_compute", native_experts)
    model.compile_regions(backend=recording_backend)  # type: ignore[arg-type]
    idx = torch.randint(0, 50, (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # grouped GEMMs take bf16 only
        out = model(idx, idx)
    (out.loss + out.aux_loss).backward()
    holds = [(any("router" in n for n in g), any("w_in_ehd" in n for n in g)) for g in graphs]
    assert any(router for router, _ in holds) and any(experts for _, experts in holds)
    assert any(r and e for r, e in holds) == (top_k == 1), holds
    assert moe_module._route_in_its_own_graph is not moe_module._route


def test_a_compiled_training_step_makes_no_logits_sized_zero_gradient():
    """The compiled head used to return the logits beside the loss; autograd then handed that
    unused output a zero gradient every step: a fill of a (B, S, V) tensor and an add in the
    backward (537 MB a step at the second study's 32,768 tokens x 8,192 vocabulary on the
    H200). With targets, the head returns the loss alone."""
    from torch.profiler import ProfilerActivity, profile

    torch._dynamo.reset()
    model = _model(2, num_experts=1)  # the head is the same for any FFN
    model.compile_regions(backend="aot_eager")
    idx = torch.randint(0, 64, (2, 16))
    for _ in range(2):  # compiled, then steady
        out = model(idx, idx)
        (out.loss + out.aux_loss).backward()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        out = model(idx, idx)
        (out.loss + out.aux_loss).backward()
    logits_shape = [2, 16, model.cfg.vocab_size]
    fills = [
        e.key
        for e in prof.key_averages(group_by_input_shape=True)
        if e.key in ("aten::zero_", "aten::fill_", "aten::zeros")
        and logits_shape in [list(s) for s in e.input_shapes]
    ]
    assert fills == []
