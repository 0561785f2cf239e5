"""The live event stream: ONE follower of the event log per server process, fanned out to
every open WebSocket (``/api/events/ws?after=CURSOR``).

``EventHub`` follows the log on a daemon thread (the service's ``EventFollower``, woken by the
store as events are committed) over a service and store connection of its own: sharing the
API's, an event waited behind every slow API call (SQLite serialises one connection's calls;
with two clients searching 100,000 prompts, p50 188 ms from commit to socket instead of 1.3
ms). It follows only while a socket is open: an idle ``podium web`` reads and encodes nothing
(a burst of events costs it no CPU); the first socket to open starts it from the store's last
event (the window then starts there too: a socket already open catches up by its cursor).
It turns each event into its JSON text once, and hands each batch to the event loop
(``call_soon_threadsafe``), which keeps the latest ``WINDOW`` events in memory and offers the
batch to every socket's own bounded queue without waiting; a batch's frame text is made once,
for all the sockets that send it whole (all of them, but one catching up). A socket whose
queue is full (its client reads slower than events come) is marked behind and its queue
emptied: it then catches up by its cursor, from the window or from the store, while the others
go on. Neither the follower nor any other socket ever waits for it; one that cannot take a
frame for ``SEND_TIMEOUT_S`` is closed with code 4000 ("too slow"; a client whose buffers are
full may only see the connection drop), and the page reconnects from its cursor.

Each socket's frames are text ``{"rows": [...], "cursor": N}``, events oldest first with ids
strictly increasing, ``cursor`` the last id sent. An event is a row: the JSON array
``[id, at, kind, agent_id, task_id, data]`` (``payloads.EVENT_ROW``; ``at`` in Unix seconds,
no ISO ``ts`` as ``/api/events`` has), which the page's ``live.js`` (``frameEvents``) turns back
into the event object. Rows make a frame a third smaller than objects did, and bytes are most
of what a frame costs the server and each browser. On connect, ``after=N`` first sends every
event with id > N (from the window, or the store when older than the window), then the live
ones, so that a page that reconnects with its cursor misses none and gets none twice; without
``after``, the stream starts now, with a first frame that holds no events and the cursor.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import anyio
from starlette.websockets import WebSocket

from podium import limits
from podium.errors import InvalidInput, PodiumError
from podium.service import EventFollower, Podium
from podium.web import payloads
from podium.web.calls import ServiceCalls

_log = logging.getLogger("podium.web")

#: Events kept in memory for sockets that reconnect or fall behind, and the most text they
#: hold (live output makes big events).
WINDOW = 10_000
WINDOW_CHARS = 16 * 1024 * 1024
#: Batches a socket's queue holds before the socket counts as behind.
QUEUE_BATCHES = 256
#: The most events in one frame, and the text a frame holds at most beyond its first event.
FRAME_EVENTS = 1000
FRAME_CHARS = 512 * 1024
#: A socket that cannot take a frame for this long is closed (4000, "too slow").
SEND_TIMEOUT_S = 10.0
#: How long the follower waits before reading again when the store could not be read.
RETRY_S = 1.0
TOO_SLOW = 4000

#: An event as the stream holds it: its id and its JSON text (``payloads.event_row``).
Item = tuple[int, str]


class _Mark:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Put in a queue: the socket fell behind (catch up by cursor); the hub closed (end).
BEHIND = _Mark("BEHIND")
CLOSED = _Mark("CLOSED")


class Batch:
    """Events the follower handed over together (oldest first), and their frames' text, made
    once for all the sockets that send the batch whole."""

    def __init__(self, items: list[Item]):
        self.items = items
        self._texts: list[str] | None = None

    def texts(self) -> list[str]:
        if self._texts is None:
            self._texts = frame_texts(self.items, self.items[-1][0])
        return self._texts


class Subscription:
    """One socket's place in the fan-out: a bounded queue of batches, and whether it fell
    behind. Used on the event loop only."""

    def __init__(self, size: int):
        self.queue: asyncio.Queue[Batch | _Mark] = asyncio.Queue(size)
        self.behind = False

    def offer(self, batch: Batch) -> bool:
        """Queue a batch; False when the queue is full: the socket falls behind now."""
        if self.behind:
            return True
        try:
            self.queue.put_nowait(batch)
            return True
        except asyncio.QueueFull:
            self.behind = True
            self._empty()
            self.queue.put_nowait(BEHIND)
            return False

    def catch_up(self) -> None:
        """What is queued no longer follows on the socket's cursor: catch up by cursor."""
        if not self.behind:
            self.behind = True
            self._empty()
            self.queue.put_nowait(BEHIND)

    def close(self) -> None:
        self._empty()
        self.queue.put_nowait(CLOSED)

    def _empty(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()


def frame(items: list[Item], cursor: int) -> str:
    return f'{{"rows":[{",".join(text for _, text in items)}],"cursor":{cursor}}}'


def frame_texts(items: list[Item], cursor: int) -> list[str]:
    """The frames that send ``items`` (each at most ``FRAME_CHARS`` of events, but one event
    at least), the last one saying ``cursor``."""
    return [frame(part, part[-1][0] if part else cursor) for part in _frames(items)]


def _frames(items: list[Item]) -> list[list[Item]]:
    """``items`` cut into frames of at most ``FRAME_CHARS`` of text (one event at least)."""
    parts: list[list[Item]] = [[]]
    size = 0
    for item in items:
        if parts[-1] and size + len(item[1]) > FRAME_CHARS:
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += len(item[1])
    return parts


class EventHub:
    """The process's one event follower and the sockets it feeds (see the module)."""

    def __init__(self, podium: Podium, calls: ServiceCalls, window: int = WINDOW,
                 queue_batches: int = QUEUE_BATCHES):
        self._podium = podium
        self._calls = calls
        self._window = window
        self._queue_batches = queue_batches
        self._ids: list[int] = []
        self._texts: list[str] = []
        self._chars = 0  # (of the texts)
        #: The last event id handed to the loop; every event with an id above ``floor`` up to
        #: it is in the window.
        self.cursor = 0
        self.floor = 0
        self._subs: set[Subscription] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._follower: EventFollower | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        #: Set while a socket is open (the thread follows the log only then); ``_live`` while
        #: ``cursor`` is the follower's (set on the loop once the follower started).
        self._wanted = threading.Event()
        self._live: asyncio.Event | None = None
        self._own: Podium | None = None  # (the service the hub opened for itself)
        self.closed = False
        #: How often a socket fell behind, and how many reads a catch-up made from the store.
        self.fell_behind = 0
        self.store_reads = 0

    # -- the follower thread ------------------------------------------------------------
    def start(self) -> None:
        """Start the follower thread (in the event loop that serves the sockets), on a
        connection of its own to the service's store: it follows from the first socket on."""
        self._loop = asyncio.get_running_loop()
        self._live = asyncio.Event()
        self._podium = Podium.open(self._podium.url, create=False)
        self._own = self._podium
        self._thread = threading.Thread(target=self._follow, name="podium-web-events",
                                        daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        follower: EventFollower | None = None
        try:
            while not self._stopping.is_set():
                if not self._wanted.is_set():  # (no socket open: read nothing until one is)
                    if follower is not None:
                        follower.close()
                        follower = self._follower = None
                        if not self._post(self._pause):
                            return
                    self._wanted.wait()
                    continue
                try:
                    if follower is None:
                        follower = self._follower = self._podium.follower()
                        if self._stopping.is_set():  # (stop() saw no follower to stop)
                            break
                        if not self._post(self._resume, follower.cursor):
                            return
                    batch = follower.poll(None)
                except PodiumError as e:
                    _log.warning("podium web: cannot read the event log: %s", e)
                    self._stopping.wait(RETRY_S)
                    continue
                if not batch:
                    continue
                if not self._post(self._publish, [(ev.id, payloads.event_row(ev))
                                                  for ev in batch]):
                    return
        except Exception:
            _log.exception("podium web: the event follower stopped")
        finally:
            if follower is not None:
                follower.close()

    def _post(self, fn: Callable[..., None], *args: Any) -> bool:
        """Run ``fn(*args)`` on the event loop; False when the loop is closed (the server
        is gone)."""
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
            return True
        except RuntimeError:
            return False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the follower thread and end every socket's stream."""
        self.closed = True
        self._stopping.set()
        follower = self._follower
        if follower is not None:
            follower.stop()
        self._wanted.set()  # (wakes the thread when it waits for a socket)
        for sub in list(self._subs):
            sub.close()
        if self._live is not None:
            self._live.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._own is not None and (self._thread is None or not self._thread.is_alive()):
            self._own.close()
            self._own = None

    # -- on the event loop --------------------------------------------------------------
    def _resume(self, cursor: int) -> None:
        """The follower (re)started at ``cursor``: the window holds what came before only if
        nothing was committed meanwhile; a socket open now catches up by its cursor."""
        if cursor != self.cursor:
            self._ids, self._texts, self._chars = [], [], 0
            self.cursor = self.floor = cursor
            for sub in self._subs:
                sub.catch_up()
        assert self._live is not None
        self._live.set()

    def _pause(self) -> None:
        """The follower stopped (no socket open): ``cursor`` grows old."""
        if self._live is not None and not self.closed:
            self._live.clear()

    def _publish(self, items: list[Item]) -> None:
        self._ids += [i for i, _ in items]
        self._texts += [t for _, t in items]
        self._chars += sum(len(t) for _, t in items)
        self.cursor = items[-1][0]
        if len(self._ids) > 2 * self._window or self._chars > 2 * WINDOW_CHARS:
            self._trim()
        batch = Batch(items)
        for sub in self._subs:
            if not sub.offer(batch):
                self.fell_behind += 1

    def _trim(self) -> None:
        """Forget the oldest events, down to ``window`` of them and ``WINDOW_CHARS`` of text
        (in steps: a trim every ``window`` events at most)."""
        cut = max(0, len(self._ids) - self._window)
        chars = self._chars - sum(len(t) for t in self._texts[:cut])
        while cut < len(self._ids) - 1 and chars > WINDOW_CHARS:
            chars -= len(self._texts[cut])
            cut += 1
        if cut:
            self.floor = self._ids[cut - 1]
            del self._ids[:cut], self._texts[:cut]
            self._chars = chars

    def subscribe(self) -> Subscription:
        sub = Subscription(self._queue_batches)
        if self.closed:
            sub.close()
        self._subs.add(sub)
        self._wanted.set()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        if not self._subs and not self.closed:
            self._wanted.clear()

    async def _current_cursor(self) -> int:
        """``cursor`` once the follower runs (a socket starts it: see ``subscribe``)."""
        assert self._live is not None
        await self._live.wait()
        return self.cursor

    async def _read(self, cursor: int, upto: int) -> list[Item]:
        """Events after ``cursor`` up to ``upto`` (at most ``FRAME_EVENTS``): from the window
        when it holds them, else from the store."""
        if cursor >= self.floor:
            i = bisect.bisect_right(self._ids, cursor)
            j = min(bisect.bisect_right(self._ids, upto), i + FRAME_EVENTS)
            return list(zip(self._ids[i:j], self._texts[i:j]))

        def read() -> list[Item]:
            return [(ev.id, payloads.event_row(ev))
                    for ev in self._podium.events(cursor, FRAME_EVENTS) if ev.id <= upto]
        self.store_reads += 1
        return await self._calls.run(read)

    async def pump(self, ws: WebSocket, sub: Subscription, after: int | None) -> None:
        """Send ``ws`` every event after ``after`` (None: from now), then the live ones, until
        the hub closes or the socket does (or is too slow)."""
        now = await self._current_cursor()
        cursor = now if after is None else after
        catch_up, first = True, True
        while True:
            if catch_up or sub.behind:
                # From here on every batch is in the queue: what came before, up to the hub's
                # cursor now, is read by cursor.
                sub.behind, catch_up = False, False
                while not sub.queue.empty():
                    if sub.queue.get_nowait() is CLOSED:
                        return
                upto = self.cursor
                while cursor < upto:
                    items = await self._read(cursor, upto)
                    if not items:
                        cursor = upto  # (none left there: pruned meanwhile)
                        break
                    if not await self._send(ws, items, items[-1][0]):
                        return
                    cursor, first = items[-1][0], False
                if first:  # (nothing to catch up: the client learns the cursor)
                    if not await self._send(ws, [], cursor):
                        return
                    first = False
                continue
            got = await sub.queue.get()
            if got is CLOSED:
                return
            if got is BEHIND:
                continue
            assert isinstance(got, Batch)
            if got.items[0][0] > cursor and sub.queue.empty():  # (the usual case)
                if not await self._send_texts(ws, got.texts()):
                    return
                cursor = got.items[-1][0]
                continue
            items = [it for it in got.items if it[0] > cursor]
            while items and len(items) < FRAME_EVENTS and not sub.queue.empty():
                more = sub.queue.get_nowait()  # (whatever else waits goes in the same frame)
                if more is CLOSED:
                    sub.queue.put_nowait(more)  # (ends the stream once this frame is sent)
                if isinstance(more, _Mark):
                    break
                items += [it for it in more.items if it[0] > cursor]
            if items:
                if not await self._send(ws, items, items[-1][0]):
                    return
                cursor = items[-1][0]

    async def _send(self, ws: WebSocket, items: list[Item], cursor: int) -> bool:
        """Send ``items`` (in frames of at most ``FRAME_CHARS``, the last one saying
        ``cursor``); False when the socket is gone, or was closed as too slow."""
        return await self._send_texts(ws, frame_texts(items, cursor))

    async def _send_texts(self, ws: WebSocket, texts: list[str]) -> bool:
        """Send these frames; False when the socket is gone, or was closed as too slow."""
        try:
            for text in texts:
                with anyio.fail_after(SEND_TIMEOUT_S):
                    await ws.send_text(text)
            return True
        except TimeoutError:
            with anyio.move_on_after(1), contextlib.suppress(Exception):
                await ws.close(TOO_SLOW, "too slow")
            return False
        except Exception:  # (closed by the client or the server meanwhile)
            return False

    # -- the WebSocket route ------------------------------------------------------------
    async def endpoint(self, ws: WebSocket) -> None:
        after_text = ws.query_params.get("after")
        after: int | None = None
        await ws.accept()
        if after_text:
            try:
                after = limits.event_id(int(after_text))
            except (ValueError, InvalidInput):
                await ws.close(1008, f"bad after {after_text[:40]!r}: an event id")
                return
        sub = self.subscribe()
        try:
            async with anyio.create_task_group() as tg:
                async def watch_close() -> None:
                    with contextlib.suppress(Exception):  # (a socket closed meanwhile)
                        while (await ws.receive())["type"] != "websocket.disconnect":
                            pass  # (what the client sends is not read)
                    tg.cancel_scope.cancel()
                tg.start_soon(watch_close)
                await self.pump(ws, sub, after)
                tg.cancel_scope.cancel()
        finally:
            self.unsubscribe(sub)
        with anyio.move_on_after(1), contextlib.suppress(Exception):
            await ws.close(1001 if self.closed else 1000)
