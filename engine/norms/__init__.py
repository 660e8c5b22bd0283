"""Normalization layers: one registry, one `install`, and the hooks the method base calls.

A family module registers a *factory* `make(bn: nn.BatchNorm2d, ctx: NormContext, **options)
-> nn.Module` under one or more names, with its declared OPTIONS. `install(net, name, ...)`
replaces every BatchNorm2d of `net` by the factory's layer. Layers that need the batch
composition implement any of `set_layout(layout)`, `aux_loss()`, `begin_task(t)`, `end_task()`;
the hooks below call them on every layer that has them, so no method knows which layer runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from engine.norms.layout import BatchLayout
from engine.options import Option, resolve_options as _resolve
from engine.registry import Registry

__all__ = ["BatchLayout", "NormContext", "NormFamily", "REGISTRY", "install", "set_layout",
           "aux_loss", "add_aux_loss", "begin_task", "end_task", "resolve_options", "frozen_parameters"]


@dataclass(frozen=True)
class NormContext:
    """What a factory may need beyond the BatchNorm2d it replaces."""
    n_tasks: int
    setting: str                                        # online | offline
    feature_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # module name -> (C,H,W)
    name: str = ""                                      # the replaced module's qualified name


@dataclass(frozen=True)
class NormFamily:
    make: Callable[..., nn.Module]
    options: Mapping[str, Option] = field(default_factory=dict)
    needs_shapes: bool = False          # LN: probe every BN's input (C,H,W) with a dummy forward
    setting_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per-setting option defaults


REGISTRY: Registry[NormFamily] = Registry("norm", entry=lambda make, name, **fields: NormFamily(make, **fields))
HOOKS_ATTR = "_norm_hook_layers"


def resolve_options(name: str, given: Mapping[str, Any], setting: str = "online") -> dict[str, Any]:
    family = REGISTRY.get(name)
    merged = {**family.setting_defaults.get(setting, {}), **given}
    return _resolve(f"norm {REGISTRY.canonical(name)}", family.options, merged)


class InFp32(nn.Module):
    """A layer that computes in fp32 under autocast (bf16 trials): its statistics, running
    buffers and weights (AdaB2N's mixture, TBBN's block sums) would lose bits in bf16. The next
    convolution casts the output back. BN itself needs no wrapper: its kernel accumulates in fp32."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_autocast_enabled(x.device.type):
            return self.layer(x)
        with torch.autocast(x.device.type, enabled=False):
            return self.layer(x.float())


def install(net: nn.Module, name: str, *, n_tasks: int, setting: str, input_shape: tuple[int, ...],
            precision: str = "fp32", **options: Any) -> nn.Module:
    """Replace every BatchNorm2d of `net` (in place) by the layer `name`; returns `net`."""
    family = REGISTRY.get(name)
    opts = resolve_options(name, options, setting)
    shapes = _probe_bn_inputs(net, input_shape) if family.needs_shapes else {}
    for qualname, old in [(n, m) for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)]:
        ctx = NormContext(n_tasks=n_tasks, setting=setting, feature_shapes=shapes, name=qualname)
        layer = family.make(old, ctx, **opts)
        _set_submodule(net, qualname, InFp32(layer) if precision != "fp32" and name != "bn" else layer)
    hooked = [m for m in net.modules() if any(hasattr(m, h) for h in _HOOK_METHODS)]
    object.__setattr__(net, HOOKS_ATTR, hooked)  # plain attribute: not a registered submodule list
    return net


_HOOK_METHODS = ("set_layout", "aux_loss", "add_aux_loss", "begin_task", "end_task")


def _layers(net: nn.Module, method: str) -> list[nn.Module]:
    return [m for m in getattr(net, HOOKS_ATTR, ()) if hasattr(m, method)]


def set_layout(net: nn.Module, layout: BatchLayout) -> None:
    for m in _layers(net, "set_layout"):
        m.set_layout(layout)


def aux_loss(net: nn.Module) -> torch.Tensor | None:
    """Sum of the layers' regularizers after the last forward; None when no layer has one."""
    terms = [t for m in _layers(net, "aux_loss") if (t := m.aux_loss()) is not None]
    return torch.stack(terms).sum() if terms else None


def add_aux_loss(net: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """`loss` plus the layers' regularizers of the last forward (AdaB2N's), when there are any."""
    aux = aux_loss(net)
    return loss if aux is None else loss + aux


def begin_task(net: nn.Module, task: int) -> None:
    for m in _layers(net, "begin_task"):
        m.begin_task(task)


def end_task(net: nn.Module) -> None:
    for m in _layers(net, "end_task"):
        m.end_task()


def frozen_parameters(net: nn.Module) -> set[int]:
    """ids of parameters a layer asks to keep out of the optimizer (CN's frozen affine)."""
    return {id(p) for m in net.modules() for p in getattr(m, "frozen_parameters", lambda: ())()}


def _set_submodule(net: nn.Module, qualname: str, module: nn.Module) -> None:
    parent_name, _, child = qualname.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, module)


@torch.no_grad()
def _probe_bn_inputs(net: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, n=n: shapes.__setitem__(n, tuple(args[0].shape[1:])))
               for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)]
    was_training = net.training
    net.eval()
    try:
        param = next(net.parameters())
        net(torch.zeros((1, *input_shape), device=param.device, dtype=param.dtype))
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    return shapes


# Families register themselves on import; importing them here keeps the registry complete.
from engine.norms import adab2n, bn, brn, cn, simple, tbbn  # noqa: E402,F401
