"""The web API's declared inputs (``podium.web.params``) agree with the checks the service makes:
what a pattern admits, the service takes; what the service refuses, the pattern does not admit."""

from __future__ import annotations

import re

import pytest

from podium import limits
from podium.errors import InvalidInput
from podium.service.memory import _since
from podium.web import params

SINCE_OK = ["7d", " 12h ", "90m", "3600s", "9999d", "2026-11-30", "2026-12-31", "2026-11-30T12",
            "2026-11-30T12:00Z", "2026-02-28 23:59:59.5+01:00", "2026-01-01T00:00:00-05:30"]
SINCE_BAD = ["", " ", "x", " 0000-01-01", "7y", "1 m", "2026-13-01", "2026-11-30T25:00",
             "\u0661\u0662d", "7d\0"]


@pytest.mark.parametrize("value", SINCE_OK)
def test_a_since_the_document_admits_is_taken(value):
    assert re.search(params.SINCE["pattern"], value)
    _since(value)


@pytest.mark.parametrize("value", SINCE_BAD)
def test_a_since_the_service_refuses_is_not_admitted(value):
    assert not re.search(params.SINCE["pattern"], value)
    with pytest.raises(InvalidInput):
        _since(value)


@pytest.mark.parametrize("value", ["a", " padded ", "日本語", "x" * limits.MAX_NAME_BYTES])
def test_names_the_document_admits_are_taken(value):
    assert re.search(params.NAME["pattern"], value) and len(value) <= params.NAME["maxLength"]
    limits.name(value, "name")


@pytest.mark.parametrize("value", ["a\x1bb", "a\rb", "tab\there", "a\x9bb", "x\x7f"])
def test_names_with_a_control_character_are_not_admitted(value):
    assert not re.search(params.NAME["pattern"], value)
    with pytest.raises(InvalidInput, match="control character"):
        limits.name(value, "name")
    limits.text(value, "text")  # (a text may hold one: a prompt, an output)


@pytest.mark.parametrize("value", ["", "   ", "\t\n", "a\0b"])
def test_names_and_texts_the_service_refuses_are_not_admitted(value):
    for schema, check in ((params.NAME, lambda v: limits.name(v, "name")),
                          (params.TEXT, lambda v: limits.text(v, "text"))):
        assert not re.search(schema["pattern"], value)
        with pytest.raises(InvalidInput):
            check(value)
