"""The API's inputs as its handlers check them, declared once for the OpenAPI document too: a
request that the document calls valid is one the server takes (schemathesis's "schema-valid
request rejected" check, run against ``/api/openapi.json``, found none after this, backend
options aside: which are valid depends on the backend).

Integer query parameters are ``IntParam``: the handler reads them with ``jsonio.query_int``,
the document states their bounds and default. The body fields' schemas state the checks of
``podium.limits`` that the service makes (texts not blank and without NUL, names of at most
``MAX_NAME_BYTES``, seconds and counts in their ranges).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from podium import limits
from podium.service.memory import MAX_K

Schema = dict[str, Any]


@dataclass(frozen=True)
class IntParam:
    """An integer query parameter: at least ``low``, at most ``high``; ``default`` when it is
    not given."""

    low: int
    high: int
    default: int | None = None

    def schema(self) -> Schema:
        s: Schema = {"type": "integer", "minimum": self.low, "maximum": self.high}
        if self.default is not None:
            s["default"] = self.default
        return s


AGENT_LOG_LINES = IntParam(0, limits.MAX_LIST, 200)
QUEUE_LIMIT = IntParam(1, limits.MAX_LIST, 200)
TASKS_LIMIT = IntParam(1, 1000, 50)
TASKS_BEFORE = IntParam(1, limits.MAX_EVENT_ID)
COST_BUCKET_S = IntParam(1, limits.MAX_SECONDS, 3600)
COST_BUCKETS = IntParam(1, 1000, 48)
EVENTS_AFTER = IntParam(0, limits.MAX_EVENT_ID, 0)
EVENTS_LIMIT = IntParam(1, limits.MAX_LIST, 200)
MEMORY_K = IntParam(1, MAX_K, 10)
STREAM_AFTER = IntParam(0, limits.MAX_EVENT_ID)

# -- body fields ----------------------------------------------------------------------------
_NO_NUL = "^[^\\u0000]*$"
# (not blank: limits.BLANK, the characters that \s is in both ECMA-262 and Python, and those that
# only one of them counts: U+001C-U+001F, U+0085, U+FEFF)
_BLANK_CLASS = "\\s\\u001c-\\u001f\\u0085\\ufeff"
_NOT_BLANK = f"^[^\\u0000]*[^{_BLANK_CLASS}\\u0000][^\\u0000]*$"
_NAME_CHAR = "[^\\u0000-\\u001f\\u007f-\\u009f]"  # (no control character)
_NAME = f"^{_NAME_CHAR}*[^{_BLANK_CLASS}\\u0000-\\u001f\\u007f-\\u009f]{_NAME_CHAR}*$"
_NAME_HELP = f"at most {limits.MAX_NAME_BYTES} bytes of UTF-8, no control character"

#: A text the service needs (a prompt, a message): not blank, no NUL, at most 64 MiB.
TEXT: Schema = {"type": "string", "pattern": _NOT_BLANK,
                "description": "Not blank; no NUL; at most "
                               f"{limits.MAX_TEXT_BYTES // (1024 * 1024)} MiB of UTF-8"}
#: A text that may be empty (a context value), or left out when blank (a reason).
ANY_TEXT: Schema = {"type": "string", "pattern": _NO_NUL, "description": "No NUL"}
OPTIONAL_TEXT: Schema = {"type": ["string", "null"], "pattern": _NO_NUL,
                         "description": "No NUL; blank or null: none"}
#: A name (an agent's, a role's): not blank.
NAME: Schema = {"type": "string", "maxLength": limits.MAX_NAME_BYTES, "pattern": _NAME,
                "description": f"Not blank; {_NAME_HELP}"}
#: A name that may be left out: blank or null is "not given".
OPTIONAL_NAME: Schema = {"type": ["string", "null"], "maxLength": limits.MAX_NAME_BYTES,
                         "pattern": f"^({_NAME_CHAR}*|\\s*)$",
                         "description": f"{_NAME_HELP}; blank or null: not given"}
#: ``podium up``'s prefix: its agents' names add ``-N``; no '/' (they name log files).
PREFIX: Schema = {"type": ["string", "null"], "maxLength": limits.MAX_PREFIX_BYTES,
                  "pattern": "^([^\\u0000-\\u001f\\u007f-\\u009f/]*|\\s*)$",
                  "description": "Agent names: PREFIX-1, PREFIX-2... (no '/'; at most "
                                 f"{limits.MAX_PREFIX_BYTES} bytes; blank or null: agent)"}
#: Names, or null for none.
OPTIONAL_NAMES: Schema = {"type": ["array", "null"], "items": NAME}
#: Agents to stop: at least one named, or null for all of this host's.
AGENTS_TO_STOP: Schema = {"type": ["array", "null"], "items": NAME, "minItems": 1,
                          "description": "The agents to stop (at least one); null or left out: "
                                         "every agent of this host"}
#: Seconds: more than 0 (a task's timeout), or from 0 (how long a stop may wait).
SECONDS: Schema = {"type": ["number", "null"], "exclusiveMinimum": 0,
                   "maximum": limits.MAX_SECONDS,
                   "description": f"Seconds, more than 0, at most {limits.MAX_SECONDS} "
                                  "(30 days); null: none"}
#: A worker's lease (``limits.lease``).
LEASE_SECONDS: Schema = {"type": ["number", "null"], "minimum": limits.MIN_LEASE_S,
                         "maximum": limits.MAX_SECONDS,
                         "description": f"Seconds, from {limits.MIN_LEASE_S:g} to "
                                        f"{limits.MAX_SECONDS} (30 days); null: the default"}
WAIT_SECONDS: Schema = {"type": ["number", "null"], "minimum": 0,
                        "maximum": limits.MAX_SECONDS,
                        "description": f"Seconds, from 0 to {limits.MAX_SECONDS}; null: the "
                                       "default"}
AGENT_COUNT: Schema = {"type": "integer", "minimum": 1, "maximum": limits.MAX_AGENTS,
                       "default": 1}
MAX_ATTEMPTS: Schema = {"type": ["integer", "null"], "minimum": 1,
                        "maximum": limits.MAX_ATTEMPTS}
#: A memory search's ``since``: an age (7d, 12h), or an ISO date or time.
SINCE: Schema = {
    "type": "string",
    "pattern": "^\\s*([0-9]{1,4}[smhd]|(?!0000)[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
               "([T ]([01][0-9]|2[0-3])(:[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,6})?)?)?)?"
               "(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)\\s*$",
    "description": "An age (7d, 12h, 90m) or an ISO date or time (2026-11-30, "
                   "2026-11-30T12:00Z) that is on the calendar (2026-02-31 is refused: a "
                   "pattern cannot say so)"}
