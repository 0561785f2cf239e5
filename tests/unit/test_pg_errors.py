"""PostgreSQL's errors as the user sees them (``podium.store.pgconnect.explain``): the ones
that may pass by themselves are StoreUnavailable (workers back off and try again; the CLI says
it cannot reach the server), the ones that need someone to act are StoreError."""

from __future__ import annotations

import pytest

from podium.errors import StoreError, StoreUnavailable
from podium.store.pgconnect import explain

psycopg = pytest.importorskip("psycopg")
URL = "postgresql://podium:secret@db.example/podium"


@pytest.mark.parametrize("error", [
    # libpq's own failures: no SQLSTATE
    psycopg.OperationalError("consuming input failed: SSL error: unexpected eof while reading"),
    psycopg.OperationalError("the connection is lost"),
    psycopg.OperationalError("connection failed: connection to server at \"10.0.0.1\", port "
                             "5432 failed: Connection refused"),
    psycopg.errors.DeadlockDetected("deadlock detected"),
    psycopg.errors.SerializationFailure("could not serialize access"),
    psycopg.errors.TooManyConnections("sorry, too many clients already"),
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg.errors.CannotConnectNow("the database system is starting up"),
    psycopg.errors.LockNotAvailable("could not obtain lock on relation"),
])
def test_what_may_pass_by_itself_is_unavailable(error):
    e = explain(error, URL)
    assert isinstance(e, StoreUnavailable), e
    assert "secret" not in str(e) and "\n" not in str(e)


@pytest.mark.parametrize("error", [
    psycopg.OperationalError('connection failed: FATAL:  database "nope" does not exist'),
    psycopg.OperationalError("connection failed: FATAL:  password authentication failed for "
                             "user \"podium\""),
    psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
    psycopg.errors.InsufficientPrivilege("permission denied for table tasks"),
    psycopg.errors.UndefinedTable("relation \"tasks\" does not exist"),
])
def test_what_needs_someone_to_act_is_an_error(error):
    e = explain(error, URL)
    assert type(e) is StoreError, e
    assert "secret" not in str(e) and "\n" not in str(e)
