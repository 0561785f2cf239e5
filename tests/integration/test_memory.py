"""Semantic memory end to end, with the real model: the service on both stores, a real shell
team whose finished work a later ``podium task similar`` finds (remembered in the background by
an idle worker), recall into the exact prompt a real echo agent receives, ``podium remember``
from inside a task, the MCP tools through a real client, and a missing model's clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import anyio
import pytest

from conftest import Workers
from podium.clock import iso
from podium.errors import InvalidInput, NotFound
from podium.memory import open_embedder
from podium.models import Outcome, TaskSpec, TaskState
from podium.prompt import RECALL_INTRO
from podium.service import Podium, indexer
from podium.store import Finish
from podium.store.base import MemoryFilter

MODEL = "all-MiniLM-L6-v2-int8@1.0.0"


@pytest.fixture(scope="module")
def embedder():
    """The real model, loaded once for the module."""
    e = open_embedder("minilm")
    e.load()
    yield e
    e.close()


@pytest.fixture
def mem(any_store_url, embedder):
    p = Podium.open(any_store_url)
    p.use_memory(None, embedder)
    yield p
    p.close()


def finish_task(p: Podium, prompt: str, output: str, role: str | None = None,
                agent: str = "a1", state: TaskState = TaskState.COMPLETED) -> str:
    """A task added, claimed and finished as ``agent`` (as a worker records it)."""
    s = p.store
    if not any(a.id == agent for a in s.list_agents()):
        s.register_agent(agent, [role] if role else [], "echo", "host", 1, 30.0, {})
    t = s.add_tasks([TaskSpec(prompt, target_role=role)])[0]
    claimed = s.claim(agent, [role] if role else [], 30.0)
    assert claimed.id == t.id
    s.finish(agent, Finish(t.id, claimed.attempts,
                           Outcome(state, output=output.encode(), exit_code=0, tokens_in=5)))
    return t.id


def test_remember_search_similar_forget_reindex(mem):
    build = finish_task(mem, "Fix the Docker build: fatal error: openssl/ssl.h not found",
                        "Added libssl-dev to the Dockerfile's apt-get line; it builds.",
                        role="coder")
    slow = finish_task(mem, "The task list takes 4 s with a million rows",
                       "Added an index on (state, seq); 3 ms now.", role="coder")
    finish_task(mem, "Write the release notes for 2.0", "Done: docs/RELEASE-2.0.md",
                role="writer", agent="a2")
    note = mem.remember("Deploying to staging needs the VPN up first.", agent="a2")
    assert [(m.kind, m.source, m.agent_id, m.role, m.model_id) for m in note] == \
        [("note", "api", "a2", "writer", MODEL)]

    hits = mem.memory_search("how do I deploy to the staging servers", k=3)
    top = hits[0]
    assert top.memory.id == note[0].id and top.keyword > 0 and top.vector > 0.3
    assert top.keyword_rank == 1 and top.vector_rank == 1 and 0 < top.score <= 1
    assert "VPN" in top.snippet
    d = top.to_dict()
    assert d["created_at"] == iso(top.memory.created_at) and d["source"] == "api"

    # finished tasks were remembered when memory was read, with their provenance
    similar = mem.similar_tasks("the container build cannot find the TLS headers", k=2)
    assert similar[0].memory.task_id == build
    m = similar[0].memory
    assert (m.kind, m.agent_id, m.role, m.meta["state"], m.meta["tokens_in"]) == \
        ("task", "a1", "coder", "completed", 5)
    # by id: itself left out
    assert build not in [h.memory.task_id for h in mem.similar_tasks(build, k=5)]
    assert all(h.memory.kind == "task" for h in mem.similar_tasks(slow, k=5))

    # filters and modes
    assert {h.memory.role for h in mem.memory_search("build release index", k=10,
                                                      role="writer")} <= {"writer"}
    assert all(h.memory.kind == "note" for h in mem.memory_search("staging", kind="note"))
    assert mem.memory_search("staging", since="1d")[0].memory.id == note[0].id
    assert mem.memory_search("staging", since=time.time() + 60) == []
    assert mem.memory_search("openssl", mode="keyword")[0].memory.task_id == build
    assert mem.memory_search("openssl", mode="keyword")[0].vector is None
    assert mem.memory_search("TLS library headers", mode="vector")[0].memory.task_id == build
    for bad in ({"k": 0}, {"kind": "x"}, {"mode": "fuzzy"}, {"since": "last week"}):
        with pytest.raises(InvalidInput):
            mem.memory_search("x", **bad)
    with pytest.raises(InvalidInput, match="finished tasks are remembered"):
        mem.remember("x", kind="task")

    # stats, reindex
    stats = mem.memory_stats()
    assert stats.memories == 4 and stats.by_kind == {"task": 3, "note": 1}
    assert stats.embedded == 4 and stats.not_embedded == 0 and stats.model_id == MODEL
    assert stats.vectors == {MODEL: 4} and stats.dimension == 384 and stats.vector_store
    assert stats.cursor == stats.last_event_id
    r = mem.reindex()
    assert (r.memories, r.embedded, r.cleared_vectors, r.model_id) == (4, 4, 4, MODEL)
    assert mem.memory_stats().embedded == 4

    # forgetting
    assert mem.forget(note[0].id) == [note[0].id]
    assert note[0].id not in [h.memory.id for h in mem.memory_search("staging VPN", k=10)]
    with pytest.raises(NotFound):
        mem.forget(note[0].id)
    assert len(mem.forget_task(build)) == 1
    assert build not in [h.memory.task_id for h in mem.similar_tasks("openssl docker", k=5)]
    assert mem.memory_stats().vectors == {MODEL: 2}
    with pytest.raises(NotFound):
        mem.forget_task(build)


def test_a_shell_team_finishes_tasks_and_task_similar_finds_them(store_url, workers, cli,
                                                                  monkeypatch, podium):
    """Real workers; the first one starts the host's memory indexer, which remembers their
    work in the background; a later ``task similar`` (a separate process) finds the right
    task; the indexer exits once the host's agents are gone."""
    monkeypatch.setenv("PODIUM_MEMORY_INDEX", "on")
    workers.start("w1", backend="shell")
    workers.start("w2", backend="shell")
    jobs = {
        "tls": "echo 'Docker build failed on openssl/ssl.h; installed libssl-dev and pkg-config'",
        "tz": "echo 'Report dates were a day off in California: format timestamps in UTC'",
        "leak": "echo 'Dashboard memory grew 50 MB an hour: WebSocket listeners never removed'",
        "csv": "echo 'Wrote scripts/export_orders.py: last month of orders as CSV for accounts'",
        "note": f"{sys.executable} -m podium remember 'The release checklist is docs/RELEASE.md'",
    }
    ids = {k: podium.add_task(v).id for k, v in jobs.items()}
    for tid in ids.values():
        assert podium.wait(tid, 30).state is TaskState.COMPLETED, podium.task(tid).result()
    # the background indexer (no search has run yet) remembers and embeds all of it
    deadline = time.monotonic() + 30
    while True:
        counts = podium.store.memory_counts()
        if counts.by_model.get(MODEL, 0) == 6 and counts.cursor == counts.last_event_id:
            break
        assert time.monotonic() < deadline, (counts, workers.log("w1"), workers.log("w2"))
        time.sleep(0.2)
    assert counts.by_kind == {"task": 5, "note": 1}

    r = cli("task", "similar", "the container image cannot compile without TLS headers",
            "--json", "--k", "3")
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)["hits"]
    assert hits[0]["task_id"] == ids["tls"] and hits[0]["kind"] == "task"
    assert hits[0]["agent_id"] in ("w1", "w2") and hits[0]["meta"]["state"] == "completed"
    r = cli("task", "similar", ids["leak"], "--json")
    assert ids["leak"] not in [h["task_id"] for h in json.loads(r.stdout)["hits"]]
    human = cli("task", "similar", "which script exports orders to a spreadsheet")
    assert human.returncode == 0 and ids["csv"] in human.stdout.decode()

    # the note an agent remembered from inside its task says which task and agent
    r = cli("memory", "search", "where is the release checklist", "--kind", "note", "--json")
    note = json.loads(r.stdout)["hits"][0]
    assert note["text"] == "The release checklist is docs/RELEASE.md"
    assert (note["task_id"], note["source"]) == (ids["note"], "agent")
    assert note["agent_id"] == podium.task(ids["note"]).agent_id

    stats = json.loads(cli("memory", "stats", "--json").stdout)
    assert stats["memories"] == 6 and stats["embedded"] == 6 and stats["indexing"] == "on"
    assert "memories      6 (note 1, task 5)" in cli("memory", "stats").stdout.decode()
    r = cli("memory", "forget", "--task", ids["tz"])
    assert r.returncode == 0 and r.stdout.decode().startswith("forgot 1 memory: m-")
    r = cli("memory", "forget", "m-nope")
    assert r.returncode == 1 and r.stderr == b"podium: error: unknown memory 'm-nope'\n"
    r = cli("memory", "reindex", "--json")
    assert json.loads(r.stdout)["embedded"] == 5

    pid = indexer.running_indexer(podium.url)
    assert pid is not None and stats["indexer_pid"] == pid
    # nobody's child (a worker's reaper never meets it), in a session of its own, at nice 19
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    assert int(fields[1]) not in {p.pid for p in workers.procs.values()}
    assert os.getsid(pid) == pid and os.getpriority(os.PRIO_PROCESS, pid) == 19
    workers.stop_all()
    deadline = time.monotonic() + 20
    while indexer.running_indexer(podium.url) is not None:
        assert time.monotonic() < deadline, "the indexer outlived the host's agents"
        time.sleep(0.2)


def test_the_indexer_waits_for_a_quiet_log_then_catches_up(store_url, podium, tmp_path):
    """While events are committed less than ``QUIET_S`` apart (a team dispatching), the host's
    indexer (``podium memory index --follow``, a real process) remembers and embeds nothing:
    its model runs would slow every dispatch. Once the log is quiet it catches up."""
    for i in range(4):
        finish_task(podium, f"job {i}", f"output of job {i}")
    ticking = threading.Event()
    stop = threading.Event()

    def tick() -> None:
        p = Podium.open(store_url)
        try:
            while not stop.is_set():
                p.store.add_event("test.tick")
                ticking.set()
                stop.wait(indexer.QUIET_S / 10)
        finally:
            p.close()
    ticker = threading.Thread(target=tick)
    ticker.start()
    proc = None
    try:
        assert ticking.wait(10)
        with open(tmp_path / "indexer.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "podium", "--store", store_url, "memory", "index",
                 "--follow"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, "PODIUM_MEMORY_INDEX": "on"}, start_new_session=True)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            counts = podium.store.memory_counts()
            assert not counts.by_kind and proc.poll() is None, \
                (counts, (tmp_path / "indexer.log").read_text())
            time.sleep(0.2)
        stop.set()
        ticker.join()
        deadline = time.monotonic() + 30
        while (counts := podium.store.memory_counts()).by_model.get(MODEL, 0) < 4:
            assert time.monotonic() < deadline, (counts, (tmp_path / "indexer.log").read_text())
            time.sleep(0.2)
        assert counts.by_kind == {"task": 4}
        proc.terminate()
        assert proc.wait(10) == 0
    finally:
        stop.set()
        ticker.join()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def test_podium_down_takes_the_indexer_a_worker_started_not_one_run_by_hand(
        store_url, cli, podium, monkeypatch, tmp_path):
    """``podium down`` stops the host's last agent, and the indexer its worker started goes
    with it at once, not ``LINGER_S`` later (left alone it is alone for ``LINGER_S`` before it
    exits); an indexer a person started by hand runs on."""
    monkeypatch.setenv("PODIUM_MEMORY_INDEX", "on")
    try:
        assert cli("up", "1").returncode == 0
        tid = podium.add_task("echo remembered").id
        assert podium.wait(tid, 30).state is TaskState.COMPLETED
        deadline = time.monotonic() + 20
        while indexer.running_indexer(podium.url) is None:
            assert time.monotonic() < deadline, "no indexer started"
            time.sleep(0.1)
        r = cli("down")
        assert r.returncode == 0, r.stderr
        down_at = time.monotonic()
        while indexer.running_indexer(podium.url) is not None:
            assert time.monotonic() - down_at < indexer.LINGER_S - 0.5, \
                "the indexer lingered after podium down"
            time.sleep(0.05)
    finally:
        cli("down")

    with open(tmp_path / "indexer.log", "wb") as log:
        by_hand = subprocess.Popen(
            [sys.executable, "-m", "podium", "--store", store_url, "memory", "index",
             "--follow"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while indexer.running_indexer(podium.url) != by_hand.pid:
            assert time.monotonic() < deadline and by_hand.poll() is None, \
                (tmp_path / "indexer.log").read_text()
            time.sleep(0.1)
        assert cli("up", "1").returncode == 0
        assert cli("down").returncode == 0
        time.sleep(1.0)
        assert by_hand.poll() is None and indexer.running_indexer(podium.url) == by_hand.pid
    finally:
        cli("down")
        by_hand.terminate()
        assert by_hand.wait(10) == 0


def test_recall_puts_the_right_memories_in_the_prompt_byte_exact(store_url, workers, embedder):
    p = Podium.open(store_url)
    p.use_memory(None, embedder)
    try:
        rotate = p.remember("To rotate the gateway's API keys run scripts/rotate-keys.sh, "
                            "then restart the gateway.", source="cli")[0]
        config = p.remember("The gateway's configuration is /etc/gateway/gateway.toml.",
                            source="cli")[0]
        p.remember("Lunch orders go to the kitchen channel.", source="cli")
        workers.start("plain", backend="echo")
        question = "How do I rotate the API keys of the gateway?"
        t = p.add_task(question, agent="plain", recall=2)
        done = p.wait(t.id, 30)
        assert done.state is TaskState.COMPLETED
        expected = (
            f"# Recalled memories\n{RECALL_INTRO}\n\n"
            f"## 1. note {rotate.id} (by cli, {iso(rotate.created_at)})\n{rotate.text}\n\n"
            f"## 2. note {config.id} (by cli, {iso(config.created_at)})\n{config.text}\n\n"
            f"# Task\n{question}")
        assert done.output == expected.encode("utf-8")
        # recall 0 (and no agent setting): the prompt unchanged, byte for byte
        t0 = p.add_task(question, agent="plain", recall=0)
        assert p.wait(t0.id, 30).output == question.encode()
        t1 = p.add_task(question, agent="plain")
        assert p.wait(t1.id, 30).output == question.encode()
    finally:
        p.close()


def test_an_agent_recalls_by_default_with_shared_and_task_context(store_url, tmp_path,
                                                                   embedder):
    """``agent run --recall 1``: every task it runs recalls one memory, between the shared
    context and the task context; a finished task recalled is named with its agent."""
    p = Podium.open(store_url)
    p.use_memory(None, embedder)
    log = open(tmp_path / "r1.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "podium", "--store", store_url, "agent", "run", "--name", "r1",
         "--backend", "echo", "--role", "ops", "--recall", "1"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    try:
        solved = finish_task(p, "Make the invoice PDF show Chinese characters",
                             "Embedded the Noto Sans CJK font in the PDF generator.",
                             role="ops", agent="old")
        p.set_context("team", "We ship on Fridays.")
        Workers(store_url, tmp_path).wait_registered("r1", proc)
        t = p.add_task("Chinese characters come out as boxes in generated invoices", role="ops",
                       context="Customer: ACME")
        done = p.wait(t.id, 30)
        found = p.store.get_memories(p.store.memory_ids(MemoryFilter(kind="task"), 10))
        remembered = next(m for m in found.values() if m.task_id == solved)
        expected = (
            "# Shared context\n\n## team\nWe ship on Fridays.\n\n"
            f"# Recalled memories\n{RECALL_INTRO}\n\n"
            f"## 1. task {solved} (agent old, role ops, completed "
            f"{iso(remembered.created_at)}): Make the invoice PDF show Chinese characters\n"
            f"{remembered.text}\n\n"
            "# Task context\nCustomer: ACME\n\n"
            "# Task\nChinese characters come out as boxes in generated invoices")
        assert done.output.decode() == expected
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
        p.close()


def test_mcp_tools_round_trip(store_url, tmp_path, embedder):
    from test_mcp import call, call_error, stdio_client

    p = Podium.open(store_url)
    p.use_memory(None, embedder)
    solved = finish_task(p, "Users are logged out after exactly one hour",
                         "The JWT's exp was never refreshed: added refresh tokens.")
    p.close()

    async def main():
        async with stdio_client(store_url, tmp_path) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert tools["search_memory"].input_schema["required"] == ["query"]
            made = await call(client, "remember", text="Staging needs the VPN.",
                              task_id=solved)
            note = made["memories"][0]
            assert (note["source"], note["task_id"], note["kind"]) == ("mcp", solved, "note")
            hits = (await call(client, "search_memory", query="what does staging need",
                               k=2))["hits"]
            assert hits[0]["id"] == note["id"] and hits[0]["vector"] > 0
            similar = (await call(client, "similar_tasks",
                                  task_or_text="sessions end after sixty minutes"))["hits"]
            assert similar[0]["task_id"] == solved and similar[0]["kind"] == "task"
            kw = (await call(client, "search_memory", query="JWT", mode="keyword",
                             kind="task"))["hits"]
            assert [h["task_id"] for h in kw] == [solved]
            assert "unknown task" in await call_error(client, "remember", text="x",
                                                      task_id="t-nope")
            assert "empty" in await call_error(client, "search_memory", query="")

    anyio.run(main)


def test_a_missing_model_is_a_clear_error_never_a_fallback(cli, podium):
    podium.add_task("echo hi")  # (a store with something in it)
    env = {"PODIUM_EMBEDDER": "nonexistent"}
    for args in (("memory", "search", "anything"), ("task", "similar", "anything"),
                 ("remember", "a note"), ("memory", "reindex")):
        r = cli(*args, env=env)
        assert r.returncode == 1, (args, r.stdout)
        assert r.stdout == b"" and r.stderr.count(b"\n") == 1, r.stderr
        assert r.stderr.startswith(b"podium: error: unknown embedder 'nonexistent'"), r.stderr
    assert podium.store.memory_counts().by_kind == {}  # (the note was not stored)
    # keyword search needs no model, and says it is keyword search
    r = cli("memory", "search", "anything", "--mode", "keyword", "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout) == {"hits": []}
    r = cli("memory", "search", "x", env={"PODIUM_MEMORY_INDEX": "sometimes"})
    assert r.returncode == 1 and r.stderr == (
        b"podium: error: bad PODIUM_MEMORY_INDEX 'sometimes': expected on, lazy or off\n")
