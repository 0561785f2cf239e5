"""Following the event log: one follower that every reader (``follow``, the dashboards) uses."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Self

from podium import limits
from podium.models import Event
from podium.service.base import SAFETY_POLL_S, ServiceBase
from podium.service.tasks import task_id_of
from podium.store import Store

#: The most events one read of a follower returns.
FOLLOW_BATCH = 1000
#: The events after which a task is finished for good (``follow`` of one task ends there).
FINISHING_KINDS = frozenset({"task.completed", "task.failed", "task.cancelled"})


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
            #: Whether the log may hold events after ``cursor`` that no wake-up will announce
            #: (the waiter was made before the cursor was taken; a full batch leaves some).
            self._unread = True
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
        woken = False
        while not self._stopped.is_set():
            if self._unread:
                if not woken:  # (wake-ups waiting now are for events this read will see)
                    self._waiter.wait(0)
                batch = self._store.read_events(self.cursor, FOLLOW_BATCH, self._task_id)
                if batch:
                    self.cursor = batch[-1].id
                    # A short batch was all there was: an event committed after the read is
                    # a wake-up that ``wait`` will see, so the next poll waits before reading.
                    self._unread = len(batch) == FOLLOW_BATCH
                    return batch
            left = SAFETY_POLL_S if deadline is None else deadline - time.monotonic()
            if left <= 0 and self._unread:
                break
            self._waiter.wait(max(0.0, min(left, SAFETY_POLL_S)))
            self._unread = woken = True
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
        """Events after ``after``, oldest first; only ``task_id``'s when given (a unique prefix
        of its id will do; an unknown task is ``NotFound``, as everywhere)."""
        after, limit = limits.event_id(after), limits.list_limit(limit)
        task_id = limits.optional_name(task_id, "task id")
        if task_id is not None:
            task_id = task_id_of(self.store, task_id)
            self.store.task_state(task_id)  # (NotFound for none such: not an empty page)
        return self.store.read_events(after, limit, task_id)

    def follow(self, after: int | None = None, idle_timeout: float | None = None,
               task_id: str | None = None) -> Iterator[Event]:
        """Yield events as they are committed, from ``after`` (default: from now on), only the
        events of ``task_id`` when it is given.

        Stops when ``idle_timeout`` seconds pass without a new event (None: never), and, when
        following one task, after the event that finished it (at once if it had finished
        before ``after``'s point: from now on, nothing more will come). An unknown task is
        ``NotFound``.
        """
        idle_timeout = limits.wait_timeout(idle_timeout, "idle timeout")
        if task_id is not None:  # (a unique prefix of its id will do)
            task_id = task_id_of(self.store, task_id)
        with self.follower(after, task_id) as events:
            if task_id is not None:  # (an unknown one: NotFound now, not a silent wait)
                # Read after the follower took its cursor: a task finishing in between is seen.
                task = self.store.get_task(task_id)
                if after is None and task.state.finished:
                    return
            while batch := events.poll(idle_timeout):
                for ev in batch:
                    yield ev
                    if task_id is not None and ev.kind in FINISHING_KINDS:
                        return

    def follower(self, after: int | None = None, task_id: str | None = None) -> EventFollower:
        """An ``EventFollower`` from ``after`` (default: from now on), only the events of
        ``task_id`` when it is given: ``follow`` for a thread that must stop on request."""
        after = None if after is None else limits.event_id(after)
        return EventFollower(self.store, after,
                             None if task_id is None else task_id_of(self.store, task_id))
