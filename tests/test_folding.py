"""engine/folding.py: evaluation networks whose normalization is folded into the convolutions,
on real backbones with every layer family, trained a few steps so the running statistics and
affine parameters are not their initial values."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from engine import norms
from engine.backbones import build_backbone
from engine.device import place
from engine.folding import folded
from engine.trainer import evaluate

INPUT = (3, 16, 16)
FOLDABLE = ["bn", "brn", "tbbn", "adab2n"]        # inference is a per-channel affine map
PER_SAMPLE = ["gn", "ln", "in", "cn"]             # inference normalizes each sample: kept


def trained(name: str, precision: str = "fp32", backbone: str = "resnet18_reduced") -> nn.Module:
    torch.manual_seed(0)
    net = build_backbone(backbone, 3, 10)
    norms.install(net, name, n_tasks=5, setting="online", input_shape=INPUT, precision=precision)
    net = place(net, torch.device("cpu"))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(5):
        loss = net(torch.randn(8, *INPUT) * 2 + 1).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def norm_count(net: nn.Module) -> int:
    return sum(hasattr(m, "running_mean") or hasattr(m, "running_std") for m in net.modules())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", FOLDABLE)
def test_a_folded_network_scores_as_the_network_does_with_no_normalization_left(name, precision):
    net = trained(name, precision)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(40, *INPUT)
    with torch.no_grad():
        ref = net(x)
        out = folded(net, x[:2])
        got = out(x)
    assert out is not net and norm_count(net) > 0 and norm_count(out) == 0
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())   # the original is untouched
    assert not net.training and not out.training


@pytest.mark.parametrize("name", PER_SAMPLE)
def test_layers_that_normalize_each_sample_are_not_folded(name):
    net = trained(name)
    assert folded(net, torch.randn(2, *INPUT)) is net


def test_a_convolution_whose_output_is_also_used_elsewhere_is_not_folded():
    """conv -> bn, plus a skip from the conv's own output: folding would change the skip, so the
    check on the probe rows catches it and the network is evaluated as it is."""
    class Reuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            c = self.conv(x)
            return self.bn(c) + c

    net = Reuse()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.2, 3)
    with pytest.warns(RuntimeWarning, match="unfolded"):
        assert folded(net.eval(), torch.randn(2, *INPUT)) is net


def test_evaluation_runs_the_folded_network_and_scores_as_the_unfolded_one(tiny_cfg):
    """No norm layer of the trial's network runs during evaluate(), and its accuracies are the
    ones the unfolded network gives on the same rows, computed here."""
    from engine.trainer import build_trial

    dataset, method = build_trial(tiny_cfg(norm="tbbn").resolved(), torch.device("cpu"))
    calls = []
    for m in method.net.modules():
        if hasattr(m, "running_mean"):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
            m.register_forward_pre_hook(lambda *_: calls.append(1))
    last = dataset.n_tasks - 1
    got = evaluate(method, dataset, last)
    assert calls == [1] * (2 * norm_count(method.net))   # the probe forward, unfolded and checked
    assert method.net.training
    method.net.eval()
    seen, want = dataset.task_offsets[last + 1], {"class_il": [], "task_il": []}
    with torch.no_grad():
        for t, lo, hi in zip(dataset.tasks, dataset.task_offsets, dataset.task_offsets[1:]):
            scores = method.net(dataset.normalize(t.x_test))
            want["class_il"].append(100.0 * float((scores[:, :seen].argmax(1) == t.y_test).float().mean()))
            want["task_il"].append(100.0 * float((scores[:, lo:hi].argmax(1) + lo == t.y_test).float().mean()))
    assert got == {k: pytest.approx(v) for k, v in want.items()}
