"""The mailbox: messages to and from agents, shared context, and the event log."""

from __future__ import annotations

import json

from podium.clock import now
from podium.errors import InvalidInput, NotFound
from podium.models import ContextEntry, Event, Message
from podium.store.sql import rows
from podium.store.sql.tx import SqlBase


class Mailbox(SqlBase):
    # -- messages -------------------------------------------------------------------
    def add_message(self, agent_id, body, direction="in", kind="message", sender=None,
                    task_id=None) -> Message:
        if direction not in ("in", "out"):
            raise InvalidInput(f"bad message direction {direction!r}: expected in or out")
        with self._write() as tx:
            if tx.one("SELECT 1 FROM agents WHERE id = ?", (agent_id,)) is None:
                raise NotFound(f"unknown agent {agent_id!r}")
            row = tx.one(
                "INSERT INTO messages (agent_id, direction, kind, body, sender, task_id, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (agent_id, direction, kind, body, sender, task_id, now()))
            msg_id = row["id"]
            tx.event("message.sent", agent_id, task_id, message_id=msg_id, direction=direction,
                     message_kind=kind, sender=sender)
            if direction == "in":
                tx.wake(agent_id)
            return rows.message(tx.one("SELECT * FROM messages WHERE id = ?", (msg_id,)))

    def mark_delivered(self, message_id, confirmed, how, reason=None) -> Message:
        with self._write() as tx:
            row = tx.one("SELECT * FROM messages WHERE id = ?", (message_id,))
            if row is None:
                raise NotFound(f"unknown message {message_id}")
            tx.execute("UPDATE messages SET delivered_at = ? WHERE id = ?", (now(), message_id))
            tx.event("message.delivered", row["agent_id"], row["task_id"], message_id=message_id,
                     confirmed=confirmed, via=how, reason=reason)
            return rows.message(tx.one("SELECT * FROM messages WHERE id = ?", (message_id,)))

    def list_messages(self, agent_id, direction=None, unread=False, limit=100,
                      mark_read=False) -> list[Message]:
        where, params = ["agent_id = ?"], [agent_id]
        if direction is not None:
            where.append("direction = ?")
            params.append(direction)
        if unread:
            where.append("read_at IS NULL")
        sql = (f"SELECT * FROM messages WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?")
        params.append(limit)
        ctx = self._write() if mark_read else self._reader()
        with ctx as tx:
            if tx.one("SELECT 1 FROM agents WHERE id = ?", (agent_id,)) is None:
                raise NotFound(f"unknown agent {agent_id!r}")
            found = tx.all(sql, params)
            msgs = [rows.message(r) for r in reversed(found)]
            if mark_read and msgs:
                t = now()
                ids = [m.id for m in msgs if m.read_at is None]
                if ids:
                    tx.execute(
                        "UPDATE messages SET read_at = ?, "
                        "delivered_at = COALESCE(delivered_at, ?) "
                        f"WHERE id IN ({', '.join('?' * len(ids))})", (t, t, *ids))
                    tx.event("message.read", agent_id, None, message_ids=ids)
        return msgs

    # -- context --------------------------------------------------------------------
    def set_context(self, key, value, by=None) -> ContextEntry:
        if not key:
            raise InvalidInput("context key must not be empty")
        t = now()
        with self._write() as tx:
            row = tx.one("SELECT version FROM context WHERE key = ?", (key,))
            version = 1 if row is None else row["version"] + 1
            if row is None:
                tx.execute("INSERT INTO context (key, value, version, updated_at, updated_by) "
                           "VALUES (?, ?, ?, ?, ?)", (key, value, version, t, by))
            else:
                tx.execute("UPDATE context SET value = ?, version = ?, updated_at = ?, "
                           "updated_by = ? WHERE key = ?", (value, version, t, by, key))
            tx.event("context.set", by, None, key=key, version=version)
        return ContextEntry(key, value, version, t, by)

    def get_context(self, key) -> ContextEntry:
        with self._reader() as tx:
            row = tx.one("SELECT * FROM context WHERE key = ?", (key,))
        if row is None:
            raise NotFound(f"unknown context key {key!r}")
        return rows.context_entry(row)

    def list_context(self) -> list[ContextEntry]:
        with self._reader() as tx:
            found = tx.all("SELECT * FROM context ORDER BY key")
        return [rows.context_entry(r) for r in found]

    # -- events ---------------------------------------------------------------------
    def add_event(self, kind, agent_id=None, task_id=None, data=None) -> None:
        with self._write() as tx:
            tx.event(kind, agent_id, task_id, **(data or {}))

    def read_events(self, after=0, limit=1000, task_id=None) -> list[Event]:
        with self._reader() as tx:
            if task_id is None:
                found = tx.all("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?",
                               (after, limit))
            else:
                found = tx.all("SELECT * FROM events WHERE task_id = ? AND id > ? ORDER BY id "
                               "LIMIT ?", (task_id, after, limit))
        return [Event(r["id"], r["ts"], r["kind"], r["agent_id"], r["task_id"],
                      json.loads(r["data"])) for r in found]

    def last_event_id(self) -> int:
        with self._reader() as tx:
            row = tx.one("SELECT MAX(id) AS m FROM events")
        return row["m"] or 0
