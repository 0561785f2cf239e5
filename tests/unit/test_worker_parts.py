"""The worker's parts, one at a time, in this process: the heartbeat's due times, the stop modes
that signals set, the backoff while the store is unavailable, and the run supervisor's ways of
ending a run (timeout, cancel, lost lease, the worker stopping now).

A real SQLite store and its real wake-up channel; the backends are small ones defined here, so
that no program runs (tests/integration/test_worker.py runs the whole worker, with real processes).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from podium.agents.backends import MAX_OUTPUT_BYTES, Backend, Run, load
from podium.agents.execution import RunSupervisor
from podium.agents.heartbeat import Heartbeat, idle_interval
from podium.agents.worker import StopMode, StoreBackoff, Worker
from podium.errors import NotFound, StoreUnavailable
from podium.models import Outcome, TaskSpec, TaskState
from podium.store import Finish, open_store


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sqlite(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def claimed_task(store, prompt="p", **spec):
    """A task claimed by agent a1 (registered, not takes_hand_offs: no hand-off)."""
    store.register_agent("a1", [], "test", socket.gethostname(), os.getpid(), 30, {})
    store.add_tasks([TaskSpec(prompt, **spec)])
    return store.claim("a1", [], 30)


def echo_worker(store, **kw) -> Worker:
    return Worker(store, "w1", load("echo")(), log=kw.pop("log", lambda msg: None), **kw)


# -- heartbeat -------------------------------------------------------------------------------

def test_heartbeat_is_due_an_interval_after_it_starts_and_after_each_beat(sqlite):
    task = claimed_task(sqlite)
    clock = FakeClock()
    hb = Heartbeat(sqlite, "a1", lease_s=30, interval_s=5, clock=clock)
    assert not hb.due() and hb.seconds_until_due() == 5
    clock.now += 4.5
    assert not hb.due() and hb.seconds_until_due() == pytest.approx(0.5)
    clock.now += 0.5
    assert hb.due() and hb.seconds_until_due() == 0
    clock.now += 3  # late: never a negative wait
    assert hb.due() and hb.seconds_until_due() == 0
    hb.beat(task)  # a busy beat: due an interval later
    assert hb.next_due == clock.now + 5 and not hb.due()
    hb.beat()  # an idle one: twice the interval, lease/3 at most
    assert hb.next_due == clock.now + 10


def test_an_idle_heartbeat_comes_half_as_often_within_a_third_of_the_lease():
    assert idle_interval(30, 5) == 10
    assert idle_interval(30, 1) == 2
    assert idle_interval(2, 1 / 3) == pytest.approx(2 / 3)
    assert idle_interval(2, 1.5) == 1.5  # (never more often than a busy agent beats)


def test_heartbeat_brought_forward_only_ever_comes_sooner(sqlite):
    clock = FakeClock()
    hb = Heartbeat(sqlite, "a1", lease_s=30, interval_s=5, clock=clock)
    hb.bring_forward(0.05)
    assert hb.seconds_until_due() == pytest.approx(0.05)
    hb.bring_forward(2)
    assert hb.seconds_until_due() == pytest.approx(0.05)


def test_heartbeat_that_fails_is_still_due_again_an_interval_later(sqlite):
    clock = FakeClock()
    hb = Heartbeat(sqlite, "nobody", lease_s=30, interval_s=5, clock=clock)
    clock.now += 6
    with pytest.raises(NotFound):
        hb.beat()
    assert hb.next_due == clock.now + 10


def test_heartbeat_extends_the_lease_and_says_when_the_task_is_lost(sqlite):
    task = claimed_task(sqlite)
    before = sqlite.get_task(task.id).lease_expires
    hb = Heartbeat(sqlite, "a1", lease_s=60, interval_s=1)
    reply = hb.beat(task)
    assert (reply.lost, reply.task_state) == (False, TaskState.RUNNING)
    assert sqlite.get_task(task.id).lease_expires > before
    sqlite.cancel(task.id, "changed my mind")
    reply = hb.beat(task)
    assert (reply.lost, reply.task_state) == (True, TaskState.CANCELLED)


# -- stop modes from signals -----------------------------------------------------------------

def test_sigint_drains_and_a_second_sigint_stops_now(sqlite):
    w = echo_worker(sqlite)
    assert w.stop is None
    w._on_signal(signal.SIGINT, None)
    assert w.stop is StopMode.DRAIN
    w._on_signal(signal.SIGINT, None)
    assert w.stop is StopMode.NOW


def test_sigterm_stops_now_and_a_later_sigint_leaves_it_so(sqlite):
    w = echo_worker(sqlite)
    w._on_signal(signal.SIGTERM, None)
    assert w.stop is StopMode.NOW
    w._on_signal(signal.SIGINT, None)
    assert w.stop is StopMode.NOW


def test_a_signal_wakes_the_waiting_worker(sqlite):
    w = echo_worker(sqlite)
    w.waiter = sqlite.agent_waiter("w1")
    try:
        assert w.waiter.wait(0) is False
        w._on_signal(signal.SIGINT, None)
        assert w.waiter.wait(1) is True
    finally:
        w.waiter.close()


# -- backoff while the store is unavailable --------------------------------------------------

def test_backoff_doubles_from_a_tenth_of_a_second_up_to_five_and_starts_over():
    b = StoreBackoff()
    assert [b.next_delay() for _ in range(8)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])
    b.reset()
    assert b.next_delay() == pytest.approx(0.1)


def test_backoff_gives_up_thirty_seconds_after_it_was_first_asked():
    clock = FakeClock()
    b = StoreBackoff(clock)
    assert b.give_up() is False
    clock.now += 30
    assert b.give_up() is False
    b.reset()  # (a delay starting over does not move the deadline)
    clock.now += 0.01
    assert b.give_up() is True


def test_stopping_worker_keeps_trying_to_record_its_results_then_gives_up(sqlite):
    logs: list[str] = []
    w = echo_worker(sqlite, log=logs.append)
    clock = FakeClock()
    w._backoff = StoreBackoff(clock)
    w.stop = StopMode.NOW
    w._results = [Finish("t-1", 1, Outcome(TaskState.COMPLETED))]
    down = StoreUnavailable("disk full")
    assert w._back_off(down) is True
    clock.now += 31
    assert w._back_off(down) is False
    assert logs == ["store unavailable (disk full); retrying in 0.1s",
                    "store unavailable (disk full); retrying in 0.2s",
                    ("giving up on recording 1 result(s); their leases will expire and they "
                     "will run again")]


def test_stopping_worker_with_nothing_to_record_does_not_wait_out_the_backoff(sqlite):
    w = echo_worker(sqlite)
    w._backoff.delay_s = 5.0  # the next wait would be 5 s
    w.stop = StopMode.DRAIN
    began = time.monotonic()
    assert w._back_off(StoreUnavailable("gone")) is True
    assert time.monotonic() - began < 1


# -- the run supervisor ----------------------------------------------------------------------

class Blocks(Backend):
    """Runs until its run is stopped (10 s at most)."""

    def run(self, run: Run) -> Outcome:
        end = time.monotonic() + 10
        while not run.cancelled and time.monotonic() < end:
            time.sleep(0.005)
        return Outcome(TaskState.COMPLETED, output=b"partial")


class Breaks(Backend):
    def run(self, run: Run) -> Outcome:
        raise RuntimeError("boom")


class Inline(Backend):
    inline = True

    def run(self, run: Run) -> Outcome:
        self.thread = threading.current_thread()
        return Outcome(TaskState.COMPLETED, output=run.env["PODIUM_TASK_ID"].encode())


def supervise(store, backend, *, waiter_of="a1", interval_s=5.0, stopping_now=lambda: False):
    """A supervisor for agent a1, with a log, a waiter (of ``waiter_of``) and a heartbeat."""
    logs: list[str] = []
    waiter = store.agent_waiter(waiter_of)
    sup = RunSupervisor(store, "a1", backend, waiter, Heartbeat(store, "a1", 30, interval_s),
                        workdir=Path.cwd(), max_output=MAX_OUTPUT_BYTES, log=logs.append,
                        echo_output=False, stopping_now=stopping_now)
    return sup, waiter, logs


@pytest.fixture
def closing():
    """Closes the supervisors and waiters a test made."""
    made = []
    yield made.append
    for sup, waiter, _ in made:
        sup.close()
        waiter.close()


def test_inline_backend_without_timeout_runs_on_the_callers_thread(sqlite, closing):
    task = claimed_task(sqlite)
    backend = Inline()
    closing(parts := supervise(sqlite, backend))
    outcome = parts[0].execute(task, task.prompt)
    assert outcome.status is TaskState.COMPLETED and outcome.output == task.id.encode()
    assert backend.thread is threading.current_thread()
    assert outcome.started_at is not None


def test_backend_error_fails_the_task_and_the_worker_goes_on(sqlite, closing):
    task = claimed_task(sqlite)
    closing(parts := supervise(sqlite, Breaks()))
    outcome = parts[0].execute(task, task.prompt)
    assert (outcome.status, outcome.error) == (TaskState.FAILED, "RuntimeError: boom")


def test_timeout_stops_the_run_and_fails_the_task(sqlite, closing):
    task = claimed_task(sqlite, timeout_s=0.2)
    closing(parts := supervise(sqlite, Blocks()))
    began = time.monotonic()
    outcome = parts[0].execute(task, task.prompt)
    assert 0.2 <= time.monotonic() - began < 3
    assert (outcome.status, outcome.error) == (TaskState.FAILED, "timed out after 0.2s")
    assert outcome.output == b"partial"


def test_cancel_in_the_store_stops_the_run(sqlite, closing):
    task = claimed_task(sqlite)
    closing(parts := supervise(sqlite, Blocks()))
    threading.Timer(0.2, sqlite.cancel, (task.id, "changed my mind")).start()
    outcome = parts[0].execute(task, task.prompt)
    assert (outcome.status, outcome.error) == (TaskState.CANCELLED, "cancelled")


def test_lost_lease_found_by_the_heartbeat_stops_the_run(sqlite, closing):
    task = claimed_task(sqlite)
    # A waiter no cancel pokes (another agent's): only the heartbeat can find out.
    closing(parts := supervise(sqlite, Blocks(), waiter_of="deaf", interval_s=0.1))
    threading.Timer(0.2, sqlite.cancel, (task.id, "changed my mind")).start()
    outcome = parts[0].execute(task, task.prompt)
    assert (outcome.status, outcome.error) == (TaskState.CANCELLED, "task cancelled")


def test_a_run_whose_agent_name_was_taken_over_stops(sqlite, closing):
    """The heartbeat finds the agent's row naming another process (registered meanwhile, as
    when this one was found dead): the run stops, and the heartbeat says who holds the name."""
    task = claimed_task(sqlite)
    closing(parts := supervise(sqlite, Blocks(), waiter_of="deaf", interval_s=0.1))
    host = socket.gethostname()
    threading.Timer(0.2, lambda: sqlite.register_agent(
        "a1", [], "test", host, 4242, 30, {}, replaces_pid=os.getpid())).start()
    outcome = parts[0].execute(task, task.prompt)
    assert outcome.status is TaskState.CANCELLED
    assert outcome.error == (f"agent 'a1' was taken over by pid 4242 on {host}: "
                             "this process is no longer that agent")
    assert parts[0].heartbeat.replaced is not None
    assert sqlite.get_agent("a1").pid == 4242


def test_worker_stopping_now_hands_the_running_task_back(sqlite, closing):
    task = claimed_task(sqlite)
    stop = threading.Event()
    closing(parts := supervise(sqlite, Blocks(), stopping_now=stop.is_set))
    sup, waiter, logs = parts

    def signal_now():  # as Worker._on_signal does
        stop.set()
        waiter.poke()
    threading.Timer(0.2, signal_now).start()
    assert sup.execute(task, task.prompt) is None
    back = sqlite.get_task(task.id)
    assert (back.state, back.attempts, back.agent_id) == (TaskState.QUEUED, 0, None)
    assert logs == [f"▶ {task.id} {task.prompt}", f"task {task.id} handed back to the queue"]
