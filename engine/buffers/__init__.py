"""Replay buffers: name -> class `(size, n_tasks, device)`; see base.Buffer for the interface."""
from engine.registry import Registry

REGISTRY = Registry("buffer_mode")

from engine.buffers import herding, reservoir, ring  # noqa: E402,F401
