"""The column registry (podium.store.sql.rows) and the models agree, without a database."""

from __future__ import annotations

import dataclasses

from podium.models import Outcome, Priority, Task, TaskSpec, TaskState
from podium.store.sql import rows


def test_every_task_field_is_a_column_and_back():
    columns = {c.name for c in rows.TASK_COLUMNS}
    fields = {f.name for f in dataclasses.fields(Task)}
    # (dependencies live in task_deps; the context generation is computed by a claim)
    assert fields - columns == {"depends_on", "context_generation"}
    assert columns <= fields


def test_every_spec_field_is_a_task_field():
    spec_fields = {f.name for f in dataclasses.fields(TaskSpec)}
    assert spec_fields <= {f.name for f in dataclasses.fields(Task)}


def test_a_new_task_row_round_trips():
    task = Task(id="t-1", prompt="p", context=None, priority=Priority.HIGH, target_agent=None,
                target_role="r", depends_on=[], state=TaskState.QUEUED, attempts=0,
                max_attempts=3, retry_on_failure=True, timeout_s=2.5, created_at=1.0,
                workflow_id="w-1")
    values = dict(zip((c.name for c in rows.TASK_COLUMNS if c.inserted), rows.insert_row(task)))
    assert values["priority"] == 0 and values["state"] == "queued"
    assert values["retry_on_failure"] == 1 and values["workflow_id"] == "w-1"
    # (what the database fills in: the seq, and the flags' NOT NULL defaults)
    stored = {c.name: None for c in rows.TASK_COLUMNS} | values | {
        "seq": 7, "output_truncated": 0, "output_pruned": 0}
    back = rows.task(stored, [])
    assert back == dataclasses.replace(task, seq=7)


def test_result_columns_are_outcome_fields():
    outcome_fields = {f.name for f in dataclasses.fields(Outcome)}
    assert {name for name, _ in rows.RESULT_COLUMNS} <= outcome_fields
    o = Outcome(TaskState.COMPLETED, output=b"x", output_truncated=True, tokens_in=3)
    assert rows.result_values(o) == [b"x", None, 1, None, 3, None, None]
