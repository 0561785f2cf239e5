"""Following the event log: one follower that every reader (``follow``, the dashboards) uses."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Self

from podium import limits
from podium.models import Event
from podium.service.base import SAFETY_POLL_S, ServiceBase
from podium.store import Store

#: The most events one read of a follower returns.
FOLLOW_BATCH = 1000


class EventFollower:
    """The event log read on from a cursor, as events are committed.

    One thread calls ``poll`` and finally ``close``; ``stop``, from any thread, ends a ``poll``
    waiting now and every one after it.
    """

    def __init__(self, store: Store, after: int | None = None, task_id: str | None = None):
        self._store = store
        self._task_id = task_id
        self._stopped = threading.Event()
        self._closing = threading.Lock()  # a poke never reaches a closed waiter's descriptors
        self._closed = False
        self._waiter = store.event_waiter()
        try:
            #: The id of the last event read (events after it come next).
            self.cursor = store.last_event_id() if after is None else after
        except BaseException:
            self._waiter.close()
            raise

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def poll(self, timeout: float | None = None) -> list[Event]:
        """The next events (at most ``FOLLOW_BATCH``, oldest first), waiting up to ``timeout``
        seconds (None: for ever) for one to be committed; [] when none was, or once stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stopped.is_set():
            batch = self._store.read_events(self.cursor, FOLLOW_BATCH, self._task_id)
            if batch:
                self.cursor = batch[-1].id
                return batch
            left = SAFETY_POLL_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                break
            self._waiter.wait(min(left, SAFETY_POLL_S))
        return []

    def stop(self) -> None:
        self._stopped.set()
        with self._closing:
            if not self._closed:
                self._waiter.poke()

    def close(self) -> None:
        with self._closing:
            if not self._closed:
                self._closed = True
                self._waiter.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventCalls(ServiceBase):
    def events(self, after: int = 0, limit: int = 1000, task_id: str | None = None) -> list[Event]:
        return self.store.read_events(limits.event_id(after), limits.list_limit(limit),
                                      limits.optional_name(task_id, "task id"))

    def follow(self, after: int | None = None, idle_timeout: float | None = None,
               task_id: str | None = None) -> Iterator[Event]:
        """Yield events as they are committed, from ``after`` (default: from now on), only the
        events of ``task_id`` when it is given.

        Stops when ``idle_timeout`` seconds pass without a new event (None: never).
        """
        idle_timeout = limits.wait_timeout(idle_timeout, "idle timeout")
        with self.follower(after, task_id) as events:
            while batch := events.poll(idle_timeout):
                yield from batch

    def follower(self, after: int | None = None, task_id: str | None = None) -> EventFollower:
        """An ``EventFollower`` from ``after`` (default: from now on), only the events of
        ``task_id`` when it is given: ``follow`` for a thread that must stop on request."""
        after = None if after is None else limits.event_id(after)
        return EventFollower(self.store, after, limits.optional_name(task_id, "task id"))
