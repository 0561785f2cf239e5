"""How the text faces (the CLI and the dashboard) show things: ages, short texts, table cells,
text tables and event lines, written once so that both show them alike.

What these one-line views show of the store's text (names, prompts, reasons, event data) has its
control characters written as escapes (``visible``): a prompt holding ESC or CR cannot recolour
the terminal, move its cursor, set its title or overwrite the line; so have the output lines
``podium watch`` shows under a ``task.output`` event (``output_lines``), and the dashboard's
output screen (``visible_lines``, which keeps tabs and line ends). Free text in a table's
cell (names, roles, prompts) is cut to a width (``short``, ``NAME_WIDTH``) so that one long
value cannot widen the whole table. The views of a whole text (``podium task show``, ``result``,
``logs``) give it byte for byte, as ``cat`` would.
"""

from __future__ import annotations

import re
from datetime import datetime

from podium.clock import iso, now
from podium.models import Event, Task


def age(ts: float | None, at: float | None = None) -> str:
    """How long before ``at`` (default: now) ``ts`` was, in its largest whole unit: ``3s``,
    ``2m``, ``5h``, ``2d``; ``-`` when there is no time."""
    if ts is None:
        return "-"
    s = max(0.0, (now() if at is None else at) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"


#: Control characters (C0 but newline, DEL, C1): a terminal acts on them; and the bidirectional
#: embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069), which reorder the text
#: around them, so that a command could read otherwise than it runs ("Trojan Source").
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with its control characters (ESC, CR, BEL, tab...; all but newline) and its
    bidirectional controls written as escapes such as ``\\x1b`` and ``\\u202e``."""
    return _CONTROL.sub(_escape, text)


#: The same, but tab: a view that lays text out in lines expands it.
_CONTROL_BUT_TAB = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def visible_lines(text: str) -> str:
    """Output for a view that shows it as lines (the dashboard's output screen): CR-LF line
    ends as newlines, every other control character but tab as an escape (``visible``)."""
    return _CONTROL_BUT_TAB.sub(_escape, text.replace("\r\n", "\n"))


def one_line(text: str | None) -> str:
    """``text`` on one line: newlines shown as ⏎, control characters as escapes."""
    return visible((text or "").replace("\n", " ⏎ "))


def short(text: str | None, width: int = 50) -> str:
    """``text`` on one line (``one_line``), cut to ``width`` characters with an …."""
    line = one_line(text)
    return line if len(line) <= width else line[: width - 1] + "…"


#: The width a name (an agent, a role, a task's target) is cut to in a table's cell.
NAME_WIDTH = 24


def short_name(text: str) -> str:
    """A name (an agent, a role, a host, a task's target) for a table's cell, on one line and
    cut to ``NAME_WIDTH`` in its middle: its end stays, which tells ``team-1`` from ``team-2``
    when a long prefix names them all."""
    line = one_line(text)
    if len(line) <= NAME_WIDTH:
        return line
    tail = NAME_WIDTH // 3
    return line[: NAME_WIDTH - 1 - tail] + "…" + line[-tail:]


def output_lines(text: str, prefix: str = "  | ") -> str:
    """Output text as lines under an event line, each after ``prefix``, with its control
    characters as escapes (``visible``; a CR-LF line end is a line end); "" for no text."""
    text = text.replace("\r\n", "\n").rstrip("\n")
    if not text:
        return ""
    return "".join(f"{prefix}{visible(line)}\n" for line in text.split("\n"))


def output_text(data: bytes | None) -> str:
    """Output bytes for a person to read: UTF-8, with bytes that are not shown as \ufffd."""
    return (data or b"").decode("utf-8", errors="replace")


def roles(names: list[str]) -> str:
    """An agent's roles, comma-separated; ``-`` for none."""
    return ",".join(names) or "-"


def target(t: Task) -> str:
    """Who may take a task: an agent's id, ``role:NAME``, or ``*`` (any agent)."""
    return t.target_agent or (f"role:{t.target_role}" if t.target_role else "*")


def tries(t: Task) -> str:
    """A task's claims so far out of those allowed, e.g. ``1/3``."""
    return f"{t.attempts}/{t.max_attempts}"


def table(rows: list[list[str]], headers: list[str], colour: bool = False) -> str:
    """Rows under their headers in left-aligned columns two spaces apart, one line each; with
    ``colour``, a STATE or STATUS column's cells in their state's colour (ANSI)."""
    rows = [[visible(str(x)).replace("\n", "⏎") for x in r] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    coloured = {i for i, h in enumerate(headers) if h in ("STATE", "STATUS")} if colour else set()
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip() + "\n"]
    for r in rows:
        cells = [str(x).ljust(w) for x, w in zip(r, widths)]
        for i in coloured:
            value = str(r[i]).strip()
            cells[i] = ansi(cells[i], state_style(value) or CHECK_STYLES.get(value, ""))
        lines.append("  ".join(cells).rstrip() + "\n")
    return "".join(lines)


#: SGR codes of the style words ``STATE_STYLES`` uses (a text terminal's 16 colours).
_SGR = {"bold": "1", "red": "31", "green": "32", "yellow": "33", "magenta": "35", "cyan": "36",
        "bright_black": "90"}


def ansi(text: str, style: str) -> str:
    """``text`` in ``style`` (words of ``_SGR``, as in ``STATE_STYLES``) for a terminal."""
    codes = ";".join(_SGR[w] for w in style.split() if w in _SGR)
    return f"\x1b[{codes}m{text}\x1b[0m" if codes else text


def when(ts: float | None, at: float | None = None) -> str:
    """A time for a person: local, to the second, and how long ago (``-`` for none)."""
    if ts is None:
        return "-"
    local = datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
    return f"{local} ({age(ts, at)} ago)"


#: Event data that is a time (Unix seconds), shown as ISO 8601 UTC: by event kind, its keys.
EVENT_TIMES = {"history.pruned": ("before",)}


def event_line(ev: Event) -> str:
    """One event on one line: UTC time, id, kind, agent, task and its data (the output chunk of
    a ``task.output`` event aside: see ``event_output``; times as ISO 8601)."""
    data = {k: v for k, v in ev.data.items() if v not in (None, [], "") and k != "chunk"}
    for key in EVENT_TIMES.get(ev.kind, ()):
        if isinstance(data.get(key), (int, float)):
            data[key] = iso(data[key])
    extra = " ".join(f"{k}={v}" for k, v in data.items())
    time_of_day = (iso(ev.ts) or "")[11:23]
    line = (f"{time_of_day}Z #{ev.id} {ev.kind:<16} {ev.agent_id or '-':<12} "
            f"{ev.task_id or '-':<13} {extra}").rstrip()
    return visible(line.replace("\n", " ⏎ "))


def event_output(ev: Event) -> str | None:
    """The output a ``task.output`` event carries, as the worker decoded it (bytes that are
    not UTF-8 are \ufffd), control characters and all (None for other events): show it on a
    terminal through ``output_lines`` or ``short``."""
    return ev.data.get("chunk") or None


#: How a state shows on a terminal (a Rich style), one colour per state, for tasks
#: (``TaskState``) and agents (``AgentState``) alike: the CLI, the dashboard and the web use it.
STATE_STYLES: dict[str, str] = {
    # tasks
    "blocked": "magenta",
    "queued": "cyan",
    "running": "bold yellow",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "bright_black",
    # agents
    "starting": "cyan",
    "idle": "green",
    "busy": "bold yellow",
    "waiting_input": "bold magenta",
    "stopped": "bright_black",
    "dead": "bold red",
}


#: The colours of ``podium doctor``'s verdicts.
CHECK_STYLES = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def state_style(state: str) -> str:
    """The Rich style of a task's or an agent's state (``STATE_STYLES``; "" for others)."""
    return STATE_STYLES.get(state, "")


def event_style(ev: Event) -> str:
    """The Rich style of an event's line: the style of the state its kind ends in
    (``task.failed``, ``agent.dead``...), or of the state it records (``agent.state``)."""
    return state_style(str(ev.data.get("state", ""))) if ev.kind == "agent.state" \
        else state_style(ev.kind.rpartition(".")[2])


#: The order of unfinished tasks in listings with active work first: running, queued, blocked.
ACTIVE_ORDER = {"running": 0, "queued": 1, "blocked": 2}


def active_first(t: Task) -> tuple[int, float, int]:
    """A sort key putting active work first (running, then queued, then blocked, each in the
    order they will be served: priority, then age), then the finished tasks, the latest to
    finish first."""
    rank = ACTIVE_ORDER.get(t.state.value)
    if rank is None:
        return (len(ACTIVE_ORDER), -(t.completed_at or t.created_at), -t.seq)
    return (rank, int(t.priority), t.seq)
