"""Continual-learning methods: one small file each over `base.Method`, one registry."""
from engine.registry import Registry

REGISTRY = Registry("method")

from engine.methods import sgd, joint, er, er_ace, der, derpp  # noqa: E402,F401
from engine.methods import finetune, lucir, icarl, eeil, ssil  # noqa: E402,F401
