"""A name -> factory registry, used for datasets, backbones, norms, buffers and methods.

Every registry has one idiom: a decorator on the thing that makes the item,

    @REGISTRY.register("derpp", "der++")          # a method class, a buffer, a backbone
    @REGISTRY.register("cn", options=OPTIONS)     # a norm's make function -> NormFamily(make=..., ...)

Where the item is a record around the decorated function (norms, datasets) the registry is made
with `entry`, which builds it from the function, the name and the decorator's fields.
Names are case-insensitive ("BN", "bn"), and an unknown name is a ConfigError listing the
known ones, so every registry gives the same one-line error.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar

from engine.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, entry: Callable[..., T] | None = None):
        self.kind = kind
        self.entry = entry                    # (decorated, name=..., **fields) -> item; None: the item itself
        self._items: dict[str, T] = {}        # primary name -> item
        self._aliases: dict[str, str] = {}    # any lowercase name -> primary name

    def register(self, name: str, *aliases: str, **fields: Any) -> Callable[[Any], Any]:
        """Decorator: register under `name` (its canonical form) and optional aliases; returns
        the decorated object unchanged."""
        if fields and self.entry is None:
            raise TypeError(f"the {self.kind} registry takes no fields ({', '.join(fields)})")

        def add(made: Any) -> Any:
            for key in (name, *aliases):
                if key.lower() in self._aliases:
                    raise KeyError(f"{self.kind} {key!r} registered twice")
                self._aliases[key.lower()] = name.lower()
            self._items[name.lower()] = made if self.entry is None else self.entry(made, name=name, **fields)
            return made

        return add

    def canonical(self, name: str) -> str:
        key = str(name).lower()
        if key not in self._aliases:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        return self._aliases[key]

    def get(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
