"""A registry: named entries (judges, modes) in the order they were added."""

from __future__ import annotations

from typing import Dict, TypeVar

T = TypeVar("T")


class Registry(Dict[str, T]):
    """A dict of entries by their ``name``, with ``add`` refusing a second entry of one name
    and ``find`` naming the known ones when asked for an unknown one.

    >>> from types import SimpleNamespace as Entry
    >>> colours = Registry("colour")
    >>> colours.add(Entry(name="red")).name
    'red'
    >>> colours.find("blue")
    Traceback (most recent call last):
    ...
    ValueError: unknown colour 'blue'; known: red
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def add(self, entry: T) -> T:
        if entry.name in self:
            raise ValueError(f"a {self.kind} named {entry.name!r} is registered already")
        self[entry.name] = entry
        return entry

    def find(self, name: str) -> T:
        try:
            return self[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self)}") from None
