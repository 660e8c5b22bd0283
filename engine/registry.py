"""A name -> factory registry, used for datasets, backbones, norms, buffers and methods.

Names are case-insensitive ("BN", "bn"), and an unknown name is a ConfigError listing the
known ones, so every registry gives the same one-line error.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from engine.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}        # primary name -> item
        self._aliases: dict[str, str] = {}    # any lowercase name -> primary name

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Register under `name` (its canonical form) and optional aliases."""
        def add(item: T) -> T:
            for key in (name, *aliases):
                if key.lower() in self._aliases:
                    raise KeyError(f"{self.kind} {key!r} registered twice")
                self._aliases[key.lower()] = name.lower()
            self._items[name.lower()] = item
            return item

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
