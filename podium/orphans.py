"""Programs a killed worker left running: found by their environment, killed by group.

A worker starts each task's program in a session of its own (so that a cancel kills the whole
group), with ``PODIUM_STORE``, ``PODIUM_AGENT_ID`` and ``PODIUM_TASK_ID`` in its environment.
When the worker itself dies (kill -9, out of memory), those programs keep running while the
task is queued again. The process that takes the task away from the dead agent (whichever
notices the expired lease first, or the agent's next run when it registers) looks them up in
``/proc`` by those three variables and kills their process groups, so a requeued task does not
run twice at once. That works when it happens on the dead agent's host; elsewhere nothing is
found. Only this user's processes are looked at; without ``/proc`` nothing is found either.
The same search ends, after each task, what its program started outside the worker's process
tree (``podium.agents.reaper``), and, after ``podium down``, what the stopped agents left.
"""

from __future__ import annotations

import os
import signal


def _environ(pid: str) -> dict[bytes, bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key.startswith(b"PODIUM_"):
            env[key] = value
    return env


def find(store_url: str, agent_id: str, task_ids: set[str] | None = None) -> set[int]:
    """Process groups of programs that ``agent_id`` of this store started for tasks (for the
    given ones only, unless None)."""
    uid, url, agent = os.getuid(), store_url.encode(), agent_id.encode()
    mine = {os.getpgrp()}
    groups: set[int] = set()
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return groups
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
        except OSError:
            continue
        env = _environ(entry.name)
        task = env.get(b"PODIUM_TASK_ID")
        if task is None or env.get(b"PODIUM_STORE") != url or env.get(b"PODIUM_AGENT_ID") != agent:
            continue
        if task_ids is not None and task.decode(errors="replace") not in task_ids:
            continue
        try:
            pgid = os.getpgid(int(entry.name))
        except OSError:
            continue
        if pgid not in mine:
            groups.add(pgid)
    return groups


def kill(store_url: str, agent_id: str, task_ids: set[str] | None = None) -> int:
    """Kill what ``find`` finds; return how many process groups that was."""
    groups = find(store_url, agent_id, task_ids)
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return len(groups)
