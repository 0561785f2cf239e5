"""Memories in the store, on SQLite and PostgreSQL alike: provenance kept, keyword search in
step with every add and removal, finished work read past the cursor exactly once, embeddings
tracked per model, and the rows surviving a reopen, a prune and a store copy."""

from __future__ import annotations

import threading
import time

import pytest

from podium.models import Memory, Outcome, TaskSpec, TaskState
from podium.store import Finish, open_store
from podium.store.base import MemoryFilter
from podium.store.copy import copy_store


def mem(mid: str, text: str, kind: str = "note", **kw) -> Memory:
    return Memory(id=mid, kind=kind, title=text.splitlines()[0][:40], text=text,
                  source=kw.pop("source", "cli"), created_at=kw.pop("created_at", time.time()),
                  **kw)


def run_task(store, prompt: str, output: bytes = b"", state=TaskState.COMPLETED,
             agent: str = "a1", role: str | None = None, error: str | None = None):
    """Add a task and finish it as ``agent`` (registered with role ``coder``)."""
    if not any(a.id == agent for a in store.list_agents()):
        store.register_agent(agent, ["coder"], "echo", "host", 123, 30.0, {})
    task = store.add_tasks([TaskSpec(prompt, target_role=role)])[0]
    claimed = store.claim(agent, ["coder"] if role else [], 30.0)
    assert claimed.id == task.id
    store.finish(agent, Finish(task.id, claimed.attempts,
                               Outcome(state, output=output, exit_code=0, error=error,
                                       tokens_in=7, tokens_out=3)))
    return store.get_task(task.id)


def test_memories_keep_their_provenance(store):
    t = run_task(store, "a task")
    m = mem("m-1", "the deploy needs the VPN\nsecond line", task_id=t.id, agent_id="a1",
            role="coder", source="agent", meta={"why": ["a", 1]})
    assert store.add_memories([m]) == []
    got = store.get_memories(["m-1", "m-missing"])
    assert list(got) == ["m-1"]
    g = got["m-1"]
    assert (g.kind, g.title, g.text, g.task_id, g.agent_id, g.role, g.source, g.meta) == \
        ("note", m.title, m.text, t.id, "a1", "coder", "agent", {"why": ["a", 1]})
    assert g.model_id is None and g.seq > 0 and abs(g.created_at - m.created_at) < 1e-6
    # the same id again changes nothing; a note is an event, with who added it
    store.add_memories([mem("m-1", "something else entirely")])
    assert store.get_memories(["m-1"])["m-1"].text == m.text
    added = [e for e in store.read_events() if e.kind == "memory.added"]
    assert [(e.task_id, e.agent_id, e.data["memory_id"], e.data["source"]) for e in added] == \
        [(t.id, "a1", "m-1", "agent")]


def test_keyword_search_stems_ranks_and_filters(store):
    t = run_task(store, "t")
    old = time.time() - 3600
    store.add_memories([
        mem("m-mig", "Migrations failed: the database was locked during migrating",
            role="coder", created_at=old),
        mem("m-lock", "The lock file was stale", kind="context", role="reviewer"),
        mem("m-own", "migration notes of the task itself", task_id=t.id),
        mem("m-none", "nothing relevant here at all"),
    ])
    found = store.keyword_search(["migration"], 10)
    assert [i for i, _ in found][:2] in (["m-mig", "m-own"], ["m-own", "m-mig"])
    assert "m-none" not in dict(found) and all(s > 0 for _, s in found)
    # more of the query's words in a memory rank it higher
    ranked = [i for i, _ in store.keyword_search(["database", "locked", "migration"], 10)]
    assert ranked[0] == "m-mig" and set(ranked) == {"m-mig", "m-lock", "m-own"}
    # filters
    assert [i for i, _ in store.keyword_search(["lock"], 10, MemoryFilter(kind="context"))] \
        == ["m-lock"]
    assert [i for i, _ in store.keyword_search(["lock"], 10, MemoryFilter(role="coder"))] \
        == ["m-mig"]
    assert "m-mig" not in dict(store.keyword_search(
        ["lock", "migration"], 10, MemoryFilter(since=old + 60)))
    assert "m-own" not in dict(store.keyword_search(
        ["migration"], 10, MemoryFilter(not_task=t.id)))
    assert store.keyword_search(["migration"], 1) == found[:1]
    # words are data, never query syntax
    for odd in (['"', "OR", "*", "NEAR"], ["a'b", "x:y", "-z", "(w)"], [":", "&", "|", "!"]):
        assert isinstance(store.keyword_search(odd, 5), list)
    assert store.keyword_search([], 5) == []
    assert store.memory_ids(MemoryFilter(kind="context"), 10) == ["m-lock"]
    assert set(store.memory_ids(MemoryFilter(), 10)) == {"m-mig", "m-lock", "m-own", "m-none"}


def test_forgetting_removes_rows_and_keywords(store):
    t = run_task(store, "t")
    store.add_memories([mem("m-a", "alpha centauri"), mem("m-b", "alpha beta", task_id=t.id),
                        mem("m-c", "gamma alpha", task_id=t.id)])
    assert {i for i, _ in store.keyword_search(["alpha"], 10)} == {"m-a", "m-b", "m-c"}
    assert store.forget_memories(["m-a", "m-nope"]) == ["m-a"]
    assert sorted(store.forget_memories(task_id=t.id)) == ["m-b", "m-c"]
    assert store.keyword_search(["alpha"], 10) == [] and store.get_memories(["m-a"]) == {}
    assert store.forget_memories(["m-a"]) == []
    gone = [e for e in store.read_events() if e.kind == "memory.forgotten"]
    assert [sorted(e.data["memory_ids"]) for e in gone] == [["m-a"], ["m-b", "m-c"]]
    # the keyword index is still in step: new memories are found, removed ones are not
    store.add_memories([mem("m-d", "alpha again")])
    assert [i for i, _ in store.keyword_search(["alpha"], 10)] == ["m-d"]


def test_finished_work_is_read_past_the_cursor(store):
    done = run_task(store, "build it", b"head-" + b"x" * 50 + b"-tail", role="coder")
    failed = run_task(store, "break it", b"boom", TaskState.FAILED, error="exit 1")
    cancelled = store.add_tasks([TaskSpec("never ran")])[0]
    store.cancel(cancelled.id, "no")
    store.set_context("style", "v1")
    store.set_context("style", "v2")
    assert store.memory_cursor() == 0
    work = store.work_to_remember(0, 100, head=5, tail=5)
    assert work.read_to == store.last_event_id()
    assert [f.task.id for f in work.tasks] == [done.id, failed.id]  # (not the cancelled one)
    d, f = work.tasks
    assert (d.output_head, d.output_tail, d.output_bytes) == (b"head-", b"-tail", 60)
    assert d.task.state is TaskState.COMPLETED and d.task.target_role == "coder"
    assert d.task.tokens_in == 7 and d.task.agent_id == "a1" and d.agent_roles == ["coder"]
    assert (f.output_head, f.output_tail, f.task.error) == (b"boom", b"", "exit 1")
    assert [(c.key, c.value, c.version) for c in work.contexts] == [("style", "v2", 2)]
    # a limit reads part of it, and the rest from there
    first = store.work_to_remember(0, 1, 5, 5)
    assert [x.task.id for x in first.tasks] == [done.id] and first.read_to < work.read_to
    rest = store.work_to_remember(first.read_to, 100, 5, 5)
    assert [x.task.id for x in rest.tasks] == [failed.id] and rest.read_to == work.read_to
    assert store.work_to_remember(work.read_to, 100, 5, 5).tasks == []
    assert store.work_to_remember(work.read_to, 100, 5, 5).read_to == work.read_to


def test_the_cursor_moves_once(store):
    run_task(store, "one")
    end = store.last_event_id()
    a = mem("m-auto", "one", kind="task", source="auto")
    assert store.add_memories([a], cursor=(0, end)) == []
    assert store.memory_cursor() == end
    # a second process that read the same work finds the cursor moved: nothing is written
    assert store.add_memories([mem("m-dup", "one", kind="task", source="auto")],
                              cursor=(0, end)) is None
    assert store.get_memories(["m-dup"]) == {} and store.memory_cursor() == end


def test_a_task_run_again_replaces_its_automatic_memories(store):
    t = run_task(store, "flaky")
    store.add_memories([mem("m-t1", "first run", kind="task", source="auto", task_id=t.id),
                        mem("m-t2", "first run part 2", kind="task", source="auto",
                            task_id=t.id),
                        mem("m-note", "a note on it", task_id=t.id)])
    removed = store.add_memories([mem("m-t3", "second run", kind="task", source="auto",
                                      task_id=t.id)], replace_tasks=[t.id])
    assert sorted(removed) == ["m-t1", "m-t2"]
    assert set(store.get_memories(["m-t1", "m-t2", "m-t3", "m-note"])) == {"m-t3", "m-note"}
    assert [i for i, _ in store.keyword_search(["run"], 10)] == ["m-t3"]


def test_indexers_share_the_embedding_by_claims(store):
    """A claim gets, in order, memories to embed that nobody claimed, and claims them for its
    time; reads that embed what is missing still see every one; a claim runs out and its
    memories are taken again; embedded ones are no longer claimed."""
    store.add_memories([mem(f"m-{i}", f"text {i}") for i in range(4)])
    assert [m.id for m in store.claim_memories_to_embed("model-a", 2, 60)] == ["m-0", "m-1"]
    assert [m.id for m in store.claim_memories_to_embed("model-a", 10, 60)] == ["m-2", "m-3"]
    assert store.claim_memories_to_embed("model-a", 10, 60) == []
    assert [m.id for m in store.memories_to_embed("model-a", 10)] == ["m-0", "m-1", "m-2", "m-3"]
    store.add_memories([mem("m-4", "text 4"), mem("m-5", "text 5")])
    assert [m.id for m in store.claim_memories_to_embed("model-a", 1, 0.05)] == ["m-4"]
    time.sleep(0.1)
    assert [m.id for m in store.claim_memories_to_embed("model-a", 10, 60)] == ["m-4", "m-5"]
    store.mark_embedded(["m-0", "m-1", "m-2", "m-3", "m-4", "m-5"], "model-a")
    store.add_memories([mem("m-6", "text 6")])
    time.sleep(0.01)
    assert [m.id for m in store.claim_memories_to_embed("model-a", 10, 0.001)] == ["m-6"]


def test_claims_at_once_never_share_a_memory(store):
    """Three indexers, each with its own connection, claiming batches at the same time: each
    memory goes to exactly one of them."""
    ids = [f"m-{i:03}" for i in range(150)]
    store.add_memories([mem(i, f"text {i}") for i in ids])
    got: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def indexer() -> None:
        s = open_store(store.url)
        try:
            while found := s.claim_memories_to_embed("model-a", 4, 60):
                with lock:
                    got.extend(m.id for m in found)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            s.close()

    threads = [threading.Thread(target=indexer) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert sorted(got) == ids


def test_embeddings_are_tracked_per_model(store):
    store.add_memories([mem(f"m-{i}", f"téxt {i}", kind="task" if i < 2 else "note")
                        for i in range(4)])
    pending = store.memories_to_embed("model-a", 10)
    assert [m.id for m in pending] == ["m-0", "m-1", "m-2", "m-3"]
    assert [m.id for m in store.memories_to_embed("model-a", 2)] == ["m-0", "m-1"]
    assert [m.id for m in store.memories_to_embed("model-a", 10, after_seq=pending[1].seq)] == \
        ["m-2", "m-3"]
    store.mark_embedded(["m-0", "m-1"], "model-a")
    store.mark_embedded(["m-2"], "model-b")
    assert [m.id for m in store.memories_to_embed("model-a", 10)] == ["m-2", "m-3"]
    counts = store.memory_counts()
    assert counts.by_kind == {"task": 2, "note": 2}
    assert counts.by_model == {"model-a": 2, "model-b": 1, None: 1}
    assert counts.text_bytes == sum(len(f"téxt {i}".encode()) for i in range(4))
    assert (counts.cursor, counts.last_event_id) == (0, store.last_event_id())
    assert store.forget_embeddings() == 3
    assert len(store.memories_to_embed("model-a", 10)) == 4


def test_memories_survive_a_reopen_and_a_prune(any_store_url):
    s = open_store(any_store_url)
    t = run_task(s, "old task")
    s.add_memories([mem("m-keep", "remember the old task", task_id=t.id, kind="task",
                        source="auto")])
    s.prune(time.time() + 1)  # (the task and the events go)
    s.close()
    s = open_store(any_store_url)
    try:
        assert list(s.get_memories(["m-keep"])) == ["m-keep"]
        assert [i for i, _ in s.keyword_search(["remembering"], 5)] == ["m-keep"]
        assert s.work_to_remember(0, 10, 5, 5).tasks == []
    finally:
        s.close()


def test_store_copy_carries_memories_and_the_cursor(tmp_path, pg_url):
    src = open_store(f"sqlite://{tmp_path / 'src.db'}")
    run_task(src, "copied task")
    src.add_memories([mem("m-x", "copied memory about kubernetes", model_id="model-a")],
                     cursor=(0, src.last_event_id()))
    src.mark_embedded(["m-x"], "model-a")
    try:
        for dst_url in (pg_url, f"sqlite://{tmp_path / 'back.db'}"):
            dst = open_store(dst_url)
            try:
                had = sum(src.memory_counts().by_kind.values())
                counts = copy_store(src, dst)
                assert counts["memories"] == had and counts["memory_cursor"] == 1
                assert dst.memory_cursor() == src.memory_cursor()
                found = {i for i, _ in dst.keyword_search(["kubernetes"], 5)}
                assert "m-x" in found and found == {i for i, _ in
                                                    src.keyword_search(["kubernetes"], 5)}
                # the vectors stay behind: the copy's memories are embedded again
                assert dst.get_memories(["m-x"])["m-x"].model_id is None
                new = f"m-y{len(found)}"
                dst.add_memories([mem(new, "another kubernetes memory")])
                assert dst.get_memories([new])[new].seq > dst.get_memories(["m-x"])["m-x"].seq
            finally:
                dst.close()
            src.close()
            src = open_store(dst_url)  # (and from PostgreSQL back to a file)
    finally:
        src.close()


@pytest.mark.parametrize("n", [1200])
def test_many_memories_in_chunks(store, n):
    store.add_memories([mem(f"m-{i:05d}", f"word{i % 7} common") for i in range(n)])
    assert len(store.get_memories([f"m-{i:05d}" for i in range(n)])) == n
    assert len(store.forget_memories([f"m-{i:05d}" for i in range(0, n, 2)])) == n // 2
    assert len(store.keyword_search(["common"], 5000)) == n // 2
    store.mark_embedded([f"m-{i:05d}" for i in range(1, n, 2)], "m")
    assert store.memories_to_embed("m", 10) == []
