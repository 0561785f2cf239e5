"""The web API's declared inputs (``podium.web.params``) agree with the checks the service makes:
what a pattern admits, the service takes; what the service refuses, the pattern does not admit."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

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
    with pytest.raises(InvalidInput, match="bad since .*: expected an age such as 7d or 12h, "
                                           "or an ISO date"):
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


# -- backend options (``/api/team/up``'s ``options``) ---------------------------------------

def test_backend_options_are_their_text_or_a_json_value_of_their_type():
    from podium.agents import backends
    from podium.web.control import backend_options

    local = backends.load("local").options
    assert backend_options({"max_tokens": 64, "temperature": 0.5, "seed": "7"}, local) == \
        ["max_tokens=64", "temperature=0.5", "seed=7"]
    assert backend_options({"max_tokens": 64.0, "temperature": 1}, local) == \
        ["max_tokens=64", "temperature=1"]  # (3.0 is the integer 3, as JSON has it)
    for wrong in ({"max_tokens": True}, {"model_path": 3}, {"temperature": [1]},
                  {"stop": {"a": 1}}):
        with pytest.raises(InvalidInput, match="backend option .* must be"):
            backend_options(wrong, local)
    codex = backends.load("codex").options
    given = backend_options({"extra_args": ["--flag", "a b", "it's"], "check_login": False},
                            codex)
    parsed = codex.parse("codex", dict(kv.split("=", 1) for kv in given))
    assert parsed.extra_args == ["--flag", "a b", "it's"] and parsed.check_login is False
    with pytest.raises(InvalidInput, match="'shell' must be text, not bool"):
        backend_options({"shell": False}, backends.load("shell").options)
    with pytest.raises(InvalidInput, match="an object of backend options"):
        backend_options(["shell=/bin/sh"], backends.load("shell").options)


def test_the_document_states_each_backends_options():
    from podium.web.openapi import ROUTES

    body = ROUTES[("POST", "/api/team/up")][2]
    by_backend = {}
    for cond in body["allOf"]:
        backend = cond["if"]["properties"]["backend"]
        options = cond["then"]["properties"]["options"]
        assert options["additionalProperties"] is False
        by_backend[backend.get("const", "shell")] = options["properties"]
    assert body["allOf"][[c["if"]["properties"]["backend"].get("const") for c in
                          body["allOf"]].index(None)]["if"]["properties"]["backend"] == \
        {"enum": ["shell", "", None]}  # (no backend, or a blank one: shell)
    assert by_backend["local"]["max_tokens"] == {"type": "integer", "minimum": 1,
                                                 "description": "tokens to generate at most"}
    assert by_backend["local"]["temperature"]["type"] == "number"
    assert by_backend["codex"]["extra_args"]["type"] == "array"
    assert by_backend["claude"]["keep_session"]["type"] == "boolean"
    assert set(by_backend["shell"]) == {"shell"}


# -- blank: one notion for the service and the document -------------------------------------

def test_blank_is_unicode_white_space_and_the_zero_width_no_break_space():
    assert limits.BLANK == "".join(c for c in map(chr, range(0x110000)) if c.isspace()) + \
        "\ufeff"


#: Every character that either engine's \s counts, and some that neither does.
_SPACES = sorted(set(limits.BLANK) | {"\u200b", "\u180e", "x", "\u3000", "\u00ad"})


def _ecma_matches(pattern: str, values: list[str]) -> list[bool] | None:
    """Whether ECMA-262's regular expressions (Node's, as JSON Schema specifies) find
    ``pattern`` in each value; None without Node."""
    node = shutil.which("node")
    if node is None:
        return None
    script = ("const [p, vs] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "console.log(JSON.stringify(vs.map(v => new RegExp(p, 'u').test(v))));")
    out = subprocess.run([node, "-e", script], input=json.dumps([pattern, values]),
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return json.loads(out)


@pytest.mark.parametrize("schema, check", [
    (params.TEXT, lambda v: limits.text(v, "text")),
    (params.NAME, lambda v: limits.name(v, "name")),
], ids=["text", "name"])
def test_blank_is_the_same_to_the_service_and_to_the_document(schema, check):
    """A text or name of one character: the document's pattern admits it (by Python's regular
    expressions, and by ECMA-262's where Node is installed) exactly when the service does not
    call it empty."""
    values = [c * 2 for c in _SPACES]
    taken = []
    for v in values:
        try:
            check(v)
            taken.append(True)
        except InvalidInput as e:
            assert "empty" in str(e) or "control character" in str(e), e
            taken.append(False)
    assert [bool(re.search(schema["pattern"], v)) for v in values] == taken
    ecma = _ecma_matches(schema["pattern"], values)
    if ecma is not None:
        assert ecma == taken, [hex(ord(v[0])) for v, a, b in zip(values, ecma, taken) if a != b]
    assert not taken[_SPACES.index("\ufeff")] and taken[_SPACES.index("x")]


def test_a_priority_by_value_is_a_json_integer():
    from podium.models import Priority
    from podium.web.jsonio import priority_of

    assert [priority_of(v) for v in (0, 1.0, 2, "high", None)] == \
        [Priority.HIGH, Priority.NORMAL, Priority.LOW, "high", None]
    assert priority_of(1.5) == 1.5 and priority_of(True) is True  # (the service refuses them)
