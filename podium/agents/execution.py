"""Running one claimed task: its backend on the worker's runner thread, watched until it ends.

``RunSupervisor.execute`` asks the worker's workspace where the run happens, hands the backend
a ``Run`` (the prompt, that directory, the task's environment, a stream for its output) and,
while the backend works, waits on the worker's wake-up channel, heartbeats, and stops the run
when it must: on timeout, when the store says the task was cancelled, when a heartbeat finds
the lease lost, or when the worker stops now (the task then goes back to the queue without
counting the attempt). An inline backend with no timeout is called on the worker's own
thread: there is nothing to watch.
"""

from __future__ import annotations

import codecs
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from podium.agents.backends import Backend, Run
from podium.agents.heartbeat import Heartbeat
from podium.agents.workspaces import SharedWorkspace, Workspace
from podium.errors import StoreError, StoreUnavailable
from podium.models import Outcome, Task, TaskState
from podium.store import Store
from podium.store.base import Waiter

#: Streamed output events are flushed at most this often, and stop after this many bytes.
STREAM_INTERVAL_S = 0.2
STREAM_LIMIT_BYTES = 1024 * 1024
#: Why a run stopped, and its task went back to the queue, when its worker stops now.
STOPPING = "worker stopping"


class RunSupervisor:
    """Runs a worker's claimed tasks, one at a time, and stops a run that must stop."""

    def __init__(self, store: Store, agent_id: str, backend: Backend, waiter: Waiter,
                 heartbeat: Heartbeat, *, workdir: Path, max_output: int,
                 log: Callable[[str], None], echo_output: bool,
                 stopping_now: Callable[[], bool], workspace: Workspace | None = None,
                 note: Callable[[str], None] | None = None):
        self.store, self.agent_id, self.backend = store, agent_id, backend
        self.waiter = waiter
        self.heartbeat = heartbeat
        self.workspace = workspace or SharedWorkspace(workdir)
        self.max_output = max_output
        self.log, self.echo_output = log, echo_output
        self.note = note or log  # (each task's start and end lines: see Worker.note)
        self.stopping_now = stopping_now
        self.env = _TaskEnvironment(agent_id, store.url)
        self._runner: _Runner | None = None  # (started by the first run that needs it)
        self._done = threading.Event()  # set when the backend's run returns
        self._outcome: Outcome | None = None
        self._closed = False

    def execute(self, task: Task, prompt: str) -> Outcome | None:
        """Run ``task`` to its end: its outcome, or None when it was handed back to the queue
        because the worker is stopping."""
        # Every task's start and end in the worker's log (a worker in a tmux pane also shows
        # its output live, and more of the prompt).
        self.note(f"▶ {task.id} {_one_line(task.prompt, 200 if self.echo_output else 80)}")
        workdir = self.workspace.enter(task)
        stream = _OutputStream(self.store, self.agent_id, task.id)
        run = Run(task=task, prompt=prompt, workdir=workdir, env=self.env.for_task(task),
                  emit=_tee_to_stderr(stream.emit) if self.echo_output else stream.emit,
                  max_output=self.max_output)
        began = time.time()
        try:
            outcome = self._run_to_end(run)
            stream.close()
            outcome.started_at = began
            settled = self._settle(run, outcome)
        except BaseException:
            self.workspace.leave(task, None)
            raise
        if settled is not None:
            self.note(_end_line(task, settled, time.time() - began))
        self.workspace.leave(task, settled)
        return settled

    def close(self) -> None:
        """The worker stops: the runner thread ends (after the run it has, if any) and pokes
        the waiter no more."""
        self._closed = True
        if self._runner is not None:
            self._runner.close()

    # -- running ------------------------------------------------------------------------
    def _run_to_end(self, run: Run) -> Outcome:
        """The backend's outcome: called here when inline with no timeout, else on the runner
        thread, watched."""
        deadline = time.monotonic() + run.task.timeout_s if run.task.timeout_s else None
        if self.backend.inline and deadline is None:
            return self._call_backend(run)
        if self._runner is None:
            self._runner = _Runner(f"{self.agent_id}-runner")
        self._done.clear()
        self._outcome = None
        self._runner.submit(lambda: self._run_in_background(run))
        self._watch(run, deadline)
        assert self._outcome is not None
        return self._outcome

    def _run_in_background(self, run: Run) -> None:
        try:
            self._outcome = self._call_backend(run)
        finally:
            self._done.set()
            if not self._closed:
                self.waiter.poke()  # the worker's thread is waiting for this run to end

    def _call_backend(self, run: Run) -> Outcome:
        try:
            return self.backend.run(run)
        except Exception as e:  # a backend bug must not kill the worker
            return Outcome(TaskState.FAILED, error=f"{type(e).__name__}: {e}")

    # -- watching -----------------------------------------------------------------------
    def _watch(self, run: Run, deadline: float | None) -> None:
        """Until the backend returns: heartbeat, and stop the run when it must stop."""
        if run.task.started_at is None:
            # Handed over by the adder: the first heartbeat records the start. Not at once:
            # most short tasks end first and their result records it.
            self.heartbeat.bring_forward(0.05)
        failure: StoreError | None = None
        while not self._done.is_set():
            # (once failed, no more beats: just until the stopped run's backend returns)
            woke = self.waiter.wait(0.05 if failure else self._wait_s(run, deadline))
            if self._done.is_set():
                break
            self._stop_on_worker_stop_or_timeout(run, deadline)
            if failure is not None:
                continue
            try:
                self._check_with_store(run, woke)
            except StoreUnavailable as e:
                self.log(f"store unavailable while running {run.task.id} ({e}); still running")
            except StoreError as e:
                # One that will not pass (a right revoked, a read-only server): the worker
                # stops, and the run first, so that its program does not outlive the worker.
                self.log(f"store error while running {run.task.id} ({e}); stopping the run")
                run.cancel(f"store error: {e}")
                failure = e
        if failure is not None:
            raise failure

    def _wait_s(self, run: Run, deadline: float | None) -> float:
        """Until the next heartbeat, or the deadline when sooner (until the run is stopped)."""
        wait = self.heartbeat.seconds_until_due()
        if deadline is not None and not run.cancelled:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        return wait

    def _stop_on_worker_stop_or_timeout(self, run: Run, deadline: float | None) -> None:
        # (a run stops once: ``cancel`` keeps the first reason)
        if self.stopping_now():
            run.cancel(STOPPING)
        if deadline is not None and time.monotonic() >= deadline:
            run.cancel(f"timed out after {run.task.timeout_s:g}s", timed_out=True)

    def _check_with_store(self, run: Run, woke: bool) -> None:
        """Heartbeat when due (the lease lost: stop the run); else, after a wake-up, stop the
        run if its task was cancelled."""
        if self.heartbeat.due():
            reply = self.heartbeat.beat(run.task)
            if self.heartbeat.replaced is not None:
                run.cancel(str(self.heartbeat.replaced))
            elif reply.lost:
                run.cancel(f"task {reply.task_state.value if reply.task_state else 'lost'}")
        elif woke and not run.cancelled and \
                self.store.task_state(run.task.id) is TaskState.CANCELLED:
            run.cancel("cancelled")

    def _settle(self, run: Run, outcome: Outcome) -> Outcome | None:
        """The outcome to record; None once a run the worker's stop ended is handed back."""
        task = run.task
        if run.cancelled and run.cancel_reason == STOPPING:
            self.store.release(self.agent_id, task.id, task.attempts, STOPPING)
            self.log(f"task {task.id} handed back to the queue")
            return None
        if run.cancelled:
            outcome.status = TaskState.FAILED if run.timed_out else TaskState.CANCELLED
            outcome.error = run.cancel_reason
        return outcome


def _one_line(text: str, width: int) -> str:
    """``text`` on one line (newlines shown as ⏎), cut to ``width`` characters with an …."""
    cut = len(text) > width * 4  # (a prompt may be 64 MiB: only its start is looked at)
    line = " ".join(text[: width * 4].replace("\n", " ⏎ ").split())
    return line if len(line) <= width and not cut else line[: width - 1] + "…"


def _end_line(task: Task, outcome: Outcome, seconds: float) -> str:
    """``■ t-... completed in 1.2s, exit 0, 3 lines of output`` (and the error, if any)."""
    parts = [f"■ {task.id} {outcome.status.value} in {seconds:.1f}s"]
    if outcome.exit_code is not None:
        parts.append(f"exit {outcome.exit_code}")
    out = outcome.output or b""
    n = out.count(b"\n") + (1 if out and not out.endswith(b"\n") else 0)
    if outcome.status is not TaskState.CANCELLED or n:
        parts.append(f"{n} line{'' if n == 1 else 's'} of output"
                     + (" (truncated)" if outcome.output_truncated else ""))
    return ", ".join(parts) + (f": {_one_line(outcome.error, 300)}" if outcome.error else "")


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


class _TaskEnvironment:
    """The environment of a task's program: the worker's own (read once), with
    ``PODIUM_AGENT_ID``, ``PODIUM_STORE``, ``PODIUM_TASK_ID`` and (when short enough)
    ``PODIUM_TASK_CONTEXT``."""

    def __init__(self, agent_id: str, store_url: str):
        self._base = dict(os.environ, PODIUM_AGENT_ID=agent_id, PODIUM_STORE=store_url)
        self._base.pop("PODIUM_TASK_CONTEXT", None)

    def for_task(self, task: Task) -> dict[str, str]:
        env = dict(self._base, PODIUM_TASK_ID=task.id)
        if task.context and len(task.context) < 25_000:  # well under one argument's limit
            env["PODIUM_TASK_CONTEXT"] = task.context
        return env


class _OutputStream:
    """Batches a running task's output into ``task.output`` events."""

    def __init__(self, store: Store, agent_id: str, task_id: str):
        self.store, self.agent_id, self.task_id = store, agent_id, task_id
        # (made with the first output: a task starts sooner without it)
        self.decoder: codecs.IncrementalDecoder | None = None
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
            data: dict[str, object] = {"chunk": text}
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


def _tee_to_stderr(emit: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """``emit``, and the same bytes on this process's stderr (a worker in a tmux pane)."""
    def both(chunk: bytes) -> None:
        emit(chunk)
        sys.stderr.buffer.write(chunk)
        sys.stderr.buffer.flush()
    return both
