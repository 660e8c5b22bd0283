"""Evaluation networks with the normalization folded into the convolution before it.

In eval mode BN, and every layer whose inference is F.batch_norm on running statistics (TBBN,
AdaB2N, BRN: `eval_affine()`), is a per-channel affine map y = x * scale + shift. Folded into the
preceding convolution's weight and bias it costs nothing: ~9% less evaluation time for ResNet-18
on the CPU (benchmarks/RESULTS.md), and the scores agree with the unfolded network's to fp32
rounding. Layers that normalize each sample (GN, LN, IN, CN) are left as they are.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from engine.norms import InFp32
from engine.norms.common import bn_affine, memory_format

TOLERANCE = 1e-3   # folded vs unfolded scores on the probe rows (fp32 rounding is ~1e-6 of them)


def eval_affine(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) per channel of `layer`'s eval-mode output, or None when it is not one."""
    layer = layer.layer if isinstance(layer, InFp32) else layer
    if isinstance(layer, nn.BatchNorm2d):
        if layer.running_mean is None:
            return None
        return bn_affine(layer.running_mean, layer.running_var, layer.weight, layer.bias, layer.eps)
    method = getattr(layer, "eval_affine", None)
    return method() if callable(method) else None


def conv_norm_pairs(net: nn.Module, probe: torch.Tensor) -> list[tuple[str, str]]:
    """(conv, norm) module names where the norm's input is exactly that convolution's output,
    seen in one eval forward of `probe`."""
    names = {m: n for n, m in net.named_modules()}
    outputs: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: list[tuple[str, str]] = []

    def after_conv(module, _inputs, out):
        outputs[id(out)] = (names[module], out)   # the tensor is kept: its id stays unique

    def before_norm(module, inputs):
        hit = outputs.get(id(inputs[0]))
        if hit is not None and hit[1] is inputs[0]:
            pairs.append((hit[0], names[module]))

    wrapped = {id(m.layer) for m in net.modules() if isinstance(m, InFp32)}   # hooked on the wrapper
    norms = [m for m in net.modules() if id(m) not in wrapped and eval_affine(m) is not None]
    handles = [m.register_forward_hook(after_conv) for m in net.modules() if isinstance(m, nn.Conv2d)]
    handles += [m.register_forward_pre_hook(before_norm) for m in norms]
    try:
        net(probe)
    finally:
        for h in handles:
            h.remove()
    return pairs


@torch.no_grad()
def folded(net: nn.Module, probe: torch.Tensor) -> nn.Module:
    """An eval-mode copy of `net` (sharing its tensors) whose conv -> norm pairs are one convolution;
    `net` itself is not changed. `probe`: a few normalized input rows. Where the folded copy's scores
    on them differ from `net`'s (a backbone that reuses a convolution's output elsewhere), `net`."""
    was_training = net.training
    net.eval()
    try:
        pairs = conv_norm_pairs(net, probe)
        if not pairs:
            return net
        shared = {id(t): t for t in [*net.parameters(), *net.buffers()]}
        out = copy.deepcopy(net, memo=shared)   # new modules, the same parameter and buffer tensors
        for conv_name, norm_name in pairs:
            conv = out.get_submodule(conv_name)   # a new module: assigning leaves `net`'s conv alone
            scale, shift = eval_affine(out.get_submodule(norm_name))
            weight = conv.weight * scale.view(-1, 1, 1, 1)
            conv.weight = nn.Parameter(weight.contiguous(memory_format=memory_format(conv.weight)), requires_grad=False)
            conv.bias = nn.Parameter(shift if conv.bias is None else conv.bias * scale + shift, requires_grad=False)
            out.set_submodule(norm_name, nn.Identity())
        ref, got = net(probe).float(), out(probe).float()
        if not torch.allclose(got, ref, rtol=TOLERANCE, atol=TOLERANCE * float(ref.abs().max().clamp(min=1))):
            warnings.warn("folding the normalization into the convolutions changed the scores; "
                          "evaluating the unfolded network", RuntimeWarning, stacklevel=2)
            return net
        return out
    finally:
        net.train(was_training)
