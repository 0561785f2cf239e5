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
expects. The same declaration is what ``podium backends`` lists, and what the web API's
document states (``Option.json_schema``), whose JSON values ``Option.text_of_json`` reads.
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


def _json_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# The text of a JSON value of each type, None for a value of another.
def _int_text(value: Any) -> str | None:  # (64.0 is the integer 64, as JSON has it)
    return str(int(value)) if _json_number(value) and float(value).is_integer() else None


def _number_text(value: Any) -> str | None:
    return str(value) if _json_number(value) else None


def _bool_text(value: Any) -> str | None:
    return str(value).lower() if isinstance(value, bool) else None


def _args_text(value: Any) -> str | None:  # (read back by shlex.split)
    ok = isinstance(value, list) and all(isinstance(x, str) for x in value)
    return shlex.join(value) if ok else None


@dataclass(frozen=True)
class _Type:
    """How one option type is listed, described in an error, read from a string, and given
    as JSON (the web API): its JSON Schema, and the text of a JSON value of it (None for a
    value that is not of it)."""

    name: str
    expected: str
    parse: Callable[[str], Any]  # raises ValueError for a string it cannot read
    json: dict[str, Any]
    json_expected: str = "text"
    text_of_json: Callable[[Any], str | None] = lambda value: None


_TYPES: dict[Any, _Type] = {
    str: _Type("str", "text", str, {"type": "string"}),
    int: _Type("int", "an integer", int, {"type": "integer"}, "an integer or its text",
               _int_text),
    float: _Type("float", "a number", _finite, {"type": "number"}, "a number or its text",
                 _number_text),
    bool: _Type("bool", "true or false", _bool, {"type": "boolean"},
                "true, false or their text", _bool_text),
    Path: _Type("path", "a path", lambda raw: Path(raw).expanduser(), {"type": "string"}),
    list[str]: _Type("list[str]", "arguments split like a shell line (check the quotes)",
                     shlex.split, {"type": "array", "items": {"type": "string"}},
                     "a list of texts, or a shell line", _args_text),
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

    def json_schema(self) -> dict[str, Any]:
        """The option's value as JSON Schema: its JSON type, within its bounds."""
        schema = {**_TYPES[self.kind].json, "description": self.help}
        for key, bound in (("minimum", self.min), ("maximum", self.max)):
            if bound is not None:
                schema[key] = bound
        return schema

    def text_of_json(self, value: Any) -> str:
        """A value given as JSON, as the text ``parse`` reads: a string as it is, or a JSON
        value of the option's type (a list of texts joined as a shell line); any other value
        is the user's input refused (its bounds are ``parse``'s to check)."""
        json_type = _TYPES[self.kind]
        text = value if isinstance(value, str) else json_type.text_of_json(value)
        if text is None:
            raise InvalidInput(f"backend option {self.name!r} must be {json_type.json_expected}"
                               f", not {type(value).__name__}")
        return text

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
