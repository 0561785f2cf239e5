"""Migrations: from a blank database, and from an older schema to the newest."""

from __future__ import annotations

import sqlite3

from podium.store import migrations, open_store


def test_blank_database_gets_every_migration(tmp_path):
    s = open_store(str(tmp_path / "p.db"))
    s.close()
    con = sqlite3.connect(tmp_path / "p.db")
    names = [r[0] for r in con.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert names == [name for name, _ in migrations.MIGRATIONS]
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"agents", "tasks", "task_deps", "messages", "events", "context"} <= tables


def test_old_schema_is_upgraded_in_order(tmp_path, monkeypatch):
    path = str(tmp_path / "p.db")
    s = open_store(path)
    s.set_context("keep", "me")
    s.close()
    extra = ("m999_test_column", "ALTER TABLE context ADD COLUMN note TEXT;"
                                 "CREATE INDEX context_note ON context (note)")
    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, extra])
    import podium.store.sqlite as sqlite_mod
    monkeypatch.setattr(sqlite_mod, "MIGRATIONS", migrations.MIGRATIONS)
    s = open_store(path)
    assert s.migrate() == []  # opening applied it already
    assert s.get_context("keep").value == "me"  # data survives
    s.close()
    con = sqlite3.connect(path)
    cols = [r[1] for r in con.execute("PRAGMA table_info(context)")]
    assert "note" in cols
    applied = con.execute(
        "SELECT COUNT(*) FROM schema_migrations WHERE name='m999_test_column'").fetchone()[0]
    assert applied == 1


def test_migration_failure_leaves_database_unchanged(tmp_path, monkeypatch):
    path = str(tmp_path / "p.db")
    open_store(path).close()
    bad = ("m998_broken", "ALTER TABLE context ADD COLUMN x TEXT; THIS IS NOT SQL")
    import podium.store.sqlite as sqlite_mod
    monkeypatch.setattr(sqlite_mod, "MIGRATIONS", [*migrations.MIGRATIONS, bad])
    try:
        open_store(path)
    except Exception as e:
        assert "syntax error" in str(e)
    else:
        raise AssertionError("a broken migration must fail")
    con = sqlite3.connect(path)
    assert "x" not in [r[1] for r in con.execute("PRAGMA table_info(context)")]


def test_plain_rowids_upgrade_keeps_rows_and_ids_keep_growing(tmp_path, monkeypatch):
    """m003 rebuilds tasks and events without AUTOINCREMENT; nothing is lost or reused."""
    import podium.store.sqlite as sqlite_mod
    from podium.models import TaskSpec

    path = str(tmp_path / "p.db")
    old = [m for m in migrations.MIGRATIONS if m[0] < "m003"]
    monkeypatch.setattr(sqlite_mod, "MIGRATIONS", old)
    open_store(path).close()
    # Rows as the code of that schema wrote them (today's code needs today's columns).
    con = sqlite3.connect(path)
    assert "AUTOINCREMENT" in con.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()[0]
    with con:
        for i in range(5):
            con.execute("INSERT INTO tasks (id, prompt, priority, state, max_attempts, created_at, "
                        "error) VALUES (?, ?, 1, ?, 1, ?, ?)",
                        (f"t-old{i}", f"p{i}", "cancelled" if i == 0 else "queued", 1.0 + i,
                         "old news" if i == 0 else None))
            con.execute("INSERT INTO events (ts, kind, task_id) VALUES (?, 'task.queued', ?)",
                        (1.0 + i, f"t-old{i}"))
    last_event = con.execute("SELECT MAX(id) FROM events").fetchone()[0]
    con.close()

    monkeypatch.setattr(sqlite_mod, "MIGRATIONS", migrations.MIGRATIONS)
    s = open_store(path)
    assert [t.prompt for t in s.list_tasks()] == [f"p{i}" for i in range(5)]
    assert s.get_task("t-old0").error == "old news"
    assert [e.id for e in s.read_events()][-1] == last_event
    after = s.add_tasks([TaskSpec(prompt="new")])[0]
    assert s.get_task(after.id).seq > max(t.seq for t in s.list_tasks() if t.id != after.id)
    assert s.read_events(after=last_event)[0].task_id == after.id
    s.close()
    con = sqlite3.connect(path)
    for table in ("tasks", "events"):
        assert "AUTOINCREMENT" not in con.execute(
            "SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"tasks_claim", "tasks_running", "tasks_state", "tasks_agent", "events_task"} <= indexes
