"""Ordered schema migrations, recorded in ``schema_migrations``.

Each migration is SQL written once with a few type placeholders that every dialect fills in
(``{id}`` an auto-increasing integer key, ``{blob}`` bytes, ``{float}`` a double). Migrations
are only ever appended; an applied one is never edited.
"""

from __future__ import annotations

from typing import TypeAlias

# A migration's SQL: the same for every dialect, or a dict from dialect name to its SQL.
MigrationSql: TypeAlias = str | dict[str, str]
Migration: TypeAlias = tuple[str, MigrationSql]  # (name, SQL)

MIGRATIONS: list[Migration] = [
    (
        "m001_initial",
        """
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    roles TEXT NOT NULL DEFAULT '[]',
    backend TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER,
    state TEXT NOT NULL,
    current_task TEXT,
    registered_at {float} NOT NULL,
    last_heartbeat {float} NOT NULL,
    lease_s {float} NOT NULL,
    note TEXT,
    tasks_done INTEGER NOT NULL DEFAULT 0,
    tokens_in BIGINT NOT NULL DEFAULT 0,
    tokens_out BIGINT NOT NULL DEFAULT 0,
    cost_usd {float} NOT NULL DEFAULT 0,
    meta TEXT NOT NULL DEFAULT '{{}}'
);
CREATE TABLE tasks (
    seq {id},
    id TEXT NOT NULL UNIQUE,
    prompt TEXT NOT NULL,
    context TEXT,
    priority INTEGER NOT NULL,
    target_agent TEXT,
    target_role TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    retry_on_failure INTEGER NOT NULL DEFAULT 0,
    timeout_s {float},
    created_at {float} NOT NULL,
    agent_id TEXT,
    lease_expires {float},
    started_at {float},
    completed_at {float},
    output {blob},
    stderr {blob},
    output_truncated INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    exit_code INTEGER,
    tokens_in BIGINT,
    tokens_out BIGINT,
    cost_usd {float},
    session_id TEXT,
    broadcast_id TEXT
);
CREATE INDEX tasks_queue ON tasks (priority, seq) WHERE state = 'queued';
CREATE INDEX tasks_running ON tasks (lease_expires) WHERE state = 'running';
CREATE INDEX tasks_state ON tasks (state, seq);
CREATE INDEX tasks_agent ON tasks (agent_id, seq);
CREATE TABLE task_deps (
    task_id TEXT NOT NULL,
    depends_on TEXT NOT NULL,
    PRIMARY KEY (task_id, depends_on)
);
CREATE INDEX task_deps_reverse ON task_deps (depends_on);
CREATE TABLE messages (
    id {id},
    agent_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    sender TEXT,
    task_id TEXT,
    created_at {float} NOT NULL,
    delivered_at {float},
    read_at {float}
);
CREATE INDEX messages_agent ON messages (agent_id, id);
CREATE TABLE events (
    id {id},
    ts {float} NOT NULL,
    kind TEXT NOT NULL,
    agent_id TEXT,
    task_id TEXT,
    data TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX events_task ON events (task_id, id);
CREATE TABLE context (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at {float} NOT NULL,
    updated_by TEXT
);
""",
    ),
    (
        # The planner preferred tasks_state (state, seq) and sorted every queued row per claim
        # (1 ms with 10,000 queued); with state leading this index it reads one entry.
        "m002_claim_index",
        """
DROP INDEX tasks_queue;
CREATE INDEX tasks_claim ON tasks (state, priority, seq) WHERE state = 'queued';
""",
    ),
    (
        # AUTOINCREMENT makes SQLite update sqlite_sequence for every row inserted: 2-4 µs per
        # task and event, most of it inside the claim transaction that all writers queue for.
        # Plain INTEGER PRIMARY KEY also takes the largest id + 1; tasks and events are never
        # deleted, so ids still only grow (the events cursor relies on that).
        "m003_sqlite_plain_rowids",
        {"sqlite": """
CREATE TABLE tasks_new (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    prompt TEXT NOT NULL,
    context TEXT,
    priority INTEGER NOT NULL,
    target_agent TEXT,
    target_role TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    retry_on_failure INTEGER NOT NULL DEFAULT 0,
    timeout_s REAL,
    created_at REAL NOT NULL,
    agent_id TEXT,
    lease_expires REAL,
    started_at REAL,
    completed_at REAL,
    output BLOB,
    stderr BLOB,
    output_truncated INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    exit_code INTEGER,
    tokens_in BIGINT,
    tokens_out BIGINT,
    cost_usd REAL,
    session_id TEXT,
    broadcast_id TEXT
);
INSERT INTO tasks_new SELECT * FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_new RENAME TO tasks;
CREATE INDEX tasks_claim ON tasks (state, priority, seq) WHERE state = 'queued';
CREATE INDEX tasks_running ON tasks (lease_expires) WHERE state = 'running';
CREATE INDEX tasks_state ON tasks (state, seq);
CREATE INDEX tasks_agent ON tasks (agent_id, seq);
CREATE TABLE events_new (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    agent_id TEXT,
    task_id TEXT,
    data TEXT NOT NULL DEFAULT '{{}}'
);
INSERT INTO events_new SELECT * FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_task ON events (task_id, id);
"""},
    ),
    (
        # An idle worker that listens for hand-offs is marked ``pushable``: adding a task it may
        # take assigns the task to it in the same transaction (see SqlStore.add_tasks). A task
        # handed over and not yet picked up is running with no ``started_at``; the index finds
        # those of one agent without reading its history.
        "m004_push",
        """
ALTER TABLE agents ADD COLUMN pushable INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_pushed ON tasks (agent_id) WHERE state = 'running' AND started_at IS NULL;
""",
    ),
    (
        # A random secret per store, readable only by those who may read the store's tables
        # (``SqlStore.store_secret`` fills it in). PostgreSQL derives its notification channels
        # from it, so a role that can merely connect cannot listen to them or send on them;
        # and transactions lock this table (not an advisory lock, which any role can take) to
        # write their events in id order.
        "m005_store_key",
        """
CREATE TABLE store_key (
    id INTEGER PRIMARY KEY,
    secret TEXT NOT NULL
);
""",
    ),
    (
        # The workflow a task is a step of (workflows are tasks and dependencies in the store).
        "m006_task_workflow",
        """
ALTER TABLE tasks ADD COLUMN workflow_id TEXT;
""",
    ),
    (
        # One word for one thing: an agent that is handed tasks as they are added.
        "m007_hand_off_names",
        """
ALTER TABLE agents RENAME COLUMN pushable TO takes_hand_offs;
DROP INDEX tasks_pushed;
CREATE INDEX tasks_handed ON tasks (agent_id) WHERE state = 'running' AND started_at IS NULL;
""",
    ),
    (
        # A history that stays fast, and can be pruned (podium.store.sql.history).
        # task_counts: finished tasks by state, kept by every transaction that finishes or
        # removes tasks (the other states are counted through tasks_state: they are few).
        # output_pruned: 1 once a prune with keep-results cleared the output and stderr.
        # tasks_finished finds finished tasks by age; messages_task a task's messages.
        # housekeeping: when a periodic job (the automatic prune) last ran, for all processes.
        "m008_history",
        """
CREATE TABLE task_counts (
    state TEXT PRIMARY KEY,
    n BIGINT NOT NULL
);
INSERT INTO task_counts (state, n)
    SELECT 'completed', COUNT(*) FROM tasks WHERE state = 'completed';
INSERT INTO task_counts (state, n)
    SELECT 'failed', COUNT(*) FROM tasks WHERE state = 'failed';
INSERT INTO task_counts (state, n)
    SELECT 'cancelled', COUNT(*) FROM tasks WHERE state = 'cancelled';
ALTER TABLE tasks ADD COLUMN output_pruned INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_finished ON tasks (output_pruned, completed_at)
    WHERE state IN ('completed', 'failed', 'cancelled');
CREATE INDEX messages_task ON messages (task_id) WHERE task_id IS NOT NULL;
CREATE TABLE housekeeping (
    name TEXT PRIMARY KEY,
    done_at {float} NOT NULL
);
INSERT INTO housekeeping (name, done_at) VALUES ('prune', 0);
""",
    ),
    (
        # Semantic memory (podium.store.sql.memory): remembered items with their provenance and
        # keyword search — SQLite FTS5 over an external-content table kept in step by the
        # statements that write memories (no triggers), PostgreSQL a generated tsvector with a
        # GIN index (of the text with / . @ : as spaces, so that openssl/ssl.h or a host name
        # is words, as FTS5 reads it, not one file or host token). model_id names the model of
        # a memory's vector (the vectors themselves are in a vector store, podium.memory);
        # NULL while it has none. memory_cursor: the event up to which finished tasks and
        # context versions were turned into memories. The
        # cursor starts at 0, so a store's whole history is remembered. tasks.recall: how many
        # memories to put in front of the task's prompt (NULL: the agent's setting).
        "m009_memory",
        {"sqlite": """
CREATE TABLE memories (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    task_id TEXT,
    agent_id TEXT,
    role TEXT,
    source TEXT NOT NULL,
    created_at REAL NOT NULL,
    model_id TEXT,
    meta TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX memories_task ON memories (task_id) WHERE task_id IS NOT NULL;
CREATE INDEX memories_model ON memories (model_id, seq);
CREATE INDEX memories_kind ON memories (kind, created_at);
CREATE VIRTUAL TABLE memories_fts USING fts5(
    text, content = 'memories', content_rowid = 'seq',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TABLE memory_cursor (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
INSERT INTO memory_cursor (name, position) VALUES ('events', 0);
ALTER TABLE tasks ADD COLUMN recall INTEGER;
""", "postgresql": """
CREATE TABLE memories (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    task_id TEXT,
    agent_id TEXT,
    role TEXT,
    source TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    model_id TEXT,
    meta TEXT NOT NULL DEFAULT '{{}}',
    tsv tsvector GENERATED ALWAYS AS
        (to_tsvector('english', translate(text, '/.@:', '    '))) STORED
);
CREATE INDEX memories_task ON memories (task_id) WHERE task_id IS NOT NULL;
CREATE INDEX memories_model ON memories (model_id, seq);
CREATE INDEX memories_kind ON memories (kind, created_at);
CREATE INDEX memories_tsv ON memories USING GIN (tsv);
CREATE TABLE memory_cursor (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
INSERT INTO memory_cursor (name, position) VALUES ('events', 0);
ALTER TABLE tasks ADD COLUMN recall INTEGER;
"""},
    ),
    (
        # The dashboard's history filtered by role pages through the tasks for that role alone
        # (a rare role was a scan of every task: 10 ms at 100,000); tasks for anyone (most of
        # them) are left out of the index, so adding those costs nothing more.
        "m010_tasks_role",
        """
CREATE INDEX tasks_role ON tasks (target_role, seq) WHERE target_role IS NOT NULL;
""",
    ),
    (
        # The memory indexers of several hosts share the embedding: each claims the memories
        # it is about to embed until embed_claimed_until (a time, as leases are), so that no
        # two embed the same ones at once; a claim whose indexer died runs out and is taken
        # again. (Reads that embed what is missing ignore claims: they must not wait.)
        "m011_memory_embed_claims",
        """
ALTER TABLE memories ADD COLUMN embed_claimed_until {float};
""",
    ),
]


def statements(sql: MigrationSql, types: dict[str, str]) -> list[str]:
    """Fill in the dialect's types and split into single statements.

    A migration that only one dialect needs is a dict from dialect name to SQL; the other
    dialects record it as applied without running anything.
    """
    if isinstance(sql, dict):
        sql = sql.get(types["dialect"], "")
    filled = sql.format(**types)
    return [s.strip() for s in filled.split(";") if s.strip()]
