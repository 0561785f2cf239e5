"""``openai``: any OpenAI-compatible ``chat/completions`` endpoint, streamed.

Works with OpenAI itself and with anything that speaks the same protocol (vLLM, llama.cpp's
server, llama-cpp-python's server, Ollama, LM Studio, OpenRouter, ...). Only the standard
library is used (``http.client``).

Options (``--option KEY=VALUE``):

``base_url``     the API root, default ``https://api.openai.com/v1`` (``/chat/completions`` is
                 appended)
``model``        the model name, default ``gpt-4o-mini``
``api_key_env``  name of the environment variable that holds the key, default
                 ``OPENAI_API_KEY``; the key is required for the default ``base_url`` only
``temperature``, ``max_tokens``   passed through when given
``system``       a system message put before the prompt
``timeout``      seconds to wait for the connection and between two streamed chunks (600)
``stream``       ``false`` asks for one JSON answer instead of a stream (for endpoints that
                 cannot stream, or that report usage only without streaming)
``price_in``, ``price_out``       USD per million input / output tokens; when given, the
                 result records ``cost_usd`` (endpoints do not report cost)

The request asks for a stream (server-sent events) with ``stream_options.include_usage``, so
the output (the assistant's text) is streamed into the task's output events as it arrives and
``tokens_in`` / ``tokens_out`` come from the final ``usage`` chunk. A cancel or timeout shuts
the connection down at once; the text received until then is kept.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import threading
from urllib.parse import urlsplit

from podium.agents.backends import Backend, Run
from podium.errors import BackendUnavailable
from podium.models import Outcome, TaskState

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
_KNOWN = {"base_url", "model", "api_key_env", "temperature", "max_tokens", "system", "timeout",
          "price_in", "price_out", "stream"}


class EndpointError(Exception):
    """The endpoint could not be reached or answered with an error (message is for the user)."""


def _number(options: dict[str, str], key: str, kind: type, low: float | None = None):
    raw = options.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise BackendUnavailable(
            f"openai backend: option {key}={raw!r} is not a {kind.__name__}") from None
    if low is not None and value < low:
        raise BackendUnavailable(f"openai backend: option {key}={raw!r} must be at least {low}")
    return value


def _error_text(body: bytes) -> str:
    """The message of an OpenAI-style error body, or the body itself (shortened)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(doc, dict):
        err = doc.get("error", doc)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or json.dumps(err)[:500]
            return str(msg)[:500]
        if isinstance(err, str):
            return err[:500]
        if "detail" in doc:
            return str(doc["detail"])[:500]
    return text[:500]


class OpenAIBackend(Backend):
    takes_context = True
    inline = False

    def __init__(self, options=None, workdir=None):
        super().__init__(options, workdir)
        o = self.options
        self.base_url = (o.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self.model = o.get("model") or DEFAULT_MODEL
        self.api_key_env = o.get("api_key_env") or "OPENAI_API_KEY"
        self.system = o.get("system") or None

    # -- configuration --------------------------------------------------------------------
    def _settings(self) -> dict:
        unknown = sorted(set(self.options) - _KNOWN)
        if unknown:
            raise BackendUnavailable(
                f"openai backend: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_KNOWN))}")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendUnavailable(
                f"openai backend: base_url {self.base_url!r} must be an http:// or https:// URL")
        stream = (self.options.get("stream") or "true").strip().lower()
        if stream not in ("true", "false", "1", "0", "yes", "no"):
            raise BackendUnavailable(f"openai backend: option stream={stream!r}: expected true or false")
        return {
            "stream": stream in ("true", "1", "yes"),
            "temperature": _number(self.options, "temperature", float, 0.0),
            "max_tokens": _number(self.options, "max_tokens", int, 1),
            "timeout": _number(self.options, "timeout", float, 0.001) or 600.0,
            "price_in": _number(self.options, "price_in", float, 0.0),
            "price_out": _number(self.options, "price_out", float, 0.0),
        }

    def _api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None

    def check(self) -> None:
        self._settings()
        if self._api_key() is None and urlsplit(self.base_url).hostname == "api.openai.com":
            raise BackendUnavailable(
                f"openai backend: no API key: set {self.api_key_env} (or choose another "
                "variable with --option api_key_env=NAME, or another endpoint with "
                "--option base_url=URL)")

    # -- one task -------------------------------------------------------------------------
    def run(self, run: Run) -> Outcome:
        try:
            settings = self._settings()
        except BackendUnavailable as e:
            return Outcome(TaskState.FAILED, error=str(e))
        messages = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": run.prompt})
        body: dict = {"model": self.model, "messages": messages}
        if settings["stream"]:
            body.update(stream=True, stream_options={"include_usage": True})
        if settings["temperature"] is not None:
            body["temperature"] = settings["temperature"]
        if settings["max_tokens"] is not None:
            body["max_tokens"] = settings["max_tokens"]

        stream = _Stream(run)
        try:
            self._request(run, body, settings["timeout"], stream)
        except EndpointError as e:
            if run.cancelled:
                return stream.outcome(TaskState.CANCELLED, run.cancel_reason, settings)
            return stream.outcome(TaskState.FAILED, str(e), settings)
        if run.cancelled:
            return stream.outcome(TaskState.CANCELLED, run.cancel_reason, settings)
        return stream.outcome(TaskState.COMPLETED, None, settings)

    def _request(self, run: Run, body: dict, timeout: float, stream: "_Stream") -> None:
        parts = urlsplit(self.base_url)
        url = f"{self.base_url}/chat/completions"
        path = (parts.path or "") + "/chat/completions"
        if parts.query:
            path += "?" + parts.query
        # Connecting gets at most 10 s (a cancel cannot cut a connect short); reads get timeout.
        connect_timeout = min(timeout, 10.0)
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=connect_timeout,
                context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=connect_timeout)
        headers = {"Content-Type": "application/json", "User-Agent": "podium",
                   "Accept": "text/event-stream" if body.get("stream") else "application/json"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        done = threading.Event()

        def watch_cancel() -> None:
            # The read below blocks in the kernel: on cancel, shut the socket down under it.
            while not done.wait(0.05):
                sock = conn.sock
                if run.cancelled and sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return

        watcher = threading.Thread(target=watch_cancel, name="openai-cancel", daemon=True)
        watcher.start()
        try:
            try:
                conn.connect()
                conn.sock.settimeout(timeout)
                if run.cancelled:
                    return
                conn.request("POST", path, body=json.dumps(body).encode("utf-8"), headers=headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                raise EndpointError(f"cannot reach {url}: {_why(e)}") from None
            if resp.status >= 400:
                detail = _error_text(resp.read(65536))
                raise EndpointError(f"{url} answered HTTP {resp.status} {resp.reason}: {detail}")
            ctype = resp.getheader("Content-Type", "")
            try:
                if "text/event-stream" in ctype:
                    stream.read_sse(resp)
                else:  # a server that ignored "stream": one JSON completion
                    stream.read_json(resp.read())
            except (OSError, http.client.HTTPException) as e:
                if run.cancelled:
                    return
                raise EndpointError(f"connection to {url} failed mid-stream: {_why(e)}") from None
        finally:
            done.set()
            conn.close()


def _why(e: BaseException) -> str:
    if isinstance(e, socket.timeout):
        return "timed out (option timeout)"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (is the server running?)"
    if isinstance(e, socket.gaierror):
        return f"unknown host ({e.strerror or e})"
    return str(e) or type(e).__name__


class _Stream:
    """Collects the assistant's text and usage from the response, streaming the text out."""

    def __init__(self, run: Run):
        self.run = run
        self.parts: list[bytes] = []
        self.size = 0
        self.truncated = False
        self.tokens_in: int | None = None
        self.tokens_out: int | None = None
        self.finish_reason: str | None = None

    def text(self, piece: str) -> None:
        if not piece:
            return
        data = piece.encode("utf-8")
        room = self.run.max_output - self.size
        if len(data) > room:
            data = data[:max(0, room)]
            self.truncated = True
        if data:
            self.parts.append(data)
            self.size += len(data)
            self.run.emit(data)

    def usage(self, usage) -> None:
        if isinstance(usage, dict):
            if isinstance(usage.get("prompt_tokens"), int):
                self.tokens_in = usage["prompt_tokens"]
            if isinstance(usage.get("completion_tokens"), int):
                self.tokens_out = usage["completion_tokens"]

    def chunk(self, doc) -> None:
        if not isinstance(doc, dict):
            return
        if "error" in doc and doc["error"]:
            raise EndpointError(f"the endpoint reported an error: {_error_text(json.dumps(doc).encode())}")
        for choice in doc.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or choice.get("message") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str):
                self.text(content)
            elif isinstance(choice.get("text"), str):  # completions-style chunks
                self.text(choice["text"])
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if doc.get("usage"):
            self.usage(doc["usage"])

    def read_sse(self, resp) -> None:
        data: list[str] = []
        while True:
            if self.run.cancelled:
                return
            raw = resp.readline()
            if not raw:
                break
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line == "":
                if data and self._event("\n".join(data)):
                    return
                data = []
            elif line.startswith(":"):
                continue  # a comment / keep-alive
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" ") if line[5:6] == " " else line[5:])
        if data and self._event("\n".join(data)):
            return
        if self.finish_reason is None and not self.run.cancelled:
            # e.g. llama-cpp-python's server, when the request fails after the 200 was sent
            raise EndpointError("the endpoint ended the stream before the answer was complete "
                                "(no finish_reason, no [DONE]); see the server's log")

    def _event(self, payload: str) -> bool:
        """Handle one event's data; True at the end of the stream."""
        if payload.strip() == "[DONE]":
            return True
        try:
            doc = json.loads(payload)
        except ValueError:
            raise EndpointError(f"the endpoint sent data that is not JSON: {payload[:200]!r}") from None
        self.chunk(doc)
        return False

    def read_json(self, body: bytes) -> None:
        try:
            doc = json.loads(body)
        except ValueError:
            raise EndpointError(
                f"the endpoint answered something that is not JSON: {body[:200]!r}") from None
        self.chunk(doc)

    def outcome(self, status: TaskState, error: str | None, settings: dict) -> Outcome:
        cost = None
        if settings.get("price_in") is not None or settings.get("price_out") is not None:
            cost = ((self.tokens_in or 0) * (settings.get("price_in") or 0.0)
                    + (self.tokens_out or 0) * (settings.get("price_out") or 0.0)) / 1e6
        if status is TaskState.COMPLETED and self.finish_reason == "length":
            # Not an error: the output is what the max_tokens allowed; say so on stderr.
            stderr = b"stopped at max_tokens\n"
        else:
            stderr = None
        return Outcome(status, output=b"".join(self.parts), stderr=stderr, error=error,
                       exit_code=None, tokens_in=self.tokens_in, tokens_out=self.tokens_out,
                       cost_usd=cost, output_truncated=self.truncated)
