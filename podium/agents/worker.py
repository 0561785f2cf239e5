"""The worker: one agent process that pulls the tasks it may take and runs them.

Life of a worker: register; then loop — stop if told to; heartbeat when due; record the results
of what it ran and claim what is next (its own tasks, one of its roles', anyone's) in one
transaction; run what it claimed (``podium.agents.execution``), or, with nothing to run, sleep on
the store's wake-up channel until a task arrives or the heartbeat is due — and at the end
deregister. A task added while the worker waits is usually handed to it by the adder's own
transaction: the wake-up says so (a hint, never the task itself: the worker reads what was
handed to it from the store) and the worker starts it without a claim of its own (its first
heartbeat, or its result, records the start). While the store is unavailable the worker backs
off, keeping the results it has to record. An in-process instant backend (``echo``) claims up
to ``PODIUM_CLAIM_BATCH`` tasks at a time, and a run keeps ``PODIUM_MAX_OUTPUT`` bytes of each
output: both read (``podium.limits``) when the worker is made, a bad value refused before it
registers.

Signals: SIGTERM stops now — the running task is killed and handed back to the queue without
counting the attempt — then the agent deregisters. SIGINT drains — the running task finishes —
and a second SIGINT acts as SIGTERM. Stopping now is bounded whatever the store's state: a
worker told to stop now exits within ``STOP_BUDGET_S``; what it could not write to the store
by then (a result, the hand-back, its deregistration) is left to the task's lease, which
expires and puts the task back in the queue for another agent (``_StopWatchdog``).

A worker that could not beat for a lease (stopped, starved) is found dead, and its name may
then be registered by another worker: its next beat finds the store's row naming that other
process, and it stops without deregistering (``podium.agents.heartbeat``).

While it runs, the worker is also recorded on this host (``podium.agents.local``), so that
``podium down`` can stop it without the store.
"""

from __future__ import annotations

import contextlib
import enum
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from podium import limits, orphans
from podium.agents import local, reaper, registration
from podium.agents.backends import Backend
from podium.agents.execution import STOPPING, RunSupervisor
from podium.agents.heartbeat import Heartbeat
from podium.errors import AgentReplaced, StoreError, StoreUnavailable
from podium.models import Outcome, Task
from podium.prompt import compose
from podium.store import Finish, Store
from podium.store.base import Waiter
from podium.store.pgconnect import redact

if TYPE_CHECKING:
    from podium.service.recall import WorkerMemory

#: A task's log lines wait at most this long for the worker to write them (see ``Worker.note``).
NOTES_FLUSH_S = 1.0
#: A worker told to stop now (SIGTERM, a second SIGINT) exits within this many seconds of the
#: signal, whatever the store's state: ending the run, then recording what it can.
STOP_BUDGET_S = 3.0


class StopMode(enum.Enum):
    """How a worker told to stop stops."""

    DRAIN = "drain"  # (SIGINT) the running task finishes; nothing more is started
    NOW = "now"  # (SIGTERM, a second SIGINT) the running task is handed back to the queue


class StoreBackoff:
    """How long a worker waits after the store failed: 0.1 s, doubling up to 5 s, until a claim
    goes through. Stopping with results still to record, it tries for 30 s, then gives up
    (told to stop now, the worker gives up sooner: see ``STOP_BUDGET_S``)."""

    FIRST_S, MAX_S, GIVE_UP_S = 0.1, 5.0, 30.0

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.delay_s = 0.0
        self._give_up_at: float | None = None

    def next_delay(self) -> float:
        self.delay_s = min(self.MAX_S, max(self.FIRST_S, self.delay_s * 2))
        return self.delay_s

    def reset(self) -> None:
        self.delay_s = 0.0

    def give_up(self) -> bool:
        """Whether a stopping worker should stop trying to record its results: once GIVE_UP_S
        have passed since it first asked."""
        if self._give_up_at is None:
            self._give_up_at = self.clock() + self.GIVE_UP_S
        return self.clock() > self._give_up_at


class Worker:
    """One agent: registers, takes and runs the tasks it may take until told to stop."""

    heartbeat: Heartbeat  # (made by run, once registered)
    _supervisor: RunSupervisor

    def __init__(
        self,
        store: Store,
        name: str,
        backend: Backend,
        roles: list[str] | None = None,
        lease_s: float = 30.0,
        heartbeat_s: float | None = None,
        workdir: Path | None = None,
        max_output: int | None = None,
        log: Callable[[str], None] | None = None,
        meta: dict | None = None,
        echo_output: bool = False,
        memory: WorkerMemory | None = None,
    ):
        # The environment's settings first (``InvalidInput`` for a bad one, nothing made yet):
        # None takes PODIUM_MAX_OUTPUT; an inline backend claims PODIUM_CLAIM_BATCH at a time.
        self.max_output = limits.max_output() if max_output is None else max_output
        # In-process instant backends take several tasks per transaction; others one at a time.
        self._batch = limits.claim_batch() if backend.inline else 1
        self.store = store
        self.name = name
        self.backend = backend
        self.roles = list(roles or [])
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s or max(0.2, lease_s / 6)
        self.workdir = Path(workdir or os.getcwd())
        self.log = log or self._log_to_stderr
        #: An in-process backend's task lines: written with the next flush (the worker waiting
        #: for work, a second after the oldest, or any other log line), not each on its own.
        self.note = log or self._note_to_stderr
        self._notes: list[str] = []
        self._notes_due = 0.0
        self.meta = {**(meta or {}), **_tmux_pane()}
        self.echo_output = echo_output
        #: Recall into prompts; starts the host's memory indexer (podium.service.recall).
        self.memory = memory
        self.stop: StopMode | None = None
        self._stop_deadline: float | None = None  # (monotonic; set when told to stop now)
        self._watchdog: _StopWatchdog | None = None
        self.waiter: Waiter | None = None
        self._results: list[Finish] = []  # of the tasks run, not yet recorded
        # Look for tasks handed over before the waiter listened (or whose wake-up was lost).
        self._look = True
        self._backoff = StoreBackoff()
        self._context: tuple[int | None, list] = (None, [])
        # (task id, attempt) of the tasks started lately: a hand-off can reach the worker twice
        # (its wake-up, and a look at the store made before that wake-up was read).
        # (a dict kept as an ordered set of the last 256: looked up, not scanned)
        self._started: dict[tuple[str, int], None] = {}

    def _log_to_stderr(self, msg: str) -> None:
        self._notes.append(f"[{self.name}] {msg}\n")
        self._flush_notes()

    def _note_to_stderr(self, msg: str) -> None:
        # Two lines a task, each its own write, cost a quick backend's worker ~20 µs a task
        # (drain throughput -27 %, bench/throughput.py): they are written in batches instead.
        if not self._notes:
            self._notes_due = time.monotonic() + NOTES_FLUSH_S
        self._notes.append(f"[{self.name}] {msg}\n")
        if time.monotonic() >= self._notes_due:
            self._flush_notes()

    def _flush_notes(self) -> None:
        if not self._notes:
            return
        text, self._notes = "".join(self._notes), []
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except OSError:
            pass  # (a full disk under the log file: the worker carries on without it)

    # -- signals ------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.stop is None:
            self.stop = StopMode.DRAIN
        else:
            if self.stop is not StopMode.NOW:
                self._stop_deadline = time.monotonic() + STOP_BUDGET_S
            self.stop = StopMode.NOW
        if self.waiter is not None:
            self.waiter.poke()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the worker (see the module's docstring); stopping now is
        bounded by a watchdog (a thread), as in ``podium agent run``."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self._watchdog = _StopWatchdog(STOP_BUDGET_S, self._exit_without_the_store)

    def _exit_without_the_store(self) -> None:
        """The watchdog's end of a stop that the store held up: leave now, the lease for the
        rest. A hard exit: the call that does not return holds the store's lock or connection,
        so neither closing the store nor the interpreter's own exit can be counted on to end.
        No log line is lost: each is flushed as it is written, and this last one goes straight
        to the file descriptor (the stderr object's lock may be held by the blocked thread)."""
        with contextlib.suppress(OSError):  # (the task lines not written yet, first)
            os.write(2, "".join(self._notes).encode())
        with contextlib.suppress(OSError):
            os.write(2, f"[{self.name}] still stopping {STOP_BUDGET_S:g}s after the signal: the "
                        "store does not answer; exiting without it (the task's lease will "
                        "expire and put it back in the queue)\n".encode())
        # The running program's SIGKILL (2 s after its SIGTERM) would die with this process.
        orphans.kill(self.store.url, self.name)
        local.forget(self.store.url, self.name)
        os._exit(0)

    def _stopping_now(self) -> bool:
        return self.stop is StopMode.NOW

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> int:
        """Register, take and run tasks until told to stop, deregister; the exit status."""
        self._register()
        try:
            self._work()
        finally:
            self._deregister()
        return 0

    def _work(self) -> None:
        """Turn after turn: stop check, heartbeat when due, record results and claim, then run
        what was claimed or wait for a wake-up; the store's outages are backed off."""
        while True:
            try:
                if self.stop is not None:
                    self._record_results()
                    return
                if self.heartbeat.replaced is not None:  # (found by a beat, idle or busy)
                    self._give_up_the_name()
                    return
                if self.heartbeat.due():
                    # An idle worker's look for work (a wake-up may have been lost) rides on
                    # its beat: it claims only when the beat saw work waiting.
                    reply = self.heartbeat.beat(roles=self.roles if self._look else None)
                    if self.heartbeat.replaced is not None:
                        continue
                    if reply.work_waiting is False and not self._results:
                        self._look = False
                        self._wait_for_work()
                        continue
                tasks = self._record_and_claim()
                if tasks:
                    self._run_claimed(tasks)
                else:
                    self._wait_for_work()
            except StoreUnavailable as e:
                if not self._back_off(e):
                    return

    def _register(self) -> None:
        """Register the agent (ending what a killed previous run of it left running), then
        listen for wake-ups; the heartbeat and the run supervisor start here."""
        self.backend.check()
        if self.memory is not None:  # (first: the indexer it may start is no child of it)
            self.memory.start_indexer()
        reaper.adopt_orphans()  # (what its tasks' programs leave behind comes back to it)
        _, killed = registration.register(
            self.store, self.name, self.roles, self.backend.name, self.lease_s,
            {"workdir": str(self.workdir), **self.meta}, os.getpid(), takes_hand_offs=True)
        self.backend.attach(self.store, self.name)
        try:
            local.record(self.store.url, self.name)
        except (OSError, StoreError) as e:
            self.log(f"could not record this agent on this host ({e}); 'podium down' will "
                     "need the store to stop it")
        if killed:
            self.log(f"killed {killed} process group(s) left running by a previous run of "
                     f"{self.name}")
        try:
            self.waiter = self.store.agent_waiter(self.name)
        except BaseException:
            # (no wake-ups, no worker: the agent must not stay registered as one, idle and
            # taking hand-offs, with a process that is gone)
            local.forget(self.store.url, self.name)
            with contextlib.suppress(StoreError):
                self.store.deregister(self.name, holder=registration.this_process())
            raise
        self.log(f"registered (backend {self.backend.name}, roles {self.roles or 'any'}, "
                 f"store {redact(self.store.url)})")
        self.heartbeat = Heartbeat(self.store, self.name, self.lease_s, self.heartbeat_s)
        self._supervisor = RunSupervisor(
            self.store, self.name, self.backend, self.waiter, self.heartbeat,
            workdir=self.workdir, max_output=self.max_output, log=self.log,
            # (batched only for in-process backends: a program's run is long beside a write,
            # and its start line must show while it runs)
            note=self.note if self.backend.inline and not self.echo_output else self.log,
            echo_output=self.echo_output, stopping_now=self._stopping_now)

    def _give_up_the_name(self) -> None:
        """Another worker holds the agent's name now: this one stops, leaving the agent's row
        alone and recording nothing (the store took its tasks back when it found it dead)."""
        self.log(f"{self.heartbeat.replaced}; stopping")
        if self._results:
            self.log(f"{len(self._results)} result(s) not recorded: this worker is no longer "
                     "the agent that claimed their tasks")
            self._results = []

    def _deregister(self) -> None:
        """Let the runner thread and the wake-up socket go; tell the store the agent stopped."""
        self._supervisor.close()
        if self.memory is not None:
            self.memory.close()
        # Free the wake-up socket first: once deregistered, a new agent of the same name may
        # start and bind it.
        assert self.waiter is not None  # run() deregisters only what _register set up
        self.waiter.close()
        self.waiter = None
        local.forget(self.store.url, self.name)
        if self.heartbeat.replaced is None:
            try:
                self.store.deregister(self.name, holder=self.heartbeat.holder)
            except AgentReplaced as e:
                self.log(str(e))
            except StoreError as e:
                self.log(f"could not deregister ({e}); the lease will expire instead")
        self.log("stopped")

    # -- the parts of one turn ----------------------------------------------------------
    def _record_results(self) -> None:
        """Stopping: record what is left to record, claiming nothing."""
        if self._results:
            self.store.claim_batch(self.name, self.roles, self.lease_s, self._results, 0,
                                   holder=self.heartbeat.holder)
            self._results = []

    def _record_and_claim(self) -> list[Task]:
        """Record the results of what ran and claim what is next: one transaction."""
        assert self.waiter is not None  # claims happen between _register and _deregister
        handed = self.waiter.handed_over() or self._look
        tasks = self.store.claim_batch(self.name, self.roles, self.lease_s, self._results,
                                       self._batch, handed, self.heartbeat.holder)
        self._results = []
        self._backoff.reset()
        self._look = False
        if handed:
            tasks = [t for t in tasks if (t.id, t.attempts) not in self._started]
        return tasks

    def _run_claimed(self, tasks: list[Task]) -> None:
        """Run the claimed tasks in turn; those not started when the worker stops go back."""
        for i, task in enumerate(tasks):
            if self.stop is not None:
                for rest in tasks[i:]:
                    self.store.release(self.name, rest.id, rest.attempts, STOPPING)
                return
            self._started[(task.id, task.attempts)] = None
            if len(self._started) > 256:
                del self._started[next(iter(self._started))]
            outcome = self._execute(task)
            if outcome is not None:
                self._results.append(Finish(task.id, task.attempts, outcome))

    def _execute(self, task: Task) -> Outcome | None:
        """Run one claimed task; None when it was handed back because the worker is stopping."""
        prompt = task.prompt
        if self.backend.takes_context:
            recalled = self.memory.recalled(task) if self.memory is not None else []
            prompt = compose(task.prompt, task.context, self._shared_context(task), recalled)
        return self._supervisor.execute(task, prompt)

    def _shared_context(self, task: Task) -> list:
        """Shared context, read again only when the claim says it changed."""
        gen = task.context_generation
        if gen is None or gen != self._context[0]:
            self._context = (gen, self.store.list_context())
        return self._context[1]

    def _wait_for_work(self) -> None:
        """Sleep until a wake-up or the next heartbeat; after a wait no wake-up ended, look for
        handed tasks anyway."""
        assert self.waiter is not None  # waits happen between _register and _deregister
        self._flush_notes()
        self._look = not self.waiter.wait(self.heartbeat.seconds_until_due())

    def _back_off(self, error: StoreUnavailable) -> bool:
        """The store failed: wait, longer each time, keeping the results to record. False when
        a stopping worker gives up on recording them."""
        delay = self._backoff.next_delay()
        self.log(f"store unavailable ({error}); retrying in {delay:.1f}s")
        if self.stop is None or not self._results:
            self._sleep(delay)
            return True
        # (stopping now: not past the stop's budget either)
        if self._backoff.give_up() or (self._stop_deadline is not None
                                       and time.monotonic() + delay >= self._stop_deadline):
            self.log(f"giving up on recording {len(self._results)} result(s); "
                     "their leases will expire and they will run again")
            return False
        time.sleep(delay)
        return True

    def _sleep(self, seconds: float) -> None:
        """Sleep, cut short when the worker is told to stop."""
        end = time.monotonic() + seconds
        while self.stop is None and time.monotonic() < end:
            time.sleep(min(0.05, end - time.monotonic()))


def _tmux_pane() -> dict:
    """Which tmux pane the worker runs in, if any (for ``podium down``)."""
    tmux = os.environ.get("TMUX")
    if not (tmux and os.environ.get("TMUX_PANE")):
        return {}
    return {"pane": os.environ["TMUX_PANE"], "tmux_socket": tmux.split(",")[0],
            "tmux_session": os.environ.get("PODIUM_TMUX_SESSION")}


class _StopWatchdog:
    """Ends the process ``budget_s`` after the signal to stop now (SIGTERM, a second SIGINT)
    unless it has ended by then (``expire`` does it).

    The signals reach it through ``signal.set_wakeup_fd``, written by the interpreter's C-level
    handler the moment a signal arrives: the count starts even while the main thread is blocked
    in a store call (a lock wait, a connection attempt), where the Python handler that sets
    ``Worker.stop`` may only run once the call returns. An idle thread blocked on a pipe: no cost
    until a signal comes."""

    def __init__(self, budget_s: float, expire: Callable[[], None]):
        self.budget_s, self.expire = budget_s, expire
        self._r, w = os.pipe()
        os.set_blocking(w, False)  # (as set_wakeup_fd requires)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        threading.Thread(target=self._run, name="podium-stop-watchdog", daemon=True).start()

    def _run(self) -> None:
        interrupts = 0
        while True:
            select.select([self._r], [], [])
            try:
                received = os.read(self._r, 64)
            except OSError:
                return
            if not received:
                return
            for signum in received:
                interrupts += signum == signal.SIGINT
                if signum == signal.SIGTERM or interrupts >= 2:
                    time.sleep(self.budget_s)
                    self.expire()
                    return
