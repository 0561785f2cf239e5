"""``openai``: any OpenAI-compatible ``chat/completions`` endpoint, streamed.

Works with OpenAI itself and with anything that speaks the same protocol (vLLM, llama.cpp's
server, llama-cpp-python's server, Ollama, LM Studio, OpenRouter, ...). Only the standard
library is used (``http.client``).

Options (``--option KEY=VALUE``, declared in ``OpenAIBackend.options``):

``base_url``     the API root, default ``https://api.openai.com/v1`` (``/chat/completions`` is
                 appended)
``model``        the model name, default ``gpt-4o-mini``
``api_key_env``  name of the environment variable that holds the key, default
                 ``OPENAI_API_KEY``; the key is required for the default ``base_url`` only
``temperature``, ``max_tokens``   passed through when given (0 to 2; at least 1)
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
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from podium.agents.backends import Backend, CappedBuffer, Finding, Option, Options, Run
from podium.errors import BackendUnavailable
from podium.limits import MAX_SECONDS
from podium.models import Outcome, TaskState


class EndpointError(Exception):
    """The endpoint could not be reached or answered with an error (message is for the user)."""


def error_text(body: bytes) -> str:
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
    options = Options(
        Option("base_url", str, "https://api.openai.com/v1",
               "the API root (/chat/completions is appended)"),
        Option("model", str, "gpt-4o-mini", "the model name"),
        Option("api_key_env", str, "OPENAI_API_KEY",
               "the environment variable holding the key (needed for api.openai.com only)"),
        Option("temperature", float, None, "sampling temperature, passed through when given",
               min=0, max=2),
        Option("max_tokens", int, None, "tokens to generate at most, passed through when given",
               min=1),
        Option("system", str, None, "a system message put before the prompt"),
        Option("timeout", float, 600.0,
               "seconds to wait for the connection and between two streamed chunks",
               min=0.001, max=MAX_SECONDS),
        Option("stream", bool, True, "false: one JSON answer instead of a stream"),
        Option("price_in", float, None, "USD per million input tokens, to record a cost", min=0),
        Option("price_out", float, None, "USD per million output tokens, to record a cost",
               min=0),
    )

    def __init__(self, given: Mapping[str, str] | None = None, workdir: Path | None = None):
        super().__init__(given, workdir)
        self.base_url = self.config.base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.invalid_option("base_url", self.config.base_url,
                                      "an http:// or https:// URL")

    def _api_key(self) -> str | None:
        return os.environ.get(self.config.api_key_env) or None

    def check(self) -> None:
        key = self._key_finding()
        if key.failed:
            raise BackendUnavailable(f"openai backend: {key.message()}")

    def _key_finding(self) -> Finding:
        var = self.config.api_key_env
        if self._api_key() is not None:
            return Finding.ok("API key", f"{var} is set")
        if urlsplit(self.base_url).hostname == "api.openai.com":
            return Finding.fail("API key", "no API key",
                                f"set {var} (or choose another variable with --option "
                                "api_key_env=NAME, or another endpoint with --option "
                                "base_url=URL)")
        return Finding.ok("API key", f"{var} is not set: none is sent (none is needed but "
                                     "for api.openai.com)")

    def doctor(self) -> list[Finding]:
        """The endpoint (a server on this machine is asked whether it listens: offline, at
        once), and the key."""
        return [self._endpoint_finding(), self._key_finding()]

    def preflight(self) -> None:
        self.check()

    def _endpoint_finding(self) -> Finding:
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        if host not in ("localhost", "::1") and not host.startswith("127."):
            return Finding.ok("endpoint", f"{self.base_url} (not contacted: not on this machine)")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return Finding.fail("endpoint", f"{self.base_url}: bad port", "fix option base_url")
        try:
            socket.create_connection((host, port), timeout=1.0).close()
        except OSError as e:
            return Finding.warn("endpoint", f"nothing answers at {host}:{port} "
                                            f"({reason(e)})",
                                "start the server before the first task, or fix option base_url")
        return Finding.ok("endpoint", f"{self.base_url} (listening)")

    # -- one task -------------------------------------------------------------------------
    def run(self, run: Run) -> Outcome:
        c = self.config
        messages = []
        if c.system:
            messages.append({"role": "system", "content": c.system})
        messages.append({"role": "user", "content": run.prompt})
        body: dict = {"model": c.model, "messages": messages}
        if c.stream:
            body.update(stream=True, stream_options={"include_usage": True})
        if c.temperature is not None:
            body["temperature"] = c.temperature
        if c.max_tokens is not None:
            body["max_tokens"] = c.max_tokens

        stream = _Stream(run)
        try:
            self._request(run, body, c.timeout, stream)
        except EndpointError as e:
            if run.cancelled:
                return self._outcome(stream, TaskState.CANCELLED, run.cancel_reason)
            return self._outcome(stream, TaskState.FAILED, str(e))
        if run.cancelled:
            return self._outcome(stream, TaskState.CANCELLED, run.cancel_reason)
        return self._outcome(stream, TaskState.COMPLETED, None)

    def _outcome(self, stream: _Stream, status: TaskState, error: str | None) -> Outcome:
        c = self.config
        cost = None
        if c.price_in is not None or c.price_out is not None:
            cost = ((stream.tokens_in or 0) * (c.price_in or 0.0)
                    + (stream.tokens_out or 0) * (c.price_out or 0.0)) / 1e6
        if status is TaskState.COMPLETED and stream.finish_reason == "length":
            # Not an error: the output is what the max_tokens allowed; say so on stderr.
            stderr = b"stopped at max_tokens\n"
        else:
            stderr = None
        return Outcome(status, output=stream.output.value(), stderr=stderr, error=error,
                       exit_code=None, tokens_in=stream.tokens_in, tokens_out=stream.tokens_out,
                       cost_usd=cost, output_truncated=stream.output.truncated)

    def _request(self, run: Run, body: dict, timeout: float, stream: _Stream) -> None:
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
                raise EndpointError(f"cannot reach {url}: {reason(e)}") from None
            if resp.status >= 400:
                detail = error_text(resp.read(65536))
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
                raise EndpointError(f"connection to {url} failed mid-stream: {reason(e)}") from None
        finally:
            done.set()
            conn.close()


def reason(e: BaseException) -> str:
    """Why a request to an endpoint failed, in a few words (shared with the openai embedder)."""
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
        self.output = CappedBuffer(run.max_output, run.emit)
        self.tokens_in: int | None = None
        self.tokens_out: int | None = None
        self.finish_reason: str | None = None

    def text(self, piece: str) -> None:
        self.output.feed(piece.encode("utf-8"))

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
            raise EndpointError("the endpoint reported an error: "
                                f"{error_text(json.dumps(doc).encode())}")
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
            raise EndpointError(
                f"the endpoint sent data that is not JSON: {payload[:200]!r}") from None
        self.chunk(doc)
        return False

    def read_json(self, body: bytes) -> None:
        try:
            doc = json.loads(body)
        except ValueError:
            raise EndpointError(
                f"the endpoint answered something that is not JSON: {body[:200]!r}") from None
        self.chunk(doc)
