"""install() on a real backbone for every registered norm, option validation, and the batch-independent
families (LN, IN, GN), CN and BRN against their definitions."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine import norms
from engine.backbones import build_backbone
from engine.errors import ConfigError
from engine.norms import BatchLayout
from engine.norms.brn import BatchRenorm2d
from engine.norms.cn import ContinualNorm
from engine.norms.common import largest_divisor_at_most

INPUT = (3, 16, 16)
EXPECTED_TYPE = {"bn": "BatchNorm2d", "ln": "LayerNorm", "in": "InstanceNorm2d", "gn": "GroupNorm",
                 "cn": "ContinualNorm", "brn": "BatchRenorm2d", "tbbn": "TaskBalancedBN", "adab2n": "AdaB2N"}


def test_every_family_is_registered():
    assert set(norms.REGISTRY.names()) == set(EXPECTED_TYPE)


@pytest.mark.parametrize("name", sorted(EXPECTED_TYPE))
@pytest.mark.parametrize("setting", ["online", "offline"])
def test_install_on_resnet18_reduced(name, setting):
    torch.manual_seed(0)
    net = build_backbone("resnet18_reduced", 3, 10)
    n_bn = sum(type(m) is nn.BatchNorm2d for m in net.modules())
    norms.install(net, name, n_tasks=5, setting=setting, input_shape=INPUT)
    kinds = [type(m).__name__ for m in net.modules()]
    assert kinds.count(EXPECTED_TYPE[name]) == n_bn
    if name != "bn":
        assert "BatchNorm2d" not in kinds

    x = torch.randn(30, *INPUT)
    frozen = norms.frozen_parameters(net)
    for task in (0, 3):  # t = 0, and t = 3 with memory rows of tasks 0..2 (r = 2 for TBBN, 10 + 20)
        net.train()
        norms.begin_task(net, task)
        norms.set_layout(net, BatchLayout(10, torch.tensor([task] * 10 + [0, 1, 2, 1] * 5), task))
        out = net(x)
        loss = out.logsumexp(1).mean()
        aux = norms.aux_loss(net)
        assert (aux is not None) == (name == "adab2n")
        (loss + (aux if aux is not None else 0)).backward()
        missing = [n for n, p in net.named_parameters() if id(p) not in frozen and p.grad is None
                   and not (n.endswith("theta") and task == 0)]   # theta is unused at t = 0
        assert not missing
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        if name == "adab2n" and task > 0:   # theta learns once memory tasks exist
            assert all(m.theta.grad.any() for m in net.modules() if hasattr(m, "theta"))
        net.zero_grad()
        norms.end_task(net)
    net.eval()
    with torch.no_grad():
        assert torch.isfinite(net(x[:4])).all()
    if name == "cn":
        assert bool(frozen) == (setting == "online")
        assert {m.groups for m in net.modules() if isinstance(m, ContinualNorm)} == \
            ({20, 32} if setting == "online" else {5, 8})  # channels 20, 40, 80, 160


def test_install_keeps_state_dict_keys_of_bn_for_running_stat_layers():
    base = build_backbone("resnet18_reduced", 3, 10)
    keys = set(base.state_dict())
    for name in ("tbbn", "cn"):
        net = norms.install(copy.deepcopy(base), name, n_tasks=5, setting="offline", input_shape=INPUT)
        assert set(net.state_dict()) == keys
        net.load_state_dict(base.state_dict())  # a BN checkpoint loads as is


@pytest.mark.parametrize("name,given,match", [
    ("adab2n", {"kapa": 0.4}, "takes no option 'kapa'"),
    ("adab2n", {"kappa": 1.5}, "above its maximum"),
    ("adab2n", {"kappa": "abc"}, "is not a float"),
    ("adab2n", {"lambd": -1}, "below its minimum"),
    ("adab2n", {"ada_t0": 0.5}, "is not a int"),
    ("cn", {"groups": 0}, "below its minimum"),
    ("gn", {"freeze_affine": "yes"}, "takes no option"),
    ("tbbn", {"kappa": 0.4}, "takes no option"),
    ("bn", {"groups": 4}, "takes no option"),
])
def test_option_errors_are_one_line(name, given, match):
    net = build_backbone("resnet18_reduced", 3, 10)
    with pytest.raises(ConfigError, match=match) as err:
        norms.install(net, name, n_tasks=5, setting="online", input_shape=INPUT, **given)
    assert "\n" not in str(err.value)


def test_resolve_options_defaults_per_setting():
    assert norms.resolve_options("adab2n", {"kappa": "0.4"}) == \
        {"kappa": 0.4, "lambd": 0.1, "ada_t0": 0, "renormalize": False}
    assert norms.resolve_options("CN", {}, "online") == {"groups": 32, "freeze_affine": True}
    assert norms.resolve_options("cn", {"freeze_affine": "true"}, "offline") == {"groups": 8, "freeze_affine": True}
    with pytest.raises(ConfigError, match="unknown norm 'xn'"):
        norms.resolve_options("xn", {})


# ---------------------------------------------------------------------------- batch-independent families
def test_group_fallback():
    assert [largest_divisor_at_most(c, 32) for c in (20, 40, 64, 80, 160)] == [20, 20, 32, 20, 32]
    assert [largest_divisor_at_most(c, 8) for c in (20, 16, 7)] == [5, 8, 7]


def test_ln_in_gn_definitions():
    net = build_backbone("resnet18_reduced", 3, 10)
    with torch.no_grad():
        net.bn1.weight.fill_(2.0)
        net.bn1.bias.fill_(0.5)
    for name in ("ln", "in", "gn"):
        layer = norms.install(copy.deepcopy(net), name, n_tasks=5, setting="online", input_shape=INPUT).bn1
        x = 3 + 2 * torch.randn(4, 20, 16, 16)
        if name == "ln":
            want = F.layer_norm(x, (20, 16, 16)) * 2 + 0.5
        elif name == "in":
            want = F.instance_norm(x)
        else:  # 20 channels, 32 groups asked: one channel per group
            want = F.group_norm(x, 20) * 2 + 0.5
        for mode in (True, False):  # the same at training and inference, in both memory formats
            for fmt in (torch.contiguous_format, torch.channels_last):
                got = layer.train(mode)(x.contiguous(memory_format=fmt))
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
                if name == "ln":  # the channels-last path keeps the format (no copy to NCHW)
                    assert got.is_contiguous(memory_format=fmt)
    assert not list(norms.install(copy.deepcopy(net), "in", n_tasks=5, setting="online",
                                  input_shape=INPUT).bn1.parameters())


def test_ln_channels_last_gradients_match():
    from engine.norms.simple import LayerNorm
    torch.manual_seed(0)
    ln = LayerNorm((6, 4, 5))
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.5, 0.5)
    x = torch.randn(3, 6, 4, 5, dtype=torch.float64)
    up = torch.randn(3, 6, 4, 5, dtype=torch.float64)
    grads = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        layer = copy.deepcopy(ln).double()
        xi = x.clone(memory_format=fmt).requires_grad_(True)
        (layer(xi) * up).sum().backward()
        grads.append((xi.grad, layer.weight.grad, layer.bias.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_cn_definition_and_frozen_affine():
    bn = nn.BatchNorm2d(16)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
    cn = ContinualNorm(copy.deepcopy(bn), groups=8, freeze_affine=True)
    assert not cn.weight.requires_grad and {id(p) for p in cn.frozen_parameters()} == {id(cn.weight), id(cn.bias)}
    x = 1 + torch.randn(6, 16, 4, 4)
    ref = copy.deepcopy(bn)
    torch.testing.assert_close(cn(x), ref(F.group_norm(x, 8, eps=bn.eps)), atol=1e-6, rtol=0)
    torch.testing.assert_close(cn.running_var, ref.running_var)
    assert ContinualNorm(bn, groups=8, freeze_affine=False).frozen_parameters() == ()


def brn_reference(x, rm, rs, step, w, b, eps=1e-3, momentum=0.01):
    """ludvb/batchrenorm (the TBBN repository's BRN), channels-last loop-free form, float64."""
    mean, std = x.mean((0, 2, 3)), x.std((0, 2, 3), unbiased=False) + eps
    r_max = min(max(2 / 35000 * step + 25 / 35, 1.0), 3.0)
    d_max = min(max(5 / 20000 * step - 25 / 20, 0.0), 5.0)
    r = (std.detach() / rs).clamp(1 / r_max, r_max)
    d = ((mean.detach() - rm) / rs).clamp(-d_max, d_max)
    y = (x - mean[:, None, None]) / std[:, None, None] * r[:, None, None] + d[:, None, None]
    y = y * w[:, None, None] + b[:, None, None]
    return y, rm + momentum * (mean.detach() - rm), rs + momentum * (std.detach() - rs)


@pytest.mark.parametrize("step", [0, 12000, 40000])
def test_brn_matches_reference(step):
    bn = nn.BatchNorm2d(5).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.2, 0.4)   # small running std: r and d hit their limits
        bn.num_batches_tracked.fill_(step)
    brn = BatchRenorm2d(bn)
    x = (2 + 3 * torch.randn(8, 5, 3, 3, dtype=torch.float64)).requires_grad_(True)
    xr = x.detach().clone().requires_grad_(True)
    want, rm, rs = brn_reference(xr, bn.running_mean, bn.running_var.sqrt(), step, bn.weight.detach(), bn.bias.detach())
    got = brn(x)
    up = torch.randn_like(got)
    (got * up).sum().backward()
    (want * up).sum().backward()
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(x.grad, xr.grad, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(brn.running_mean, rm, atol=1e-12, rtol=0)
    torch.testing.assert_close(brn.running_std, rs, atol=1e-12, rtol=0)
    assert int(brn.num_batches_tracked) == step + 1
    brn.eval()
    z = torch.randn(3, 5, 3, 3, dtype=torch.float64)
    want = (z - brn.running_mean[:, None, None]) / brn.running_std[:, None, None] * brn.weight[:, None, None] \
        + brn.bias[:, None, None]
    torch.testing.assert_close(brn(z), want, atol=1e-12, rtol=0)
