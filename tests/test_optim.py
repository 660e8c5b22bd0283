"""engine.optim: torch.optim.SGD's update to the last bit (also applied inside backward), MultiStepLR's
rates, and no dynamo import."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.optim import SGD, multistep_lr

ROOT = Path(__file__).resolve().parents[1]


def _params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*shape, generator=g)) for shape in [(4, 3, 3, 3), (7,), (5, 2)]]


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.0, 5e-4), (0.9, 2e-4)])
def test_sgd_matches_torch_bit_for_bit(momentum, weight_decay):
    ours, theirs = _params(0), _params(0)
    opt = SGD(ours, lr=0.05, momentum=momentum, weight_decay=weight_decay)
    ref = torch.optim.SGD(theirs, lr=0.05, momentum=momentum, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(1)
    for step in range(5):
        grads = [torch.randn(p.shape, generator=g) for p in ours]
        for i, (a, b, grad) in enumerate(zip(ours, theirs, grads)):
            skip = step == 2 and i == 1      # a parameter without a gradient keeps its momentum
            a.grad = None if skip else grad.clone()
            b.grad = None if skip else grad.clone()
        opt.step()
        ref.step()
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
        opt.zero_grad()
        assert all(p.grad is None for p in ours)


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 5), torch.nn.Linear(5, 3))


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 2e-4)])
def test_update_in_backward_matches_torch_bit_for_bit_and_frees_each_gradient(momentum, weight_decay):
    ours, theirs = _net(0), _net(0)
    opt = SGD(ours.parameters(), lr=0.05, momentum=momentum, weight_decay=weight_decay, in_backward=True)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=momentum, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(1)
    for step in range(4):
        x = torch.randn(6, 3, 6, 6, generator=g)
        skip_last = step == 2        # the last layer gets no gradient: skipped, its momentum kept
        for net in (ours, theirs):
            out = net[:-1](x) if skip_last else net(x)
            out.square().mean().backward()
        assert all(p.grad is None for p in ours.parameters())   # applied and freed during backward
        opt.step()                                              # nothing left to do
        ref.step()
        ref.zero_grad()
        for a, b in zip(ours.parameters(), theirs.parameters()):
            assert torch.equal(a, b)


def test_closed_optimizer_no_longer_updates_in_backward():
    net = _net(0)
    opt = SGD(net.parameters(), lr=0.1, in_backward=True)
    opt.close()
    before = [p.detach().clone() for p in net.parameters()]
    net(torch.randn(2, 3, 6, 6)).sum().backward()
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert all(p.grad is not None for p in net.parameters())    # left for an explicit step()


def test_sgd_state_dict_round_trip_continues_identically():
    a_params, b_params = _params(2), _params(2)
    a = SGD(a_params, lr=0.1, momentum=0.9)
    for p in a_params:
        p.grad = torch.ones_like(p)
    a.step()
    b = SGD(b_params, lr=0.5)
    with torch.no_grad():
        for pa, pb in zip(a_params, b_params):
            pb.copy_(pa)
    b.load_state_dict(a.state_dict())
    assert b.lr == 0.1 and b.momentum == 0.9
    for opt, params in ((a, a_params), (b, b_params)):
        for p in params:
            p.grad = torch.full_like(p, 0.5)
        opt.step()
    for pa, pb in zip(a_params, b_params):
        assert torch.equal(pa, pb)
    with pytest.raises(ValueError, match="holds 3 parameters"):
        SGD(a_params[:2], lr=0.1).load_state_dict(a.state_dict())


def test_sgd_rejects_negative_settings():
    with pytest.raises(ValueError, match="lr, momentum, weight_decay"):
        SGD(_params(0), lr=-0.1)


@pytest.mark.parametrize("milestones", [(), (2,), (1, 3), (0, 2, 2, 4)])
def test_multistep_lr_matches_torch(milestones):
    opt = torch.optim.SGD(_params(0), lr=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(milestones), gamma=0.1)
    for epoch in range(6):
        assert multistep_lr(0.1, milestones, 0.1, epoch) == opt.param_groups[0]["lr"]
        opt.step()
        sched.step()


def test_a_trial_never_imports_dynamo():
    """torch.optim's optimizers import torch._dynamo (+150 MB, ~1.3 s); a whole trial must not."""
    code = ("import sys, tempfile; from engine import TrialConfig, run_trial; "
            "run_trial(TrialConfig(dataset='seq-synth', method='derpp', buffer_size=20, seed=0, device='cpu', "
            "data_args={'train_per_class': 4, 'test_per_class': 2, 'image_size': 8}, "
            "backbone='resnet18_reduced'), tempfile.mkdtemp()); "
            "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
