"""The MCP server with real clients: the SDK's client over stdio (``podium mcp serve`` spawned
as a subprocess) and over streamable HTTP (a server subprocess on a free loopback port), real
echo/shell workers, and the official MCP Inspector CLI when it is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import ROOT, run_cli
from podium.mcp.security import is_loopback_origin

# Quotes, shell metacharacters, backticks, newlines, tabs, CR, unicode (accents, CJK, RTL,
# emoji, a combining mark) and a JSON-looking tail: it must arrive byte for byte.
WEIRD = ("it's \"quoted\" $HOME ${X:-y} `uname` $(id) \\n \\ backslash\n"
         "line 2\twith tab\r\nline 3: naïve café 日本語 עברית 🎼🎻 e\u0301 \u2028 end\n"
         '{"looks": ["like", "json"]}')
JSONISH = '{"context": ["is", "json", 1]}'

TOOLS = {"get_agents", "assign_task", "broadcast_task", "get_task_result", "wait_for_task",
         "get_all_results", "cancel_task", "retry_task", "send_to_agent", "get_agent_messages",
         "get_agent_response", "update_shared_context", "get_shared_context", "get_system_status",
         "search_memory", "remember", "similar_tasks"}


class HttpServer:
    """``podium mcp serve --http --port 0``: it binds a free loopback port and prints its URL."""

    def __init__(self, store_url: str, tmp_path: Path):
        self.log = tmp_path / "mcp-http.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "podium", "--store", store_url, "mcp", "serve", "--http",
                 "--port", "0"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            pattern = r"serving (http://127\.0\.0\.1:(\d+)/mcp)"
            while not (m := re.search(pattern, self.log.read_text())):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"server did not start: {self.log.read_text()}")
                time.sleep(0.05)
            self.url, self.port = m.group(1), int(m.group(2))
            socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
            self.token = run_cli("mcp", "token", store_url=store_url).stdout.decode().strip()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def http_server(store_url, tmp_path):
    srv = HttpServer(store_url, tmp_path)
    yield srv
    srv.stop()


@asynccontextmanager
async def http_client(url: str, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            yield client


def stdio_client(store_url: str, cwd: Path, command: str = sys.executable,
                 args: list[str] | None = None) -> Client:
    args = args if args is not None else ["-m", "podium", "--store", store_url, "mcp", "serve"]
    return Client(StdioServerParameters(command=command, args=args, cwd=str(cwd)))


async def call(client: Client, tool: str, **args) -> dict:
    r = await client.call_tool(tool, args)
    assert not r.is_error, f"{tool} failed: {r.content}"
    assert json.loads(r.content[0].text) == r.structured_content  # the same JSON as text
    return r.structured_content


async def call_error(client: Client, tool: str, **args) -> str:
    r = await client.call_tool(tool, args)
    assert r.is_error, f"{tool} should have failed: {r.structured_content}"
    return r.content[0].text


# -- every tool, round trip ---------------------------------------------------------------

async def _round_trip(client: Client, podium, workers) -> None:
    tools = await client.list_tools()
    assert {t.name for t in tools.tools} == TOOLS
    assert all(t.description and len(t.description) > 40 for t in tools.tools)
    schema = {t.name: t.input_schema for t in tools.tools}["assign_task"]
    assert schema["required"] == ["prompt"]
    assert schema["properties"]["priority"]["enum"] == ["high", "normal", "low"]

    # the team
    agents = (await call(client, "get_agents"))["agents"]
    assert {a["id"]: a["state"] for a in agents} == {"a1": "idle", "a2": "idle"}
    status = await call(client, "get_system_status")
    assert status["store"] == podium.store.url and status["agents"]["idle"] == 2

    # a task, byte-exact there and back
    t = await call(client, "assign_task", prompt=WEIRD)
    assert t["state"] in ("queued", "running") and t["prompt"] == WEIRD
    r = await call(client, "wait_for_task", task_id=t["id"], timeout_s=30)
    assert r["finished"] and r["status"] == "completed", r
    assert r["output"] == WEIRD
    assert podium.task(t["id"]).prompt == WEIRD
    assert podium.task(t["id"]).output == WEIRD.encode("utf-8")
    assert (await call(client, "get_task_result", task_id=t["id"]))["output"] == WEIRD

    # target, priority, JSON-looking context, dependencies, timeout
    first = await call(client, "assign_task", prompt="first", agent_id="a2", priority="high",
                       context=JSONISH, timeout_s=60)
    assert first["target_agent"] == "a2" and first["priority"] == "high"
    assert first["timeout_s"] == 60 and podium.task(first["id"]).context == JSONISH
    second = await call(client, "assign_task", prompt="second", role="reviewer",
                        depends_on=[first["id"]], priority="low")
    assert second["depends_on"] == [first["id"]] and second["target_role"] == "reviewer"
    r2 = await call(client, "wait_for_task", task_id=second["id"], timeout_s=30)
    assert r2["status"] == "completed" and r2["agent_id"] == "a2" and r2["output"] == "second"
    r1 = await call(client, "get_task_result", task_id=first["id"])
    assert r1["agent_id"] == "a2" and JSONISH in r1["output"] and r1["output"].endswith("first")

    # results, newest last
    results = (await call(client, "get_all_results", agent_id="a2", limit=10))["tasks"]
    assert [x["id"] for x in results][-2:] == [first["id"], second["id"]]
    assert results[-1]["result"]["output"] == "second"
    assert len((await call(client, "get_all_results", limit=2))["tasks"]) == 2

    # broadcast: one copy per live agent
    b = await call(client, "broadcast_task", prompt=WEIRD, context="")
    assert sorted(x["target_agent"] for x in b["tasks"]) == ["a1", "a2"] and b["broadcast_id"]
    for x in b["tasks"]:
        done = await call(client, "wait_for_task", task_id=x["id"], timeout_s=30)
        assert done["output"] == WEIRD and done["agent_id"] == x["target_agent"]

    # cancel a task nobody can take; a wait that times out says finished: false
    stuck = await call(client, "assign_task", prompt="never", role="nobody")
    w = await call(client, "wait_for_task", task_id=stuck["id"], timeout_s=0.2)
    assert not w["finished"] and w["status"] == "queued" and w["output"] is None
    c = await call(client, "cancel_task", task_id=stuck["id"])
    assert c["state"] == "cancelled"

    # messages both ways
    m = await call(client, "send_to_agent", agent_id="a1", message=WEIRD)
    assert m["body"] == WEIRD and m["direction"] == "in"
    assert podium.inbox("a1")[-1].body == WEIRD
    box = await call(client, "get_agent_messages", agent_id="a1", limit=5)
    assert [x["body"] for x in box["inbox"]] == [WEIRD] and box["outbox"] == []
    assert podium.inbox("a1", unread=True), "reading the mailbox marks nothing read"

    # the agent's latest response: its last result, then a newer report
    resp = await call(client, "get_agent_response", agent_id="a2")
    assert resp["source"] == "result" and resp["response"] == WEIRD  # the broadcast copy
    podium.report("a2", "note", WEIRD)  # what 'podium report' in the agent does
    resp = await call(client, "get_agent_response", agent_id="a2")
    assert resp["source"] == "message" and resp["response"] == f"note: {WEIRD}"
    assert resp["result"]["output"] == WEIRD
    box = await call(client, "get_agent_messages", agent_id="a2")
    assert [x["body"] for x in box["outbox"]] == [f"note: {WEIRD}"]

    # shared context, put in front of the next prompts
    e = await call(client, "update_shared_context", key="style", content=WEIRD)
    assert e["version"] == 1 and podium.get_context("style").value == WEIRD
    e = await call(client, "update_shared_context", content=JSONISH)
    assert e["key"] == "shared"
    assert (await call(client, "get_shared_context", key="style"))["value"] == WEIRD
    entries = (await call(client, "get_shared_context"))["entries"]
    assert {x["key"]: x["value"] for x in entries} == {"style": WEIRD, "shared": JSONISH}
    t = await call(client, "assign_task", prompt="with context", agent_id="a1")
    out = (await call(client, "wait_for_task", task_id=t["id"], timeout_s=30))["output"]
    assert f"## style\n{WEIRD}" in out and JSONISH in out and out.endswith("with context")

    # errors are tool errors with a clear message, and the server keeps serving
    assert "unknown task" in await call_error(client, "get_task_result", task_id="t-nope")
    assert "unknown task" in await call_error(client, "wait_for_task", task_id="t-nope",
                                              timeout_s=1)
    assert "unknown task" in await call_error(client, "cancel_task", task_id="t-nope")
    assert "unknown agent" in await call_error(client, "send_to_agent", agent_id="ghost",
                                               message="hi")
    assert "unknown agent" in await call_error(client, "get_agent_messages", agent_id="ghost")
    assert "unknown agent" in await call_error(client, "get_agent_response", agent_id="ghost")
    assert "unknown agent" in await call_error(client, "get_all_results", agent_id="ghost")
    assert "priority" in await call_error(client, "assign_task", prompt="x", priority="urgent")
    assert "prompt is empty" in await call_error(client, "assign_task", prompt="  ")
    assert "timeout_s" in await call_error(client, "assign_task", prompt="x", timeout_s=-1)
    assert "unknown task" in await call_error(client, "assign_task", prompt="x",
                                              depends_on=["t-nope"])
    assert "unknown context key" in (await call_error(client, "get_shared_context",
                                                      key="nope")).lower()
    assert "limit" in await call_error(client, "get_all_results", limit=0)
    assert "unknown tool" in (await call_error(client, "no_such_tool")).lower()
    assert len((await call(client, "get_agents"))["agents"]) == 2

    # resources
    listed = {str(x.uri) for x in (await client.list_resources()).resources}
    assert {"podium://agents", "podium://status"} <= listed
    templates = (await client.list_resource_templates()).resource_templates
    assert [x.uri_template for x in templates] == ["podium://tasks/{task_id}"]
    got = await client.read_resource("podium://agents")
    assert {a["id"] for a in json.loads(got.contents[0].text)} == {"a1", "a2"}
    got = await client.read_resource(f"podium://tasks/{b['tasks'][0]['id']}")
    task = json.loads(got.contents[0].text)
    assert task["prompt"] == WEIRD and task["result"]["output"] == WEIRD
    assert json.loads((await client.read_resource("podium://status")).contents[0].text)["store"]
    with pytest.raises(MCPError, match="unknown task"):
        await client.read_resource("podium://tasks/t-nope")


def _start_team(workers) -> None:
    workers.start("a1", backend="echo")
    workers.start("a2", backend="echo", roles=["reviewer"])


def test_stdio_every_tool(store_url, podium, workers, tmp_path):
    _start_team(workers)

    async def main():
        async with stdio_client(store_url, tmp_path) as client:
            await _round_trip(client, podium, workers)

    anyio.run(main)


def test_http_every_tool(store_url, podium, workers, http_server):
    _start_team(workers)

    async def main():
        async with http_client(http_server.url, http_server.token) as client:
            await _round_trip(client, podium, workers)
            # no Nagle/delayed-ACK stall (~40 ms) on the server's responses
            took = []
            for _ in range(21):
                t0 = time.monotonic()
                await call(client, "get_system_status")
                took.append(time.monotonic() - t0)
            assert sorted(took)[10] < 0.025, sorted(took)

    anyio.run(main)


def test_http_a_big_prompt_and_output_fit_the_reply(store_url, podium, workers, http_server):
    """A 2 MiB prompt (the limit is 64 MiB), which the echo agents give back as a 2 MiB output,
    through the stock client, which takes at most 1 MiB an event (a reply carries its JSON
    twice): the reply cuts each text to REPLY_TEXT_CHARS and says so (``cut_in_reply``: the
    full lengths); the task was made once, whole."""
    from podium.mcp.server import REPLY_TEXT_CHARS
    _start_team(workers)
    prompt = "é" + "x" * (2 * 1024 * 1024)

    async def main():
        async with http_client(http_server.url, http_server.token) as client:
            t = await call(client, "assign_task", prompt=prompt)
            assert t["cut_in_reply"] == {"prompt": len(prompt)}
            assert t["prompt"] == prompt[:REPLY_TEXT_CHARS]
            r = await call(client, "wait_for_task", task_id=t["id"], timeout_s=60)
            assert r["finished"] and r["status"] == "completed", r.get("error")
            assert r["cut_in_reply"] == {"output": len(prompt)}
            assert r["output"] == prompt[:REPLY_TEXT_CHARS]
            listed = await call(client, "get_all_results", limit=5)
            last = listed["tasks"][-1]
            assert last["cut_in_reply"] == {"prompt": len(prompt)}
            assert last["result"]["cut_in_reply"] == {"output": len(prompt)}

    anyio.run(main)
    (task,) = [x for x in podium.tasks() if len(x.prompt) > REPLY_TEXT_CHARS]  # (made once)
    assert task.prompt == prompt and podium.task(task.id).output == prompt.encode()


def test_wait_does_not_block_other_calls(store_url, podium, workers, tmp_path):
    """Long waits run off the event loop: other calls on the same session answer meanwhile."""
    workers.start("a1", backend="echo")

    async def main():
        async with stdio_client(store_url, tmp_path) as client:
            stuck = await call(client, "assign_task", prompt="never", role="nobody")
            results = {}

            async def wait(i):
                results[i] = await call(client, "wait_for_task", task_id=stuck["id"], timeout_s=3)

            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(wait, i)
                await anyio.sleep(0.3)
                t0 = time.monotonic()
                t = await call(client, "assign_task", prompt="quick")
                done = await call(client, "wait_for_task", task_id=t["id"], timeout_s=10)
                took = time.monotonic() - t0
                assert done["output"] == "quick"
                assert took < 1.5, f"a call took {took:.2f}s while waits were pending"
                assert not results, "the waits returned early"
            assert all(not r["finished"] for r in results.values()) and len(results) == 3

    anyio.run(main)


def test_server_exits_when_its_client_goes(store_url, podium, tmp_path):
    """stdin closed while a long wait_for_task is pending: the server exits at once."""
    stuck = podium.add_task("never", role="nobody")
    proc = subprocess.Popen([sys.executable, "-m", "podium", "--store", store_url, "mcp", "serve"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp_path)
    try:
        def send(msg):
            proc.stdin.write((json.dumps(msg) + "\n").encode())
            proc.stdin.flush()

        send(INIT)
        assert json.loads(proc.stdout.readline())["id"] == 1
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "wait_for_task", "arguments": {"task_id": stuck.id, "timeout_s": 600}}})
        time.sleep(0.5)
        assert proc.poll() is None
        t0 = time.monotonic()
        proc.stdin.close()
        proc.wait(timeout=10)
        assert time.monotonic() - t0 < 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_agent_reports_through_shell(store_url, podium, workers, tmp_path):
    """A shell agent that reports with 'podium report': its message shows in its outbox; its
    result, finished after the report, is its latest response."""
    workers.start("sh", backend="shell")
    cmd = (f"'{sys.executable}' -m podium report --status done --note \"checked: $PODIUM_TASK_ID\""
           " >/dev/null && printf 'all good'")

    async def main():
        async with stdio_client(store_url, tmp_path) as client:
            t = await call(client, "assign_task", prompt=cmd, agent_id="sh")
            r = await call(client, "wait_for_task", task_id=t["id"], timeout_s=30)
            assert r["status"] == "completed" and r["output"] == "all good", r
            box = await call(client, "get_agent_messages", agent_id="sh")
            assert box["outbox"][-1]["body"] == f"done: checked: {t['id']}"
            assert box["outbox"][-1]["task_id"] == t["id"]
            resp = await call(client, "get_agent_response", agent_id="sh")
            assert resp["source"] == "result" and resp["response"] == "all good"
            assert resp["message"]["body"] == f"done: checked: {t['id']}"

    anyio.run(main)


# -- HTTP transport security --------------------------------------------------------------

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "0"}}}
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def test_http_security(store_url, http_server, podium):
    url, token = http_server.url, http_server.token
    with httpx2.Client(timeout=10) as h:
        def post(**headers):
            return h.post(url, json=INIT, headers={**HEADERS, **headers})

        r = post()
        assert r.status_code == 401 and "token" in r.json()["error"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert post(Authorization="Bearer wrong").status_code == 401
        assert post(Authorization=token).status_code == 401  # no scheme
        assert post(Authorization=f"Basic {token}").status_code == 401
        r = post(Authorization=f"Bearer {token}", Origin="http://evil.example")
        assert r.status_code == 403 and "origin" in r.json()["error"]
        assert post(Origin="https://127.0.0.1.evil.example:8080").status_code == 403
        assert post(Origin="null").status_code == 403
        assert post(Authorization=f"Bearer {token}", Host="evil.example").status_code == 421
        # (a loopback name with another port is another server's: 421, said as JSON)
        for host in ("127.0.0.1:1", f"localhost:{http_server.port + 1}", "localhost"):
            r = post(Authorization=f"Bearer {token}", Host=host)
            assert r.status_code == 421 and "not this server's" in r.json()["error"], host
        assert post(Authorization=f"Bearer {token}", Host=f"localhost:{http_server.port}",
                    Origin=f"http://localhost:{http_server.port}").status_code == 200
        for origin in (None, f"http://localhost:{http_server.port}", "http://127.0.0.1:3000",
                       "http://[::1]:6274"):
            extra = {"Origin": origin} if origin else {}
            r = post(Authorization=f"Bearer {token}", **extra)
            assert r.status_code == 200, (origin, r.status_code, r.text)
        # no token, no listing either
        assert h.get(url).status_code == 401
        # garbage with the token: refused by the SDK, the server stays up
        r = h.post(url, content=b"{not json",
                   headers={**HEADERS, "Authorization": f"Bearer {token}"})
        assert 400 <= r.status_code < 500

    # the token: made once, mode 0600, in the store's home, printed by 'podium mcp token'
    path = podium.store.home / "mcp-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == token and len(token) >= 32
    assert run_cli("mcp", "token", store_url=store_url).stdout.decode().strip() == token

    async def main():
        # The SDK client without the token is refused. What it raises is the transport's business
        # (an HTTP status error, possibly inside an ExceptionGroup): the test is that it fails.
        with pytest.raises(Exception):  # noqa: B017
            async with http_client(url, None) as client:
                await client.list_tools()
        async with http_client(url, token) as client:
            assert (await call(client, "get_system_status"))["store"] == podium.store.url

    anyio.run(main)
    assert http_server.proc.poll() is None, "the server survived every refused request"


def test_http_port_in_use(store_url):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli("mcp", "serve", "--http", "--port", str(port), store_url=store_url)
    assert r.returncode == 1 and b"cannot listen on 127.0.0.1 port" in r.stderr, r.stderr


def test_loopback_origins():
    for ok in ("http://localhost", "http://localhost:6274", "https://127.0.0.1:1", "http://[::1]:80"):
        assert is_loopback_origin(ok), ok
    for bad in ("http://evil.example", "http://localhost.evil.example", "null", "file://",
                "http://127.0.0.2", "ftp://localhost", "http://localhost:99999", ""):
        assert not is_loopback_origin(bad), bad


def test_token_permissions_tightened(store_url, podium):
    path = podium.store.home / "mcp-token"
    path.write_text("sekrit-token-value\n")
    os.chmod(path, 0o644)
    r = run_cli("mcp", "token", store_url=store_url)
    assert r.returncode == 0 and r.stdout.decode() == "sekrit-token-value\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- install ------------------------------------------------------------------------------

VENV_BIN = str(Path(sys.executable).parent)


def mcp_install(*args: str, podium_on_path: bool, store_url: str | None = None):
    """``podium mcp install`` with ``podium`` on PATH or not (run as ``python -m podium``)."""
    path = (VENV_BIN + os.pathsep if podium_on_path else "") + "/usr/bin:/bin"
    return run_cli("mcp", "install", *args, store_url=store_url, env={"PATH": path})


def test_install_merges_and_the_entry_works(store_url, podium, workers, tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    other = {"command": "npx", "args": ["-y", "other-server"], "env": {"K": "v"}}
    (project / ".mcp.json").write_text(json.dumps({"mcpServers": {"other": other},
                                                   "keep": [1, 2]}))
    r = mcp_install("--scope", "project", "--dir", str(project), podium_on_path=True,
                    store_url=store_url)
    assert r.returncode == 0, r.stderr
    assert str(project / ".mcp.json") in r.stdout.decode()
    # (the store lies outside the project: named by its path, and said so)
    assert b"is outside" in r.stderr and b"this machine's path" in r.stderr
    data = json.loads((project / ".mcp.json").read_text())
    assert data["keep"] == [1, 2] and data["mcpServers"]["other"] == other
    entry = data["mcpServers"]["podium"]
    store_path = podium.store.url.removeprefix("sqlite://")
    assert entry == {"type": "stdio", "command": "podium",
                     "args": ["--store", store_path, "mcp", "serve"], "env": {}}

    # again: replaced, not duplicated
    assert mcp_install("--dir", str(project), podium_on_path=True,
                       store_url=store_url).returncode == 0
    assert set(json.loads((project / ".mcp.json").read_text())["mcpServers"]) == {"other", "podium"}

    # the entry, run as Claude Code would (in the project, podium on its PATH), drives this store
    workers.start("a1", backend="echo")
    monkeypatch.setenv("PATH", VENV_BIN + os.pathsep + os.environ["PATH"])

    async def main():
        async with stdio_client(store_url, project, entry["command"], entry["args"]) as client:
            t = await call(client, "assign_task", prompt=WEIRD)
            done = await call(client, "wait_for_task", task_id=t["id"], timeout_s=30)
            assert done["output"] == WEIRD

    anyio.run(main)


def test_install_for_the_projects_own_store_holds_no_path_of_this_machine(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    monkeypatch.chdir(project / "src")  # (the project's store is found from a subdirectory)
    r = mcp_install("--dir", str(project), podium_on_path=True)
    assert r.returncode == 0, r.stderr
    assert not (project / ".podium").exists() and not (project / "src" / ".podium").exists()
    entry = json.loads((project / ".mcp.json").read_text())["mcpServers"]["podium"]
    assert entry == {"type": "stdio", "command": "podium", "args": ["mcp", "serve"], "env": {}}
    assert str(tmp_path) not in json.dumps(entry)

    # podium not on PATH: this Python by its path, and the note says so
    r = mcp_install("--dir", str(project), podium_on_path=False)
    assert r.returncode == 0, r.stderr
    assert b"podium is not on PATH" in r.stderr
    entry = json.loads((project / ".mcp.json").read_text())["mcpServers"]["podium"]
    assert entry["command"] == os.path.abspath(sys.executable)
    assert entry["args"] == ["-m", "podium", "mcp", "serve"]

    # Claude Code starts it in the project: it serves (and makes) the project's own store
    async def main():
        async with stdio_client("", project, entry["command"], entry["args"]) as client:
            t = await call(client, "assign_task", prompt="remembered")
            return t["id"]

    task_id = anyio.run(main)
    from podium.service import Podium

    p = Podium.open(str(project / ".podium" / "podium.db"), create=False)
    try:
        assert p.task(task_id).prompt == "remembered"
    finally:
        p.close()


def test_install_refuses_a_broken_file(store_url, tmp_path):
    (tmp_path / ".mcp.json").write_text("{not json")
    r = run_cli("mcp", "install", store_url=store_url)
    assert r.returncode == 1 and b"not valid JSON" in r.stderr
    assert (tmp_path / ".mcp.json").read_text() == "{not json"
    (tmp_path / ".mcp.json").write_text('{"mcpServers": []}')
    r = run_cli("mcp", "install", store_url=store_url)
    assert r.returncode == 1 and b"mcpServers is not an object" in r.stderr


def test_install_new_file(store_url, podium, tmp_path):
    r = run_cli("mcp", "install", store_url=store_url)
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / ".mcp.json").read_text())
    assert list(data["mcpServers"]) == ["podium"]


def test_install_leaves_a_postgres_password_out(pg_url, tmp_path):
    from podium.service import Podium

    # (this server trusts local connections: the password is carried, never checked)
    with_user = pg_url.replace("postgresql://", "postgresql://root:s3cr%40t@", 1)
    for url in (with_user, pg_url + "&password=s3cr%40t"):
        r = run_cli("mcp", "install", store_url=url)
        assert r.returncode == 0, r.stderr
        assert b"password was left out" in r.stderr and b"PGPASSWORD" in r.stderr
        text = (tmp_path / ".mcp.json").read_text()
        assert "s3cr" not in text
        args = json.loads(text)["mcpServers"]["podium"]["args"]
        written = args[args.index("--store") + 1]
        # the same store without the password: what one adds, the other sees
        a, b = Podium.open(url), Podium.open(written)
        try:
            assert b.task(a.add_task("seen?").id).prompt == "seen?"
        finally:
            a.close()
            b.close()
    r = run_cli("mcp", "install", "--with-password", store_url=with_user)
    assert r.returncode == 0 and b"left out" not in r.stderr
    assert "root:s3cr%40t@" in " ".join(json.loads((tmp_path / ".mcp.json").read_text())[
        "mcpServers"]["podium"]["args"])


# -- the official MCP Inspector CLI ---------------------------------------------------------

INSPECTOR = ROOT / ".cache" / "npm-inspector" / "node_modules" / ".bin" / "mcp-inspector"


def _inspector(store_url: str, *args: str) -> dict:
    if not INSPECTOR.exists() or not shutil.which("node"):
        pytest.skip("MCP Inspector not installed "
                    "(scripts/test installs it into .cache/npm-inspector)")
    argv = [str(INSPECTOR), "--cli", sys.executable, "-m", "podium", "--store", store_url, "mcp",
            "serve", *args]
    r = subprocess.run(argv, capture_output=True, timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return json.loads(r.stdout)


def test_inspector_cli(store_url, podium, workers):
    workers.start("a1", backend="echo")
    listed = _inspector(store_url, "--method", "tools/list")
    assert {t["name"] for t in listed["tools"]} == TOOLS
    prompt = "inspector says \"hi\" $USER `x`\nnaïve 🎻"
    added = _inspector(store_url, "--method", "tools/call", "--tool-name", "assign_task",
                       "--tool-arg", f"prompt={prompt}", "--tool-arg", "priority=high")
    assert not added.get("isError"), added
    task = added["structuredContent"]
    assert task["prompt"] == prompt and task["priority"] == "high"
    waited = _inspector(store_url, "--method", "tools/call", "--tool-name", "wait_for_task",
                        "--tool-arg", f"task_id={task['id']}", "--tool-arg", "timeout_s=30")
    assert waited["structuredContent"]["output"] == prompt
    assert podium.task(task["id"]).output == prompt.encode()
    bad = _inspector(store_url, "--method", "tools/call", "--tool-name", "get_task_result",
                     "--tool-arg", "task_id=t-nope")
    assert bad["isError"] and "unknown task" in bad["content"][0]["text"]
    res = _inspector(store_url, "--method", "resources/read", "--uri", "podium://agents")
    assert json.loads(res["contents"][0]["text"])[0]["id"] == "a1"
