"""What input Podium accepts: the bounds of every number and name, checked in one place.

One table, the same whatever the store: every bound lies inside what both SQLite (64-bit
integers) and PostgreSQL (INTEGER columns up to 2^31-1, BIGINT up to 2^63-1) can hold, so no
value reaches a database that one store would keep and the other refuse. A check returns the
value it accepts (``int`` for counts, ``float`` for seconds) or raises ``InvalidInput`` naming
the option and the range allowed. The service calls these for every call it takes; faces call
them only for what they hand to no service call (worker timing, agent counts and names, ports,
directories), before the store is opened. Numbers set in the environment (``PODIUM_MAX_OUTPUT``,
``PODIUM_CLAIM_BATCH``, ``PODIUM_RECALL``) are read by ``env_integer`` where they are used, never
on import, so that a bad one fails only what uses it (and ``podium up`` before it starts any
worker).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from podium.errors import InvalidInput

#: Claims a task may take (``--max-attempts``); a stuck task is failed after this many.
MAX_ATTEMPTS = 1000
#: The longest timeout, lease, heartbeat or wait, in seconds (30 days).
MAX_SECONDS = 30 * 24 * 3600
#: The shortest lease and heartbeat interval: an agent with a shorter lease is found dead
#: between two beats on a busy machine, and a shorter interval beats the store in a loop.
MIN_LEASE_S = 0.5
MIN_HEARTBEAT_S = 0.05
#: The most rows one listing returns (``--limit``, events read per call).
MAX_LIST = 100_000
#: The most agents one ``podium up`` or ``podium demo`` starts on this host.
MAX_AGENTS = 256
#: The largest event id (``watch --from``): PostgreSQL's BIGINT, SQLite's INTEGER.
MAX_EVENT_ID = 2**63 - 1
#: TCP ports; 0 asks the system for any free one where that is allowed.
MAX_PORT = 65535
#: The largest prompt, message or context value accepted (bytes of UTF-8).
MAX_TEXT_BYTES = 64 * 1024 * 1024
#: The longest age a prune or the retention setting takes (``--older-than``): 100 years.
MAX_AGE_SECONDS = 36500 * 86400
#: The units of an age: seconds, minutes, hours, days.
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: The most memories recalled into one prompt (``--recall K``).
MAX_RECALL = 20
#: The longest name (agent id, role, prefix, sender, session, context key, task id), in bytes
#: of UTF-8: agent names become log file names, which most file systems cap at 255 bytes.
MAX_NAME_BYTES = 200
#: Output kept whole per task, stdout and stderr each (``PODIUM_MAX_OUTPUT``): 16 MiB by
#: default, from 1 byte to 1 GiB (the output is held in memory, then in one store row).
DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024
MAX_OUTPUT = 1024 * 1024 * 1024
#: Tasks an inline (in-process, instant) backend claims per transaction (``PODIUM_CLAIM_BATCH``).
DEFAULT_CLAIM_BATCH = 64
MAX_CLAIM_BATCH = 1000


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _not_text(value: Any, what: str) -> str:
    """Why ``value`` is no text, said as a JSON or command-line user sees it (no Python type
    names): ``prompt is missing``, ``prompt must be text, not a number``."""
    if value is None:
        return f"{what} is missing"
    kind = ("true or false" if isinstance(value, bool) else
            "a number" if isinstance(value, int | float) else
            "a list" if isinstance(value, list | tuple) else
            "an object" if isinstance(value, dict) else type(value).__name__)
    return f"{what} must be text, not {kind}"


def _shown(value: Any) -> str:
    """``value`` for a message: its repr, cut short (an int past 4,300 digits has none)."""
    try:
        text = repr(value)
    except ValueError:
        return "(an integer of over 4300 digits)"
    return text if len(text) <= 60 else text[:57] + "..."


def integer(value: Any, what: str, low: int, high: int) -> int:
    """``value`` when it is an integer from ``low`` to ``high`` (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"bad {what} {_shown(value)}: must be an integer, at least {low} "
                           f"and at most {high}")
    return int(value)


def seconds(value: Any, what: str, zero_ok: bool = False) -> float:
    """``value`` as seconds: more than 0 (or 0 too, when ``zero_ok``), at most 30 days."""
    # Compared, never converted first: nan fails both comparisons, a huge int is exact.
    if not (_number(value) and (0 <= value if zero_ok else 0 < value) and value <= MAX_SECONDS):
        low = "from 0 to" if zero_ok else "more than 0 and at most"
        raise InvalidInput(f"bad {what} {_shown(value)}: must be {low} {MAX_SECONDS} seconds "
                           f"(30 days)")
    return float(value)


def is_age_text(text: str) -> bool:
    """Whether ``text`` is written as an age: ASCII digits and a unit (``30d``, ``90m``)."""
    digits, unit = text[:-1], text[-1:]
    return digits.isascii() and digits.isdigit() and unit in AGE_UNITS


def age(value: Any, what: str = "--older-than") -> float:
    """An age written as a whole number and a unit (``30d``, ``12h``, ``90m``, ``3600s``), or
    a number of seconds, in seconds: from 0 to 100 years."""
    if _number(value):
        if not 0 <= value <= MAX_AGE_SECONDS:  # (nan fails too)
            raise InvalidInput(f"bad {what} {_shown(value)}: must be from 0 to "
                               f"{MAX_AGE_SECONDS} seconds (100 years)")
        return float(value)
    text = value.strip() if isinstance(value, str) else ""
    if not is_age_text(text):
        raise InvalidInput(f"bad {what} {_shown(value)}: expected a whole number and a unit "
                           "(s, m, h or d), e.g. 30d, 12h, 90m or 3600s")
    digits, unit = text[:-1], text[-1:]
    if len(digits) > 12 or int(digits) * AGE_UNITS[unit] > MAX_AGE_SECONDS:
        raise InvalidInput(f"bad {what} {_shown(value)}: at most {MAX_AGE_SECONDS // 86400}d "
                           "(100 years)")
    return float(int(digits) * AGE_UNITS[unit])


def retention(value: Any) -> tuple[float, bool]:
    """The automatic pruning setting (``PODIUM_RETENTION``): an age, optionally followed by
    ``,keep-results``; returns (seconds, keep results)."""
    what = "PODIUM_RETENTION"
    text = value if isinstance(value, str) else ""
    head, _, tail = text.partition(",")
    if tail.strip() not in ("", "keep-results"):
        raise InvalidInput(f"bad {what} {_shown(value)}: expected an age such as 30d, "
                           "optionally followed by ,keep-results")
    return age(head, what), tail.strip() == "keep-results"


def max_attempts(value: Any) -> int:
    return integer(value, "max_attempts", 1, MAX_ATTEMPTS)


def timeout(value: Any | None) -> float | None:
    """A task's run timeout (None: no limit)."""
    return None if value is None else seconds(value, "timeout")


def wait_timeout(value: Any | None, what: str = "timeout") -> float | None:
    """How long a call may wait (None: for ever; 0: look once)."""
    return None if value is None else seconds(value, what, zero_ok=True)


def lease(lease_s: Any, heartbeat_s: Any | None = None) -> tuple[float, float | None]:
    """A worker's lease and heartbeat interval (None: the worker's default, lease/6)."""
    if not _number(lease_s) or not MIN_LEASE_S <= lease_s <= MAX_SECONDS:  # (nan: both false)
        raise InvalidInput(f"bad lease {_shown(lease_s)}: --lease must be from {MIN_LEASE_S:g} "
                           f"to {MAX_SECONDS} seconds (30 days)")
    if heartbeat_s is None:
        return float(lease_s), None
    if not _number(heartbeat_s) or not MIN_HEARTBEAT_S <= heartbeat_s < lease_s:
        raise InvalidInput(f"bad heartbeat {_shown(heartbeat_s)}: expected --heartbeat from "
                           f"{MIN_HEARTBEAT_S:g} s to less than the lease "
                           f"({float(lease_s):g} s)")
    return float(lease_s), float(heartbeat_s)


def recall(value: Any, what: str = "recall") -> int:
    """How many memories to recall into a prompt (0: none)."""
    return integer(value, what, 0, MAX_RECALL)


def env_integer(variable: str, default: int, low: int, high: int, what: str) -> int:
    """The whole number the environment variable ``variable`` holds (``default`` when it is
    unset or blank): ASCII digits, from ``low`` to ``high``; else ``InvalidInput`` in one line
    naming the variable and the range (``PODIUM_CLAIM_BATCH='abc': a number of tasks from 1 to
    1000``). Read at each call: a bad value fails what uses it, not every command."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 20 and low <= int(raw) <= high):
        raise InvalidInput(f"{variable}={_shown(raw)}: a number of {what} from {low} to {high}")
    return int(raw)


def max_output() -> int:
    """``PODIUM_MAX_OUTPUT``: the bytes of stdout (and of stderr) kept whole per task."""
    return env_integer("PODIUM_MAX_OUTPUT", DEFAULT_MAX_OUTPUT, 1, MAX_OUTPUT, "bytes")


def claim_batch() -> int:
    """``PODIUM_CLAIM_BATCH``: the tasks an inline backend's worker claims at a time."""
    return env_integer("PODIUM_CLAIM_BATCH", DEFAULT_CLAIM_BATCH, 1, MAX_CLAIM_BATCH, "tasks")


def env_recall() -> int:
    """``PODIUM_RECALL``, as ``podium up`` checks it for its workers (which read it as
    ``--recall``): 0 to ``MAX_RECALL`` memories, 0 when unset."""
    return env_integer("PODIUM_RECALL", 0, 0, MAX_RECALL, "memories")


def directory(value: Any, what: str) -> str:
    """A directory given on purpose (``given``) that exists and can be read: the path as given."""
    value = given(value, what)
    path, shown = Path(value), repr(value) if _CONTROL.search(value) else value
    if not path.exists():
        raise InvalidInput(f"{what} {shown}: no such directory")
    if not path.is_dir():
        raise InvalidInput(f"{what} {shown}: not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise InvalidInput(f"{what} {shown}: permission denied")
    return value


def list_limit(value: Any) -> int:
    return integer(value, "limit", 1, MAX_LIST)


def agent_count(value: Any) -> int:
    """How many agents to start; at least 1."""
    return integer(value, "number of agents", 1, MAX_AGENTS)


def event_id(value: Any) -> int:
    """An event cursor: events after this id (0: from the start)."""
    return integer(value, "event id", 0, MAX_EVENT_ID)


def port(value: Any, any_free: bool = False) -> int:
    """A TCP port, 1 to 65535 (0 too when ``any_free``: the system picks one)."""
    return integer(value, "port", 0 if any_free else 1, MAX_PORT)


#: What a blank name or text is made of: Unicode's white space as Python has it (``isspace``,
#: which counts U+001C-U+001F and U+0085) and as JSON Schema's ``\s`` has it (ECMA-262,
#: which counts the zero-width no-break space U+FEFF): the document's patterns name the same
#: characters (``podium.web.params``).
#: (Written out: finding them takes 0.5 ms, at every start; a test checks the list.)
BLANK = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
         "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff")


def blank(value: str) -> bool:
    """Whether ``value`` holds nothing but ``BLANK`` characters (or nothing)."""
    return not value.strip(BLANK)


#: Control characters (C0, DEL, C1) and bidirectional controls (U+202A-U+202E,
#: U+2066-U+2069, which reorder the text shown around them): no name holds one.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def name(value: Any, what: str) -> str:
    """A non-empty name of at most ``MAX_NAME_BYTES`` bytes, without NUL (PostgreSQL text
    cannot hold it) or any other control character (ESC, CR, tab...: a name is shown on one
    line, and a terminal acts on them), nor a bidirectional control, and not ``.`` or ``..``
    (a name is a path segment of the web API). Empty is refused, never taken as "the
    default"."""
    if not isinstance(value, str):
        raise InvalidInput(_not_text(value, what))
    if blank(value):
        raise InvalidInput(f"{what} is empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} contains characters that are not valid Unicode") from None
    if size > MAX_NAME_BYTES:
        raise InvalidInput(f"{what} is {size} bytes long: at most {MAX_NAME_BYTES} bytes of "
                           f"UTF-8 allowed")
    if "\0" in value:
        raise InvalidInput(f"{what} contains a NUL character, which PostgreSQL cannot store")
    if (bad := _CONTROL.search(value)) is not None:
        raise InvalidInput(f"{what} contains the control character {bad.group()!r}: a name is "
                           "shown on one line, in terminals too")
    if value in (".", ".."):
        raise InvalidInput(f"{what} {value!r} cannot be a name: it is a segment of the web "
                           "API's paths, where '.' and '..' mean a directory")
    return value


def optional_name(value: Any | None, what: str) -> str | None:
    """``name``, or None for None (no name given)."""
    return None if value is None else name(value, what)


#: The longest prefix ``podium up`` takes: room is left for ``-N`` in its agents' names.
MAX_PREFIX_BYTES = MAX_NAME_BYTES - len(f"-{MAX_AGENTS}")


def agent_prefix(value: Any) -> str:
    """The prefix of the names ``podium up`` gives (``PREFIX-1``...): a name that can start a
    file name, short enough that the names it makes are names."""
    value = name(value, "prefix")
    if "/" in value:
        raise InvalidInput(f"bad prefix {value!r}: agent names become log file names, so no '/'")
    size = len(value.encode("utf-8"))
    if size > MAX_PREFIX_BYTES:
        raise InvalidInput(f"prefix is {size} bytes long: at most {MAX_PREFIX_BYTES} bytes of "
                           f"UTF-8 allowed (the agents' names add -1, -2...)")
    return value


def given(value: Any, what: str) -> str:
    """A path or command line given on purpose: not empty (which would quietly mean "here" or
    "none"), without NUL."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} is empty")
    if "\0" in value:
        raise InvalidInput(f"{what} contains a NUL character")
    return value


def text(value: Any, what: str, allow_empty: bool = False) -> str:
    """``value`` as text (UTF-8 bytes decoded): valid Unicode, not empty unless
    ``allow_empty``, at most MAX_TEXT_BYTES, no NUL."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidInput(f"{what} is not valid UTF-8 (byte {e.start})") from None
    if not isinstance(value, str):
        raise InvalidInput(_not_text(value, what))
    if not allow_empty and blank(value):
        raise InvalidInput(f"{what} is empty")
    if len(value) > MAX_TEXT_BYTES // 4 and len(value.encode("utf-8")) > MAX_TEXT_BYTES:
        raise InvalidInput(f"{what} is larger than {MAX_TEXT_BYTES // (1024 * 1024)} MiB")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} contains characters that are not valid Unicode") from None
    if "\0" in value:  # SQLite would keep it, PostgreSQL refuses it: neither store may take it
        raise InvalidInput(f"{what} contains a NUL character, which PostgreSQL cannot store")
    return value
