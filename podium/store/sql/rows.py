"""The column registry: a task's columns declared once, and rows turned into models.

``TASK_COLUMNS`` names every column of ``tasks`` (each is the ``Task`` field of the same name)
with how it is stored and when it is written: from the ``TaskSpec`` when a task is added, by
the lifecycle (state, claims, leases), or from a run's ``Outcome`` when its result is recorded.
The SELECT lists, the INSERT of ``add_tasks`` and the result updates are derived from it, so a
new task column is one line here, its ``Task``/``TaskSpec`` field and a migration.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from podium.models import Agent, AgentState, ContextEntry, Message, Priority, Task, TaskState

# How values are stored, where they differ from the Python value (C callables: a batch of adds
# runs them for every task): a priority and a flag as INTEGER (psycopg would write an Enum by
# name, and bools as BOOLEAN), a state by its value.
_as_int: Callable[[Any], Any] = int
_state_value: Callable[[Any], Any] = attrgetter("value")


def _blob(value: Any) -> bytes | None:
    return value if value is None or isinstance(value, bytes) else bytes(value)


#: Priority by value (a dict look-up rather than calling the enum for every row).
PRIORITY_OF = {p.value: p for p in Priority}


@dataclass(frozen=True)
class Column:
    """One column of ``tasks``: its name (the ``Task`` field too) and how values are stored."""

    name: str
    #: Python value -> stored value (None: stored as it is).
    store: Callable[[Any], Any] | None = None
    #: Stored value -> Python value (None: read as it is).
    load: Callable[[Any], Any] | None = None
    #: Written by the INSERT of ``add_tasks`` (False: the database's default or later updates).
    inserted: bool = True
    #: Output columns, left out of listings (they can be megabytes).
    large: bool = False


TASK_COLUMNS: tuple[Column, ...] = (
    Column("seq", inserted=False),
    Column("id"),
    Column("prompt"),
    Column("context"),
    Column("priority", _as_int, PRIORITY_OF.__getitem__),
    Column("target_agent"),
    Column("target_role"),
    Column("state", _state_value, {s.value: s for s in TaskState}.__getitem__),
    Column("attempts"),
    Column("max_attempts"),
    Column("retry_on_failure", _as_int, bool),
    Column("timeout_s"),
    Column("created_at"),
    Column("agent_id"),
    Column("lease_expires"),
    Column("started_at", inserted=False),
    Column("completed_at"),
    Column("output", load=_blob, inserted=False, large=True),
    Column("stderr", load=_blob, inserted=False, large=True),
    Column("output_truncated", _as_int, bool, inserted=False),
    Column("output_pruned", _as_int, bool, inserted=False),
    Column("error"),
    Column("exit_code", inserted=False),
    Column("tokens_in", inserted=False),
    Column("tokens_out", inserted=False),
    Column("cost_usd", inserted=False),
    Column("session_id"),
    Column("broadcast_id"),
    Column("workflow_id"),
    Column("recall"),
)

#: Every column but the output ones (listings, claims), and all of them.
TASK_SUMMARY_SQL = ", ".join(c.name for c in TASK_COLUMNS if not c.large)
TASK_SQL = ", ".join(c.name for c in TASK_COLUMNS)

_INSERTED = [c for c in TASK_COLUMNS if c.inserted]
#: The INSERT of new tasks (``add_tasks``); ``insert_row`` gives its parameters.
INSERT_TASKS_SQL = (f"INSERT INTO tasks ({', '.join(c.name for c in _INSERTED)}) "
                    f"VALUES ({', '.join('?' * len(_INSERTED))})")
_inserted_values = attrgetter(*(c.name for c in _INSERTED))
_inserted_stores = [(i, c.store) for i, c in enumerate(_INSERTED) if c.store is not None]


def insert_row(task: Task) -> tuple:
    """The parameters of ``INSERT_TASKS_SQL`` for a new task."""
    values = list(_inserted_values(task))
    for i, store in _inserted_stores:
        values[i] = store(values[i])
    return tuple(values)


def _task_reader(columns: list[Column]) -> Callable[[Any, list[str]], Task]:
    """A function that makes the ``Task`` of a row holding ``columns``."""
    names = [c.name for c in columns]
    loads = [(c.name, c.load) for c in columns if c.load is not None]

    def read(row: Any, depends_on: list[str]) -> Task:
        fields = {name: row[name] for name in names}
        for name, load in loads:
            if fields[name] is not None:
                fields[name] = load(fields[name])
        return Task(depends_on=depends_on, **fields)
    return read


_read_task = _task_reader(list(TASK_COLUMNS))
_read_summary = _task_reader([c for c in TASK_COLUMNS if not c.large])


def task(row: Any, depends_on: list[str], with_output: bool = True) -> Task:
    """The ``Task`` of a row (a SELECT of ``TASK_SQL``, or ``TASK_SUMMARY_SQL`` without its
    output)."""
    return (_read_task if with_output else _read_summary)(row, depends_on)


# -- what a recorded run writes --------------------------------------------------------------

#: Columns that a run's result sets from its ``Outcome`` field of the same name, in order, and
#: their SQL types for the casts of a multi-row VALUES list (names of the ``float``/``blob``
#: types are the dialect's).
RESULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("output", "blob"), ("stderr", "blob"), ("output_truncated", "INTEGER"),
    ("exit_code", "INTEGER"), ("tokens_in", "BIGINT"), ("tokens_out", "BIGINT"),
    ("cost_usd", "float"),
)


def result_values(outcome: Any) -> list[Any]:
    """The values of ``RESULT_COLUMNS`` for an ``Outcome``."""
    return [int(outcome.output_truncated) if name == "output_truncated" else
            getattr(outcome, name) for name, _ in RESULT_COLUMNS]


# -- the other nouns -------------------------------------------------------------------------

def agent(row: Any) -> Agent:
    return Agent(
        id=row["id"], name=row["name"], roles=json.loads(row["roles"]), backend=row["backend"],
        host=row["host"], pid=row["pid"], state=AgentState(row["state"]),
        current_task=row["current_task"], registered_at=row["registered_at"],
        last_heartbeat=row["last_heartbeat"], note=row["note"], tasks_done=row["tasks_done"],
        tokens_in=row["tokens_in"], tokens_out=row["tokens_out"], cost_usd=row["cost_usd"],
        meta=json.loads(row["meta"]),
    )


def message(row: Any) -> Message:
    return Message(
        id=row["id"], agent_id=row["agent_id"], direction=row["direction"], kind=row["kind"],
        body=row["body"], sender=row["sender"], task_id=row["task_id"],
        created_at=row["created_at"], delivered_at=row["delivered_at"], read_at=row["read_at"],
    )


def context_entry(row: Any) -> ContextEntry:
    return ContextEntry(row["key"], row["value"], row["version"], row["updated_at"],
                        row["updated_by"])
