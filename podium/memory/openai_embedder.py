"""``openai``: embeddings from any OpenAI-compatible ``/embeddings`` endpoint (OpenAI itself,
llama.cpp's or llama-cpp-python's server started with embeddings on, Ollama, vLLM, LM Studio).

Options (``--embedder-option KEY=VALUE``, declared in ``OpenAIEmbedder.options``):

``url``          the API root, default ``https://api.openai.com/v1`` (``/embeddings`` is appended)
``model``        the model name sent, default ``text-embedding-3-small``
``api_key_env``  the environment variable holding the key, default ``OPENAI_API_KEY``; required
                 for api.openai.com only, sent as a bearer token when set
``dimension``    the vectors' length; when not given, the endpoint is asked once (one short
                 text embedded) on first use. Every answer is checked against it.
``timeout``      seconds to wait for an answer (60)

The model id stored with each vector is ``openai:<model>@<host>`` (a model name alone may
mean different models on different servers). Vectors are L2-normalised here whatever the
endpoint returns. An endpoint that returns one vector per token (llama-cpp-python's server
with a model that has no pooling of its own, such as a plain language model) gets them
mean-pooled, as sentence-transformers pools, and is then sent one text per request: that
server mixes up the tokens of a batch's texts after the first (the same text came back at
cosine 0.01 to itself). Only the standard library is used (``http.client``), with one
kept-alive connection.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from podium.agents.backends.openai import error_text, reason
from podium.agents.backends.options import Option, Options, invalid_option
from podium.errors import InvalidInput, MemoryUnavailable
from podium.limits import MAX_SECONDS
from podium.memory.base import Embedder

if TYPE_CHECKING:
    from podium.memory.base import Matrix, Vector

#: Texts per request.
BATCH = 64


class OpenAIEmbedder(Embedder):
    """Vectors from an OpenAI-compatible ``/embeddings`` endpoint."""

    options = Options(
        Option("url", str, "https://api.openai.com/v1",
               "the API root (/embeddings is appended)"),
        Option("model", str, "text-embedding-3-small", "the model name sent"),
        Option("api_key_env", str, "OPENAI_API_KEY",
               "the environment variable holding the key (needed for api.openai.com only)"),
        Option("dimension", int, None, "the vectors' length (default: asked from the endpoint)",
               min=1, max=65536),
        Option("timeout", float, 60.0, "seconds to wait for an answer", min=0.001,
               max=MAX_SECONDS),
    )

    def __init__(self, given: Mapping[str, str] | None = None):
        self.config = self.options.parse(self.name or "openai", given or {}, "embedder")
        self.base_url = self.config.url.rstrip("/")
        parts = urlsplit(self.base_url)
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:  # not a number, or out of range
            port_ok = False
        if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
            raise invalid_option("openai", "url", self.config.url,
                                 "an http:// or https:// URL", "embedder")
        if not self.config.model.strip():
            raise invalid_option("openai", "model", self.config.model, "a model name",
                                 "embedder")
        self._parts = parts
        self.model_id = f"openai:{self.config.model}@{parts.hostname}"
        self._dimension: int | None = self.config.dimension
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self._per_token = False  # the endpoint answers per token: one text per request

    @property
    def dimension(self) -> int:
        """The vectors' length: the option, else what the endpoint returns (asked once)."""
        if self._dimension is None:
            self._dimension = len(self._request(["dimension"])[0])
        return self._dimension

    @dimension.setter
    def dimension(self, value: int) -> None:
        self._dimension = value

    # -- the endpoint ------------------------------------------------------------------
    def _key(self) -> str | None:
        key = os.environ.get(self.config.api_key_env) or None
        if key is None and self._parts.hostname == "api.openai.com":
            raise MemoryUnavailable(
                f"embedder openai: no API key: set {self.config.api_key_env} (or another "
                "variable with --embedder-option api_key_env=NAME, or another endpoint with "
                "--embedder-option url=URL)")
        return key

    def _connect(self) -> http.client.HTTPConnection:
        parts, timeout = self._parts, self.config.timeout
        if parts.scheme == "https":
            return http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        path = (self._parts.path or "") + "/embeddings"
        for attempt in (1, 2):  # a kept-alive connection the server has closed: once more
            if self._conn is None:
                self._conn = self._connect()
            try:
                self._conn.request("POST", path, body=body, headers=headers)
                resp = self._conn.getresponse()
                return resp.status, resp.reason, resp.read()
            except (OSError, http.client.HTTPException) as e:
                self._conn.close()
                self._conn = None
                stale = isinstance(e, http.client.RemoteDisconnected | BrokenPipeError |
                                   ConnectionResetError)
                if attempt == 2 or not stale:
                    raise MemoryUnavailable(f"embedder openai: cannot reach "
                                            f"{self.base_url}/embeddings: {reason(e)}") from None
        raise AssertionError("unreachable")

    def _request(self, texts: list[str]) -> list[list[float]]:
        """One vector per text (see the module's docstring for per-token answers)."""
        if self._per_token and len(texts) > 1:
            return [self._ask([t])[0] for t in texts]
        vectors = self._ask(texts)
        if self._per_token and len(texts) > 1:  # (learnt from this answer: ask again)
            return [self._ask([t])[0] for t in texts]
        return vectors

    def _ask(self, texts: list[str]) -> list[list[float]]:
        headers = {"Content-Type": "application/json", "User-Agent": "podium"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        body = json.dumps({"model": self.config.model, "input": texts}).encode("utf-8")
        with self._lock:
            status, phrase, raw = self._post(body, headers)
        url = f"{self.base_url}/embeddings"
        if status >= 400:
            raise MemoryUnavailable(f"embedder openai: {url} answered HTTP {status} {phrase}: "
                                    f"{error_text(raw)}")
        try:
            items = json.loads(raw)["data"]
            items = sorted(items, key=lambda item: item.get("index", 0))
            vectors = [self._pooled(item["embedding"]) for item in items]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise MemoryUnavailable(f"embedder openai: {url} did not answer with embeddings: "
                                    f"{raw[:200].decode('utf-8', 'replace')}") from None
        if len(vectors) != len(texts):
            raise MemoryUnavailable(f"embedder openai: {url} returned {len(vectors)} vectors "
                                    f"for {len(texts)} texts")
        return vectors

    def _pooled(self, embedding: Any) -> list[float]:
        """One vector: as given, or the mean of per-token vectors."""
        if embedding and isinstance(embedding[0], list):
            self._per_token = True
            width = len(embedding[0])
            return [sum(token[i] for token in embedding) / len(embedding) for i in range(width)]
        return [float(x) for x in embedding]

    # -- embedding -----------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> Matrix:
        import numpy as np

        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise InvalidInput(f"texts to embed must be strings, got {type(t).__name__}")
        rows: list[list[float]] = []
        for start in range(0, len(texts), BATCH):
            rows.extend(self._request(texts[start:start + BATCH]))
        if not rows:
            return np.zeros((0, self.dimension), dtype=np.float32)
        matrix = np.asarray(rows, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != self.dimension:
            raise MemoryUnavailable(f"embedder openai: {self.base_url} returned vectors of "
                                    f"{matrix.shape[-1]} numbers; expected {self.dimension} "
                                    "(option dimension)")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        out: Matrix = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
        return out

    def embed_query(self, text: str) -> Vector:
        if not isinstance(text, str):
            raise InvalidInput(f"text to embed must be a string, got {type(text).__name__}")
        vector: Vector = self.embed([text])[0]
        return vector

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
