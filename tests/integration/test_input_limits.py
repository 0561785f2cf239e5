"""Every input is bounded and checked: one clear line, exit 1, nothing changed.

The limits live in ``podium.limits`` and are applied by the service, so the CLI, the MCP server
and the Python API give the same answers, and both stores the same limits. The CLI cases run the
real ``podium`` command against a seeded store and check the whole contract (one
``podium: error:`` line, exit 1, no traceback, the store and the directory exactly as before);
the property-based cases throw random numbers, text and bytes at the service and check that a
value is either refused with ``InvalidInput`` or stored and read back exactly.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client, StdioServerParameters

from conftest import run_cli
from helpers import error_line, files_under, snapshot
from podium import limits
from podium.errors import InvalidInput, NotFound
from podium.service import Podium
from podium.store import open_store


@pytest.fixture
def seeded(podium):
    """A store with something in every table: a stopped agent, a task, a message, context."""
    s = podium.store
    s.register_agent("w1", [], "echo", socket.gethostname(), os.getpid(), 30.0, {})
    s.deregister("w1")
    first = podium.add_task("first ✓", role="nobody")
    podium.set_context("k", "v")
    podium.send("w1", "hello")
    return {"task": first.id}


TOO_LONG = "n" * (limits.MAX_NAME_BYTES + 1)
MAX_S = str(limits.MAX_SECONDS)
OVER_S = str(limits.MAX_SECONDS + 1)
NUL_TEXT = b"before\x00after"

# (arguments, stdin, what the error line says)
BAD = [
    # max_attempts: the same bound on both stores (SQLite took 2^31 and overflowed at 2^63)
    (["task", "add", "--max-attempts", "9223372036854775808", "x"], None,
     "bad max_attempts 9223372036854775808: must be an integer, at least 1 and at most 1000"),
    (["task", "add", "--max-attempts", "2147483648", "x"], None, "at most 1000"),
    (["task", "add", "--max-attempts", "1001", "x"], None, "bad max_attempts 1001"),
    (["task", "add", "--max-attempts", "-1", "x"], None, "bad max_attempts -1"),
    # timeouts of a run: more than 0, at most 30 days
    (["task", "add", "--timeout", OVER_S, "x"], None,
     f"bad timeout {float(OVER_S)!r}: must be more than 0 and at most {MAX_S} seconds"),
    (["task", "add", "--timeout", "1e400", "x"], None, "bad timeout inf"),
    (["broadcast", "--timeout", "1e12", "x"], None, "bad timeout"),
    # waits: 0 to 30 days
    (["task", "wait", "{task}", "--timeout", OVER_S], None, "bad timeout"),
    (["task", "wait", "{task}", "--timeout", "inf"], None, "bad timeout inf"),
    (["watch", "--idle-timeout", OVER_S], None, "bad idle timeout"),
    (["watch", "--idle-timeout", "inf"], None, "bad idle timeout inf"),
    (["down", "--timeout", "-1"], None, "bad timeout -1.0: must be from 0 to"),
    (["down", "--timeout", "nan"], None, "bad timeout nan"),
    (["down", "--timeout", OVER_S], None, "bad timeout"),
    # event cursors: 0 to 2^63-1
    (["watch", "--from", "-1"], None, "bad event id -1"),
    (["watch", "--from", "9223372036854775808"], None,
     "bad event id 9223372036854775808: must be an integer, at least 0 and at most "
     "9223372036854775807"),
    # list limits
    (["task", "list", "--limit", "0"], None, "bad limit 0: must be an integer, at least 1"),
    (["task", "list", "--limit", "-5"], None, "bad limit -5"),
    (["task", "list", "--limit", "100001"], None, "at most 100000"),
    (["task", "list", "--limit", "9223372036854775808"], None, "bad limit"),
    # agent counts
    (["up", "257"], None,
     "bad number of agents 257: must be an integer, at least 1 and at most 256"),
    (["up", "--", "-1"], None, "bad number of agents -1"),
    (["up", "9223372036854775808"], None, "bad number of agents"),
    (["demo", "--agents", "0"], None, "bad number of agents 0"),
    (["demo", "--agents", "100000"], None, "bad number of agents 100000"),
    # leases and heartbeats
    (["up", "1", "--lease", "0"], None, "--lease must be from 0.5 to"),
    (["up", "1", "--lease", "5e-324"], None, "bad lease 5e-324"),
    (["agent", "run", "-n", "a1", "-b", "echo", "--lease", "1", "--heartbeat", "0.001"], None,
     "expected --heartbeat from 0.05 s to less than the lease (1 s)"),
    (["up", "1", "--lease", "nan"], None, "bad lease nan"),
    (["up", "1", "--lease", OVER_S], None, f"to {MAX_S} seconds"),
    (["agent", "run", "-n", "a1", "-b", "echo", "--lease", OVER_S], None, "bad lease"),
    (["agent", "run", "-n", "a1", "-b", "echo", "--heartbeat", "0"], None, "bad heartbeat 0.0"),
    (["agent", "run", "-n", "a1", "-b", "echo", "--heartbeat", "-1"], None, "bad heartbeat"),
    (["agent", "run", "-n", "a1", "-b", "echo", "--heartbeat", "nan"], None, "bad heartbeat nan"),
    (["agent", "interactive", "-n", "a1", "--lease", "0", "--", "true"], None,
     "--lease must be from 0.5 to"),
    (["agent", "interactive", "-n", "a1", "--lease", "inf", "--", "true"], None, "bad lease inf"),
    # ports
    (["mcp", "serve", "--http", "--port", "70000"], None,
     "bad port 70000: must be an integer, at least 0 and at most 65535"),
    (["mcp", "serve", "--http", "--port", "65536"], None, "bad port 65536"),
    (["mcp", "serve", "--http", "--port", "-1"], None, "bad port -1"),
    (["mcp", "serve", "--http", "--host", ""], None, "host is empty"),
    (["web", "--host", "[]", "--allow-remote"], None, "host is empty"),  # (not every interface)
    (["web", "--host", " "], None, "host is empty"),
    # empty strings never mean "the default"
    (["task", "add", "--agent", "", "x"], None, "agent id is empty"),
    (["task", "add", "--agent", " ", "x"], None, "agent id is empty"),
    (["task", "add", "--role", " ", "x"], None, "role is empty"),
    (["task", "add", "--session", "", "x"], None, "session is empty"),
    (["task", "add", "--depends-on", "", "x"], None, "task id in depends_on is empty"),
    (["task", "list", "--agent", ""], None, "agent id is empty"),
    (["task", "show", ""], None, "task id is empty"),
    (["task", "cancel", ""], None, "task id is empty"),
    (["task", "cancel", "{task}", "--reason", ""], None, "reason is empty"),
    (["task", "wait", "", "--timeout", "1"], None, "task id is empty"),
    (["result", ""], None, "task id is empty"),
    (["send", "", "hi"], None, "agent id is empty"),
    (["send", "w1", "hi", "--from", ""], None, "sender is empty"),
    (["inbox", ""], None, "agent id is empty"),
    (["inbox", "", "--outbox"], None, "agent id is empty"),
    (["report", "--agent", "", "-s", "idle"], None, "agent id is empty"),
    (["report", "--agent", "w1", "-s", "idle", "--task", ""], None, "task id is empty"),
    (["hook", "--agent", "", "stop"], b"", "agent id is empty"),
    (["context", "get", ""], None, "context key is empty"),
    (["watch", "--task", "", "--idle-timeout", "0"], None, "task id is empty"),
    (["up", "1", "--prefix", ""], None, "prefix is empty"),
    (["up", "1", "--role", ""], None, "role is empty"),
    (["up", "1", "--workdir", ""], None, "--workdir is empty"),
    (["up", "1", "--tmux", "--session", ""], None, "tmux session is empty"),
    (["up", "1", "--tmux", "--tmux-session", ""], None, "tmux session is empty"),
    (["up", "1", "--tmux", "--interactive", ""], None, "--interactive command is empty"),
    (["agent", "run", "-n", "", "-b", "echo"], None, "agent name is empty"),
    (["agent", "run", "-n", "a1", "-b", "echo", "--role", ""], None, "role is empty"),
    (["agent", "interactive", "-n", "", "--", "true"], None, "agent name is empty"),
    (["down", ""], None, "agent name is empty"),
    (["hooks", "install", "--dir", ""], None, "--dir is empty"),
    (["mcp", "install", "--dir", ""], None, "--dir is empty"),
    # names: bounded, and usable as file names where they become one
    (["task", "add", "--role", TOO_LONG, "x"], None,
     f"role is {len(TOO_LONG)} bytes long: at most {limits.MAX_NAME_BYTES} bytes"),
    (["context", "set", TOO_LONG, "v"], None, "context key is"),
    (["send", "w1", "hi", "--from", TOO_LONG], None, "sender is"),
    (["up", "1", "--prefix", "a/b"], None, "bad prefix 'a/b'"),
    # (names are segments of the web API's paths, where a browser drops '.' and '..')
    (["context", "set", "..", "v"], None, "context key '..' cannot be a name"),
    (["context", "set", ".", "v"], None, "context key '.' cannot be a name"),
    (["agent", "run", "-n", "..", "-b", "echo"], None, "agent name '..' cannot be a name"),
    # (a bidirectional override would make a name read otherwise in every table)
    (["task", "add", "--role", "ops\u202e", "x"], None, "role contains the control character"),
    (["up", "1", "--prefix", TOO_LONG], None, "prefix is"),
    # (a name of 197 bytes, but its agents' would be 199-201: refused before any starts)
    (["up", "1", "--prefix", "p" * (limits.MAX_PREFIX_BYTES + 1)], None,
     f"prefix is {limits.MAX_PREFIX_BYTES + 1} bytes long"),
    # NUL: SQLite would keep it, PostgreSQL refuses it, so neither store takes it
    (["task", "add", "-"], NUL_TEXT, "prompt contains a NUL character"),
    (["broadcast", "-"], NUL_TEXT, "prompt contains a NUL character"),
    (["send", "w1", "-"], NUL_TEXT, "message contains a NUL character"),
    (["context", "set", "k", "-"], NUL_TEXT, "context value contains a NUL character"),
    (["report", "--agent", "w1", "-s", "idle", "-m", "-"], NUL_TEXT,
     "note contains a NUL character"),
]


@pytest.mark.parametrize("args,stdin,expected", BAD,
                         ids=[" ".join(a if len(a) < 30 else a[:10] + "..." for a in c[0])
                              + (" <stdin" if c[1] is not None else "") for c in BAD])
def test_bad_input_is_one_line_and_changes_nothing(cli, podium, seeded, tmp_path, args, stdin,
                                                   expected):
    args = [a.format(**seeded) for a in args]
    before, files = snapshot(podium), files_under(tmp_path)
    tasks_before = json.loads(cli("task", "list", "--json").stdout)
    line = error_line(cli(*args, input=stdin, timeout=30))
    assert expected in line, line
    assert json.loads(cli("task", "list", "--json").stdout) == tasks_before
    assert snapshot(podium) == before
    assert files_under(tmp_path) == files  # no logs/, no .mcp.json, no token, no demo store


def test_values_at_the_limits_are_taken(cli, podium, seeded):
    """The bounds themselves are allowed, and come back exactly as given."""
    t = json.loads(cli("task", "add", "--json", "--max-attempts", "1000", "--timeout", MAX_S,
                       "--role", "r" * limits.MAX_NAME_BYTES, "x").stdout)
    assert (t["max_attempts"], t["timeout_s"]) == (1000, limits.MAX_SECONDS)
    assert t["target_role"] == "r" * limits.MAX_NAME_BYTES
    listed = json.loads(cli("task", "list", "--json", "--limit", str(limits.MAX_LIST)).stdout)
    assert [x["id"] for x in listed] == [seeded["task"], t["id"]]
    p = cli("watch", "--from", str(limits.MAX_EVENT_ID), "--idle-timeout", "0")
    assert (p.returncode, p.stdout) == (0, b"")
    p = cli("task", "wait", t["id"], "--timeout", "0")
    assert p.returncode == 5  # not finished: the zero wait looked once


# -- store URLs ----------------------------------------------------------------------------

BAD_URLS = [
    ("", "store URL is empty"),
    ("   ", "store URL is empty"),
    ("postgresql://[::1", "bad store URL 'postgresql://[::1': Invalid IPv6 URL"),
    ("postgresql://someone:s3cret@[::1/podium", "Invalid IPv6 URL"),
    ("sqlite://[x/podium.db", "Invalid IPv6 URL"),
    ("~nosuchuser/podium.db", "no home directory for ~nosuchuser"),
    ("postgresql://", "bad store URL 'postgresql://': name the database"),
    ("postgres://127.0.0.1:5432", "name the database"),
    ("postgresql://127.0.0.1:5432/", "name the database"),
    ("postgresql://127.0.0.1:5432/?dbname=", "name the database"),
    ("postgresql://someone:s3cret@127.0.0.1/?sslmode=disable", "name the database"),
    ("postgresql://127.0.0.1:70000/podium", "port '70000' must be a number from 1 to 65535"),
    ("postgresql://127.0.0.1:0/podium", "port '0'"),
    ("postgresql://127.0.0.1:-1/podium", "port '-1'"),
    ("postgresql://127.0.0.1:http/podium", "port 'http'"),
    ("postgresql://h1:5432,h2:99999/podium", "port '99999'"),
    ("postgresql://[::1]:65536/podium", "port '65536'"),
    ("postgresql://127.0.0.1/podium?port=123456", "port '123456'"),
    ("postgresql://127.0.0.1/podium?password=s3cret&port=", "port ''"),
]


@pytest.mark.parametrize("url,expected", BAD_URLS, ids=[u or "(empty)" for u, _ in BAD_URLS])
@pytest.mark.parametrize("how", ["--store", "PODIUM_STORE"])
def test_bad_store_url_creates_nothing(tmp_path, url, expected, how):
    if how == "PODIUM_STORE" and url == "":
        pytest.skip("an empty PODIUM_STORE counts as unset (see the test below)")
    home = tmp_path.resolve()
    for args in (["init"], ["task", "add", "hello"], ["agents", "--json"]):
        if how == "--store":
            p = run_cli("--store", url, *args, timeout=30)
        else:
            p = run_cli(*args, env={"PODIUM_STORE": url}, timeout=30)
        line = error_line(p)
        assert expected in line, line
        assert "s3cret" not in line
    assert files_under(home) == set()  # nothing created, not even ./.podium


def test_empty_podium_store_counts_as_unset(tmp_path):
    home = tmp_path.resolve()
    p = run_cli("init", env={"PODIUM_STORE": ""})
    assert (p.returncode, p.stdout) == (0, f"sqlite://{home}/.podium/podium.db\n".encode())


def test_postgres_url_without_database_creates_no_schema(pg_url):
    """libpq would connect to its default database ($PGDATABASE here, the test database):
    refused before connecting, so the schema stays empty; with the name it is a store."""
    import psycopg

    parts = urlsplit(pg_url)
    database = parts.path.lstrip("/")
    no_database = urlunsplit(parts._replace(path=""))
    env = {"PGDATABASE": database}
    for args in (["init"], ["task", "add", "hello"], ["store", "migrate"]):
        line = error_line(run_cli("--store", no_database, *args, env=env, timeout=30))
        assert "name the database" in line, line

    def tables() -> list:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            return conn.execute("SELECT table_name FROM information_schema.tables "
                                "WHERE table_schema = current_schema()").fetchall()

    assert tables() == []
    by_query = urlunsplit(parts._replace(path="", query=f"{parts.query}&dbname={database}"))
    p = run_cli("--store", by_query, "init", env=env, timeout=30)
    assert p.returncode == 0, p.stderr
    assert tables() != []


def test_both_stores_take_and_refuse_the_same_values(store):
    """The limits, not the database, decide: what one store takes, the other takes too."""
    podium = Podium(store)
    t = podium.add_task("edge", max_attempts=limits.MAX_ATTEMPTS, timeout_s=limits.MAX_SECONDS,
                        role="é" * (limits.MAX_NAME_BYTES // 2), session="s")
    back = podium.task(t.id)
    assert (back.max_attempts, back.timeout_s) == (limits.MAX_ATTEMPTS, limits.MAX_SECONDS)
    assert back.target_role == "é" * (limits.MAX_NAME_BYTES // 2)
    assert podium.task(podium.add_task("tiny", timeout_s=5e-324).id).timeout_s == 5e-324
    before = len(store.list_tasks(limit=limits.MAX_LIST))
    for kwargs in ({"max_attempts": 2**31}, {"max_attempts": 2**63}, {"max_attempts": 1001},
                   {"timeout_s": limits.MAX_SECONDS + 1}, {"timeout_s": math.inf},
                   {"role": "é" * (limits.MAX_NAME_BYTES // 2 + 1)}):
        with pytest.raises(InvalidInput):
            podium.add_task("over", **kwargs)
    with pytest.raises(InvalidInput, match="NUL"):
        podium.add_task("a\0b")
    with pytest.raises(InvalidInput):
        podium.events(after=2**63)
    assert podium.events(after=2**63 - 1) == []
    assert len(store.list_tasks(limit=limits.MAX_LIST)) == before


# -- the MCP face gets the same answers ----------------------------------------------------

def test_mcp_tools_refuse_out_of_range_values(store_url, podium, seeded, tmp_path):
    before = snapshot(podium)
    args = ["-m", "podium", "--store", store_url, "mcp", "serve"]
    bad = [
        ("assign_task", {"prompt": "x", "timeout_s": limits.MAX_SECONDS + 1}, "timeout_s"),
        ("assign_task", {"prompt": "x", "depends_on": [""]}, "task id in depends_on is empty"),
        ("assign_task", {"prompt": "a\x00b"}, "NUL"),
        ("assign_task", {"prompt": "x", "role": "r" * 201}, "role is 201 bytes long"),
        ("wait_for_task", {"task_id": seeded["task"], "timeout_s": 1e12}, "timeout_s"),
        ("wait_for_task", {"task_id": "", "timeout_s": 0}, "task id is empty"),
        ("get_all_results", {"limit": 1001}, "limit"),
        ("get_agent_messages", {"agent_id": "w1", "limit": 0}, "limit"),
        ("send_to_agent", {"agent_id": "", "message": "hi"}, "agent id is empty"),
        ("send_to_agent", {"agent_id": "w1", "message": "a\x00b"}, "NUL"),
        ("update_shared_context", {"content": "v", "key": ""}, "context key is empty"),
        ("cancel_task", {"task_id": ""}, "task id is empty"),
    ]

    async def main() -> None:
        params = StdioServerParameters(command=sys.executable, args=args, cwd=str(tmp_path))
        async with Client(params) as client:
            for tool, arguments, expected in bad:
                r = await client.call_tool(tool, arguments)
                assert r.is_error, (tool, arguments, r.structured_content)
                assert expected in r.content[0].text, (tool, r.content[0].text)

    anyio.run(main)
    assert snapshot(podium) == before


# -- property-based: accepted and exact, or InvalidInput -------------------------------------

PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

EDGES = [0, 1, -1, 999, 1000, 1001, 100_000, 100_001, 2**31 - 1, 2**31, 2**63 - 1, 2**63,
         -(2**63), limits.MAX_SECONDS, limits.MAX_SECONDS + 1, 10**5000]
numbers = st.one_of(
    st.sampled_from(EDGES), st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-5, max_value=limits.MAX_ATTEMPTS + 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1, max_value=limits.MAX_SECONDS * 1.01),
    st.booleans(), st.none(), st.text(max_size=5), st.binary(max_size=5))
every_char = st.characters(exclude_categories=())  # lone surrogates and NUL included
texts = st.one_of(st.text(alphabet=every_char, max_size=60), st.binary(max_size=60),
                  st.sampled_from(["", " ", "\t\n", "\0", "a\0b", "\ud800", "ok ✓", "[1]",
                                   '{"json": true}', "\r\n", "x" * 300]),
                  st.integers(), st.none())


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def expected_text(v, allow_empty: bool = False):
    """What the service should store for ``v``, or None when it must refuse it."""
    if isinstance(v, bytes):
        try:
            v = v.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(v, str) or "\0" in v or (not allow_empty and not v.strip()):
        return None
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return v


def expected_name(v):
    """``v`` if it is a name (not blank, no control character, at most MAX_NAME_BYTES)."""
    if not isinstance(v, str) or not v.strip() or \
            any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f for c in v):
        return None
    try:
        size = len(v.encode("utf-8"))
    except UnicodeEncodeError:
        return None
    return v if size <= limits.MAX_NAME_BYTES else None


@PROPERTY
@given(max_attempts=numbers, timeout_s=numbers)
def test_task_numbers_are_bounded_or_refused(podium, max_attempts, timeout_s):
    attempts_ok = isinstance(max_attempts, int) and not isinstance(max_attempts, bool) \
        and 1 <= max_attempts <= limits.MAX_ATTEMPTS
    timeout_ok = timeout_s is None or (is_number(timeout_s)
                                       and 0 < timeout_s <= limits.MAX_SECONDS)
    # One at a time (the other left at its default), so that each is accepted often enough.
    for kwargs, ok in (({"max_attempts": max_attempts}, attempts_ok),
                       ({"timeout_s": timeout_s}, timeout_ok)):
        count = podium.store.counts()
        try:
            t = podium.add_task("n", **kwargs)
        except InvalidInput:
            assert not ok
            assert podium.store.counts() == count
            continue
        assert ok
        back = podium.task(t.id)
        assert back.max_attempts == kwargs.get("max_attempts", 3)
        assert back.timeout_s == (None if timeout_s is None or "timeout_s" not in kwargs
                                  else float(timeout_s))


@PROPERTY
@given(limit=numbers, after=numbers, wait=numbers)
def test_limits_cursors_and_waits_are_bounded_or_refused(podium, limit, after, wait):
    done = podium.cancel(podium.add_task("finished").id)  # a wait on it returns at once
    if not podium.store.list_agents():
        podium.store.register_agent("w1", [], "echo", socket.gethostname(), os.getpid(), 30.0, {})
    limit_ok = isinstance(limit, int) and not isinstance(limit, bool) \
        and 1 <= limit <= limits.MAX_LIST
    after_ok = isinstance(after, int) and not isinstance(after, bool) \
        and 0 <= after <= limits.MAX_EVENT_ID
    wait_ok = wait is None or (is_number(wait) and 0 <= wait <= limits.MAX_SECONDS)
    for call, ok in ((lambda: podium.tasks(limit=limit), limit_ok),
                     (lambda: podium.events(after=after, limit=limit), after_ok and limit_ok),
                     (lambda: podium.inbox("w1", limit=limit), limit_ok),
                     (lambda: podium.wait(done.id, timeout_s=wait), wait_ok)):
        try:
            got = call()
        except InvalidInput:
            assert not ok
            continue
        assert ok
        assert got is not None


@PROPERTY
@given(prompt=texts, context=st.one_of(st.none(), texts))
def test_prompts_and_task_context_round_trip_or_are_refused(podium, prompt, context):
    want_prompt = expected_text(prompt)
    want_context = None if context is None else expected_text(context, allow_empty=True)
    ok = want_prompt is not None and (context is None or want_context is not None)
    count = podium.store.counts()
    try:
        t = podium.add_task(prompt, context=context)
    except InvalidInput:
        assert not ok
        assert podium.store.counts() == count
        return
    assert ok
    back = podium.task(t.id)
    assert (back.prompt, back.context) == (want_prompt, want_context)


@PROPERTY
@given(role=texts, session=texts, sender=texts)
def test_names_round_trip_or_are_refused(podium, role, session, sender):
    ok = all(v is None or expected_name(v) is not None for v in (role, session))  # None: unset
    try:
        t = podium.add_task("named", role=role, session=session)
    except InvalidInput:
        assert not ok
    else:
        assert ok
        back = podium.task(t.id)
        assert (back.target_role, back.session_id) == (role, session)
    if not podium.store.list_agents():
        podium.store.register_agent("w1", [], "echo", socket.gethostname(), os.getpid(), 30.0, {})
    try:
        m = podium.send("w1", "from someone", sender=sender)
    except InvalidInput:
        assert expected_name(sender) is None
    else:
        assert expected_name(sender) == sender
        assert podium.inbox("w1", limit=1)[-1].sender == sender == m.sender


@PROPERTY
@given(agent=texts.filter(lambda v: v is not None))  # None is "any agent" where it is allowed
def test_agent_ids_are_refused_or_looked_up(podium, agent):
    """A malformed id is InvalidInput; a well-formed unknown one NotFound; never anything else."""
    for call in (lambda: podium.send(agent, "hi"), lambda: podium.inbox(agent),
                 lambda: podium.add_task("x", agent=agent), lambda: podium.agent(agent),
                 lambda: podium.tasks(agent=agent), lambda: podium.report(agent, "idle")):
        with pytest.raises((InvalidInput, NotFound)) as e:
            call()
        assert e.type is (InvalidInput if expected_name(agent) is None else NotFound)


@PROPERTY
@given(body=texts)
def test_messages_round_trip_or_are_refused(podium, body):
    if not podium.store.list_agents():
        podium.store.register_agent("w1", [], "echo", socket.gethostname(), os.getpid(), 30.0, {})
    want = expected_text(body)
    before = podium.inbox("w1", limit=limits.MAX_LIST)
    try:
        m = podium.send("w1", body)
    except InvalidInput:
        assert want is None
        assert podium.inbox("w1", limit=limits.MAX_LIST) == before
        return
    assert want is not None
    assert m.body == want and podium.inbox("w1", limit=1)[-1].body == want


@PROPERTY
@given(key=texts, value=texts)
def test_context_round_trips_or_is_refused(podium, key, value):
    want_key, want_value = expected_name(key), expected_text(value, allow_empty=True)
    before = podium.list_context()
    try:
        podium.set_context(key, value)
    except InvalidInput:
        assert want_key is None or want_value is None
        assert podium.list_context() == before
        return
    assert want_key is not None and want_value is not None
    got = podium.get_context(key)
    assert (got.key, got.value) == (want_key, want_value)
    assert [e.key for e in podium.list_context()].count(want_key) == 1


@settings(max_examples=200, deadline=None)
@given(lease=numbers, heartbeat=numbers, port=numbers, count=numbers)
def test_worker_timing_ports_and_counts_are_bounded_or_refused(lease, heartbeat, port, count):
    lease_ok = is_number(lease) and limits.MIN_LEASE_S <= lease <= limits.MAX_SECONDS
    beat_ok = heartbeat is None or (is_number(heartbeat) and lease_ok
                                    and limits.MIN_HEARTBEAT_S <= heartbeat < lease)
    cases = [
        (lambda: limits.lease(lease, heartbeat), lease_ok and beat_ok),
        (lambda: limits.port(port), isinstance(port, int) and not isinstance(port, bool)
         and 1 <= port <= limits.MAX_PORT),
        (lambda: limits.port(port, any_free=True), isinstance(port, int)
         and not isinstance(port, bool) and 0 <= port <= limits.MAX_PORT),
        (lambda: limits.agent_count(count), isinstance(count, int)
         and not isinstance(count, bool) and 1 <= count <= limits.MAX_AGENTS),
    ]
    for check, ok in cases:
        try:
            check()
        except InvalidInput as e:
            assert not ok
            assert str(e).startswith("bad ") and len(str(e)) < 200
        else:
            assert ok


@PROPERTY
@given(message=st.one_of(st.text(alphabet=every_char, max_size=300), st.integers(), st.none()))
def test_hook_payloads_never_fail_the_write(podium, message):
    """A hook's JSON is whatever Claude Code sends: its message only ever shows in the note."""
    if not podium.store.list_agents():
        podium.store.register_agent("w1", [], "echo", socket.gethostname(), os.getpid(), 30.0, {})
    a = podium.hook("w1", "notification", {"message": message})
    assert a.state.value == "waiting_input" and a.note.startswith("hook:notification")
    assert "\0" not in a.note and len(a.note) <= len("hook:notification: ") + 200


class WouldConnect(Exception):
    """Raised instead of connecting to PostgreSQL, in the URL property test."""


no_slash = st.characters(exclude_categories=()).filter(lambda c: c != "/")


@PROPERTY
@given(url=st.builds(
    lambda scheme, rest: scheme + rest,
    st.sampled_from(["", "postgresql://", "postgres://", "sqlite://", "sqlite:///./"]),
    st.text(alphabet=st.one_of(st.sampled_from("[]:@?=&,%.-#~ 0123456789ahx"), no_slash),
            max_size=30)))
def test_any_store_url_opens_or_is_one_clear_error(url, monkeypatch):
    """A URL either opens (a new SQLite file in this directory: no '/' can lead elsewhere),
    reaches PostgreSQL naming a database, or is refused with a PodiumError: never a
    ValueError from urlsplit, never libpq's default database."""
    import podium.store.postgres
    from podium.errors import PodiumError

    def would_connect(url: str) -> None:
        raise WouldConnect(url)

    monkeypatch.setattr(podium.store.postgres, "PostgresStore", would_connect)
    try:
        open_store(url).close()
    except PodiumError:
        return
    except WouldConnect:
        parts = urlsplit(url)
        assert parts.path.lstrip("/") or "dbname=" in parts.query, url
        return
    assert not url.startswith(("postgresql://", "postgres://")), url
