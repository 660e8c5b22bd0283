"""Flag values -> Python values, each with the one-line ConfigError that names the flag."""
from __future__ import annotations

import importlib
from typing import Any

from engine.errors import ConfigError

ALL_DATASETS = "*"   # a --data_args entry without `dataset:` goes to every dataset


def _norm_name(name: str) -> str:
    from engine import norms
    return norms.REGISTRY.canonical(str(name).strip())


def _buffer_mode(name: Any) -> str:
    from engine import buffers
    try:
        return buffers.REGISTRY.canonical(str(name).strip())
    except ConfigError:
        raise ConfigError(f"--buffer_mode {name!r}; choose one of: {', '.join(buffers.REGISTRY.names())}") from None


def _dataset_key(name: str) -> str:
    if name == ALL_DATASETS:
        return name
    from engine import datasets
    return datasets.REGISTRY.canonical(str(name).strip())


def _names(flag: str, value: Any, registry: str) -> tuple[str, ...]:
    """The names given to `flag`, each known to engine.<registry>; the error names the flag, since
    run.py's --methods are norms and --models methods."""
    names = tuple(dict.fromkeys(str(v).strip() for v in _as_list(value) if str(v).strip()))
    if not names:
        raise ConfigError(f"{flag} is empty; give at least one name")
    known = importlib.import_module(f"engine.{registry}").REGISTRY
    for name in names:
        try:
            known.canonical(name)
        except ConfigError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
    return names


def _seeds(seeds: Any, num_seeds: Any) -> tuple[int, ...]:
    if seeds is not None:
        out = tuple(dict.fromkeys(_int("--seeds", s, low=0) for s in _as_list(seeds)))
        if not out:
            raise ConfigError("--seeds is empty; give at least one seed")
        return out
    return tuple(range(_int("--num_seeds", num_seeds, low=1)))


def _choice(flag: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{flag} {value!r}; choose one of: {', '.join(choices)}")
    return value


def _bool(flag: str, value: Any) -> bool:
    if not isinstance(value, bool):   # a preset's `deterministic: yes` is YAML's true; "no" would be text
        raise ConfigError(f"{flag} {value!r}: expected true or false")
    return value


def _int(flag: str, value: Any, low: int) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} {value!r} is not an integer") from None
    if number < low:
        raise ConfigError(f"{flag} {number} must be at least {low}")
    return number


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (str, int, float)):
        return [value]
    return list(value)


def _alternatives(where: str, value: Any) -> tuple:
    values = tuple(_as_list(value))
    if not values:
        raise ConfigError(f"{where}: no values")
    return values


def _literal(text: str) -> Any:
    """CLI text -> int, float, bool, None or the string itself (the engine checks the type)."""
    text = text.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _flag_of(field_name: str) -> str:
    return {"dataset": "datasets", "method": "models", "norm": "methods", "seed": "seeds",
            "buffer_size": "buffer_sizes", "norm_args": "norm_grid"}.get(field_name, field_name)
