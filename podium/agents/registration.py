"""Registering an agent on this host, taking its name over from a process that is gone.

The store refuses a name that a live agent holds (``AgentRunning``). A lease takes seconds to
run out; when the holder ran on this very host and its process is gone (killed, crashed),
there is nothing to wait for: the name is taken over at once, and what the previous process
left running is ended (``podium.orphans``). The other way round, a name whose lease ran out
(dead in the store) while its worker still runs on this host is not taken over: two processes
would then be one agent, both beating its row and claiming its tasks. The store only compares
what it is told; looking at this host's processes is done here.
"""

from __future__ import annotations

import functools
import os
import socket

from podium import orphans, pids
from podium.agents import local
from podium.errors import AgentRunning, NotFound
from podium.models import Agent, AgentState
from podium.store import Store


def register(store: Store, name: str, roles: list[str], backend: str, lease_s: float,
             meta: dict, pid: int, takes_hand_offs: bool = False) -> tuple[Agent, int]:
    """Register ``name`` for process ``pid`` of this host; returns the agent and how many
    process groups a previous run of it had left running (now killed)."""
    host = _this_host()
    holder = still_running_here(store, name, host)
    if holder is not None and holder != pid:
        raise AgentRunning(name, holder, host)
    try:
        agent = store.register_agent(name, roles, backend, host, pid, lease_s, meta,
                                     takes_hand_offs)
    except AgentRunning as e:
        if e.host != host or not e.pid or pids.exists(e.pid):
            raise
        agent = store.register_agent(name, roles, backend, host, pid, lease_s, meta,
                                     takes_hand_offs, replaces_pid=e.pid)
    # A killed previous run of this agent may have left programs behind whose tasks were
    # taken meanwhile: they are not its tasks any more.
    return agent, orphans.kill(store.url, name)


def still_running_here(store: Store, name: str, host: str) -> int | None:
    """The pid of the worker of ``name`` that still runs on this host although the store has
    the agent dead (its lease ran out: a machine too busy, a lease too short); None when there
    is none."""
    try:
        agent = store.get_agent(name)
    except NotFound:
        return None
    if agent.state is not AgentState.DEAD or agent.host != host:
        return None
    return agent.pid if local.running_here(agent, store.url) else None


def end_taken(store_url: str, taken: list[tuple[str, str]]) -> None:
    """End what agents found gone left running on this host for the tasks taken from them."""
    by_agent: dict[str, set[str]] = {}
    for agent_id, task_id in taken:
        by_agent.setdefault(agent_id, set()).add(task_id)
    for agent_id, task_ids in by_agent.items():
        orphans.kill(store_url, agent_id, task_ids)


@functools.lru_cache(maxsize=1)
def _this_host() -> str:
    return socket.gethostname()


def this_process() -> tuple[str, int]:
    """This process as an agent's row names the process that holds it: (host, pid); what
    the agent's heartbeats and its deregistering say (``Store.heartbeat``'s ``holder``)."""
    return _this_host(), os.getpid()


def may_run(host: str, pid: int | None) -> bool:
    """Whether an agent's process may still be running: False only for one of this host
    that is gone (one system call; an exited process nobody reaped yet still looks present,
    and its lease finds it)."""
    return host != _this_host() or not pid or pids.present(pid)
