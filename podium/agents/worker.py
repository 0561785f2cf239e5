"""The worker: one agent process that pulls tasks it may take and runs them.

Life of a worker: register; then loop — claim the next task (its own id, one of its roles, or
anyone's), run it through the backend, record the result and claim the next one in the same
transaction; when nothing is queued, sleep on the store's wake-up channel until a task arrives
(or the heartbeat is due). A task added while the worker waits is usually handed to it by the
adder's own transaction: the wake-up says so (a hint, never the task itself: the worker reads
what was handed to it from the store) and the worker starts it without a claim of its own (its
first heartbeat, or its result, records the start). While a task runs the worker heartbeats (extending the lease), and stops the backend on cancel,
on timeout, or when the lease was lost.

Signals: SIGTERM stops now — the running task is killed and handed back to the queue without
counting the attempt — then the agent deregisters. SIGINT drains — the running task finishes —
and a second SIGINT acts as SIGTERM.
"""

from __future__ import annotations

import codecs
import os
import queue
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from podium import orphans
from podium.agents import reaper
from podium.agents.backends import MAX_OUTPUT_BYTES, Backend, Run
from podium.errors import StoreError, StoreUnavailable
from podium.models import Outcome, Task, TaskState
from podium.prompt import compose
from podium.store import Finish, Store

#: Tasks an inline (in-process, instant) backend claims per transaction.
CLAIM_BATCH = int(os.environ.get("PODIUM_CLAIM_BATCH", 64))
#: Streamed output events are flushed at most this often, and stop after this many bytes.
STREAM_INTERVAL_S = 0.2
STREAM_LIMIT_BYTES = 1024 * 1024


class _OutputStream:
    """Batches a running task's output into ``task.output`` events."""

    def __init__(self, store: Store, agent_id: str, task_id: str):
        self.store, self.agent_id, self.task_id = store, agent_id, task_id
        self.decoder = None  # (made with the first output: a task starts sooner without it)
        self.pending: list[str] = []
        self.sent = 0
        self.last = time.monotonic()
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = None
        self.closed = False

    def emit(self, chunk: bytes) -> None:
        with self.lock:
            if self.sent >= STREAM_LIMIT_BYTES:
                return
            self.sent += len(chunk)
            if self.decoder is None:
                self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
            self.pending.append(self.decoder.decode(chunk))
            if time.monotonic() - self.last >= STREAM_INTERVAL_S:
                self._flush()
            elif self.timer is None:
                # The program may go quiet after this chunk: flush it soon even if no more comes.
                self.timer = threading.Timer(STREAM_INTERVAL_S, self._flush_later)
                self.timer.daemon = True
                self.timer.start()

    def _flush_later(self) -> None:
        with self.lock:
            self.timer = None
            if not self.closed:
                self._flush()

    def _flush(self) -> None:
        text = "".join(self.pending)
        self.pending.clear()
        self.last = time.monotonic()
        if text:
            data = {"chunk": text}
            if self.sent >= STREAM_LIMIT_BYTES:
                data["stream_truncated"] = True
            try:
                self.store.add_event("task.output", self.agent_id, self.task_id, data)
            except StoreUnavailable:
                pass  # live output is best effort; the result keeps all of it

    def close(self) -> None:
        with self.lock:
            self.closed = True
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if self.decoder is not None:
                self.pending.append(self.decoder.decode(b"", final=True))
            self._flush()


class _Runner:
    """One long-lived thread that runs backends, so that a task does not wait for a new thread
    to start (0.25 ms on an idle machine here, against 0.04 ms to wake this one)."""

    def __init__(self, name: str):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def close(self) -> None:
        self._jobs.put(None)


class Worker:
    def __init__(
        self,
        store: Store,
        name: str,
        backend: Backend,
        roles: list[str] | None = None,
        lease_s: float = 30.0,
        heartbeat_s: float | None = None,
        workdir: Path | None = None,
        max_output: int = MAX_OUTPUT_BYTES,
        log: Callable[[str], None] | None = None,
        meta: dict | None = None,
        echo_output: bool = False,
    ):
        self.store = store
        self.name = name
        self.backend = backend
        self.roles = list(roles or [])
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s or max(0.2, lease_s / 6)
        self.workdir = Path(workdir or os.getcwd())
        self.max_output = max_output
        self.log = log or self._log_to_stderr
        self.meta = meta or {}
        tmux = os.environ.get("TMUX")
        if tmux and os.environ.get("TMUX_PANE"):  # running in a pane: say which, for `down`
            self.meta.update(pane=os.environ["TMUX_PANE"], tmux_socket=tmux.split(",")[0],
                             tmux_session=os.environ.get("PODIUM_TMUX_SESSION"))
        self.echo_output = echo_output
        self._base_env: dict[str, str] | None = None
        self._spare_env: dict[str, str] | None = None
        self._done = threading.Event()
        self._context: tuple[int | None, list] = (None, [])
        self.stop: str | None = None  # None, "drain" or "now"
        self.waiter = None
        self._next_heartbeat = 0.0
        self._runner: _Runner | None = None
        # (task id, attempt) of the tasks started lately: a hand-off can reach the worker twice
        # (its wake-up, and a look at the store made before that wake-up was read).
        # (a dict kept as an ordered set of the last 256: looked up, not scanned)
        self._started: dict[tuple[str, int], None] = {}

    def _log_to_stderr(self, msg: str) -> None:
        try:
            print(f"[{self.name}] {msg}", file=sys.stderr, flush=True)
        except OSError:
            pass  # (a full disk under the log file: the worker carries on without it)

    # -- signals ------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.stop is None:
            self.stop = "drain"
        else:
            self.stop = "now"
        if self.waiter is not None:
            self.waiter.poke()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    # -- main loop ----------------------------------------------------------------------
    def run(self) -> int:
        self.backend.check()
        reaper.adopt_orphans()  # (what its tasks' programs leave behind comes back to it)
        self.store.register_agent(
            self.name, self.roles, self.backend.name, socket.gethostname(), os.getpid(),
            self.lease_s, {"workdir": str(self.workdir), **self.meta}, pushable=True)
        self.backend.attach(self.store, self.name)
        # A killed previous run of this agent may have left programs behind whose tasks were
        # taken by a process elsewhere (see podium.orphans): they are not its tasks any more.
        n = orphans.kill(self.store.url, self.name)
        if n:
            self.log(f"killed {n} process group(s) left running by a previous run of {self.name}")
        self.waiter = self.store.agent_waiter(self.name)
        self.log(f"registered (backend {self.backend.name}, roles {self.roles or 'any'}, "
                 f"store {self.store.url})")
        if not self.backend.inline:
            self._spare_env = self._spare()
        finishes: list[Finish] = []
        # In-process instant backends take several tasks per transaction; others one at a time.
        batch = CLAIM_BATCH if self.backend.inline else 1
        self._next_heartbeat = time.monotonic() + self.heartbeat_s
        backoff = 0.0
        give_up: float | None = None
        # Look for tasks handed over before the waiter listened (or whose wake-up was lost).
        look = True
        try:
            while True:
                try:
                    if self.stop:
                        if finishes:
                            self.store.claim_batch(self.name, self.roles, self.lease_s, finishes, 0)
                            finishes = []
                        break
                    if time.monotonic() >= self._next_heartbeat:
                        self._heartbeat()
                    # The finished tasks' results and the next claim: one transaction.
                    handed = self.waiter.handed_over() or look
                    tasks = self.store.claim_batch(self.name, self.roles, self.lease_s,
                                                   finishes, batch, handed)
                    finishes = []
                    if handed:
                        tasks = [t for t in tasks if (t.id, t.attempts) not in self._started]
                    backoff = 0.0
                    look = False
                    if not tasks:
                        # (after a wait with no wake-up at all, look for handed tasks anyway)
                        look = not self.waiter.wait(
                            max(0.0, self._next_heartbeat - time.monotonic()))
                        continue
                    for i, task in enumerate(tasks):
                        if self.stop:  # claimed but not started: back to the queue
                            for rest in tasks[i:]:
                                self.store.release(self.name, rest.id, rest.attempts,
                                                   "worker stopping")
                            break
                        self._started[(task.id, task.attempts)] = None
                        if len(self._started) > 256:
                            del self._started[next(iter(self._started))]
                        outcome = self._execute(task)
                        if not self.backend.inline:  # (programs: the next one's environment)
                            self._spare_env = self._spare()
                        if outcome is not None:
                            finishes.append(Finish(task.id, task.attempts, outcome))
                except StoreUnavailable as e:
                    # The server went away: keep the pending results and try again, backing off.
                    backoff = min(5.0, max(0.1, backoff * 2))
                    self.log(f"store unavailable ({e}); retrying in {backoff:.1f}s")
                    if self.stop and finishes:
                        # Stopping with results still to record: keep trying for a while.
                        give_up = give_up or time.monotonic() + 30
                        if time.monotonic() > give_up:
                            self.log(f"giving up on recording {len(finishes)} result(s); "
                                     "their leases will expire and they will run again")
                            break
                        time.sleep(backoff)
                    else:
                        self._sleep(backoff)
                    if self.stop == "now" and not finishes:
                        break
        finally:
            if self._runner is not None:
                self._runner.close()
            # Free the wake-up socket first: once deregistered, a new agent of the same name
            # may start and bind it.
            self.waiter.close()
            self.waiter = None
            try:
                self.store.deregister(self.name)
            except StoreError as e:
                self.log(f"could not deregister ({e}); the lease will expire instead")
            self.log("stopped")
        return 0

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stop and time.monotonic() < end:
            time.sleep(min(0.05, end - time.monotonic()))

    def _heartbeat(self, task: Task | None = None):
        self._next_heartbeat = time.monotonic() + self.heartbeat_s
        if task is None:
            return self.store.heartbeat(self.name, self.lease_s)
        return self.store.heartbeat(self.name, self.lease_s, task.id, task.attempts)

    def _spare(self) -> dict[str, str]:
        if self._base_env is None:  # os.environ is slow to copy: do it once per worker
            self._base_env = dict(os.environ, PODIUM_AGENT_ID=self.name,
                                  PODIUM_STORE=self.store.url)
            self._base_env.pop("PODIUM_TASK_CONTEXT", None)
        return dict(self._base_env)

    def _env(self, task: Task) -> dict[str, str]:
        # The copy for the next task is made after this one (see run): copying costs ~0.1 ms
        # on the cold CPU a task wakes up to, and only ~2 µs once the worker is running.
        env, self._spare_env = self._spare_env or self._spare(), None
        env["PODIUM_TASK_ID"] = task.id
        if task.context and len(task.context) < 25_000:  # well under one argument's limit
            env["PODIUM_TASK_CONTEXT"] = task.context
        return env

    def _shared_context(self, task: Task) -> list:
        """Shared context, read again only when the claim says it changed."""
        gen = task.context_generation
        if gen is None or gen != self._context[0]:
            self._context = (gen, self.store.list_context())
        return self._context[1]

    @staticmethod
    def _tee(emit: Callable[[bytes], None]) -> Callable[[bytes], None]:
        def both(chunk: bytes) -> None:
            emit(chunk)
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
        return both

    def _execute(self, task: Task) -> Outcome | None:
        """Run one claimed task; None when it was handed back because the worker is stopping."""
        prompt = task.prompt
        if self.backend.takes_context:
            prompt = compose(task.prompt, task.context, self._shared_context(task))
        stream = _OutputStream(self.store, self.name, task.id)
        emit = stream.emit
        if self.echo_output:  # a worker in a tmux pane shows its tasks live
            self.log(f"▶ {task.id}: {task.prompt[:200]}")
            emit = self._tee(stream.emit)
        run = Run(task=task, prompt=prompt, workdir=self.workdir, env=self._env(task),
                  emit=emit, max_output=self.max_output)
        deadline = time.monotonic() + task.timeout_s if task.timeout_s else None
        result: list[Outcome] = []
        done = self._done  # (one Event per worker: building one costs ~20 µs on a cold CPU)
        done.clear()

        def target() -> None:
            try:
                result.append(self.backend.run(run))
            except Exception as e:  # a backend bug must not kill the worker
                result.append(Outcome(TaskState.FAILED, error=f"{type(e).__name__}: {e}"))
            finally:
                done.set()
                waiter = self.waiter
                if threaded and waiter is not None:
                    waiter.poke()  # the worker's thread is waiting for this run to end

        began = time.time()
        threaded = not (self.backend.inline and deadline is None)
        if not threaded:
            target()
        else:
            if self._runner is None:
                self._runner = _Runner(f"{self.name}-runner")
            self._runner.submit(target)
            if task.started_at is None:
                # Handed over by the adder: the first heartbeat records the start. Not at once:
                # most short tasks end first and their result records it.
                self._next_heartbeat = min(self._next_heartbeat, time.monotonic() + 0.05)
            while not done.is_set():
                wait_until = self._next_heartbeat
                if deadline is not None and not run.cancelled:
                    wait_until = min(wait_until, deadline)
                woke = self.waiter.wait(max(0.0, wait_until - time.monotonic()))
                if done.is_set():
                    break
                if self.stop == "now" and not run.cancelled:
                    run.cancel("worker stopping")
                if deadline is not None and time.monotonic() >= deadline and not run.cancelled:
                    run.cancel(f"timed out after {task.timeout_s:g}s", timed_out=True)
                try:
                    if time.monotonic() >= self._next_heartbeat:
                        reply = self._heartbeat(task)
                        if reply.lost and not run.cancelled:
                            state = reply.task_state.value if reply.task_state else "lost"
                            run.cancel(f"task {state}")
                    elif woke and not run.cancelled:
                        if self.store.task_state(task.id) is TaskState.CANCELLED:
                            run.cancel("cancelled")
                except StoreUnavailable as e:
                    self.log(f"store unavailable while running {task.id} ({e}); still running")
        stream.close()
        outcome = result[0]
        outcome.started_at = began
        if run.cancelled:
            if run.cancel_reason == "worker stopping":
                self.store.release(self.name, task.id, task.attempts, "worker stopping")
                self.log(f"task {task.id} handed back to the queue")
                return None
            outcome.status = TaskState.FAILED if run.timed_out else TaskState.CANCELLED
            outcome.error = run.cancel_reason
        if self.echo_output:
            self.log(f"■ {task.id} {outcome.status.value}" + (f": {outcome.error}" if outcome.error else ""))
        return outcome
