"""Small helpers shared by the test files (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import time


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
