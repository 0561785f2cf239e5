"""The web dashboard's server with real clients: ``podium web --port 0`` as a subprocess on a
temporary SQLite store, httpx for the JSON API and the ``websockets`` package for the live
stream; real shell agents started and stopped through the API. One test runs the app in a
uvicorn thread with a tiny event window and queue, so that the catch-up paths (from the store,
after falling behind) run for certain.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from conftest import run_cli
from podium.service import Podium
from podium.store import open_store
from podium.web.openapi import ROUTES
from podium.web.payloads import EVENT_ROW
from podium.web.security import csrf_token

# Markup, quotes, shell and JSON lookalikes, CR/LF, tabs, accents, CJK, RTL, emoji, a combining
# mark and U+2028: the API must hand all of it back byte for byte.
WEIRD = ("<script>alert(1)</script> <img src=x onerror=alert(2)> it's \"quoted\" $HOME `x`\n"
         "line 2\twith tab\r\nnaïve café 日本語 עברית 🎼🎻 e\u0301 \u2028 end {\"a\": [1]}")
#: Tasks that no agent of these tests takes (they would run as shell commands).
NOBODY = "nobody-takes-this"


class WebServer:
    """``podium web --port 0``: it binds a free loopback port and prints its link."""

    def __init__(self, store_url: str, log_dir: Path, *args: str):
        self.out, self.err = log_dir / "web.out", log_dir / "web.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "podium", "--store", store_url, "web", "--port", "0",
                 *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True)
        deadline = time.monotonic() + 30
        pattern = r"^podium web: (http://127\.0\.0\.1:(\d+)/\?token=(\S+))$"
        while not (m := re.search(pattern, self.out.read_text(), re.M)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"server did not start: {self.err.read_text()}")
            time.sleep(0.05)
        self.link, self.port, self.token = m.group(1), int(m.group(2)), m.group(3)
        self.base = f"http://127.0.0.1:{self.port}"
        self.csrf = csrf_token(self.token)

    def client(self, **kwargs) -> httpx.Client:
        """A client signed in as the page is (the cookie), sending the CSRF header."""
        return httpx.Client(base_url=self.base, timeout=30, cookies={"podium_token": self.token},
                            headers={"X-Podium-CSRF": self.csrf}, **kwargs)

    def ws(self, after: int | None = None, **kwargs) -> ClientConnection:
        query = "" if after is None else f"?after={after}"
        return connect(f"ws://127.0.0.1:{self.port}/api/events/ws{query}",
                       additional_headers={"Cookie": f"podium_token={self.token}"},
                       open_timeout=10, **kwargs)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    url = f"sqlite://{tmp / 'podium.db'}"
    p = Podium.open(url)  # (events from before the server started: older than its window)
    p.add_task("echo before the server", role=NOBODY)
    p.close()
    server = WebServer(url, tmp)
    server.store_url = url  # type: ignore[attr-defined]
    yield server
    code = server.stop()
    run_cli("down", store_url=url)
    assert code == 0, server.err.read_text()
    assert "Traceback" not in server.err.read_text()


@pytest.fixture
def api(web):
    with web.client() as c:
        yield c


def frame_events(frame: dict) -> list[dict]:
    """A frame's events as objects (its rows are ``[id, at, kind, agent_id, task_id, data]``,
    as the page's live.js decodes them)."""
    assert all(len(row) == len(EVENT_ROW) for row in frame["rows"])
    return [dict(zip(EVENT_ROW, row)) for row in frame["rows"]]


def frames(ws: ClientConnection, until, timeout: float = 15.0) -> list[dict]:
    """The events of the frames ``ws`` receives until ``until(events so far)`` holds."""
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while not until(got):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"gave up waiting; got {[e['kind'] for e in got]}")
        frame = json.loads(ws.recv(timeout=left))
        events = frame_events(frame)
        if events:
            assert frame["cursor"] == events[-1]["id"]
        got += events
    return got


def strictly_increasing(events: list[dict]) -> list[int]:
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids)), f"ids not strictly increasing: {ids}"
    return ids


def all_events_after(api: httpx.Client, after: int) -> list[int]:
    return [e["id"] for e in api.get("/api/events", params={"after": after,
                                                            "limit": 100000}).json()["events"]]


# -- auth -------------------------------------------------------------------------------------

def test_link_sets_the_cookie_and_redirects(web):
    with httpx.Client(base_url=web.base, timeout=10) as h:
        r = h.get(f"/?token={web.token}")
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"podium_token={web.token};")
        assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {p.strip() for p in cookie.split(";")}
        page = h.get("/")  # (the cookie jar now has it)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert h.get("/api/status").status_code == 200
    with httpx.Client(base_url=web.base, timeout=10) as h:
        r = h.get("/?token=wrong")
        assert r.status_code == 401 and "set-cookie" not in r.headers
        assert h.get("/api/status").status_code == 401


def test_checks_in_order_host_origin_token_csrf(web):
    own = f"http://127.0.0.1:{web.port}"
    with httpx.Client(base_url=web.base, timeout=10) as h:
        bearer = {"Authorization": f"Bearer {web.token}"}
        r = h.get("/api/status")
        assert r.status_code == 401 and "token" in r.json()["error"]
        page = h.get("/", headers={"Accept": "text/html"})  # a browser without the cookie
        assert page.status_code == 401 and "podium web" in page.text
        assert h.get("/api/status", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert h.get("/api/status", headers=bearer).status_code == 200
        for origin in ("http://evil.example", f"http://evil.example:{web.port}", "null",
                       "http://127.0.0.1:1", f"https://127.0.0.1:{web.port}"):
            r = h.get("/api/status", headers={**bearer, "Origin": origin})
            assert r.status_code == 403, origin
        for origin in (own, f"http://localhost:{web.port}"):
            assert h.get("/api/status", headers={**bearer, "Origin": origin}).status_code == 200
        for host in ("evil.example", f"evil.example:{web.port}", "127.0.0.1", "127.0.0.1:1",
                     f"127.0.0.1.nip.io:{web.port}"):
            # Host first: even with a wrong Origin and no token, 421.
            r = h.get("/api/status", headers={"Host": host, "Origin": "http://evil.example"})
            assert r.status_code == 421, host
        assert h.get("/api/status", headers={**bearer, "Host": f"localhost:{web.port}"}
                     ).status_code == 200
        # State changes: CSRF header and a JSON body, or 403 (checked after the token).
        body = {"prompt": "echo csrf", "role": NOBODY}
        assert h.post("/api/tasks", json=body).status_code == 401
        r = h.post("/api/tasks", json=body, headers=bearer)
        assert r.status_code == 403 and "CSRF" in r.json()["error"]
        r = h.post("/api/tasks", json=body, headers={**bearer, "X-Podium-CSRF": "0" * 64})
        assert r.status_code == 403
        r = h.post("/api/tasks", content=json.dumps(body), headers={
            **bearer, "X-Podium-CSRF": web.csrf, "Content-Type": "text/plain"})
        assert r.status_code == 403 and "application/json" in r.json()["error"]
        r = h.post("/api/tasks", json=body, headers={**bearer, "X-Podium-CSRF": web.csrf,
                                                    "Origin": own})
        assert r.status_code == 201
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "script-src 'self'" in r.headers["content-security-policy"]


def test_websocket_checks(web):
    with pytest.raises(InvalidStatus) as e:
        connect(f"ws://127.0.0.1:{web.port}/api/events/ws", open_timeout=5)
    assert e.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as e:
        web.ws(origin="http://evil.example")
    assert e.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as e:
        connect(f"ws://127.0.0.1:{web.port}/api/events/ws?token={web.token}", open_timeout=5,
                additional_headers={"Host": "evil.example"})
    assert e.value.response.status_code == 421
    with connect(f"ws://127.0.0.1:{web.port}/api/events/ws?token={web.token}",
                 origin=f"http://127.0.0.1:{web.port}", open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["rows"] == []  # (from now: the cursor only)
    with web.ws(after="x") as ws:  # type: ignore[arg-type]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1008


# -- the API ----------------------------------------------------------------------------------

def test_errors_are_json_with_their_status(api):
    def error(r, status):
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert isinstance(r.json()["error"], str) and r.json()["error"]
        return r.json()["error"]

    assert "t-nosuchtask0000" in error(api.get("/api/tasks/t-nosuchtask0000"), 404)
    error(api.get("/api/tasks/t-nosuchtask0000/output"), 404)
    error(api.post("/api/tasks/t-nosuchtask0000/cancel", json={}), 404)
    error(api.get("/api/agents/nobody"), 404)
    error(api.get("/api/agents/nobody/log"), 404)
    error(api.get("/api/agents/nobody/pane"), 404)
    error(api.post("/api/agents/nobody/messages", json={"body": "hi"}), 404)
    error(api.get("/api/nothing/here"), 404)
    error(api.post("/api/team/down", json={"agents": ["nobody"]}), 404)
    error(api.post("/api/tasks", content=b"{not json", headers={
        "Content-Type": "application/json"}), 422)
    error(api.post("/api/tasks", json=["a list"]), 422)
    assert "colour" in error(api.post("/api/tasks", json={"prompt": "x", "colour": 1}), 422)
    error(api.post("/api/tasks", json={"prompt": ""}), 422)
    error(api.post("/api/tasks", json={"prompt": "x", "priority": "urgent"}), 422)
    error(api.post("/api/tasks", json={"prompt": "x", "timeout_s": -1}), 422)
    error(api.post("/api/tasks", json={"prompt": "x", "depends_on": ["t-nosuchtask0000"]}), 404)
    error(api.get("/api/tasks", params={"state": "sleeping"}), 422)
    error(api.get("/api/tasks", params={"limit": "many"}), 422)
    error(api.get("/api/tasks", params={"limit": 0}), 422)
    error(api.get("/api/tasks", params={"agent": "nobody"}), 404)
    error(api.get("/api/events", params={"after": -1}), 422)
    assert "unknown task" in error(api.get("/api/events", params={"task": "t-nosuchtask0000"}),
                                   404)
    assert error(api.post("/api/tasks", json={}), 422) == "prompt is missing"
    assert error(api.post("/api/tasks", json={"prompt": 5}), 422) == \
        "prompt must be text, not a number"
    error(api.get("/api/costs/series", params={"bucket_s": 0}), 422)
    error(api.put("/api/context/k", json={}), 422)
    error(api.post("/api/team/up", json={"n": 0}), 422)
    error(api.post("/api/team/up", json={"n": 1, "backend": "no-such-backend"}), 422)
    assert "bad lease 5e-324" in error(api.post("/api/team/up", json={"n": 1,
                                                                   "lease_s": 5e-324}), 422)
    assert "option 'shell' must be text, not bool" in error(
        api.post("/api/team/up", json={"backend": "shell", "options": {"shell": False}}), 422)
    queued = api.post("/api/tasks", json={"prompt": "echo q", "role": NOBODY}).json()["task"]
    assert "queued" in error(api.post(f"/api/tasks/{queued['id']}/retry", json={}), 409)
    assert api.get("/api/tasks", params={"limit": 1}).status_code == 200  # still serving


def test_text_comes_back_byte_exact(api):
    t = api.post("/api/tasks", json={"prompt": WEIRD, "context": WEIRD, "role": NOBODY,
                                     "priority": "high", "timeout_s": 30}).json()["task"]
    got = api.get(f"/api/tasks/{t['id'][:12]}").json()["task"]  # (a unique prefix will do)
    assert got["prompt"] == WEIRD and got["context"] == WEIRD
    assert got["priority"] == "high" and got["timeout_s"] == 30 and got["target_role"] == NOBODY
    assert isinstance(got["created_at"], float) and got["dependents"] == []
    assert api.put("/api/context/wé/ird key", json={"value": WEIRD}).json()["entry"]["value"] \
        == WEIRD
    entries = {e["key"]: e for e in api.get("/api/context").json()["context"]}
    assert entries["wé/ird key"]["value"] == WEIRD and entries["wé/ird key"]["version"] == 1
    found = api.get("/api/tasks", params={"q": "ONERROR=ALERT"}).json()["tasks"]
    assert [x["id"] for x in found] == [t["id"]]  # (ASCII letters in any case)
    assert api.get("/api/tasks", params={"q": "日本語 עברית"}).json()["tasks"][0]["id"] == t["id"]


def test_openapi_lists_every_route(api, web):
    doc = api.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    listed = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert listed == set(ROUTES)
    for method, path in listed - {("GET", "/api/events/ws")}:
        concrete = re.sub(r"\{\w+\}", "x", path)
        r = api.request(method, concrete, json={} if method != "GET" else None)
        assert r.status_code != 405 and "no such route" not in r.text, (method, path)


def test_history_is_paged_and_filtered(api):
    ids = [api.post("/api/tasks", json={"prompt": f"echo page {i}", "role": "pager"}
                    ).json()["task"]["id"] for i in range(5)]
    page = api.get("/api/tasks", params={"role": "pager", "limit": 2}).json()
    assert [t["id"] for t in page["tasks"]] == ids[:-3:-1]  # newest first
    seen = [t["id"] for t in page["tasks"]]
    while page["next"] is not None:
        page = api.get("/api/tasks", params={"role": "pager", "limit": 2,
                                             "before": page["next"]}).json()
        seen += [t["id"] for t in page["tasks"]]
    assert seen == ids[::-1]
    assert [t["id"] for t in api.get("/api/tasks", params={"q": "page 3"}).json()["tasks"]] \
        == [ids[3]]
    queue = api.get("/api/queue").json()
    assert set(queue) >= {"running", "queued", "blocked"}
    queued = [t["id"] for t in queue["queued"]]
    assert [i for i in queued if i in ids] == ids  # (oldest first within a priority)
    dep = api.post("/api/tasks", json={"prompt": "echo after", "role": "pager",
                                       "depends_on": [ids[0]], "priority": 0}).json()["task"]
    assert dep["state"] == "blocked" and dep["priority"] == "high"
    assert dep["id"] in [t["id"] for t in api.get("/api/queue").json()["blocked"]]
    first = api.get(f"/api/tasks/{ids[0]}").json()["task"]
    assert first["dependents"] == [dep["id"]] and first["states"] == {dep["id"]: "blocked"}
    assert api.post(f"/api/tasks/{ids[0]}/cancel", json={}).json()["task"]["state"] == \
        "cancelled"
    assert api.get(f"/api/tasks/{dep['id']}").json()["task"]["state"] == "cancelled"
    retried = api.post(f"/api/tasks/{ids[0]}/retry", json={}).json()["task"]
    assert retried["state"] == "queued"
    for i in ids:
        api.post(f"/api/tasks/{i}/cancel", json={"reason": "tidy up"})


# -- semantic memory --------------------------------------------------------------------------

def test_memory_search_and_stats(web, api):
    p = Podium.open(web.store_url)  # (loads the model in this process, to embed the notes)
    try:
        t = p.add_task("echo the task a memory is about", role=NOBODY)
        text = f"zanzibarquux deploys need the VPN up first. {WEIRD}"
        note = p.remember(text, task_id=t.id, agent="mem-agent", role="writer")[0]
        other = p.remember("The release notes live in docs/RELEASE.md.")[0]
    finally:
        p.close()
    r = api.get("/api/memory/search", params={"q": "zanzibarquux VPN deploys", "k": 3})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert hits, r.text
    top = hits[0]
    assert top["id"] == note.id and top["text"] == text  # byte for byte, <script> and all
    assert (top["kind"], top["source"], top["task_id"], top["agent_id"], top["role"]) == \
        ("note", "api", t.id, "mem-agent", "writer")
    assert top["title"] == note.title and "zanzibarquux" in top["snippet"]
    assert isinstance(top["created_at"], float) and abs(top["created_at"] - note.created_at) < 1e-3
    assert 0 < top["score"] <= 1 and top["keyword"] > 0 and top["vector"] > 0
    assert top["keyword_rank"] == 1 and top["vector_rank"] >= 1 and top["meta"] == {}
    assert len(hits) <= 3
    keyword = api.get("/api/memory/search", params={"q": "zanzibarquux", "mode": "keyword"})
    assert [(h["id"], h["vector"]) for h in keyword.json()["hits"]] == [(note.id, None)]
    release = api.get("/api/memory/search", params={"q": "where are the release notes",
                                                    "kind": "note", "mode": "vector"})
    assert release.json()["hits"][0]["id"] == other.id
    assert api.get("/api/memory/search", params={"q": "zanzibarquux", "kind": "task"}
                   ).json()["hits"] == []
    assert api.get("/api/memory/search", params={"q": "zanzibarquux", "role": "writer",
                                                 "since": "1h"}).json()["hits"][0]["id"] \
        == note.id
    for params in ({"q": "x", "k": 0}, {"q": "x", "k": 101}, {"q": "x", "k": "many"}, {"q": ""},
                   {"q": "   "}, {}, {"q": "x", "kind": "dream"}, {"q": "x", "mode": "fuzzy"},
                   {"q": "x", "since": "a while ago"}):
        bad = api.get("/api/memory/search", params=params)
        assert bad.status_code == 422 and bad.json()["error"], (params, bad.text)
    stats = api.get("/api/memory/stats").json()
    assert stats["memories"] >= 2 and stats["by_kind"]["note"] >= 2
    assert stats["embedded"] >= 2 and stats["model_id"].startswith("all-MiniLM-L6-v2")
    assert stats["dimension"] == 384 and stats["vector_store"].startswith("SQLite ")


def test_memory_that_cannot_work_is_a_clear_error(tmp_path, monkeypatch):
    """No silent fall-back: an embedder that is not there is the service's error (a missing
    model file, ``MemoryUnavailable``, a 503); keyword search needs no model."""
    from podium.errors import MemoryUnavailable
    from podium.web.jsonio import status_of

    assert status_of(MemoryUnavailable("no model")) == 503
    monkeypatch.setenv("PODIUM_EMBEDDER", "nonexistent")
    with app_in_a_thread(tmp_path) as (port, _app, _store), httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=30,
            headers={"Authorization": "Bearer tok"}) as c:
        r = c.get("/api/memory/search", params={"q": "anything"})
        assert r.status_code == 422 and r.json()["error"].startswith(
            "unknown embedder 'nonexistent'"), r.text
        r = c.get("/api/memory/search", params={"q": "anything", "mode": "keyword"})
        assert r.status_code == 200 and r.json() == {"hits": []}


# -- a real team, live ------------------------------------------------------------------------

def test_team_runs_a_task_added_through_the_api_live(web, api):
    with web.ws() as ws:
        start = json.loads(ws.recv(timeout=10))
        assert start["rows"] == [] and start["cursor"] >= 1
        r = api.post("/api/team/up", json={"n": 1, "backend": "shell", "prefix": "webagent",
                                           "roles": ["runner"]})
        assert r.status_code == 201, r.text
        (name,) = r.json()["started"]
        try:
            agents = {a["id"]: a for a in api.get("/api/agents").json()["agents"]}
            a = agents[name]
            assert a["state"] in ("idle", "starting") and a["backend"] == "shell"
            assert 0 <= a["heartbeat_age_s"] < 30 and a["tokens"] == 0 and a["cost_usd"] == 0
            shown = "<script>alert(1)</script> naïve 日本語 🎻"
            t = api.post("/api/tasks", json={"prompt": f"printf '%s' '{shown}'",
                                             "role": "runner"}).json()["task"]
            # (an add does not read its task back: no seq yet, rather than a wrong one)
            assert t["seq"] is None
            assert api.get(f"/api/tasks/{t['id']}").json()["task"]["seq"] >= 1
            events = frames(ws, lambda got: any(e["kind"] == "task.completed" and
                                                e["task_id"] == t["id"] for e in got))
            strictly_increasing(events)
            kinds = [e["kind"] for e in events if e["task_id"] == t["id"]]
            assert kinds[0] == "task.queued" and "task.completed" == kinds[-1]
            assert all(isinstance(e["at"], float) for e in events)
            listed = {e["id"]: e for e in api.get("/api/events", params={
                "after": events[0]["id"] - 1, "limit": len(events)}).json()["events"]}
            for e in events:  # (the same as /api/events, but for its ISO ts)
                assert e == {k: v for k, v in listed[e["id"]].items() if k != "ts"}
            done = api.get(f"/api/tasks/{t['id']}").json()["task"]
            assert done["state"] == "completed" and done["output"] == shown
            assert done["agent_id"] == name and done["duration_s"] >= 0
            assert done["result"]["exit_code"] == 0
            out = api.get(f"/api/tasks/{t['id']}/output").json()
            assert out["output"] == shown and out["state"] == "completed"
            detail = api.get(f"/api/agents/{name}").json()
            assert [x["id"] for x in detail["tasks"]] == [t["id"]]
            msg = api.post(f"/api/agents/{name}/messages", json={"body": WEIRD})
            assert msg.status_code == 201 and msg.json()["body"] == WEIRD
            inbox = api.get(f"/api/agents/{name}").json()["inbox"]
            assert [m["body"] for m in inbox] == [WEIRD]
            assert name in api.get(f"/api/agents/{name}/log", params={"lines": 50}).json()["text"]
            assert "runs in no tmux pane" in api.get(f"/api/agents/{name}/pane").json()["error"]
            history = api.get("/api/tasks", params={"state": "completed", "agent": name}).json()
            assert [x["id"] for x in history["tasks"]] == [t["id"]]
            assert api.get("/api/status").json()["agents"]["total"] >= 1
            costs = api.get("/api/costs").json()
            assert name in [c["agent"] for c in costs["agents"]]
            series = api.get("/api/costs/series", params={"bucket_s": 60, "buckets": 5}).json()
            assert series["bucket_s"] == 60 and len(series["points"]) == 5
            assert series["points"][-1]["tasks"] >= 1
            assert series["by_agent"][name][-1]["tasks"] == 1
            assert series["by_role"]["runner"][-1]["tasks"] == 1
            # (an empty list names no agent: refused, where it used to stop them all)
            r = api.post("/api/team/down", json={"agents": []})
            assert r.status_code == 422 and "agents is empty" in r.json()["error"], r.text
            assert api.get(f"/api/agents/{name}").json()["agent"]["state"] != "stopped"
        finally:
            r = api.post("/api/team/down", json={"agents": [name]})
        assert r.status_code == 200 and r.json()["stopped"] == [name]
        frames(ws, lambda got: any(e["kind"] == "agent.stopped" and e["agent_id"] == name
                                   for e in got))
        agents = {a["id"]: a for a in api.get("/api/agents").json()["agents"]}
        assert agents[name]["state"] == "stopped"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed "
                    "(scripts/test installs it)")
def test_the_pane_of_an_agent_in_tmux(web, api, monkeypatch):
    tmux = "podium-test-" + secrets.token_hex(4)
    monkeypatch.setenv("PODIUM_TMUX_SOCKET", tmux)
    try:
        r = run_cli("up", "1", "--tmux", "--tmux-session", "web", "--prefix", "paned",
                    "--role", "paned", store_url=web.store_url)
        assert r.returncode == 0, r.stderr
        t = api.post("/api/tasks", json={"prompt": "echo shown-in-the-pane",
                                         "role": "paned"}).json()["task"]
        assert run_cli("task", "wait", t["id"], "--timeout", "20",
                       store_url=web.store_url).returncode == 0
        text = api.get("/api/agents/paned-1/pane").json()["text"]
        assert "shown-in-the-pane" in text and not text.endswith("\n\n")
        assert api.post("/api/team/down", json={"agents": ["paned-1"]}).json()["stopped"] == \
            ["paned-1"]
    finally:
        subprocess.run(["tmux", "-L", tmux, "kill-server"], capture_output=True)


def test_reconnect_with_after_gets_exactly_the_missed_events(web, api):
    with web.ws() as ws:
        cursor = json.loads(ws.recv(timeout=10))["cursor"]
        api.post("/api/tasks", json={"prompt": "echo before the cut", "role": NOBODY})
        seen = frames(ws, lambda got: len(got) >= 1)
        cursor = seen[-1]["id"]
    # The connection is cut: events go on.
    for i in range(5):
        api.post("/api/tasks", json={"prompt": f"echo missed {i}", "role": NOBODY})
    api.put("/api/context/missed", json={"value": "while away"})
    missed = all_events_after(api, cursor)
    assert len(missed) >= 6
    with web.ws(after=cursor) as ws:
        got = frames(ws, lambda got: got and got[-1]["id"] >= missed[-1])
        assert strictly_increasing(got) == missed  # no gap, none twice
        api.post("/api/tasks", json={"prompt": "echo live again", "role": NOBODY})
        live = frames(ws, lambda got: len(got) >= 1)
        assert live[0]["id"] > missed[-1] and live[0]["kind"] == "task.queued"
    # From the very start: older than the server's window, read from the store.
    with web.ws(after=0) as ws:
        everything = all_events_after(api, 0)
        got = frames(ws, lambda got: got and got[-1]["id"] >= everything[-1])
        assert strictly_increasing(got) == everything and everything[0] == 1


#: A WebSocket client in a process of its own (so that SIGSTOP stalls it for real, its socket
#: unread): prints the first frame's cursor, then reads until an event of the kind argv[3],
#: reconnecting from its cursor whenever the server closes the socket, and writes the [id,
#: kind] of every event it got, and the close codes it saw, to argv[2].
SLOW_CLIENT = """
import json, socket, sys
from urllib.parse import urlsplit
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
url, out, last = sys.argv[1:4]
parts = urlsplit(url)
got, closes, cursor = [], [], None
while not got or got[-1][1] != last:
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    raw.connect((parts.hostname, parts.port))
    try:
        with connect(url if cursor is None else f"{url}&after={cursor}", sock=raw,
                     max_queue=1, max_size=None, open_timeout=10) as ws:
            while not got or got[-1][1] != last:
                frame = json.loads(ws.recv(timeout=60))
                if cursor is None:
                    print(frame["cursor"], flush=True)
                got += [[row[0], row[2]] for row in frame["rows"]]  # ([id, at, kind, ...])
                cursor = frame["cursor"]
    except ConnectionClosed as e:
        closes.append(e.rcvd.code if e.rcvd else None)
with open(out, "w") as f:
    json.dump({"events": got, "closes": closes}, f)
"""


class SlowClient:
    """``SLOW_CLIENT`` on ``url``: ``stall`` stops it (SIGSTOP), ``events`` lets it go on and
    returns what it got."""

    def __init__(self, url: str, tmp_path: Path, last_kind: str):
        self.out = tmp_path / "slow-client.json"
        self.proc = subprocess.Popen([sys.executable, "-c", SLOW_CLIENT, url, str(self.out),
                                      last_kind], stdout=subprocess.PIPE, text=True)
        self.start = int(self.proc.stdout.readline())  # (connected, and streaming)

    def stall(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def events(self) -> list[list]:
        self.proc.send_signal(signal.SIGCONT)
        assert self.proc.wait(timeout=60) == 0
        found = json.loads(self.out.read_text())
        self.closes = found["closes"]
        return found["events"]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


def test_a_slow_socket_does_not_delay_a_fast_one(web, api, tmp_path):
    store = open_store(web.store_url)
    slow = SlowClient(f"ws://127.0.0.1:{web.port}/api/events/ws?token={web.token}", tmp_path,
                      "test.marker")
    try:
        with web.ws() as fast:
            json.loads(fast.recv(timeout=10))
            slow.stall()
            for i in range(200):  # ~13 MB: far more than the stalled socket's buffers hold
                store.add_event("test.big", data={"i": i, "blob": secrets.token_hex(32768)})
            t0 = time.monotonic()
            store.add_event("test.marker")
            got = frames(fast, lambda got: got and got[-1]["kind"] == "test.marker")
            fast_s = time.monotonic() - t0
            assert [e["data"]["i"] for e in got if e["kind"] == "test.big"] == list(range(200))
            t0 = time.monotonic()
            assert api.get("/api/status").status_code == 200
            assert time.monotonic() - t0 < 2
            assert fast_s < 5, f"the fast socket waited {fast_s:.1f}s"
        # The slow one goes on: every event once, in order.
        got = slow.events()
        expected = all_events_after(api, slow.start)
        assert [i for i, _ in got] == expected[:len(got)] and got[-1][1] == "test.marker"
    finally:
        slow.kill()
        store.close()


@contextlib.contextmanager
def app_in_a_thread(tmp_path: Path, **stream):
    """The app over a fresh store, served by uvicorn on a thread: (port, app, store)."""
    import uvicorn

    from podium.web.app import create_app
    from podium.web.serve import listen

    url = f"sqlite://{tmp_path / 'podium.db'}"
    podium = Podium.open(url)
    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = create_app(podium, token="tok", bind_host="127.0.0.1", port=port, **stream)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                           ws_per_message_deflate=False))  # (as podium web)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    store = open_store(url)
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        yield port, app, store
    finally:
        store.close()
        server.should_exit = True
        thread.join(10)
        sock.close()
        podium.close()
    assert not thread.is_alive()


def test_catch_up_from_the_store_after_falling_behind(tmp_path):
    """A window of 20 events and queues of 2 batches: a stalled socket falls behind at once,
    and is caught up by its cursor, from the store once the window has moved past it."""
    with app_in_a_thread(tmp_path, stream_window=20, stream_queue=2) as (port, app, store):
        slow = SlowClient(f"ws://127.0.0.1:{port}/api/events/ws?token=tok", tmp_path,
                          "test.last")
        try:
            slow.stall()
            for i in range(300):  # one commit each, ~12 MB: hundreds of batches while it stalls
                store.add_event("test.step", data={"i": i, "pad": secrets.token_hex(20000)})
                time.sleep(0.001)
            store.add_event("test.last")
            time.sleep(0.3)
            got = slow.events()
        finally:
            slow.kill()
        hub = app.state.hub
        assert hub.fell_behind >= 1 and hub.store_reads >= 1 and slow.closes == []
        assert [i for i, _ in got] == list(range(slow.start + 1, slow.start + 302))


def test_no_event_is_read_while_no_socket_is_open(tmp_path):
    """The hub follows the log only while a socket is open; the next socket without ``after``
    starts from the store's last event, one with ``after`` still gets every event once."""
    with app_in_a_thread(tmp_path) as (port, app, store):
        hub, url = app.state.hub, f"ws://127.0.0.1:{port}/api/events/ws?token=tok"
        with connect(url, open_timeout=10) as ws:
            start = json.loads(ws.recv(timeout=10))["cursor"]
            store.add_event("test.step", data={"i": 0})
            first = store.last_event_id()
            assert [e["id"] for e in frames(ws, lambda got: got)] == [first]
        store.add_event("test.step", data={"i": 1})  # (read as the follower wakes)
        last = store.last_event_id()
        deadline = time.monotonic() + 10
        while hub.cursor != last and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # (it has seen no socket open: it reads nothing more)
        for i in range(100):
            store.add_event("test.step", data={"i": 2 + i})
        store.add_event("test.last")
        last = store.last_event_id()
        time.sleep(0.5)
        assert hub.cursor < last - 100
        with connect(url, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10)) == {"rows": [], "cursor": last}
        with connect(f"{url}&after={start}", open_timeout=10) as ws:
            got = frames(ws, lambda got: got and got[-1]["kind"] == "test.last")
        assert [e["data"].get("i") for e in got] == [*range(102), None]
        assert strictly_increasing(got) == list(range(start + 1, last + 1))


def test_a_socket_too_slow_is_closed_and_resumes_from_its_cursor(tmp_path, monkeypatch):
    from podium.web import stream

    monkeypatch.setattr(stream, "SEND_TIMEOUT_S", 0.5)
    with app_in_a_thread(tmp_path) as (port, app, store):
        slow = SlowClient(f"ws://127.0.0.1:{port}/api/events/ws?token=tok", tmp_path,
                          "test.last")
        try:
            slow.stall()
            for i in range(200):  # ~13 MB: its frames wait longer than the send timeout
                store.add_event("test.step", data={"i": i, "pad": secrets.token_hex(32768)})
            store.add_event("test.last")
            time.sleep(1.5)
            got = slow.events()
        finally:
            slow.kill()
        assert slow.closes, "the stalled socket was not closed"
        assert [i for i, _ in got] == list(range(slow.start + 1, slow.start + 202))


# -- the command ------------------------------------------------------------------------------

def test_web_refuses_a_remote_host_without_the_flag(web):
    r = run_cli("web", "--host", "0.0.0.0", "--port", "0", store_url=web.store_url, timeout=30)
    assert r.returncode == 1
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "--allow-remote" in lines[0] and lines[0].startswith("podium:")


def test_sigterm_ends_it_cleanly_with_a_socket_open(web, tmp_path):
    server = WebServer(web.store_url, tmp_path)
    with server.ws() as ws:
        ws.recv(timeout=10)
        t0 = time.monotonic()
        assert server.stop(signal.SIGTERM) == 0
        assert time.monotonic() - t0 < 6
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert "Traceback" not in server.err.read_text()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


# -- the service calls behind the API, on both stores ------------------------------------------

def test_the_service_calls_behind_the_api_on_both_stores(any_store_url):
    from podium.models import Outcome, TaskState
    from podium.store.base import Finish

    p = Podium.open(any_store_url)
    try:
        s = p.store
        s.register_agent("w1", ["coder"], "echo", "host", 123, 30.0, {})
        low = p.add_task("echo Low Café ÉTÉ", role="coder", priority="low")
        high = p.add_task("echo high 100% done_", role="coder", priority="high")
        other = p.add_task("echo other", role="tester")
        blocked = p.add_task("echo after", depends_on=[low.id])
        assert [t.id for t in p.tasks(role="coder")] == [low.id, high.id]
        assert [t.id for t in p.tasks(text="LOW CAF")] == [low.id]  # ASCII in any case
        assert [t.id for t in p.tasks(text="ÉTÉ")] == [low.id]  # the rest as written
        assert [t.id for t in p.tasks(text="100% done_")] == [high.id]  # % and _ literally
        assert p.tasks(text="100_ done%") == []
        assert [t.id for t in p.tasks(text="echo", role="tester")] == [other.id]
        queue = p.queue()
        assert [t.id for t in queue[TaskState.QUEUED]] == [high.id, other.id, low.id]
        assert [t.id for t in queue[TaskState.BLOCKED]] == [blocked.id]
        assert p.dependents(low.id) == [blocked.id]
        assert p.task_states([low.id, "t-nosuchtask0000"]) == {low.id: TaskState.QUEUED}
        claimed = s.claim("w1", ["coder"], 30.0)
        assert claimed is not None and claimed.id == high.id
        assert p.queue()[TaskState.RUNNING][0].id == high.id
        s.finish("w1", Finish(high.id, claimed.attempts, Outcome(
            TaskState.COMPLETED, b"ok", tokens_in=10, tokens_out=5, cost_usd=0.25)))
        series = p.cost_series(60, 3)
        assert [pt.tasks for pt in series.points] == [0, 0, 1]
        assert series.points[-1].cost_usd == 0.25 and series.points[-1].tokens == 15
        assert series.points[1].t + 60 == series.points[2].t and series.points[2].t % 60 == 0
        assert series.by_agent["w1"][-1].cost_usd == 0.25
        assert series.by_role["coder"][-1].tasks == 1
    finally:
        p.close()


# -- the OpenAPI document says what the server takes ------------------------------------------

def _query_params(doc: dict):
    """(method, path, name, schema) of every integer query parameter with bounds."""
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for p in op["parameters"]:
                s = p["schema"].get("anyOf", [p["schema"]])[0]
                if p["in"] == "query" and s.get("type") == "integer" and "maximum" in s:
                    yield method.upper(), path, p["name"], s


def test_the_document_states_the_bounds_the_server_enforces(api):
    """Every bounded integer query parameter: its maximum and minimum are taken, one past
    either is refused (422); so a request the document calls valid is one the server takes."""
    doc = api.get("/api/openapi.json").json()
    agent = api.post("/api/team/up", json={"n": 1, "backend": "shell",
                                           "prefix": "bounds"}).json()["started"][0]
    concrete = {"agent_id": agent, "task_id": "x", "key": "k"}
    extra = {"/api/memory/search": {"q": "anything"}}
    checked = []
    try:
        for method, path, name, s in _query_params(doc):
            if path == "/api/events/ws":
                continue  # (a WebSocket: test_websocket_checks)
            url = re.sub(r"\{(\w+)\}", lambda m: concrete[m.group(1)], path)

            def status(value, url=url, path=path, name=name, method=method):
                return api.request(method, url, params={**extra.get(path, {}),
                                                        name: value}).status_code
            for ok in (s["minimum"], s["maximum"]):
                assert status(ok) not in (422, 500), (path, name, ok)
            assert status(s["maximum"] + 1) == 422, (path, name)
            assert status(s["minimum"] - 1) == 422, (path, name)
            checked.append((path, name))
    finally:
        api.post("/api/team/down", json={"agents": [agent]})
    assert {("/api/tasks", "limit"), ("/api/events", "after"), ("/api/costs/series",
            "buckets"), ("/api/agents/{agent_id}/log", "lines")} <= set(checked)


def test_a_method_a_path_does_not_take_is_405_saying_which_it_takes(api):
    def allow(r):
        assert r.status_code == 405, (r.status_code, r.text)
        assert r.json()["error"].startswith("Method Not Allowed")
        return r.headers["allow"]

    assert allow(api.put("/api/tasks", json={})) == "GET, HEAD, POST"
    assert allow(api.request("TRACE", "/api/agents")) == "GET, HEAD"
    assert allow(api.request("DELETE", "/api/context/k", json={})) == "PUT"
    assert allow(api.request("OPTIONS", "/api/events/ws")) == "GET"
    plain = api.get("/api/events/ws")  # (no Upgrade: not a WebSocket handshake)
    assert plain.status_code == 426 and "WebSocket" in plain.json()["error"]
    assert api.put("/api/no/such/route", json={}).status_code == 404


def test_numbers_as_json_has_them_and_no_default_for_the_wrong_type(api):
    """3.0 is the integer 3 (JSON has one number type); 2.5 is not. A field of the wrong type
    is refused, not taken as "not given" (``{}`` for a prefix was the default prefix)."""
    agents = len(api.get("/api/agents").json()["agents"])
    t = api.post("/api/tasks", json={"prompt": "x", "role": NOBODY, "max_attempts": 3.0})
    assert t.status_code == 201 and t.json()["task"]["max_attempts"] == 3
    assert api.post("/api/tasks", json={"prompt": "x", "max_attempts": 2.5}).status_code == 422
    for body in ({"n": 1, "prefix": {}}, {"n": 1, "backend": []}, {"n": 1, "roles": {}},
                 {"n": 1, "roles": 0}, {"n": 1.5}):
        r = api.post("/api/team/up", json=body)
        assert r.status_code == 422, (body, r.status_code, r.text)
    tid = t.json()["task"]["id"]
    assert api.post(f"/api/tasks/{tid}/cancel", json={"reason": {}}).status_code == 422
    assert api.get(f"/api/tasks/{tid}").json()["task"]["state"] == "queued"
    assert len(api.get("/api/agents").json()["agents"]) == agents  # (no up above started one)
