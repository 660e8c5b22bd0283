"""TBBN and AdaB2N against references written directly from algorithms.md §2, and eval-mode BN parity."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.norms import BatchLayout
from engine.norms.adab2n import AdaB2N
from engine.norms.cn import ContinualNorm
from engine.norms.tbbn import TaskBalancedBN, tbbn_split


def make_bn(c: int, dtype=torch.float64, seed: int = 0) -> nn.BatchNorm2d:
    """A BN with non-trivial affine and running state, so copying it is checked too."""
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():  # drawn in float64 whatever the dtype, so both precisions get the same state
        bn.weight.copy_(1 + 0.5 * torch.randn(c, generator=g, dtype=torch.float64))
        bn.bias.copy_(0.5 * torch.randn(c, generator=g, dtype=torch.float64))
        bn.running_mean.copy_(torch.randn(c, generator=g, dtype=torch.float64))
        bn.running_var.copy_(0.5 + torch.rand(c, generator=g, dtype=torch.float64))
    return bn.to(dtype)


def rand(*shape, dtype=torch.float64, seed=1, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    return (offset + 2 * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)


def layout(n_current: int, task_ids: list[int], task: int) -> BatchLayout:
    return BatchLayout(n_current, torch.tensor(task_ids, dtype=torch.long), task)


def offline_layout(t: int, n_c: int = 48, n_m: int = 16) -> BatchLayout:
    return layout(n_c, [t] * n_c + [k % max(t, 1) for k in range(n_m)], t)


# the engine runs CPU networks channels-last (engine/device.py): the custom layers take both formats
FORMATS = [torch.contiguous_format, torch.channels_last]


def run(layer, x, lay=None, fmt=torch.contiguous_format):
    """One training forward + backward with a fixed upstream gradient, input and upstream gradient
    in memory format `fmt`; returns output and grads (output and input grad checked to keep `fmt`)."""
    x = x.detach().clone().contiguous(memory_format=fmt).requires_grad_(True)
    if lay is not None and hasattr(layer, "set_layout"):
        layer.set_layout(lay)
    out = layer(x)
    up = torch.cos(torch.arange(out.numel(), dtype=out.dtype)).view_as(out).contiguous(memory_format=fmt)
    (out * up).sum().backward()
    assert out.is_contiguous(memory_format=fmt) and x.grad.is_contiguous(memory_format=fmt)
    return out.detach(), x.grad, layer.weight.grad, layer.bias.grad


# ---------------------------------------------------------------------------- the split rule
def test_split_rule_offline_48_16():
    assert [tbbn_split(48, 16, t) for t in range(10)] == [1, 2, 4, 8, 8, 8, 16, 16, 16, 16]


def test_split_rule_online_layouts():
    # derpp: 10 current + 2 x 10 memory; r0 = t/2, common divisors of 10, 20: 1, 2, 5, 10
    assert [tbbn_split(10, 20, t) for t in range(11)] == [1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 5]
    # er_ace: 10 + 10; r0 = t
    assert [tbbn_split(10, 10, t) for t in range(11)] == [1, 1, 2, 2, 2, 5, 5, 5, 5, 5, 10]
    assert tbbn_split(10, 0, 3) == 1 and tbbn_split(48, 16, 0) == 1
    for n_c, n_m, t in [(48, 16, 4), (10, 20, 7), (12, 18, 5), (7, 5, 9), (30, 12, 1)]:
        r = tbbn_split(n_c, n_m, t)
        assert n_c % r == 0 and n_m % r == 0 and (r == 1 or r * n_m <= n_c * t)


# ---------------------------------------------------------------------------- TBBN
def tbbn_reference(x, n_c, r, weight, bias, rm, rv, momentum, eps):
    """algorithms.md §2 TBBN, literally: fold, repeat, BN over Z, unfold, average the copies."""
    n, c, h, w = x.shape
    z = torch.cat((x[:n_c].reshape(n_c // r, c * r, h, w), x[n_c:].repeat(1, r, 1, 1)))
    mean, var = z.mean((0, 2, 3)), z.var((0, 2, 3), unbiased=False)
    zn = (z - mean[:, None, None]) / torch.sqrt(var + eps)[:, None, None]
    zn = zn * weight.repeat(r)[:, None, None] + bias.repeat(r)[:, None, None]
    out = torch.cat((zn[: n_c // r].reshape(n_c, c, h, w), zn[n_c // r:].reshape(n - n_c, r, c, h, w).mean(1)))
    m = z.shape[0] * h * w
    new_rm = rm + momentum * (mean.detach().view(r, c).mean(0) - rm)
    new_rv = rv + momentum * ((var.detach() * m / (m - 1)).view(r, c).mean(0) - rv)
    return out, new_rm, new_rv


@pytest.mark.parametrize("case", ["t0", "no_memory", "r1", "no_layout"])
def test_tbbn_is_bn_when_r_is_1(case):
    x = rand(30, 6, 4, 4, dtype=torch.float32)
    lay = {"t0": layout(10, [0] * 30, 0), "no_memory": layout(30, [2] * 30, 2),
           "r1": layout(10, [1] * 10 + [0] * 20, 1), "no_layout": None}[case]
    bn = make_bn(6, torch.float32)
    tb = TaskBalancedBN(copy.deepcopy(bn))
    for a, b in zip(run(bn, x), run(tb, x, lay)):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(tb, name), getattr(bn, name), atol=1e-6, rtol=0)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("t,r", [(1, 2), (2, 4), (3, 8), (6, 16)])
def test_tbbn_matches_repeat_reference(t, r, fmt):
    assert tbbn_split(48, 16, t) == r
    x, bn = rand(64, 5, 3, 3), make_bn(5)
    ref_x, ref_w, ref_b = (p.detach().clone().requires_grad_(True) for p in (rand(64, 5, 3, 3), bn.weight, bn.bias))
    ref_out, ref_rm, ref_rv = tbbn_reference(ref_x, 48, r, ref_w, ref_b, bn.running_mean, bn.running_var, 0.1, bn.eps)
    up = torch.cos(torch.arange(ref_out.numel(), dtype=ref_out.dtype)).view_as(ref_out)
    (ref_out * up).sum().backward()

    tb = TaskBalancedBN(bn)
    out, gx, gw, gb = run(tb, x, offline_layout(t), fmt)
    for got, want in [(out, ref_out), (gx, ref_x.grad), (gw, ref_w.grad), (gb, ref_b.grad),
                      (tb.running_mean, ref_rm), (tb.running_var, ref_rv)]:
        torch.testing.assert_close(got, want.detach(), atol=1e-10, rtol=1e-10)

    # float32 with an offset input: the combined statistics must stay accurate
    x32 = rand(64, 5, 3, 3, offset=20.0)
    ref_out, ref_rm, ref_rv = tbbn_reference(x32, 48, r, bn.weight.detach(), bn.bias.detach(),
                                             make_bn(5).running_mean, make_bn(5).running_var, 0.1, bn.eps)
    tb32 = TaskBalancedBN(make_bn(5, torch.float32))
    out32 = run(tb32, x32.float(), offline_layout(t), fmt)[0]
    torch.testing.assert_close(out32.double(), ref_out, atol=2e-4, rtol=0)
    torch.testing.assert_close(tb32.running_mean.double(), ref_rm, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tb32.running_var.double(), ref_rv, atol=1e-4, rtol=1e-5)


def test_tbbn_online_layout_matches_reference():
    # derpp at t = 4: 10 current + 20 memory, r = 2
    bn, x = make_bn(4), rand(30, 4, 2, 2, seed=3)
    tb = TaskBalancedBN(copy.deepcopy(bn))
    out = run(tb, x, layout(10, [4] * 10 + list(range(4)) * 5, 4))[0]
    ref_out, ref_rm, ref_rv = tbbn_reference(x, 10, 2, bn.weight.detach(), bn.bias.detach(),
                                             bn.running_mean, bn.running_var, 0.1, bn.eps)
    torch.testing.assert_close(out, ref_out, atol=1e-10, rtol=0)
    torch.testing.assert_close(tb.running_mean, ref_rm, atol=1e-10, rtol=0)
    torch.testing.assert_close(tb.running_var, ref_rv, atol=1e-10, rtol=0)


def test_tbbn_layout_serves_one_forward_and_checks_rows():
    tb = TaskBalancedBN(make_bn(3))
    tb.set_layout(offline_layout(2, 8, 4))
    with pytest.raises(ValueError, match="12 rows"):
        tb(rand(10, 3, 2, 2))
    bn = make_bn(3)
    tb = TaskBalancedBN(copy.deepcopy(bn))
    tb.set_layout(offline_layout(2, 8, 4))
    tb(rand(12, 3, 2, 2))   # the layout is used up by this forward
    x = rand(12, 3, 2, 2, seed=5)
    torch.testing.assert_close(tb(x), bn(x), atol=1e-12, rtol=0)  # unannounced forward: plain BN


# ---------------------------------------------------------------------------- AdaB2N
class AdaB2NReference:
    """The official layer's arithmetic, in float64, with plain loops over tasks."""

    def __init__(self, bn, theta, kappa, renormalize=False):
        self.w, self.b = (p.detach().clone().requires_grad_(True) for p in (bn.weight, bn.bias))
        self.rm, self.rv = bn.running_mean.clone(), bn.running_var.clone()
        self.theta = theta.detach().clone().requires_grad_(True)
        self.kappa, self.renormalize, self.m, self.eps = kappa, renormalize, bn.momentum, bn.eps
        self.steps, self.last_eta = int(bn.num_batches_tracked), None

    def eta(self):
        self.steps += 1
        if self.kappa == 0:
            return 1 / self.steps
        if self.kappa == 1:
            return self.m
        self.last_eta = self.m ** self.kappa if self.last_eta is None else \
            self.last_eta / (self.last_eta + (1 - self.m) ** self.kappa)
        return self.last_eta

    def forward(self, x, task_ids, t):
        eta = self.eta()
        if t > 0:
            counts = torch.stack([(task_ids == k).sum() for k in range(t + 1)]).double()
            alpha = self.theta[: t + 1].exp() + counts
            w = (alpha / alpha.sum())[task_ids] / counts[task_ids]
            if self.renormalize:
                w = w / w.sum()
            mean = x.mean((2, 3)).t() @ w
            var = (x - mean[:, None, None]).square().mean((2, 3)).t() @ w
        else:
            mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
        out = (x - mean[:, None, None]) / torch.sqrt(var + self.eps)[:, None, None] * self.w[:, None, None] \
            + self.b[:, None, None]
        self.rm = self.rm + eta * (mean.detach() - self.rm)
        self.rv = (1 - eta) * self.rv + eta * var.detach()
        return out, F.mse_loss(mean, self.rm) + F.mse_loss(var, self.rv)


MIXES = {  # (task, task ids of the memory rows); 6 current rows of task t come first
    "t0": (0, [0, 0, 0, 0]),
    "two_tasks": (1, [0, 0, 0, 0, 0]),
    "uneven": (3, [0, 1, 1, 2, 2, 2, 0]),
    "absent_task": (3, [0, 0, 2, 2, 2]),       # task 1 has no row: keeps its mass
    "only_current": (2, []),
}


# renormalize only matters when a seen task is absent from the batch
@pytest.mark.parametrize("kappa,fmt", [(0.0, FORMATS[0]), (0.4, FORMATS[0]), (1.0, FORMATS[0]), (0.4, FORMATS[1])])
@pytest.mark.parametrize("mix,renormalize",
                         [(mix, False) for mix in MIXES] + [("absent_task", True), ("only_current", True)])
def test_adab2n_matches_reference(kappa, fmt, mix, renormalize):
    t, memory = MIXES[mix]
    ids = torch.tensor([t] * 6 + memory)
    bn, theta = make_bn(4), 0.3 * rand(5, seed=7)
    layer = AdaB2N(copy.deepcopy(bn), n_tasks=5, kappa=kappa, lambd=0.7, ada_t0=0, renormalize=renormalize)
    with torch.no_grad():
        layer.theta.copy_(theta)
    ref = AdaB2NReference(bn, theta, kappa, renormalize)
    for step in range(3):  # several forwards: the eta schedule and running stats evolve
        x = rand(len(ids), 4, 3, 3, seed=10 + step, offset=1.0)
        xr, xl = x.clone().requires_grad_(True), x.contiguous(memory_format=fmt).requires_grad_(True)
        for p in (ref.theta, ref.w, ref.b):
            p.grad = None
        layer.zero_grad()
        ref_out, ref_reg = ref.forward(xr, ids, t)
        layer.set_layout(BatchLayout(6, ids, t))
        out = layer(xl)
        assert out.is_contiguous(memory_format=fmt)
        up = torch.cos(torch.arange(out.numel(), dtype=out.dtype)).view_as(out)
        ((out * up).sum() + layer.aux_loss()).backward()      # gradients through the output and the regularizer
        ((ref_out * up).sum() + 0.7 * ref_reg).backward()
        for got, want in [(out, ref_out), (xl.grad, xr.grad), (layer.weight.grad, ref.w.grad),
                          (layer.bias.grad, ref.b.grad), (layer.running_mean, ref.rm),
                          (layer.running_var, ref.rv), (layer.aux_loss(), 0.7 * ref_reg)]:
            torch.testing.assert_close(got, want.detach(), atol=1e-10, rtol=1e-10)
        if t > 0:  # theta learns through the row weights; tasks above t are untouched
            torch.testing.assert_close(layer.theta.grad[: t + 1], ref.theta.grad[: t + 1], atol=1e-10, rtol=1e-10)
            assert not layer.theta.grad[t + 1:].any()


def test_adab2n_absent_task_keeps_mass():
    # t = 2, task 1 absent: weights sum to 1 - pi_1 < 1 (official); renormalize makes them sum to 1
    from engine.norms.adab2n import adab2n_weights
    ids, theta = torch.tensor([2, 2, 2, 0]), torch.zeros(4, dtype=torch.float64)
    w = adab2n_weights(ids, 2, theta)
    alpha = torch.tensor([1 + 1, 1 + 0, 1 + 3], dtype=torch.float64)
    torch.testing.assert_close(w.sum(), 1 - alpha[1] / alpha.sum())
    renormalized = adab2n_weights(ids, 2, theta, renormalize=True)
    torch.testing.assert_close(renormalized.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_adab2n_kappa1_one_task_is_bn_with_biased_stats():
    bn, x = make_bn(4, torch.float32), rand(12, 4, 3, 3, dtype=torch.float32, offset=2.0)
    layer = AdaB2N(copy.deepcopy(bn), n_tasks=3, kappa=1.0, lambd=1.0, ada_t0=0, renormalize=False)
    rv0 = bn.running_var.clone()
    out = run(layer, x, layout(12, [0] * 12, 0))[0]
    torch.testing.assert_close(out, bn(x), atol=1e-5, rtol=0)  # same normalization as BN's training path
    torch.testing.assert_close(layer.running_mean, bn.running_mean, atol=1e-6, rtol=0)
    biased = x.var((0, 2, 3), unbiased=False)
    torch.testing.assert_close(layer.running_var, 0.9 * rv0 + 0.1 * biased, atol=1e-6, rtol=0)
    assert not torch.allclose(layer.running_var, bn.running_var)  # BN's is the unbiased one
    # one task present and renormalized weights: the same biased batch stats at t > 0
    layer = AdaB2N(copy.deepcopy(make_bn(4, torch.float32)), n_tasks=3, kappa=1.0, lambd=1.0, ada_t0=0,
                   renormalize=True)
    torch.testing.assert_close(run(layer, x, layout(12, [2] * 12, 2))[0], out, atol=1e-5, rtol=0)


def test_adab2n_eta_schedule_and_state_dict_round_trip():
    m, kappa = 0.1, 0.4
    a = AdaB2N(make_bn(3), n_tasks=2, kappa=kappa, lambd=1.0, ada_t0=0, renormalize=False)
    etas, last = [], None
    for _ in range(3):
        last = m ** kappa if last is None else last / (last + (1 - m) ** kappa)
        etas.append(last)
        run(a, rand(8, 3, 2, 2), layout(8, [0] * 8, 0))
    assert a.last_eta.item() == pytest.approx(etas[-1], rel=1e-12)
    b = AdaB2N(make_bn(3), n_tasks=2, kappa=kappa, lambd=1.0, ada_t0=0, renormalize=False)
    fresh = copy.deepcopy(b)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    x, lay = rand(8, 3, 2, 2, seed=9), layout(4, [1] * 4 + [0] * 4, 1)
    for layer in (a, b, fresh):
        run(layer, x, lay)
    torch.testing.assert_close(b.running_mean, a.running_mean, atol=0, rtol=0)
    torch.testing.assert_close(b.last_eta, a.last_eta, atol=0, rtol=0)
    assert not torch.allclose(fresh.running_mean, a.running_mean)  # the schedule state mattered


def test_adab2n_aux_loss_gating():
    layer = AdaB2N(make_bn(3), n_tasks=3, kappa=1.0, lambd=2.0, ada_t0=1, renormalize=False)
    run(layer, rand(8, 3, 2, 2), layout(8, [0] * 8, 0))
    assert layer.aux_loss() is None                      # t = 0 < ada_t0
    run(layer, rand(8, 3, 2, 2), layout(4, [1] * 4 + [0] * 4, 1))
    reg = layer.aux_loss()
    assert reg is not None and reg.requires_grad and reg > 0
    run(layer, rand(8, 3, 2, 2))                         # no layout: BN, no regularizer
    assert layer.aux_loss() is None
    layer.eval()
    layer(rand(8, 3, 2, 2))
    assert layer.aux_loss() is None
    layer.begin_task(2)
    layer.end_task()
    assert int(layer.cur_task) == 3


# ---------------------------------------------------------------------------- eval mode and gradcheck
@pytest.mark.parametrize("name", ["bn", "tbbn", "adab2n", "cn"])
def test_eval_is_batch_norm_on_running_stats(name):
    bn = make_bn(8)
    layer = {"bn": lambda: bn, "tbbn": lambda: TaskBalancedBN(bn), "cn": lambda: ContinualNorm(bn, 4, False),
             "adab2n": lambda: AdaB2N(bn, 3, kappa=0.4, lambd=1.0, ada_t0=0, renormalize=False)}[name]()
    for step in range(2):  # move the running stats away from the copied ones
        run(layer, rand(12, 8, 3, 3, seed=step), layout(8, [2] * 8 + [0, 1, 0, 1], 2))
    layer.eval()
    x = rand(5, 8, 3, 3, seed=20)
    z = F.group_norm(x, 4, eps=bn.eps) if name == "cn" else x  # CN's BN part sees group-normed input
    want = F.batch_norm(z, layer.running_mean, layer.running_var, layer.weight, layer.bias, False, 0.0, layer.eps)
    before = layer.running_mean.clone()
    torch.testing.assert_close(layer(x), want, atol=1e-12, rtol=0)
    torch.testing.assert_close(layer.running_mean, before, atol=0, rtol=0)


def _gradcheck_layer(layer, x, lay, names):
    params = {n: getattr(layer, n).detach().clone().requires_grad_(True) for n in names}

    def f(inp, *values):
        layer.set_layout(lay)
        return torch.func.functional_call(layer, dict(zip(names, values)), (inp,))

    assert torch.autograd.gradcheck(f, (x.requires_grad_(True), *params.values()))


@pytest.mark.parametrize("fmt", FORMATS)
def test_gradcheck_tbbn(fmt):
    _gradcheck_layer(TaskBalancedBN(make_bn(3)), rand(12, 3, 2, 2).contiguous(memory_format=fmt),
                     offline_layout(2, 8, 4), ["weight", "bias"])


def test_gradcheck_weighted_batch_norm():
    """Every output (out, mu, var: the regularizer uses the last two) against every input;
    row weights summing below 1 (an absent task), so the mean-through-variance path counts."""
    from engine.norms.adab2n import weighted_batch_norm
    args = (rand(5, 3, 2, 2), torch.tensor([0.1, 0.3, 0.05, 0.2, 0.25], dtype=torch.float64), 1 + rand(3, seed=2),
            rand(3, seed=3))
    assert torch.autograd.gradcheck(lambda *a: weighted_batch_norm(*a, 1e-5),
                                    tuple(a.requires_grad_(True) for a in args))


@pytest.mark.parametrize("fmt", FORMATS)
def test_gradcheck_adab2n(fmt):
    layer = AdaB2N(make_bn(3), 4, kappa=0.4, lambd=1.0, ada_t0=0, renormalize=False)
    with torch.no_grad():
        layer.theta.copy_(0.3 * rand(4, seed=4))
    _gradcheck_layer(layer, rand(9, 3, 2, 2).contiguous(memory_format=fmt), layout(4, [3] * 4 + [0, 2, 2, 0, 2], 3), ["weight", "bias", "theta"])


@pytest.mark.parametrize("name", ["tbbn", "adab2n"])
def test_under_bf16_autocast_a_layer_keeps_its_statistics_in_fp32(name):
    """bf16 trials: 50 training steps whose input arrives in bf16 (as a bf16 convolution hands it
    on) leave the running stats within 1e-3 of the fp32 run's; the layer computes in fp32
    (norms.InFp32), without which these layers would not even run on bf16 input."""
    from engine import norms

    stats = {}
    for precision in ("fp32", "bf16"):
        net = nn.Sequential(nn.BatchNorm2d(16))
        norms.install(net, name, n_tasks=5, setting="online", input_shape=(16, 8, 8), precision=precision)
        net.train()
        g = torch.Generator().manual_seed(1)
        for _ in range(50):
            x = torch.randn(30, 16, 8, 8, generator=g) * 2 + 0.5
            norms.set_layout(net, BatchLayout(10, torch.tensor([4] * 10 + [0] * 10 + [2] * 10), 4))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = net(x if precision == "fp32" else x.bfloat16())
            out.float().sum().backward()
        buffers = dict(net.named_buffers())
        assert all(b.dtype != torch.bfloat16 for b in buffers.values())
        stats[precision] = torch.cat([b for n, b in buffers.items() if n.endswith(("running_mean", "running_var"))])
    assert (stats["bf16"] - stats["fp32"]).abs().max() < 1e-3


# ------------------------------------------------- the forms torch.compile traces
def _outputs_and_grads(fn, *inputs):
    """fn's (out, mean, var) and the gradients of a fixed function of all three, for every input."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    outs = fn(*leaves)
    loss = sum((o * torch.cos(torch.arange(o.numel(), dtype=o.dtype)).view_as(o)).sum()
               for o in outs if o.requires_grad)
    return [o.detach() for o in outs] + list(torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("r", [2, 4, 8])
def test_tbbn_traced_form_is_the_function(fmt, r):
    """Under torch.compile TBBN runs `_tbbn_ops` (out-of-place ops, autograd's backward): it must
    compute what the eager Function computes, outputs and gradients."""
    from engine.norms.tbbn import _TBBNFunction, _tbbn_ops
    bn = make_bn(5)
    x = rand(64, 5, 3, 3).contiguous(memory_format=fmt)
    eager = _outputs_and_grads(lambda x, w, b: _TBBNFunction.apply(x, w, b, 48, r, bn.eps), x, bn.weight, bn.bias)
    traced = _outputs_and_grads(lambda x, w, b: _tbbn_ops(x, 48, r, w, b, bn.eps), x, bn.weight, bn.bias)
    for a, b in zip(traced, eager):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fmt", FORMATS)
def test_adab2n_traced_form_is_the_function(fmt):
    """The same for AdaB2N's weighted BN, whose mean and variance are differentiable outputs
    (the regularizer reads them) and whose row weights get gradients (theta's)."""
    from engine.norms.adab2n import _WeightedBNFunction, _weighted_bn_ops
    bn = make_bn(5)
    x = rand(30, 5, 3, 3).contiguous(memory_format=fmt)
    w = torch.rand(30, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    eager = _outputs_and_grads(lambda *a: _WeightedBNFunction.apply(*a, bn.eps), x, w, bn.weight, bn.bias)
    traced = _outputs_and_grads(lambda *a: _weighted_bn_ops(*a, bn.eps), x, w, bn.weight, bn.bias)
    for a, b in zip(traced, eager):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
