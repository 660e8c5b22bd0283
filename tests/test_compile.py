"""--compile: the training forward under torch.compile computes what the eager one computes.

Compared step by step from one state: at every step of a 100-step DER++ run, the loss and the
gradients through the compiled forward and through the eager network, on the same batch and
weights. (Two free runs would compare trajectories: on these tiny batches any rounding
difference, a 1e-7 change of one weight in eager mode as much as another kernel order, grows
into a different run within a few steps; benchmarks/RESULTS.md.) "Equal within fp32 rounding"
is measured, not assumed: eager itself at another thread count (another summation order) on the
same step gives the scale the compiled gradients must stay within.
"""
import pytest
import torch
from torch._dynamo.utils import counters

from engine import norms
from engine.norms.layout import BatchLayout
from engine.norms.tbbn import tbbn_split
from engine.trainer import build_trial, run_trial


def loss_and_grads(method, batch, forward, state):
    """The step's loss and gradients through `forward`, from the saved network state; the
    network is left in that state (its norm layers update running stats in every forward)."""
    net = method.net
    net.load_state_dict(state)
    norms.set_layout(net, BatchLayout(batch.n_current, batch.task_ids, method.task))
    loss = method.loss(forward(batch.x), batch)
    if batch.replay or not method.aux_loss_needs_replay:
        loss = norms.add_aux_loss(net, loss)
    grads = torch.autograd.grad(loss, [p for p in net.parameters() if p.requires_grad], allow_unused=True)
    net.load_state_dict(state)
    return loss.detach(), grads


def gap(a, b) -> float:
    """Largest difference between two gradient lists, each relative to its tensor's largest element."""
    return max(float((x - y).abs().max() / y.abs().max().clamp_min(1e-12)) for x, y in zip(a, b) if y is not None)


@pytest.mark.parametrize("norm", ["bn", "tbbn", "adab2n"])
def test_each_of_100_compiled_steps_gives_the_eager_loss_and_gradients(tiny_cfg, norm):
    """50 steps on task 0 and 50 on task 1 (replayed rows: TBBN splits, AdaB2N weighs by task),
    each layout in one graph: no graph break (a layer run eagerly between graphs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    torch._dynamo.reset()
    counters.clear()
    # 8 current rows and 2 + 2 replayed: TBBN splits in two at task 1
    data, method = build_trial(tiny_cfg(method="derpp", norm=norm, compile=True, bs=8, minibatch_size=2).resolved(),
                               torch.device("cpu"))
    assert method.train_forward is not method.net and tbbn_split(8, 4, 1) == 2
    gaps = []
    try:
        for task in (0, 1):
            if task != method.task:
                method.begin_task(task)
            t = data.tasks[task]
            for s in range(50):
                i = (8 * s) % (len(t.y_train) - 8)
                x, y = t.x_train[i:i + 8], t.y_train[i:i + 8]
                rng = torch.get_rng_state()
                batch = method.compose(x, y)
                state = {k: v.clone() for k, v in method.net.state_dict().items()}
                loss_c, grads_c = loss_and_grads(method, batch, method.train_forward, state)
                loss_e, grads_e = loss_and_grads(method, batch, method.net, state)
                torch.set_num_threads(2)
                _, grads_e2 = loss_and_grads(method, batch, method.net, state)
                torch.set_num_threads(1)   # the compiled graphs' guards include the thread count
                torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
                gaps.append((gap(grads_c, grads_e), gap(grads_e2, grads_e)))
                torch.set_rng_state(rng)
                method.observe(x, y)   # the step itself, through the compiled forward
    finally:
        torch.set_num_threads(threads)
    compiled, eager = max(g for g, _ in gaps), max(g for _, g in gaps)
    print(f"{norm}: gradients, compiled vs eager {compiled:.1e}; eager at 2 threads vs 1 {eager:.1e}")
    assert compiled <= 4 * eager + 1e-3   # AdaB2N's theta gradients cancel: ~1e-4 in fp32
    assert not counters["graph_break"], dict(counters["graph_break"])
    # layouts: 8 rows (empty buffer), 12 rows at task 0, 12 rows at task 1 (BN: the same graph as task 0)
    assert counters["stats"]["unique_graphs"] <= 3


@pytest.mark.parametrize("norm", ["tbbn", "adab2n"])
def test_one_graph_per_layout_not_one_per_task(tiny_cfg, norm):
    """5 tasks of one layout after the first: task 1's graph serves tasks 2-4. Dynamo would
    otherwise guard on the task index, recompile at every task, and after 8 graphs run the network
    eagerly. Guards are dynamo's, whatever the backend: "eager" here, so that no graph is compiled."""
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    data, method = build_trial(tiny_cfg(method="er", norm=norm, minibatch_size=2, n_tasks=5).resolved(),
                               torch.device("cpu"))
    assert {tbbn_split(4, 2, t) for t in range(1, 5)} == {2}
    method.train_forward = torch.compile(method.net, backend="eager", dynamic=False)
    for task in range(5):
        method.begin_task(task)
        t = data.tasks[task]
        for i in range(0, 16, 4):
            method.observe(t.x_train[i:i + 4], t.y_train[i:i + 4])
        method.end_task(task)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] <= 3   # 4 rows (empty buffer), 6 rows at task 0, 6 rows after


def test_compile_is_in_the_trial_id_only_when_set_and_a_trial_runs_with_it(tmp_path, tiny_cfg):
    plain = tiny_cfg().resolved()
    assert "compile" in plain.to_dict() and plain.trial_id() == tiny_cfg(compile=False).resolved().trial_id()
    cfg = tiny_cfg(compile=True, n_tasks=2).resolved()
    assert cfg.trial_id() != tiny_cfg(n_tasks=2).resolved().trial_id()
    result = run_trial(cfg, tmp_path)
    assert result["config"]["compile"] is True and result["status"] == "finished"
