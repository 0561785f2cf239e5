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
    assert con.execute("SELECT COUNT(*) FROM schema_migrations WHERE name='m999_test_column'").fetchone()[0] == 1


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
