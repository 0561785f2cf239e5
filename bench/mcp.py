#!/usr/bin/env python3
"""MCP round trip: ``assign_task`` through ``podium mcp serve`` next to the SDK's own floor.

For each transport (stdio, streamable HTTP on loopback) two servers run as subprocesses:
  * podium: ``python -m podium --store URL mcp serve [--http]`` on a fresh SQLite store;
  * floor: a minimal ``MCPServer`` started by this file over the same transport, with a no-op
    tool of the same shape as Podium's (``noop(prompt: str) -> dict``, synchronous, so the SDK
    runs it on a worker thread as it runs Podium's tools) and, for reference, the same no-op
    as an ``async def`` (no thread hop: the cheapest tool the SDK can serve).
The SDK's ``mcp.Client`` calls one tool at a time from one process; the clients take turns in
batches so that machine noise hits every series alike. A round trip is ``call_tool`` until its
result; for ``assign_task`` the task is committed to the store when it returns. Two phases:
no worker (the queue just grows: the MCP and store cost alone), then one real echo worker
(``podium agent run``) claiming and finishing every task as it is queued, competing for the
CPU and the store's write lock (started once the first phase's backlog is gone). Ratios are to
the synchronous floor; the target is at most 2x. Last, ``assign_task`` + ``wait_for_task``
until the echo worker finished the task.

    .venv/bin/python bench/mcp.py [--n 1000] [--batch 50] [--sync NORMAL]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

# This file is bench/mcp.py: its directory must not be on the path, or it hides the SDK's
# ``mcp`` package. Take _common from there, then drop the directory.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _HERE]
sys.path.insert(0, _HERE)
import _common as C  # noqa: E402

sys.path.remove(_HERE)

TARGET = 2.0
PROMPT = "run the unit tests and report failures"


# -- the floor server (this file, run as a child) ----------------------------------------------

def floor_server(transport: str, port: int) -> None:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("floor", log_level="WARNING")

    @server.tool()
    def noop(prompt: str) -> dict[str, Any]:
        """Do nothing."""
        return {"ok": True}

    @server.tool()
    async def noop_async(prompt: str) -> dict[str, Any]:
        """Do nothing, on the event loop."""
        return {"ok": True}

    if transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=port)


# -- clients ------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on port {port}")


@asynccontextmanager
async def _client(argv: list[str] | None = None, url: str | None = None, token: str | None = None):
    import httpx2
    from mcp import Client, StdioServerParameters
    from mcp.client.streamable_http import streamable_http_client

    if argv is not None:
        async with Client(StdioServerParameters(command=argv[0], args=argv[1:],
                                                cwd=str(C.ROOT))) as client:
            yield client
        return
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            yield client


async def _series(client, tool: str, args: dict, n: int, out: list[float]) -> None:
    for _ in range(n):
        t0 = time.perf_counter()
        r = await client.call_tool(tool, args)
        out.append(time.perf_counter() - t0)
        if r.is_error:
            raise SystemExit(f"{tool} failed: {r.content}")


async def _end_to_end(client, n: int, out: list[float]) -> None:
    for _ in range(n):
        t0 = time.perf_counter()
        r = await client.call_tool("assign_task", {"prompt": PROMPT})
        done = await client.call_tool("wait_for_task",
                                      {"task_id": r.structured_content["id"], "timeout_s": 30})
        out.append(time.perf_counter() - t0)
        if done.is_error or done.structured_content["status"] != "completed":
            raise SystemExit(f"task failed: {done.content}")


async def _interleaved(plan: list[tuple[str, Any, str]], n: int, batch: int,
                       series: dict[str, list[float]]) -> None:
    """Each (series, client, tool) in turn, ``batch`` calls at a time, until ``n`` each."""
    done = 0
    while done < n:
        k = min(batch, n - done)
        for name, client, tool in plan:
            await _series(client, tool, {"prompt": PROMPT}, k, series.setdefault(name, []))
        done += k


async def run(n: int, batch: int, sync: str) -> dict[str, list[float]]:
    from podium.service import Podium

    tmp = C.tempdir("mcp")
    url = C.podium_url(tmp / "podium.db", sync)
    pod = [C.PY, "-m", "podium", "--store", url]
    C.spawn([*pod, "init"]).wait()
    http_port, floor_port = _free_port(), _free_port()
    servers = [C.spawn([*pod, "mcp", "serve", "--http", "--port", str(http_port)],
                       log=tmp / "mcp-http.log"),
               C.spawn([C.PY, __file__, "--floor-server", "http", "--port", str(floor_port)],
                       log=tmp / "floor-http.log")]
    _wait_port(http_port, servers[0])
    _wait_port(floor_port, servers[1])
    token = (tmp / "mcp-token").read_text().strip()

    series: dict[str, list[float]] = {}
    async with AsyncExitStack() as stack:
        enter = stack.enter_async_context
        c = {
            "stdio floor": await enter(_client([C.PY, __file__, "--floor-server", "stdio"])),
            "stdio podium": await enter(_client([*pod, "mcp", "serve"])),
            "http floor": await enter(_client(url=f"http://127.0.0.1:{floor_port}/mcp")),
            "http podium": await enter(_client(url=f"http://127.0.0.1:{http_port}/mcp",
                                               token=token)),
        }
        for name, client in c.items():  # warm up: imports, first queries, caches
            await _series(client, "assign_task" if "podium" in name else "noop",
                          {"prompt": PROMPT}, 30, [])
            if "floor" in name:
                await _series(client, "noop_async", {"prompt": PROMPT}, 30, [])

        def plan(phase: str) -> list[tuple[str, Any, str]]:
            out = []
            for tr in ("stdio", "http"):
                out += [(f"{tr} floor", c[f"{tr} floor"], "noop"),
                        (f"{tr} floor async", c[f"{tr} floor"], "noop_async"),
                        (f"{tr} podium {phase}", c[f"{tr} podium"], "assign_task")]
            return out

        await _interleaved(plan("idle"), n, batch, series)
        C.spawn([*pod, "agent", "run", "--name", "bench-echo", "--backend", "echo"],
                log=tmp / "worker.log")
        p = Podium.open(url)
        try:
            deadline = time.monotonic() + 300
            while p.store.counts()["queued"] or p.store.counts()["running"]:
                if time.monotonic() > deadline:
                    raise SystemExit("the echo worker did not drain the queue")
                time.sleep(0.1)
        finally:
            p.close()
        await _interleaved(plan("worker"), n, batch, series)
        e2e = max(50, n // 10)
        for tr in ("stdio", "http"):
            await _end_to_end(c[f"{tr} podium"], e2e, series.setdefault(f"{tr} e2e", []))
    C.stop(servers)
    return series


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="calls per series")
    ap.add_argument("--batch", type=int, default=50, help="calls per turn of each client")
    ap.add_argument("--sync", default="NORMAL", help="PRAGMA synchronous of the Podium store")
    ap.add_argument("--floor-server", choices=["stdio", "http"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.floor_server:
        floor_server(a.floor_server, a.port)
        return

    import anyio

    print(f"MCP round trips, {a.n} calls per series, one at a time ({C.machine()}; "
          f"SQLite synchronous={a.sync})\n")
    series = anyio.run(run, a.n, a.batch, a.sync)
    s = {k: C.summary_ms(v) for k, v in series.items()}
    rows, verdict = [], []
    for tr in ("stdio", "http"):
        f = s[f"{tr} floor"]

        def row(label: str, st: dict, vs_floor: bool = True, f: dict = f) -> list[str]:
            return [label, f"{st['p50']:.3f}", f"{st['p99']:.3f}", f"{st['max']:.3f}",
                    C.ratio(st["p50"], f["p50"]) if vs_floor else "",
                    C.ratio(st["p99"], f["p99"]) if vs_floor else ""]

        rows.append(row(f"{tr}: SDK floor, no-op tool (sync)", f, False))
        rows.append(row(f"{tr}: SDK floor, no-op tool (async)", s[f"{tr} floor async"]))
        rows.append(row(f"{tr}: podium assign_task, no worker", s[f"{tr} podium idle"]))
        rows.append(row(f"{tr}: podium assign_task, echo worker", s[f"{tr} podium worker"]))
        e = s[f"{tr} e2e"]
        rows.append(row(f"{tr}: assign_task + wait_for_task (n={e['n']})", e, False))
        for phase, what in (("idle", "no worker"), ("worker", "echo worker")):
            p = s[f"{tr} podium {phase}"]
            ok = p["p50"] <= TARGET * f["p50"] and p["p99"] <= TARGET * f["p99"]
            verdict.append(f"{tr}, {what}: median {C.ratio(p['p50'], f['p50'])}, p99 "
                           f"{C.ratio(p['p99'], f['p99'])} of the floor -> "
                           f"{'within' if ok else 'OVER'} the {TARGET:g}x target")
    print(C.table(rows, ["series", "median ms", "p99 ms", "max ms", "median/floor",
                         "p99/floor"]))
    print()
    print("\n".join(verdict))

if __name__ == "__main__":
    main()
