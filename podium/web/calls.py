"""Service calls from the event loop: each runs on a worker thread, so that the loop (and with
it every other request and the live stream) never waits for the store.

The service is synchronous and thread-safe: a SQLite store serialises its one connection
with a lock, a PostgreSQL store hands each call a connection from its pool. So one ``Podium``
serves every thread; its calls run on a pool of worker threads of their own (``THREADS``), not
the default one that the file responses use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")

#: Worker threads for service calls (``up`` and ``down`` take one for seconds each).
THREADS = 16


class ServiceCalls:
    """Runs blocking service calls on worker threads, at most ``threads`` at a time."""

    def __init__(self, threads: int = THREADS):
        self._threads = threads
        self._limiter: anyio.CapacityLimiter | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._limiter is None:  # (made in the event loop that uses it)
            self._limiter = anyio.CapacityLimiter(self._threads)
        return await anyio.to_thread.run_sync(functools.partial(fn, *args),
                                              limiter=self._limiter)
