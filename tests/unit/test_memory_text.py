"""What a finished task, a context version and a note become as memories (sizes, chunks, ids,
provenance), the words a search looks for, snippets, and how recalled memories are cut and
headed in a prompt. No store, no model."""

from __future__ import annotations

from podium.models import ContextEntry, Memory, Priority, Task, TaskState
from podium.prompt import RECALL_INTRO, Recalled, compose
from podium.service.memory_index import MemoryHit, coverage_of
from podium.service.memory_text import (
    CHUNK_CHARS,
    OUTPUT_HEAD_BYTES,
    PROMPT_CHARS,
    chunks,
    context_memories,
    note_memories,
    query_terms,
    snippet,
    stem,
    task_memories,
    task_output_text,
    title_of,
)
from podium.service.recall import recalled_memories, source_line
from podium.store.base import FinishedTask


def finished(prompt: str, head: bytes, tail: bytes = b"", size: int | None = None,
             state: TaskState = TaskState.COMPLETED, error: str | None = None,
             role: str | None = None, roles: tuple[str, ...] = ()) -> FinishedTask:
    task = Task(id="t-abc", prompt=prompt, context=None, priority=Priority.NORMAL,
                target_agent=None, target_role=role, depends_on=[], state=state, attempts=2,
                max_attempts=3, retry_on_failure=False, timeout_s=None, created_at=1.0,
                agent_id="a1", completed_at=100.0, exit_code=0, tokens_in=11, tokens_out=4,
                error=error)
    return FinishedTask(task, head, tail, len(head) + len(tail) if size is None else size,
                        list(roles))


def test_a_short_task_is_one_memory_with_its_provenance():
    [m] = task_memories(finished("  \nFix the build\nsecond line", b"built fine", roles=("ops",)))
    assert m.text == "Fix the build\nsecond line\n\nbuilt fine"
    assert (m.kind, m.title, m.source, m.task_id, m.agent_id, m.role, m.created_at) == \
        ("task", "Fix the build", "auto", "t-abc", "a1", "ops", 100.0)
    assert m.meta == {"state": "completed", "exit_code": 0, "tokens_in": 11, "tokens_out": 4,
                      "cost_usd": None, "attempts": 2, "output_bytes": 10, "output_cut": False,
                      "chunk": 1, "chunks": 1}
    # the same work is the same id, whoever remembers it; another attempt is another
    assert task_memories(finished("Fix the build\nsecond line", b"x"))[0].id == m.id
    assert m.id.startswith("m-") and len(m.id) == 18
    assert task_memories(finished("Fix the build", b"x", role="coder", roles=("ops",)))[0].role \
        == "coder"


def test_a_long_task_is_cut_and_chunked():
    prompt = "word " * 1000  # 5000 characters
    head, tail = b"h" * OUTPUT_HEAD_BYTES, b"t" * 2000
    f = finished(prompt, head, tail, size=OUTPUT_HEAD_BYTES + 2000 + 12345)
    out = task_output_text(f)
    assert out.startswith("h" * 100) and out.endswith("t" * 100)
    assert "[... 12345 bytes of output left out ...]" in out
    ms = task_memories(f)
    assert len(ms) > 2 and all(len(m.text) <= CHUNK_CHARS + 200 for m in ms)
    assert [m.meta["chunk"] for m in ms] == list(range(1, len(ms) + 1))
    assert all(m.meta["chunks"] == len(ms) and m.meta["output_cut"] for m in ms)
    assert all(m.text.startswith(ms[0].title + "\n") for m in ms[1:])
    assert len({m.id for m in ms}) == len(ms)
    body = ms[0].text + "".join(m.text[len(ms[0].title) + 1:] for m in ms[1:])
    assert body.count("word") == PROMPT_CHARS // 5  # the prompt was cut, then the output
    assert "…\n\nhhh" in body


def test_failed_and_binary_outputs():
    [m] = task_memories(finished("deploy", b"\xff\xfe\x00\x01" * 50, state=TaskState.FAILED,
                                 error="exit 2"))
    assert m.text == "deploy\n\n(output: 200 bytes, not text)\n\nfailed: exit 2"
    assert m.meta["state"] == "failed"
    # a character cut in two by the head is not binary
    text = ("é" * 10).encode()[:-1]
    assert task_output_text(finished("p", text)) == "é" * 9 + "\ufffd"
    assert task_memories(finished("only a prompt", b""))[0].text == "only a prompt"


def test_context_versions_and_notes():
    [c] = context_memories(ContextEntry("style", "tabs, not spaces", 3, 50.0, "lead"))
    assert (c.kind, c.title, c.text, c.agent_id, c.meta["key"], c.meta["version"]) == \
        ("context", "context style (version 3)", "style\ntabs, not spaces", "lead", "style", 3)
    assert context_memories(ContextEntry("style", "other", 3, 1.0))[0].id == c.id
    assert context_memories(ContextEntry("style", "x", 4, 1.0))[0].id != c.id
    [n] = note_memories("A note", "note", "cli", None, "a1", "coder")
    assert (n.kind, n.source, n.agent_id, n.role, n.meta) == ("note", "cli", "a1", "coder", {})
    many = note_memories("x " * 2000, "note", "api", "t-1", None, None)
    assert len(many) > 1 and [m.id.rsplit("-", 1)[1] for m in many] == \
        [str(i) for i in range(1, len(many) + 1)]


def test_chunks_titles_terms_stems_snippets():
    assert chunks("") == [""] and chunks("a b") == ["a b"]
    pieces = chunks("abc " * 600, 1000)
    assert all(len(p) <= 1000 for p in pieces) and "".join(pieces).replace(" ", "") == "abc" * 600
    assert chunks("x" * 2500, 1000) == ["x" * 1000, "x" * 1000, "x" * 500]
    assert title_of("\n\n  a   b \n c") == "a b" and title_of("") == "(empty)"
    assert len(title_of("y" * 500)) == 120
    assert query_terms("How do I fix the Docker build? docker BUILD!") == ["fix", "docker",
                                                                           "build"]
    assert query_terms("the of and") == ["the", "of", "and"]  # (nothing else: kept)
    assert query_terms("openssl/ssl.h — x_y") == ["openssl", "ssl", "h", "x", "y"]
    assert [stem(w) for w in ("listing", "headers", "uses", "migrations", "ssl")] == \
        ["list", "head", "use", "migr", "ssl"]
    cover = coverage_of(["listing", "headers", "nothing"])
    assert cover("The list has a Header") == 2 / 3 and coverage_of([])("x") == 0.0
    long = "a" * 500 + " the migration failed here " + "b" * 500
    s = snippet(long, ["migrations"])
    assert "migration failed" in s and s.startswith("…") and s.endswith("…")
    assert snippet("short text", ["x"]) == "short text"


def test_recalled_memories_are_headed_and_cut_to_the_budget():
    task = Memory(id="m-1", kind="task", title="Fix it", text="done " * 3000, source="auto",
                  created_at=0.0, task_id="t-9", agent_id="a1", role="coder",
                  meta={"state": "completed", "chunk": 2, "chunks": 3})
    note = Memory(id="m-2", kind="note", title="n", text="a note", source="cli",
                  created_at=0.0, task_id="t-8")
    ctx = Memory(id="m-3", kind="context", title="c", text="k\nv", source="auto",
                 created_at=0.0, agent_id="lead", meta={"key": "k", "version": 2})
    assert source_line(task) == ("task t-9 (agent a1, role coder, completed "
                                 "1970-01-01T00:00:00.000000Z, part 2 of 3): Fix it")
    assert source_line(note) == "note m-2 (by cli in task t-8, 1970-01-01T00:00:00.000000Z)"
    assert source_line(ctx) == "shared context k version 2 (1970-01-01T00:00:00.000000Z)"
    hits = [MemoryHit(m, 1.0, None, None, None, None, "") for m in (task, note)]
    out = recalled_memories(hits, tokens=100)
    assert [len(r.text) for r in out] == [200, 6] and out[0].text.endswith("…")
    assert recalled_memories([]) == []


def test_compose_puts_recalled_memories_after_shared_context():
    shared = [ContextEntry("k", "v", 1, 0.0)]
    recalled = [Recalled("note m-1 (by cli, T)", "text one"), Recalled("task t-1 (...)", "two")]
    assert compose("p", None, [], []) == "p"
    assert compose("p", None, [], recalled) == (
        f"# Recalled memories\n{RECALL_INTRO}\n\n## 1. note m-1 (by cli, T)\ntext one\n\n"
        "## 2. task t-1 (...)\ntwo\n\n# Task\np")
    assert compose("p", "ctx", shared, recalled[:1]) == (
        f"# Shared context\n\n## k\nv\n\n# Recalled memories\n{RECALL_INTRO}\n\n"
        "## 1. note m-1 (by cli, T)\ntext one\n\n# Task context\nctx\n\n# Task\np")
