"""A scripted stand-in for the Anthropic Messages API, for tests that run the real Claude Code.

This replaces the paid API only: the program under test (the real ``claude`` CLI, or anything
else that speaks the Messages API) runs unchanged and talks real HTTP to a real server on
127.0.0.1 (a random port, served by a thread). Instead of a model, the server answers from a
script — a list of canned responses, one per ``POST /v1/messages``, in order — and records
every request so that a test can assert on what the client sent (the earlier turns of a resumed
conversation, the model, the tool results...).

    with ScriptedAnthropic([Text("hello", input_tokens=100, output_tokens=20)]) as api:
        env = {**os.environ, **api.env()}          # ANTHROPIC_BASE_URL, a test key...
        subprocess.run(["claude", "-p", ...], env=env, ...)
        assert api.message_requests[0]["messages"][-1]["role"] == "user"

Responses (each answers one request, as SSE when the request asks ``"stream": true`` and as one
JSON body otherwise):

- ``Text(text)`` (or a plain ``str``): one text block, ``stop_reason`` ``end_turn``;
- ``ToolUse(name, input)``: a ``tool_use`` block (optionally after some text), ``stop_reason``
  ``tool_use`` — the client runs the tool and sends its result in the next request;
- ``Reply(blocks, ...)``: any list of blocks (``{"type": "text", ...}``, ``{"type": "tool_use",
  ...}``) with explicit usage and stop reason;
- ``ApiError(status, message, type=...)``: an HTTP error with the API's error body;
- ``Hang(seconds, then=None)``: sleeps (without answering) for ``seconds`` or until the server
  stops, then answers ``then`` (or drops the connection).

A request that arrives when the script is used up gets ``fallback`` when one is given (every
time: e.g. a permanent API error, which clients retry), else an ``invalid_request_error`` saying
the script is used up, so a test that under-scripts fails with a clear message, not a hang.
``POST /v1/messages/count_tokens`` is answered with a rough count and does not use the script.
Any other request is answered 404 and logged in ``unknown`` (clients probe a few endpoints on
startup; a test can check that list when a client misbehaves).

Requests for which ``side(body)`` is true (e.g. a client's housekeeping calls to a small model:
titles, summaries) are answered with ``side_reply`` without using the script; by default there
is no such filter and every ``/v1/messages`` request takes the next scripted response.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ScriptedAnthropic", "Text", "ToolUse", "Reply", "ApiError", "Hang", "Request",
           "TEST_API_KEY"]

#: The API key the server accepts (any key is accepted; this one is for clients' env).
TEST_API_KEY = "sk-ant-test-scripted-0000"

_ids = itertools.count(1)


@dataclass
class Reply:
    """A model turn: content blocks, stop reason and usage (the numbers the client will see)."""

    blocks: list[dict[str, Any]]
    stop_reason: str = "end_turn"
    input_tokens: int = 10
    output_tokens: int = 5
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    #: Seconds to wait between streamed chunks (to observe streaming while it runs).
    chunk_delay: float = 0.0
    model: str | None = None  # default: the model the request asked for


def Text(text: str, **kw: Any) -> Reply:
    """A plain text answer."""
    return Reply([{"type": "text", "text": text}], **kw)


def ToolUse(name: str, input: dict[str, Any], text: str | None = None, id: str | None = None,
            **kw: Any) -> Reply:
    """A tool call (after optional text); the client is expected to run it and reply."""
    blocks: list[dict[str, Any]] = []
    if text:
        blocks.append({"type": "text", "text": text})
    blocks.append({"type": "tool_use", "id": id or f"toolu_{next(_ids):06d}", "name": name,
                   "input": input})
    kw.setdefault("stop_reason", "tool_use")
    return Reply(blocks, **kw)


@dataclass
class ApiError:
    """An error response as the real API sends it: ``{"type": "error", "error": {...}}``."""

    status: int
    message: str
    type: str = "invalid_request_error"


@dataclass
class Hang:
    """Do not answer for ``seconds`` (or until the server stops); then answer ``then``, if any."""

    seconds: float = 3600.0
    then: Response | None = None


Response = Reply | ApiError | Hang | str


@dataclass
class Request:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw bytes when it was not JSON
    at: float = field(default_factory=time.time)


class ScriptedAnthropic:
    """The scripted Messages API server (see the module docstring)."""

    def __init__(self, script: Iterable[Response] = (),
                 side: Callable[[dict], bool] | None = None,
                 side_reply: Response | None = None, fallback: Response | None = None):
        self._script: list[Response] = list(script)
        self.fallback = fallback
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.side = side
        self.side_reply = side_reply if side_reply is not None else Text("ok")
        #: Every request, in arrival order.
        self.requests: list[Request] = []
        #: Requests to endpoints the server does not implement: (method, path).
        self.unknown: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- script -------------------------------------------------------------------------
    def add(self, *responses: Response) -> None:
        """Append responses to the script (usable while the server runs)."""
        with self._lock:
            self._script.extend(responses)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._script)

    def _next(self, body: Any) -> Response:
        with self._lock:
            if self.side is not None and isinstance(body, dict) and self.side(body):
                return self.side_reply
            if not self._script:
                if self.fallback is not None:
                    return self.fallback
                return ApiError(400, "scripted API: no scripted response left for this request")
            return self._script.pop(0)

    # -- what was asked -----------------------------------------------------------------
    @property
    def message_requests(self) -> list[dict]:
        """The JSON bodies of every ``POST /v1/messages`` (scripted or not), in order."""
        return [r.body for r in list(self.requests)
                if r.method == "POST" and r.path.split("?")[0] == "/v1/messages"
                and isinstance(r.body, dict)]

    @staticmethod
    def texts(body: dict, role: str | None = None) -> list[str]:
        """All text in a request's messages (optionally of one role), tool results included."""
        out: list[str] = []
        for m in body.get("messages", []):
            if role is not None and m.get("role") != role:
                continue
            content = m.get("content")
            if isinstance(content, str):
                out.append(content)
                continue
            for block in content or []:
                if block.get("type") == "text":
                    out.append(block.get("text", ""))
                elif block.get("type") == "tool_result":
                    c = block.get("content")
                    if isinstance(c, str):
                        out.append(c)
                    else:
                        out.extend(b.get("text", "") for b in c or [] if b.get("type") == "text")
        return out

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The base URL (``ANTHROPIC_BASE_URL``)."""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment that points Claude Code at this server and keeps it off the network."""
        return {
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": TEST_API_KEY,
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }

    def start(self) -> ScriptedAnthropic:
        handler = type("Handler", (_Handler,), {"api": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="scripted-anthropic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes hanging handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedAnthropic:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    api: ScriptedAnthropic
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing -------------------------------------------------------------------------
    def _read_body(self) -> Any:
        n = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw

    def _record(self, body: Any) -> Request:
        req = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                      body)
        with self.api._lock:
            self.api.requests.append(req)
        return req

    def _json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", f"req_scripted_{next(_ids):06d}")
        self.end_headers()
        self.wfile.write(data)

    def _unknown(self) -> None:
        body = self._read_body() if self.command in ("POST", "PUT", "PATCH") else None
        self._record(body)
        with self.api._lock:
            self.api.unknown.append((self.command, self.path))
        if self.command == "HEAD":
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        self._json(404, {"type": "error", "error": {
            "type": "not_found_error", "message": f"scripted API: no {self.command} {self.path}"}})

    do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = _unknown

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        if path == "/v1/messages/count_tokens":
            body = self._read_body()
            self._record(body)
            return self._json(200, {"input_tokens": max(1, len(json.dumps(body)) // 4)})
        if path != "/v1/messages":
            return self._unknown()
        body = self._read_body()
        self._record(body)
        if not isinstance(body, dict):
            return self._json(400, {"type": "error", "error": {
                "type": "invalid_request_error", "message": "scripted API: body is not JSON"}})
        try:
            self._answer(self.api._next(body), body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (killed, timed out)

    # -- answers --------------------------------------------------------------------------
    def _answer(self, response: Response | None, body: dict) -> None:
        if isinstance(response, str):
            response = Text(response)
        if isinstance(response, Hang):
            self.api._stopping.wait(response.seconds)
            if response.then is None or self.api._stopping.is_set():
                self.close_connection = True
                return
            return self._answer(response.then, body)
        if isinstance(response, ApiError):
            return self._json(response.status, {"type": "error", "error": {
                "type": response.type, "message": response.message}})
        assert isinstance(response, Reply), f"bad scripted response {response!r}"
        if body.get("stream"):
            self._stream(response, body)
        else:
            self._json(200, self._message(response, body, response.blocks,
                                          response.stop_reason, response.output_tokens))

    def _message(self, r: Reply, body: dict, content: list, stop_reason: str | None,
                 output_tokens: int) -> dict:
        return {
            "id": f"msg_scripted_{next(_ids):06d}",
            "type": "message",
            "role": "assistant",
            "model": r.model or body.get("model") or "claude-scripted",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": r.input_tokens,
                "output_tokens": output_tokens,
                "cache_read_input_tokens": r.cache_read_input_tokens,
                "cache_creation_input_tokens": r.cache_creation_input_tokens,
            },
        }

    def _stream(self, r: Reply, body: dict) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.send_header("request-id", f"req_scripted_{next(_ids):06d}")
        self.end_headers()
        self.close_connection = True

        def event(kind: str, data: dict) -> None:
            self.wfile.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()
            if r.chunk_delay:
                time.sleep(r.chunk_delay)

        event("message_start", {"type": "message_start",
                                "message": self._message(r, body, [], None, 1)})
        for i, block in enumerate(r.blocks):
            if block["type"] == "text":
                event("content_block_start", {"type": "content_block_start", "index": i,
                                              "content_block": {"type": "text", "text": ""}})
                text = block["text"]
                # A few deltas, as the real API sends text in pieces.
                step = max(1, len(text) // 3)
                for j in range(0, len(text), step):
                    event("content_block_delta", {"type": "content_block_delta", "index": i,
                                                  "delta": {"type": "text_delta",
                                                            "text": text[j:j + step]}})
            elif block["type"] == "tool_use":
                event("content_block_start", {"type": "content_block_start", "index": i,
                                              "content_block": {"type": "tool_use",
                                                                "id": block["id"],
                                                                "name": block["name"],
                                                                "input": {}}})
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
                event("content_block_delta",
                      {"type": "content_block_delta", "index": i, "delta": delta})
            else:
                raise AssertionError(f"scripted API cannot stream block {block!r}")
            event("content_block_stop", {"type": "content_block_stop", "index": i})
        event("message_delta", {"type": "message_delta",
                                "delta": {"stop_reason": r.stop_reason, "stop_sequence": None},
                                "usage": {"output_tokens": r.output_tokens}})
        event("message_stop", {"type": "message_stop"})
