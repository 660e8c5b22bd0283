"""Declared, validated options for pluggable parts (norm layers, methods, datasets).

A part declares `OPTIONS = {"kappa": Option(float, 1.0, low=0, high=1, doc=...)}`; the user
passes `kappa=0.4,lambd=0.1` on the command line or a dict in YAML, and `resolve_options`
checks names, types and ranges and fills in defaults, with one-line errors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from engine.errors import ConfigError


@dataclass(frozen=True)
class Option:
    type: type
    default: Any
    doc: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None

    def coerce(self, owner: str, name: str, value: Any) -> Any:
        where = f"{owner} option {name}"
        try:
            if self.type is bool and isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                value = value.lower() in ("true", "1", "yes")
            elif self.type is bool:
                value = bool(value)
            elif self.type is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            else:
                value = self.type(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}={value!r} is not a {self.type.__name__}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}={value!r} must be finite")
        if self.low is not None and value < self.low:
            raise ConfigError(f"{where}={value!r} is below its minimum {self.low}")
        if self.high is not None and value > self.high:
            raise ConfigError(f"{where}={value!r} is above its maximum {self.high}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{where}={value!r}; choose one of: {', '.join(map(str, self.choices))}")
        return value


def parse_kv(text: str, flag: str) -> dict[str, str]:
    """`"kappa=0.4,lambd=0.1"` -> `{"kappa": "0.4", "lambd": "0.1"}`; empty text -> {}."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag}: {item!r} is not of the form name=value")
        out[key.strip()] = value.strip()
    return out


def resolve_options(owner: str, declared: Mapping[str, Option], given: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(declared))
    if unknown:
        allowed = ", ".join(sorted(declared)) or "none"
        raise ConfigError(f"{owner} takes no option {unknown[0]!r}; its options: {allowed}")
    return {name: opt.coerce(owner, name, given[name]) if name in given else opt.default
            for name, opt in sorted(declared.items())}


def describe(declared: Mapping[str, Option]) -> str:
    return ", ".join(f"{n}={o.default!r} ({o.doc})" if o.doc else f"{n}={o.default!r}"
                     for n, o in sorted(declared.items())) or "no options"
