"""Plugins: classes registered in an entry point group, found by name.

Backends (``podium.backends``) and workspaces (``podium.workspaces``) are plugins; Podium's
own are registered in its ``pyproject.toml`` exactly as a third-party package registers its
own, so a listing shows both alike and either can be replaced by installing a package.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TypeVar

from podium.errors import InvalidInput

P = TypeVar("P", bound=type)


def names(group: str) -> list[str]:
    """Every name registered in ``group``, sorted."""
    return sorted({ep.name for ep in entry_points(group=group)})


def load(group: str, name: str, base: P, kind: str) -> P:
    """The class registered under ``name`` in ``group``, which must subclass ``base``; its
    ``name`` attribute is set to the registered name. ``kind`` words the errors ("backend")."""
    for ep in entry_points(group=group):
        if ep.name == name:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise InvalidInput(f"{kind} {name!r} ({ep.value}) is not a podium "
                                   f"{base.__name__} class")
            cls.name = name  # type: ignore[attr-defined]
            return cls  # type: ignore[return-value]
    known = ", ".join(names(group)) or "none (is podium installed with pip?)"
    raise InvalidInput(f"unknown {kind} {name!r}: available {kind}s are {known}")
