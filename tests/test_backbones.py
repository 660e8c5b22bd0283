"""The backbones' in-place ReLU and residual add: the same values and gradients as the out-of-place
formulation with every norm layer, in training (with a [current | memory] layout) and in eval."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from engine import norms
from engine.backbones import build_backbone
from engine.backbones.resnet import BasicBlock
from engine.device import place
from engine.norms import BatchLayout

INPUT = (3, 16, 16)


def out_of_place_features(net, x):
    """The blocks' math with fresh tensors everywhere: the oracle for the in-place forward."""
    def block(b: BasicBlock, x):
        out = F.relu(b.bn1(b.conv1(x)))
        out = b.bn2(b.conv2(out)) + b.shortcut(x)
        return F.relu(out) if b.last_relu else out

    out = F.relu(net.bn1(net.conv1(x)))
    for stage in net.layers:
        for b in stage:
            out = block(b, out)
    return F.adaptive_avg_pool2d(out, 1).flatten(1)


@pytest.mark.parametrize("name", sorted(norms.REGISTRY.names()))
@pytest.mark.parametrize("channels_last", [False, True])
def test_in_place_forward_matches_out_of_place_with_every_norm(name, channels_last):
    torch.manual_seed(0)
    net = build_backbone("resnet18_reduced", 3, 10)
    norms.install(net, name, n_tasks=5, setting="online", input_shape=INPUT)
    if channels_last:
        net = place(net, torch.device("cpu"))
    net.last_block().last_relu = name != "bn"       # LUCIR's variant too (no final ReLU)
    oracle = copy.deepcopy(net)
    x = torch.randn(30, *INPUT)
    layout = BatchLayout(10, torch.tensor([2] * 10 + [0, 1] * 10), 2)
    results = []
    for model, features in ((net, net.features), (oracle, lambda v: out_of_place_features(oracle, v))):
        norms.begin_task(model, 2)
        norms.set_layout(model, layout)
        out = model.head(features(x))
        aux = norms.aux_loss(model)
        (out.logsumexp(1).mean() + (aux if aux is not None else 0)).backward()
        model.eval()
        with torch.no_grad():
            evaluated = model.head(features(x[:6]))
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results.append((out.detach(), evaluated, grads, model.state_dict()))
    (out_a, eval_a, grads_a, state_a), (out_b, eval_b, grads_b, state_b) = results
    assert torch.equal(out_a, out_b) and torch.equal(eval_a, eval_b)
    assert grads_a.keys() == grads_b.keys() and all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)   # running statistics alike


@pytest.mark.parametrize("name", sorted(norms.REGISTRY.names()))
def test_relu_and_residual_reuse_the_norm_output_memory(name):
    """What saves the memory: ReLU and the residual add write into the norm's output, so a
    training step holds no separate tensor for them."""
    torch.manual_seed(0)
    net = norms.install(build_backbone("resnet18_reduced", 3, 10), name, n_tasks=5, setting="online",
                        input_shape=INPUT)
    norms.set_layout(net, BatchLayout(6, torch.zeros(6, dtype=torch.long), 0))
    norm_out, relu_out = {}, {}

    def keep(store, tag, output=True):
        return lambda module, args, *out: store.__setitem__(tag, out[0] if output else args[0])

    block = net.layers[1][0]                        # a block with a projection shortcut
    net.bn1.register_forward_hook(keep(norm_out, "stem"))
    net.layers.register_forward_pre_hook(keep(relu_out, "stem", output=False))
    block.bn1.register_forward_hook(keep(norm_out, "first"))
    block.conv2.register_forward_pre_hook(keep(relu_out, "first", output=False))
    block.bn2.register_forward_hook(keep(norm_out, "second"))
    block.register_forward_hook(keep(relu_out, "second"))     # relu(norm2 + shortcut)
    net(torch.randn(6, *INPUT))
    for tag in ("stem", "first", "second"):
        assert relu_out[tag].untyped_storage().data_ptr() == norm_out[tag].untyped_storage().data_ptr(), tag


def test_imagenet_stem_in_place_relu_keeps_gradients():
    torch.manual_seed(0)
    net = build_backbone("resnet18_imagenet", 3, 10)
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    net(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
