"""PostgreSQL write transactions: BEGIN waits for the first statement, so that the two reach the
server in one round trip (``podium.store.postgres._PgTx``), and everything else behaves as
with BEGIN alone: a first statement that fails rolls the transaction back, row counts are
there, and the connection serves the next transaction. A result and the next claim go out
together with BEGIN (``Tx.all_together``), and what the result freed is still claimed.

Round trips are counted on the wire, from libpq's own trace of the store's one pooled
connection (``PGconn.trace``): every simple Query and every Sync the client sends is one wait
for the server.
"""

from __future__ import annotations

import os
import re
import tempfile

import pytest

from podium.errors import StoreError
from podium.models import Outcome, TaskSpec, TaskState
from podium.store.base import Finish


@pytest.fixture
def pg_store(pg_url):
    from podium.store.postgres import PostgresStore

    s = PostgresStore(pg_url, pool_size=1, host_route=False)
    yield s
    s.close()


def _round_trips(store, action) -> tuple[int, list[str]]:
    """Run ``action()``, return the round trips it took on the store's connection, and the
    messages the client sent."""
    from psycopg import pq

    with tempfile.TemporaryFile("w+") as f:
        with store._pool.connection() as conn:
            conn.pgconn.trace(f.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            action()
        finally:
            with store._pool.connection() as conn:
                conn.pgconn.untrace()
        f.seek(0)
        sent = [line for line in f.read().splitlines() if line.startswith("F\t")]
    waits = [m for m in sent if re.match(r"F\t\d+\t(Query|Sync)\b", m)]
    return len(waits), sent


def test_an_add_handing_its_task_over_takes_two_round_trips(pg_store):
    pg_store.register_agent("a1", [], "shell", "host", os.getpid(), 30, {},
                            takes_hand_offs=True)
    pg_store.add_tasks([TaskSpec("warm-up")])  # (the hand-off; a1 is busy with it now)
    pg_store.register_agent("a2", [], "shell", "host", os.getpid(), 30, {},
                            takes_hand_offs=True)
    trips, sent = _round_trips(pg_store, lambda: pg_store.add_tasks([TaskSpec("handed")]))
    # BEGIN with the SELECT of the idle agents; then the writes, events, NOTIFY and COMMIT.
    assert trips == 2, "\n".join(sent)
    [task] = [t for t in pg_store.list_tasks() if t.prompt == "handed"]
    assert (task.state.value, task.agent_id) == ("running", "a2")


def test_a_result_and_the_next_claim_take_two_round_trips(pg_store):
    """The result of a run and the agent's next claim go out with BEGIN; the commit's tail is
    the other round trip."""
    pg_store.register_agent("a1", [], "shell", "host", os.getpid(), 30, {})
    pg_store.add_tasks([TaskSpec("first"), TaskSpec("second")])
    [first] = pg_store.claim_batch("a1", [], 30, [], 1)
    done = Finish(first.id, first.attempts, Outcome(TaskState.COMPLETED, output=b"ok",
                                                     exit_code=0))
    got: list = []
    trips, sent = _round_trips(
        pg_store, lambda: got.extend(pg_store.claim_batch("a1", [], 30, [done], 1)))
    assert trips == 2, "\n".join(sent)
    assert [t.prompt for t in got] == ["second"]
    assert pg_store.task_state(first.id) is TaskState.COMPLETED


def test_a_claim_after_results_takes_what_they_freed(pg_store):
    """A dependent that a result frees, and a failure to retry, are claimed by the same call,
    after the statements that went out together with the results."""
    pg_store.register_agent("a1", [], "shell", "host", os.getpid(), 30, {})
    [src, retry] = pg_store.add_tasks([TaskSpec("src"),
                                       TaskSpec("retry", retry_on_failure=True, max_attempts=2)])
    [after] = pg_store.add_tasks([TaskSpec("after", depends_on=[src.id])])
    claimed = pg_store.claim_batch("a1", [], 30, [], 2)
    assert {t.id for t in claimed} == {src.id, retry.id}
    by_id = {t.id: t for t in claimed}
    finishes = [Finish(src.id, by_id[src.id].attempts, Outcome(TaskState.COMPLETED, exit_code=0)),
                Finish(retry.id, by_id[retry.id].attempts,
                       Outcome(TaskState.FAILED, exit_code=1, error="again"))]
    again = pg_store.claim_batch("a1", [], 30, finishes, 5)
    assert sorted(t.id for t in again) == sorted([after.id, retry.id])


def test_a_transaction_whose_first_statement_fails_leaves_nothing(pg_store):
    before = pg_store.list_tasks()
    with pytest.raises(Exception) as err:
        with pg_store._write() as tx:
            tx.execute("SELECT no_such_column FROM tasks")
    assert "no_such_column" in str(err.value)
    assert not isinstance(err.value, AssertionError)
    # The connection is back in the pool, out of the failed transaction and its pipeline.
    [t] = pg_store.add_tasks([TaskSpec("after")])
    assert [x.id for x in pg_store.list_tasks()] == [x.id for x in before] + [t.id]


def test_a_later_failure_undoes_the_first_statement(pg_store):
    with pytest.raises(StoreError):
        with pg_store._write() as tx:
            tx.execute("INSERT INTO context (key, value, version, updated_at, updated_by) "
                       "VALUES ('k', 'v', 1, 0, NULL)")
            raise StoreError("changed my mind")
    assert pg_store.list_context() == []


def test_row_counts_of_the_first_statement_are_there(pg_store):
    [a, b] = pg_store.add_tasks([TaskSpec("one"), TaskSpec("two")])
    with pg_store._write() as tx:
        n = tx.execute("UPDATE tasks SET priority = priority WHERE id IN (?, ?)",
                       (a.id, b.id)).rowcount
        none = tx.execute("UPDATE tasks SET priority = priority WHERE id = 'nope'").rowcount
    assert (n, none) == (2, 0)


def test_a_transaction_with_no_statement_of_its_own_commits_its_tail(pg_store):
    trips, _ = _round_trips(pg_store, lambda: pg_store.add_event("just.this", data={"x": 1}))
    assert trips == 1
    assert [e.kind for e in pg_store.read_events(0, 100)] == ["just.this"]


def test_a_server_that_refuses_writes_gives_one_line_and_changes_nothing(pg_url):
    """A server in read-only mode (a standby after a failover, or default_transaction_read_only
    as here) refuses the write: the command says so in one line and exits 1, with no traceback;
    a read still works."""
    import subprocess
    import sys

    from podium.store import open_store

    open_store(pg_url).close()  # (the schema made while writes are allowed)
    read_only = pg_url + "%20-cdefault_transaction_read_only%3Don"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    r = subprocess.run([sys.executable, "-m", "podium", "--store", read_only, "task", "add",
                        "x"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1, r
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "read-only" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "podium", "--store", read_only, "task", "list"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    s = open_store(pg_url)
    try:
        assert s.list_tasks() == []
    finally:
        s.close()
