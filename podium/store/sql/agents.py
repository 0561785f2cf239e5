"""Agents: registering (and taking over a name), heartbeats, state, deregistering, removing."""

from __future__ import annotations

import json

from podium.clock import now
from podium.errors import AgentReplaced, AgentRunning, InvalidInput, NotFound
from podium.models import Agent, TaskState
from podium.store.base import AgentRemoval, HeartbeatReply
from podium.store.sql import rows
from podium.store.sql.claims import candidate_sql, held_by
from podium.store.sql.leases import Leases
from podium.store.sql.tx import Tx

_LIVE = ("starting", "idle", "busy", "waiting_input")
#: Whether ``Leases._recover`` would find anything now (the time is the two parameters): an
#: expired lease, or a live agent whose heartbeat is overdue.
_RECOVERY_DUE_SQL = (
    "(EXISTS (SELECT 1 FROM tasks WHERE state = 'running' AND lease_expires < ?) OR EXISTS "
    f"(SELECT 1 FROM agents WHERE state IN ({', '.join(repr(s) for s in _LIVE)}) "
    "AND last_heartbeat + lease_s < ?))")


class Agents(Leases):
    def register_agent(self, name, roles, backend, host, pid, lease_s, meta,
                       takes_hand_offs=False, replaces_pid=None) -> Agent:
        if not name or len(name) > 200:
            raise InvalidInput("agent name must be 1-200 characters")
        t = now()
        with self._write() as tx:
            row = tx.one("SELECT state, last_heartbeat, lease_s, host, pid, meta FROM agents "
                         "WHERE id = ?", (name,))
            if row is not None:
                alive = row["state"] in _LIVE and row["last_heartbeat"] + row["lease_s"] > t
                if alive and replaces_pid is not None and row["pid"] == replaces_pid \
                        and row["host"] == host:
                    alive = False  # its process is gone from this host, the caller found
                if alive:
                    raise AgentRunning(name, row["pid"], row["host"])
                self._orphan_tasks(tx, name, "agent re-registered", t)
                session = json.loads(row["meta"] or "{}").get("session_id")
                if session and "session_id" not in meta:  # a restarted agent keeps its session
                    meta = {**meta, "session_id": session}
                tx.execute(
                    "UPDATE agents SET roles = ?, backend = ?, host = ?, pid = ?, state = 'idle', "
                    "current_task = NULL, registered_at = ?, last_heartbeat = ?, lease_s = ?, "
                    "note = NULL, meta = ?, takes_hand_offs = ? WHERE id = ?",
                    (json.dumps(roles), backend, host, pid, t, t, lease_s, json.dumps(meta),
                     int(takes_hand_offs), name),
                )
            else:
                tx.execute(
                    "INSERT INTO agents (id, name, roles, backend, host, pid, state, "
                    "registered_at, last_heartbeat, lease_s, meta, takes_hand_offs) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'idle', ?, ?, ?, ?, ?)",
                    (name, name, json.dumps(roles), backend, host, pid, t, t, lease_s,
                     json.dumps(meta), int(takes_hand_offs)),
                )
            tx.event("agent.registered", name, None, roles=roles, backend=backend, host=host,
                     pid=pid)
            return rows.agent(tx.one("SELECT * FROM agents WHERE id = ?", (name,)))

    def heartbeat(self, agent_id, lease_s, task_id=None, attempt=0, roles=None,
                  holder=None) -> HeartbeatReply:
        t = now()
        reply = HeartbeatReply()
        # The agent's row updated, and in the same statement's RETURNING whether anything is
        # due for recovery (then _recover looks properly) and, for an idle agent, whether work
        # waits for it. An idle crowd beats all the time: its beat is that one statement.
        work_sql, work_params = (("NULL", []) if roles is None
                                 else self._work_waiting_sql(agent_id, roles))
        held_sql, held_params = held_by(holder)
        sql = ("UPDATE agents SET last_heartbeat = ?, lease_s = ?, "
               f"state = CASE WHEN state = 'dead' THEN ? ELSE state END WHERE id = ?{held_sql} "
               f"RETURNING {_RECOVERY_DUE_SQL} AS recovery_due, {work_sql} AS work_waiting")
        params = (t, lease_s, "busy" if task_id else "idle", agent_id, *held_params, t, t,
                  *work_params)
        if task_id is None:
            with self._statement() as tx:
                beat = tx.one(sql, params)
            if beat is None:
                raise self._not_held(agent_id)
            if roles is not None:
                reply.work_waiting = bool(beat["work_waiting"])
            if beat["recovery_due"]:
                reply.taken = self.recover()
            return reply
        with self._write() as tx:
            beat = tx.one(sql, params)
            if beat is None:
                raise self._not_held(agent_id, tx)
            # (A task handed over by add_tasks gets its start time here, from the worker's
            # first heartbeat once its program runs.)
            cur = tx.execute(
                "UPDATE tasks SET lease_expires = ?, started_at = COALESCE(started_at, ?) "
                "WHERE id = ? AND agent_id = ? AND attempts = ? AND state = 'running'",
                (t + lease_s, t, task_id, agent_id, attempt),
            )
            if cur.rowcount == 0:
                row = tx.one("SELECT state FROM tasks WHERE id = ?", (task_id,))
                reply.lost = True
                reply.task_state = TaskState(row["state"]) if row else None
            else:
                reply.task_state = TaskState.RUNNING
            if beat["recovery_due"]:
                self._recover(tx, t)
        reply.taken = tx.taken
        return reply

    def _not_held(self, agent_id: str, tx: Tx | None = None) -> NotFound | AgentReplaced:
        """Why a statement on the agent's row (``held_by``) changed nothing: no such agent,
        or another process holds it now."""
        sql = "SELECT host, pid FROM agents WHERE id = ?"
        if tx is not None:
            row = tx.one(sql, (agent_id,))
        else:
            with self._reader() as reader:
                row = reader.one(sql, (agent_id,))
        if row is None:
            return NotFound(f"unknown agent {agent_id!r}")
        return AgentReplaced(agent_id, row["pid"], row["host"])

    def _work_waiting_sql(self, agent_id: str, roles: list[str]) -> tuple[str, list]:
        """An expression and its parameters: whether a task is handed to the agent, or queued
        for it to claim (``candidate_sql``, without its order and limit)."""
        candidates, role_params = candidate_sql(roles)
        candidates = candidates.split(" ORDER BY ")[0]
        return ("(EXISTS (SELECT 1 FROM tasks WHERE agent_id = ? AND state = 'running' "
                f"AND started_at IS NULL) OR EXISTS ({candidates}))",
                [agent_id, agent_id, *role_params])

    def set_agent_state(self, agent_id, state, note=None) -> Agent:
        with self._write() as tx:
            cur = tx.execute(
                "UPDATE agents SET state = ?, note = COALESCE(?, note) WHERE id = ?",
                (state.value, note, agent_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"unknown agent {agent_id!r}")
            tx.event("agent.state", agent_id, None, state=state.value, note=note)
            return rows.agent(tx.one("SELECT * FROM agents WHERE id = ?", (agent_id,)))

    def set_agent_session(self, agent_id, session_id) -> Agent:
        with self._write() as tx:
            row = tx.one("SELECT meta FROM agents WHERE id = ?", (agent_id,))
            if row is None:
                raise NotFound(f"unknown agent {agent_id!r}")
            meta = json.loads(row["meta"] or "{}")
            if meta.get("session_id") == session_id:
                return rows.agent(tx.one("SELECT * FROM agents WHERE id = ?", (agent_id,)))
            if session_id is None:
                meta.pop("session_id", None)
            else:
                meta["session_id"] = session_id
            tx.execute("UPDATE agents SET meta = ? WHERE id = ?", (json.dumps(meta), agent_id))
            tx.event("agent.session", agent_id, None, session_id=session_id)
            return rows.agent(tx.one("SELECT * FROM agents WHERE id = ?", (agent_id,)))

    def deregister(self, agent_id, holder=None) -> None:
        t = now()
        held_sql, held_params = held_by(holder)
        with self._write() as tx:
            cur = tx.execute(
                "UPDATE agents SET state = 'stopped', current_task = NULL, last_heartbeat = ? "
                f"WHERE id = ?{held_sql}", (t, agent_id, *held_params))
            if cur.rowcount == 0:
                raise self._not_held(agent_id, tx)
            # Handed to it while it was stopping, never started (a stopping worker hands back
            # what it runs): back to the queue without the try.
            for row in tx.all(
                "UPDATE tasks SET state = 'queued', agent_id = NULL, lease_expires = NULL, "
                "attempts = attempts - 1 WHERE agent_id = ? AND state = 'running' "
                "AND started_at IS NULL RETURNING id, attempts", (agent_id,)):
                tx.event("task.requeued", agent_id, row["id"],
                         reason="handed to an agent that stopped before starting it",
                         attempt=row["attempts"] + 1)
                tx.wake(None)
            self._orphan_tasks(tx, agent_id, "agent stopped", t)
            tx.event("agent.stopped", agent_id)

    def get_agent(self, agent_id) -> Agent:
        with self._reader() as tx:
            row = tx.one("SELECT * FROM agents WHERE id = ?", (agent_id,))
        if row is None:
            raise NotFound(f"unknown agent {agent_id!r}")
        return rows.agent(row)

    def list_agents(self) -> list[Agent]:
        with self._reader() as tx:
            return [rows.agent(r)
                    for r in tx.all("SELECT * FROM agents ORDER BY registered_at, id")]

    def remove_agents(self, agent_ids) -> AgentRemoval:
        out = AgentRemoval()
        with self._write() as tx:
            for agent_id in dict.fromkeys(agent_ids):
                # (Looked at in this transaction: one may have registered again meanwhile.)
                row = tx.one("SELECT state FROM agents WHERE id = ?", (agent_id,))
                if row is None:
                    out.kept[agent_id] = "unknown agent"
                    continue
                if row["state"] in _LIVE:
                    out.kept[agent_id] = f"it is {row['state']}"
                    continue
                work = tx.one(
                    "SELECT COUNT(*) AS n FROM tasks WHERE state IN ('blocked', 'queued', "
                    "'running') AND (agent_id = ? OR target_agent = ?)", (agent_id, agent_id))
                if work["n"]:
                    out.kept[agent_id] = (f"{work['n']} unfinished task(s) are for it "
                                          "(cancel them first)")
                    continue
                tx.execute("DELETE FROM agents WHERE id = ?", (agent_id,))
                tx.execute("DELETE FROM messages WHERE agent_id = ?", (agent_id,))
                tx.event("agent.removed", agent_id, None, was=row["state"])
                out.removed.append(agent_id)
        return out
