"""Small helpers shared by the test files (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def all_events(store, task_id: str | None = None) -> list:
    """Every event in the store (or of one task), oldest first, read through the cursor."""
    out, after = [], 0
    while True:
        batch = store.read_events(after, 1000, task_id)
        if not batch:
            return out
        out.extend(batch)
        after = batch[-1].id


def error_line(p: subprocess.CompletedProcess, code: int = 1) -> str:
    """The one ``podium: error:`` line of a failed run (and nothing on stdout)."""
    assert b"Traceback" not in p.stdout + p.stderr, p.stderr.decode("utf-8", "replace")
    assert p.returncode == code, f"exit {p.returncode}: {p.stderr!r}"
    lines = p.stderr.decode("utf-8").splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("podium: error: "), lines
    assert p.stdout == b""
    return lines[0]


def snapshot(podium) -> dict:
    """Everything a command could change in the store (heartbeat times aside)."""
    s = podium.store
    agents = s.list_agents()
    return {
        "tasks": [t.to_dict() for t in s.list_tasks(limit=100_000, with_output=True)],
        "agents": [{k: v for k, v in a.to_dict().items() if k != "last_heartbeat"}
                   for a in agents],
        "messages": {a.id: [m.to_dict() for m in s.list_messages(a.id, limit=100_000)]
                     for a in agents},
        "context": [e.to_dict() for e in s.list_context()],
        "events": s.last_event_id(),
    }


def files_under(path: Path) -> set[str]:
    """Every file and directory below ``path``, relative to it."""
    return {str(p.relative_to(path)) for p in path.rglob("*")}
