"""Flag values, checked once: one argparse declaration per option gives the flag's type, the
check of the same key in a preset (--config) and the error, so both say the same thing.

`checked(cast, allowed, ok)` is an argparse type: "argument --cpus_per_trial: '0' is not a
positive number". `check_preset(parser, preset)` runs every preset value through the type of
the flag of the same name (each element for a list flag) and raises one-line ConfigErrors.
"""
from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Mapping

from engine.errors import ConfigError


def integer(value: Any) -> int:
    """int, refusing what int() would silently truncate (1.5, True)."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)


def number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(value)
    return out


def checked(cast: Callable[[Any], Any], allowed: str, ok: Callable[[Any], bool] = lambda v: True):
    """An argparse type: `cast`, then `ok`; either failing says the value is not `allowed`."""
    def parse(value: Any) -> Any:
        try:
            out = cast(value)
        except (TypeError, ValueError):
            out = None
        if out is None or not ok(out):
            raise argparse.ArgumentTypeError(f"{value!r} is not {allowed}")
        return out

    parse.__name__ = allowed
    return parse


POSITIVE_INT = checked(integer, "an integer of 1 or more", lambda v: v >= 1)
NONNEGATIVE_INT = checked(integer, "an integer of 0 or more", lambda v: v >= 0)
POSITIVE = checked(number, "a positive number", lambda v: v > 0)
NONNEGATIVE = checked(number, "a number of 0 or more", lambda v: v >= 0)
FRACTION = checked(number, "a number in (0, 1]", lambda v: 0 < v <= 1)
PORT = checked(integer, "a port number in 1..65535", lambda v: 1 <= v <= 65535)


def check_preset(parser: argparse.ArgumentParser, preset: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The preset's values through their flags' types (a YAML mapping stays as it is for the
    flags that take one: --norm_grid, --data_args, --trial_args)."""
    actions = {a.dest: a for a in parser._actions}
    out = {}
    for key, value in preset.items():
        try:
            out[key] = _coerce(actions[key], value) if key in actions else value
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"{where}: {key}: {exc}") from None
    return out


def _coerce(action: argparse.Action, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise argparse.ArgumentTypeError(f"{value!r} is not true or false")
        return value
    if action.nargs in ("+", "*"):
        if isinstance(value, Mapping):
            return value
        items = value if isinstance(value, list) else [value]
        return [_one(action, v) for v in items]
    return _one(action, value)


def _one(action: argparse.Action, value: Any) -> Any:
    if isinstance(value, (list, dict)):
        raise argparse.ArgumentTypeError(f"{value!r} is not a single value")
    return action.type(value) if action.type else str(value)  # `name: 2024` is the name "2024"
