"""The worker's heartbeat: when it is next due, and the beat itself.

A beat tells the store the agent is alive and extends the lease of the task it runs; the reply
says whether that task is still the worker's, and which tasks the store took from agents found
gone, whose programs left on this host are then ended (``podium.agents.registration``). A worker
beats every ``interval_s``, from its idle loop and from the loop that watches a running task
(``podium.agents.execution``): it is the worker's only timer. Each beat holds only while the
store's row names this process (host and pid): when another worker has taken the name over
(this one's lease ran out while it could not beat), the beat changes nothing and says so
(``replaced``), and the worker stops being that agent.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from podium.agents import registration
from podium.errors import AgentReplaced
from podium.models import Task
from podium.store import HeartbeatReply, Store


def idle_interval(lease_s: float, interval_s: float) -> float:
    """How often an idle agent beats: half as often as a busy one, at most every lease/3.

    A busy agent's beats keep its task's lease; an idle one's only say it is alive (it is
    found dead a lease after its last beat, three beats missed) and look for work whose
    wake-up was lost. With hundreds of idle agents these beats are what the team costs at
    rest (bench/scale.py); on PostgreSQL, the host's daemon makes them for all its idle
    agents at once while it runs (``podium.store.hostbeats``)."""
    return max(interval_s, min(2 * interval_s, lease_s / 3))


class Heartbeat:
    """One agent's heartbeat: due every ``interval_s`` after a beat for a task, every
    ``idle_interval`` after an idle one (``clock``: seconds, monotonic)."""

    def __init__(self, store: Store, agent_id: str, lease_s: float, interval_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.store, self.agent_id = store, agent_id
        self.holder = registration.this_process()
        self.lease_s, self.interval_s = lease_s, interval_s
        self.idle_interval_s = idle_interval(lease_s, interval_s)
        self.clock = clock
        self.next_due = clock() + interval_s
        #: Set when a beat found the name taken over by another process (see the module).
        self.replaced: AgentReplaced | None = None

    def due(self) -> bool:
        return self.clock() >= self.next_due

    def seconds_until_due(self) -> float:
        return max(0.0, self.next_due - self.clock())

    def bring_forward(self, seconds: float) -> None:
        """Make the next beat due in ``seconds`` at the latest."""
        self.next_due = min(self.next_due, self.clock() + seconds)

    def beat(self, task: Task | None = None, roles: list[str] | None = None) -> HeartbeatReply:
        """Beat now, for ``task`` too (its lease) when given; with ``roles`` (an idle agent's)
        the reply also says whether work waits for it. The next beat is due an interval from
        now (the idle one without ``task``), even when this one fails. When the name was taken
        over, ``replaced`` is set and the reply says the task is lost and no work waits."""
        self.next_due = self.clock() + (self.idle_interval_s if task is None else
                                        self.interval_s)
        try:
            if task is None:
                reply = self.store.heartbeat(self.agent_id, self.lease_s, roles=roles,
                                             holder=self.holder)
                if reply.next_idle_beat_s is not None:  # (the host's daemon stood for it)
                    self.next_due = self.clock() + reply.next_idle_beat_s
            else:
                reply = self.store.heartbeat(self.agent_id, self.lease_s, task.id,
                                             task.attempts, holder=self.holder)
        except AgentReplaced as e:
            self.replaced = e
            return HeartbeatReply(lost=task is not None,
                                  work_waiting=None if roles is None else False)
        registration.end_taken(self.store.url, reply.taken)
        return reply
