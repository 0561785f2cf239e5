"""Backend options: what a backend accepts as ``--option KEY=VALUE``, declared once, checked once.

A backend declares its options as a class attribute, each with a name, a type, a default, one
line of help and, for numbers, the bounds it allows::

    options = Options(
        Option("model", str, "gpt-4o-mini", "the model name"),
        Option("temperature", float, None, "sampling temperature", min=0, max=2),
    )

``Options.parse`` turns the strings given into typed values (``config.temperature`` is a float
or None, never a string). An unknown key, a value of the wrong type or one out of range is
the user's input refused: ``InvalidInput``, one line naming the backend, the option and what it
expects. The same declaration is what ``podium backends`` lists.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from podium.errors import InvalidInput


def _bool(raw: str) -> bool:
    word = raw.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _finite(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):  # (no timeout, temperature or price is nan or infinite)
        raise ValueError(raw)
    return value


@dataclass(frozen=True)
class _Type:
    """How one option type is listed, described in an error, and read from a string."""

    name: str
    expected: str
    parse: Callable[[str], Any]  # raises ValueError for a string it cannot read


_TYPES: dict[Any, _Type] = {
    str: _Type("str", "text", str),
    int: _Type("int", "an integer", int),
    float: _Type("float", "a number", _finite),
    bool: _Type("bool", "true or false", _bool),
    Path: _Type("path", "a path", lambda raw: Path(raw).expanduser()),
    list[str]: _Type("list[str]", "arguments split like a shell line (check the quotes)",
                     shlex.split),
}


def _bound_text(x: float) -> str:
    """A bound as a person writes it: 2 rather than 2.0, 2592000 rather than 2.592e+06."""
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True)
class Option:
    """One option: ``kind`` is str, int, float, bool, Path or list[str] (split like a shell
    line); ``min`` and ``max`` (inclusive) bound an int or float."""

    name: str
    kind: Any
    default: Any
    help: str
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _TYPES:  # a mistake in the backend's code, not in the user's input
            raise TypeError(f"option {self.name}: type {self.kind!r} is not one of "
                            "str, int, float, bool, Path, list[str]")

    def expected(self) -> str:
        """What a value must be, as an error says it: 'a number from 0 to 2'."""
        what = _TYPES[self.kind].expected
        if self.min is not None and self.max is not None:
            return f"{what} from {_bound_text(self.min)} to {_bound_text(self.max)}"
        if self.min is not None:
            return f"{what}, at least {_bound_text(self.min)}"
        if self.max is not None:
            return f"{what}, at most {_bound_text(self.max)}"
        return what

    def parse(self, backend: str, raw: str, kind: str = "backend") -> Any:
        """The typed value of ``raw``; an empty string leaves the default (as it always did)."""
        if raw == "":
            return self.default
        try:
            value = _TYPES[self.kind].parse(raw)
        except ValueError:
            raise invalid_option(backend, self.name, raw, self.expected(), kind) from None
        if (self.min is not None and value < self.min) or \
                (self.max is not None and value > self.max):
            raise invalid_option(backend, self.name, raw, self.expected(), kind)
        return value

    def describe(self) -> dict[str, Any]:
        """The option as plain data (for ``podium backends --json``)."""
        default = self.default
        if isinstance(default, Path):
            default = str(default)
        return {"name": self.name, "type": _TYPES[self.kind].name, "default": default,
                "help": self.help, "min": self.min, "max": self.max}


def invalid_option(backend: str, option: str, raw: str, expected: str,
                   kind: str = "backend") -> InvalidInput:
    """The error for a value the backend (or another ``kind`` of plugin) refuses, worded the
    same for every check."""
    return InvalidInput(f"{kind} {backend}: option {option}={raw!r} must be {expected}")


class Options:
    """The options one backend accepts (``Options(*Base.options, Option(...))`` extends)."""

    def __init__(self, *options: Option):
        self._by_name = {o.name: o for o in options}

    def __iter__(self) -> Iterator[Option]:
        return iter(self._by_name.values())

    def parse(self, backend: str, given: Mapping[str, str],
              kind: str = "backend") -> SimpleNamespace:
        """Every option's value: the typed one given, else its default (``kind``: the sort of
        plugin that takes them, for the errors)."""
        unknown = ", ".join(repr(key) for key in given if key not in self._by_name)
        if unknown:
            known = ", ".join(self._by_name)
            expected = f"its options are {known}" if known else "it takes no options"
            raise InvalidInput(f"{kind} {backend}: unknown option {unknown}; {expected}")
        values = {o.name: o.default for o in self}
        for key, raw in given.items():
            values[key] = self._by_name[key].parse(backend, raw, kind)
        return SimpleNamespace(**values)

    def describe(self) -> list[dict[str, Any]]:
        return [o.describe() for o in self]


def parse_options(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["model=x", "k=v"]`` -> dict (a key given twice keeps its last value); a malformed
    pair is an error. The strings are typed by the backend's ``Options``."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"bad backend option {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out
