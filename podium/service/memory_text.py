"""What is remembered, as text: a finished task, a context version or a note, cut to a known
size and chunked; and the words a keyword search looks for, and a hit's snippet.

A finished task's memory is its prompt (the first ``PROMPT_CHARS`` characters), then its output:
the first ``OUTPUT_HEAD_BYTES`` and the last ``OUTPUT_TAIL_BYTES`` bytes of it (the end of a
build's or a test run's output says how it went), the bytes between left out and said so;
then, for a failed task, its error. Output that is not text (not UTF-8) is remembered as its
size only. Text longer than ``CHUNK_CHARS`` is cut into chunks at white space, each one memory
(the embedding model reads 256 tokens, about a thousand characters of English, and ignores the
rest); every chunk after the first starts with the task's title, so that each says what it is
about. A task's chunks share its id (``task_id``): searches show the best chunk of each task.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from podium.clock import now
from podium.models import ContextEntry, Memory, TaskState
from podium.store.base import FinishedTask

#: Characters of a task's prompt that are remembered.
PROMPT_CHARS = 2000
#: Bytes of a task's output remembered: its beginning and its end.
OUTPUT_HEAD_BYTES = 4000
OUTPUT_TAIL_BYTES = 2000
#: Characters of a failed task's error.
ERROR_CHARS = 500
#: The longest chunk, in characters (one memory, one vector).
CHUNK_CHARS = 1000
#: A title's length at most.
TITLE_CHARS = 120
#: The longest note or context value remembered, in characters (a note longer is refused; a
#: longer context value is cut).
MAX_NOTE_CHARS = 64_000
#: Words of a query that a keyword search uses at most.
MAX_TERMS = 32

#: Words too common to look for (a query made of nothing else keeps them).
STOPWORDS = frozenset("""
a about after again all also am an and any are as at be because been before being between both
but by can could did do does doing done for from had has have having he her here hers him his
how i if in into is it its itself just me more most my no nor not now of off on once only or
other our ours out over own same she should so some such than that the their theirs them then
there these they this those through to too under until up very was we were what when where
which while who whom why will with would you your yours
""".split())

_WORD = re.compile(r"[^\W_]+")
_SPACE = re.compile(r"\s+")


def title_of(text: str) -> str:
    """The first line with something on it, cut to TITLE_CHARS."""
    for line in text.splitlines():
        line = _SPACE.sub(" ", line).strip()
        if line:
            return line if len(line) <= TITLE_CHARS else line[:TITLE_CHARS - 1] + "…"
    return "(empty)"


def chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """``text`` in pieces of at most ``size`` characters, cut at white space where there is
    some in the last fifth of a piece."""
    out = []
    rest = text.strip()
    while len(rest) > size:
        cut = max(rest.rfind(" ", size * 4 // 5, size), rest.rfind("\n", size * 4 // 5, size))
        cut = cut if cut > 0 else size
        out.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest or not out:
        out.append(rest)
    return out


def _as_text(data: bytes) -> str | None:
    """Output bytes as text (a character the head or the tail cut in two is replaced), or
    None when they are not text: more than one byte in twenty is not UTF-8."""
    text = data.decode("utf-8", errors="replace")
    return None if text.count("\ufffd") > 2 + len(text) // 20 else text


def task_output_text(f: FinishedTask) -> str:
    """The remembered part of a task's output (see the module's docstring)."""
    if not f.output_bytes:
        return ""
    head = _as_text(f.output_head)
    tail = _as_text(f.output_tail) if f.output_tail else ""
    if head is None or tail is None:
        return f"(output: {f.output_bytes} bytes, not text)"
    if not f.output_tail:
        return head
    left_out = f.output_bytes - len(f.output_head) - len(f.output_tail)
    return f"{head}\n[... {left_out} bytes of output left out ...]\n{tail}"


def _stable_id(*parts: object) -> str:
    """An automatic memory's id, the same whoever makes it (the same work is one memory)."""
    return "m-" + hashlib.sha256(" ".join(map(str, parts)).encode()).hexdigest()[:16]


def _chunked(body: str, title: str) -> list[str]:
    parts = chunks(body)
    return [p if i == 0 else f"{title}\n{p}" for i, p in enumerate(parts)]


def task_memories(f: FinishedTask) -> list[Memory]:
    """A finished task as memories (one per chunk)."""
    task = f.task
    prompt = task.prompt if len(task.prompt) <= PROMPT_CHARS else task.prompt[:PROMPT_CHARS] + "…"
    body = prompt
    output = task_output_text(f)
    if output.strip():
        body += "\n\n" + output
    if task.state is TaskState.FAILED and task.error:
        body += "\n\nfailed: " + task.error[:ERROR_CHARS]
    title = title_of(task.prompt)
    parts = _chunked(body, title)
    meta_base = {"state": task.state.value, "exit_code": task.exit_code,
                 "tokens_in": task.tokens_in, "tokens_out": task.tokens_out,
                 "cost_usd": task.cost_usd, "attempts": task.attempts,
                 "output_bytes": f.output_bytes,
                 "output_cut": bool(f.output_tail) or len(task.prompt) > PROMPT_CHARS}
    role = task.target_role or (f.agent_roles[0] if f.agent_roles else None)
    return [Memory(id=_stable_id("task", task.id, task.attempts, i), kind="task", title=title,
                   text=text, source="auto", created_at=task.completed_at or now(),
                   task_id=task.id, agent_id=task.agent_id, role=role,
                   meta={**meta_base, "chunk": i + 1, "chunks": len(parts)})
            for i, text in enumerate(parts)]


def context_memories(entry: ContextEntry) -> list[Memory]:
    """A version of a shared context document as memories: its key, then its value."""
    value = entry.value[:MAX_NOTE_CHARS]
    title = f"context {entry.key} (version {entry.version})"
    parts = _chunked(f"{entry.key}\n{value}", title)
    return [Memory(id=_stable_id("context", entry.key, entry.version, i), kind="context",
                   title=title, text=text, source="auto", created_at=entry.updated_at,
                   agent_id=entry.updated_by,
                   meta={"key": entry.key, "version": entry.version, "chunk": i + 1,
                         "chunks": len(parts)})
            for i, text in enumerate(parts)]


def note_memories(text: str, kind: str, source: str, task_id: str | None,
                  agent_id: str | None, role: str | None) -> list[Memory]:
    """A note (or a context someone adds by hand) as memories, one per chunk."""
    title = title_of(text)
    parts = _chunked(text, title)
    t = now()
    group = secrets.token_hex(8)
    return [Memory(id=f"m-{group}" if len(parts) == 1 else f"m-{group}-{i + 1}", kind=kind,
                   title=title, text=part, source=source, created_at=t, task_id=task_id,
                   agent_id=agent_id, role=role,
                   meta={} if len(parts) == 1 else {"chunk": i + 1, "chunks": len(parts)})
            for i, part in enumerate(parts)]


#: Endings taken off a word to find its stem (longest first), leaving at least three letters.
_SUFFIXES = ("ations", "ation", "ings", "ing", "ers", "ies", "ied", "ed", "er", "es", "ly", "s")


def stem(word: str) -> str:
    """A crude English stem: ``listing`` -> ``list``, ``headers`` -> ``head``, ``uses`` ->
    ``use``; a word of a text matches a query word when it starts with the query word's stem
    (close to what the stores' full-text search matches, which stems properly)."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[:-len(suffix)]
    return word


def query_terms(text: str) -> list[str]:
    """The words a keyword search looks for: lower case, each once, common words left out
    (unless the query has no others), at most MAX_TERMS."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))
    kept = [w for w in words if w not in STOPWORDS]
    return (kept or words)[:MAX_TERMS]


def snippet(text: str, terms: list[str], width: int = 240) -> str:
    """A line of ``text`` around the first place a query word appears (a word starting with
    its stem), else its beginning; white space folded."""
    flat = _SPACE.sub(" ", text).strip()
    if len(flat) <= width:
        return flat
    low = flat.lower()
    at = -1
    for term in terms:
        found = re.search(r"\b" + re.escape(stem(term)), low)
        if found is not None and (at < 0 or found.start() < at):
            at = found.start()
    start = 0 if at < width // 3 else at - width // 3
    piece = flat[start:start + width]
    return ("…" if start else "") + piece + ("…" if start + width < len(flat) else "")
