"""The JSON the dashboard's API sends: the models' own ``to_dict`` with every time as Unix
seconds (a float, null when unset) instead of ISO text, so that the page does arithmetic on
them; and a few fields the page needs that the CLI works out itself (an agent's token total, a
task's duration). Text (prompts, output, messages) is passed as it is, byte for byte: escaping
is the page's job (it writes text with ``textContent``). Output that is not UTF-8 is base64,
with ``output_encoding`` saying so, as in the CLI's JSON.
"""

from __future__ import annotations

import json
from typing import Any

from podium.models import Agent, ContextEntry, Event, Message, Task, TeamStatus, decode_output
from podium.service.memory import MemoryHit

#: The time fields of each model (the same names as in its ``to_dict``).
AGENT_TIMES = ("registered_at", "last_heartbeat")
TASK_TIMES = ("created_at", "started_at", "completed_at", "lease_expires")
MESSAGE_TIMES = ("created_at", "delivered_at", "read_at")


def _times(d: dict[str, Any], obj: object, names: tuple[str, ...]) -> dict[str, Any]:
    for name in names:
        d[name] = getattr(obj, name)
    return d


def agent(a: Agent, at: float) -> dict[str, Any]:
    """An agent, with ``heartbeat_age_s`` as of ``at`` (when the store was read)."""
    d = _times(a.to_dict(at), a, AGENT_TIMES)
    d["tokens"] = a.tokens_in + a.tokens_out
    d["interactive"] = bool(a.meta.get("interactive"))
    d["has_pane"] = bool(a.meta.get("pane"))
    return d


def task(t: Task, with_output: bool = False) -> dict[str, Any]:
    """A task; ``with_output``: with its output and stderr (text, or base64 when not UTF-8)
    and ``result`` (how it ended: status, exit code, error, times...)."""
    d = _times(t.to_dict(with_output=False), t, TASK_TIMES)
    tokens = None if t.tokens_in is None and t.tokens_out is None else \
        (t.tokens_in or 0) + (t.tokens_out or 0)
    duration = t.duration_ms
    d.update(error=t.error, exit_code=t.exit_code, tokens_in=t.tokens_in,
             tokens_out=t.tokens_out, tokens=tokens, cost_usd=t.cost_usd,
             duration_s=None if duration is None else round(duration / 1000.0, 6),
             session_id=t.session_id, output_truncated=t.output_truncated,
             output_pruned=t.output_pruned)
    if with_output:
        d.update(output(t.output, t.stderr))
        result = t.result()
        for key in ("output", "stderr", "output_encoding", "stderr_encoding"):
            result.pop(key, None)
        result["started_at"], result["completed_at"] = t.started_at, t.completed_at
        d["result"] = result
    return d


def output(out: bytes | None, err: bytes | None) -> dict[str, Any]:
    """``output`` and ``stderr`` as text (None when there is none), each with its encoding
    (``utf-8``, or ``base64`` for bytes that are not UTF-8)."""
    text, encoding = decode_output(out)
    err_text, err_encoding = decode_output(err)
    return {"output": text, "output_encoding": encoding, "stderr": err_text,
            "stderr_encoding": err_encoding}


def message(m: Message) -> dict[str, Any]:
    return _times(m.to_dict(), m, MESSAGE_TIMES)


def context_entry(e: ContextEntry) -> dict[str, Any]:
    return _times(e.to_dict(), e, ("updated_at",))


def memory_hit(hit: MemoryHit) -> dict[str, Any]:
    """A search result as ``podium memory search --json`` gives it (the memory's provenance,
    text and meta; score, keyword and vector parts, their ranks, the snippet), ``created_at``
    in Unix seconds."""
    d = hit.to_dict()
    d["created_at"] = hit.memory.created_at
    return d


def event(ev: Event) -> dict[str, Any]:
    """``Event.to_dict()`` as ``podium watch --json`` prints it (``ts`` in ISO text), and
    ``at``: the same time in Unix seconds."""
    d = ev.to_dict()
    d["at"] = ev.ts
    return d


def dumps(data: Any) -> bytes:
    """JSON of ``data`` in UTF-8, whatever it holds (a lone surrogate, which no store takes,
    is written as an escape rather than failing the whole response)."""
    try:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(data, separators=(",", ":")).encode()


#: The live stream's event, a JSON array in this order (the page's live.js reads it so).
EVENT_ROW = ("id", "at", "kind", "agent_id", "task_id", "data")
_ROW_TEXT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_ROW_ASCII = json.JSONEncoder(separators=(",", ":"))


def event_row(ev: Event) -> str:
    """``ev`` as the live stream sends it: the JSON array of its ``EVENT_ROW`` fields, ``at`` in
    Unix seconds (no ISO ``ts``: the stream carries thousands of events a second, and the row
    is a third shorter than ``event``'s object)."""
    row = (ev.id, ev.ts, ev.kind, ev.agent_id, ev.task_id, ev.data)
    text = _ROW_TEXT.encode(row)
    try:
        text.encode()
    except UnicodeEncodeError:  # (see dumps)
        return _ROW_ASCII.encode(row)
    return text


def status(s: TeamStatus) -> dict[str, Any]:
    d = s.to_dict()
    d["live_agents"] = [agent(a, s.at) for a in s.live_agents]
    d["at"] = s.at
    return d
