"""Tasks leave nothing behind: what a task's program started ends with the task, even a daemon.

Real ``podium agent run`` workers and the real CLI, nothing mocked. Each task starts a
``sleep`` in a session of its own (``setsid``), out of reach of a process-group kill; its
duration is unique to the test (``marker``), so the test finds exactly that process in
``/proc`` and kills it at the end if the code under test did not.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import wait_for
from podium.models import TaskState

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="looks for processes in /proc")


def _stat(pid: str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, parent, group...)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def sleeping(marker: str) -> list[int]:
    """Live processes running exactly ``sleep MARKER``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", marker.encode()]:
            found.append(int(name))
    return found


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state letter) of the processes whose parent is ``pid``, zombies included."""
    out = []
    for name in os.listdir("/proc"):
        st = _stat(name) if name.isdigit() else None
        if st is not None and int(st[1]) == pid:
            out.append((int(name), st[0]))
    return out


@pytest.fixture
def marker():
    """A sleep duration no other process uses; such sleeps still running at the end are killed."""
    value = f"1000.{secrets.randbelow(10**6):06d}"
    yield value
    for pid in sleeping(value):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def gone(marker: str, timeout: float = 2.0) -> None:
    wait_for(lambda: not sleeping(marker), timeout, what=f"'sleep {marker}' to be killed")


def daemon(marker: str, holding_pipes: bool = True) -> str:
    """Shell text starting ``sleep MARKER`` in the background in a session of its own, with the
    task's stdout and stderr (or, unless ``holding_pipes``, /dev/null)."""
    return f"setsid sleep {marker} {'' if holding_pipes else '>/dev/null 2>&1 '}&"


@pytest.fixture
def up(cli):
    """``podium up`` through the real CLI; ``podium down`` at teardown whatever happened."""
    def start(*args: str) -> None:
        res = cli("up", *args)
        assert res.returncode == 0, res.stderr.decode()
    yield start
    cli("down", "--timeout", "5")


# -- completion, timeout, cancel -------------------------------------------------------------

def test_a_daemonized_grandchild_ends_when_the_task_completes(podium, workers, marker, tmp_path):
    worker = workers.start("s1", backend="shell")
    go = tmp_path / "go"
    # Not holding the task's pipes (nothing else makes the task wait for it), and seen
    # running before the program exits.
    t = podium.add_task(f"{daemon(marker, holding_pipes=False)} "
                        f"until [ -e {go} ]; do sleep 0.01; done; echo started")
    wait_for(lambda: sleeping(marker), 10, what="the task's daemon to start")
    go.touch()
    done = podium.wait(t.id, 15)
    assert done.state is TaskState.COMPLETED, done.error
    assert done.output == b"started\n"
    gone(marker)
    # Adopted by the worker, killed and reaped: no zombie, no child at all between tasks.
    assert children(worker.pid) == []


def test_timeout_ends_a_daemonized_grandchild_without_waiting_for_its_pipes(podium, workers,
                                                                             marker):
    workers.start("s1", backend="shell")
    began = time.monotonic()
    t = podium.add_task(f"{daemon(marker)} sleep 30", timeout_s=1)
    wait_for(lambda: sleeping(marker), 10, what="the task's daemon to start")
    done = podium.wait(t.id, 15)
    took = time.monotonic() - began
    assert done.state is TaskState.FAILED and done.error == "timed out after 1s"
    assert took < 4, f"the timed-out task took {took:.1f}s"
    gone(marker)


def test_cancel_ends_a_daemonized_grandchild(podium, workers, marker):
    workers.start("s1", backend="shell")
    t = podium.add_task(f"{daemon(marker)} sleep 30")
    wait_for(lambda: sleeping(marker), 10, what="the task's daemon to start")
    began = time.monotonic()
    podium.cancel(t.id, "stop it")
    wait_for(lambda: podium.task(t.id).lease_expires is None, 10, what="the worker to let go")
    assert time.monotonic() - began < 2
    gone(marker)


def test_a_detached_child_holding_the_pipes_does_not_delay_the_result(podium, workers, marker):
    workers.start("s1", backend="shell")
    assert podium.wait(podium.add_task("echo warm").id, 15).state is TaskState.COMPLETED
    began = time.monotonic()
    # The subshell exits at once: its sleep is an orphan, with the task's stdout, while the
    # program is still running.
    t = podium.add_task(f"({daemon(marker)}); echo done")
    done = podium.wait(t.id, 15)
    took = time.monotonic() - began
    assert done.state is TaskState.COMPLETED and done.output == b"done\n"
    assert took < 1.5, f"the result took {took:.1f}s"
    gone(marker)


# -- podium down -----------------------------------------------------------------------------

def test_down_ends_a_running_tasks_daemonized_grandchild(podium, cli, up, marker, workdir):
    up("1", "--backend", "shell")
    t = podium.add_task(f"{daemon(marker)} sleep 60")
    wait_for(lambda: sleeping(marker), 10, what="the task's daemon to start")
    res = cli("down")
    assert res.returncode == 0, res.stderr.decode()
    gone(marker)
    assert podium.task(t.id).state is TaskState.QUEUED  # handed back by the stopping worker


def test_down_kills_programs_marked_as_the_agents_outside_its_worker(podium, cli, up, marker,
                                                                     workdir):
    up("1", "--backend", "shell")
    (agent,) = [a.id for a in podium.agents() if a.state.live]
    # A program one of the agent's tasks had started through something else (a daemon's
    # server, say): not the worker's descendant, only its environment says whose it is.
    env = dict(os.environ, PODIUM_STORE=podium.store.url, PODIUM_AGENT_ID=agent,
               PODIUM_TASK_ID="t-0000000000000a")
    left = subprocess.Popen(["sleep", marker], env=env, start_new_session=True)
    try:
        res = cli("down")
        assert res.returncode == 0, res.stderr.decode()
        assert left.wait(timeout=2) == -signal.SIGKILL
    finally:
        if left.poll() is None:
            left.kill()
            left.wait()
