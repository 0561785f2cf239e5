"""Backends declare typed options; the framework checks them; ``podium backends`` lists them.

Bad values go through the real ``podium agent run`` (exit 1, one ``podium: error:`` line naming
the backend, the option and what it expects, no traceback, no store created: the backend is
made before the store opens). A third-party-like backend, ``Weather`` below, is declared here
and registered for the subprocesses through a ``.dist-info`` directory on ``PYTHONPATH``,
exactly as an installed package would be: its options are checked by the same framework and
reach its ``run`` typed, in a real worker. ``CappedBuffer`` is the one output buffer of
``run_process``, the JSON-lines backends and ``openai``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import error_line
from podium.agents.backends import Backend, CappedBuffer, Option, Options, Run
from podium.agents.backends import openai as openai_backend
from podium.agents.backends.local import LocalBackend
from podium.agents.backends.openai import OpenAIBackend
from podium.errors import BackendUnavailable, InvalidInput
from podium.models import Outcome, TaskState

TESTS = Path(__file__).resolve().parent


class Weather(Backend):
    """A third-party backend as a plugin author would write it (see the README)."""

    options = Options(
        Option("city", str, "Paris", "where"),
        Option("days", int, 3, "days to forecast", min=1, max=14),
        Option("scale", float, 1.0, "a factor on every number", min=0),
        Option("metric", bool, True, "degrees Celsius rather than Fahrenheit"),
        Option("cache", Path, None, "a cache file"),
        Option("flags", list[str], [], "more flags, split like a shell line"),
    )

    def run(self, run: Run) -> Outcome:
        c = self.config
        output = CappedBuffer(run.max_output, run.emit)
        output.feed(repr([c.city, c.days, c.scale, c.metric, str(c.cache), c.flags]).encode())
        return Outcome(TaskState.COMPLETED, output=output.value(),
                       output_truncated=output.truncated)


def error_message(p: subprocess.CompletedProcess) -> str:
    """The message of the one ``podium: error:`` line of a failed run."""
    return error_line(p).removeprefix("podium: error: ")


@pytest.fixture
def plugin_path(tmp_path) -> str:
    """A ``PYTHONPATH`` on which ``Weather`` is installed as backend ``weather``."""
    site = tmp_path / "site"
    dist = site / "podium_weather-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: podium-weather\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[podium.backends]\nweather = test_backend_options:Weather\n")
    return os.pathsep.join([str(site), str(TESTS), str(TESTS.parent)])  # (+ its helpers)


def podium_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The real ``podium`` with exactly this environment."""
    return subprocess.run([sys.executable, "-m", "podium", *args], capture_output=True,
                          env=env, timeout=120)


def bare_env(**extra: str) -> dict[str, str]:
    """This environment without any agent CLI on PATH and without an OpenAI key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["PATH"] = "/nonexistent"
    env.update(extra)
    return env


# -- bad values through the real CLI -----------------------------------------------------------

BAD = [
    # (backend, --option, the error after "podium: error: ")
    ("openai", "temperature=hot",
     "backend openai: option temperature='hot' must be a number from 0 to 2"),
    ("openai", "temperature=2.5",
     "backend openai: option temperature='2.5' must be a number from 0 to 2"),
    ("openai", "temperature=nan",
     "backend openai: option temperature='nan' must be a number from 0 to 2"),
    ("openai", "max_tokens=1.5",
     "backend openai: option max_tokens='1.5' must be an integer, at least 1"),
    ("openai", "max_tokens=0",
     "backend openai: option max_tokens='0' must be an integer, at least 1"),
    ("openai", "timeout=0",
     "backend openai: option timeout='0' must be a number from 0.001 to 2592000"),
    ("openai", "timeout=1e12",
     "backend openai: option timeout='1e12' must be a number from 0.001 to 2592000"),
    ("openai", "stream=maybe", "backend openai: option stream='maybe' must be true or false"),
    ("openai", "price_out=-1",
     "backend openai: option price_out='-1' must be a number, at least 0"),
    ("openai", "base_url=ftp://example.com",
     "backend openai: option base_url='ftp://example.com' must be an http:// or https:// URL"),
    ("openai", "tempreature=0",
     "backend openai: unknown option 'tempreature'; its options are base_url, model, "
     "api_key_env, temperature, max_tokens, system, timeout, stream, price_in, price_out"),
    ("local", "n_ctx=8", "backend local: option n_ctx='8' must be an integer, at least 16"),
    ("local", "seed=-1", "backend local: option seed='-1' must be an integer, at least 0"),
    ("local", "temperature=inf",
     "backend local: option temperature='inf' must be a number, at least 0"),
    ("local", "stop=a\\x",
     "backend local: option stop='a\\\\x' must be text whose escapes are valid, such as \\n "
     "or \\t"),
    ("claude", "keep_session=perhaps",
     "backend claude: option keep_session='perhaps' must be true or false"),
    ("codex", "extra_args=--model 'gpt",
     "backend codex: option extra_args=\"--model 'gpt\" must be arguments split like a shell "
     "line (check the quotes)"),
    ("gemini", "skip_trust=2", "backend gemini: option skip_trust='2' must be true or false"),
    ("shell", "shel=/bin/bash", "backend shell: unknown option 'shel'; its options are shell"),
    ("echo", "model=x", "backend echo: unknown option 'model'; it takes no options"),
]


@pytest.mark.parametrize("backend, option, expected", BAD,
                         ids=[f"{b} {o}" for b, o, _ in BAD])
def test_a_bad_option_is_one_clear_error(cli, tmp_path, backend, option, expected):
    r = cli("agent", "run", "--name", "x", "--backend", backend, "--option", option)
    assert error_message(r) == expected
    assert not (tmp_path / "podium.db").exists()  # refused before the store was opened


def test_bad_values_are_invalid_input_not_unavailable():
    for given in ({"temperature": "hot"}, {"nope": "1"}, {"base_url": "file:///x"}):
        with pytest.raises(InvalidInput) as caught:
            OpenAIBackend(given)
        assert not isinstance(caught.value, BackendUnavailable)
    with pytest.raises(InvalidInput):
        LocalBackend({"stop": "\\"})


# -- valid values are typed ---------------------------------------------------------------------

def test_built_in_backends_read_typed_values_with_the_documented_defaults():
    c = OpenAIBackend().config
    assert (c.base_url, c.model, c.api_key_env) == (
        "https://api.openai.com/v1", "gpt-4o-mini", "OPENAI_API_KEY")
    assert (c.temperature, c.max_tokens, c.system, c.timeout, c.stream) == (
        None, None, None, 600.0, True)
    assert (c.price_in, c.price_out) == (None, None)
    c = OpenAIBackend({"temperature": "0.5", "max_tokens": "7", "stream": "No",
                       "timeout": "2.5", "price_in": "1000", "model": ""}).config
    assert (c.temperature, c.max_tokens, c.stream, c.timeout, c.price_in) == (
        0.5, 7, False, 2.5, 1000.0)
    assert c.model == "gpt-4o-mini"  # an empty value leaves the default

    local = LocalBackend({"stop": "\\n#", "model_path": "~/m.gguf", "threads": "2"})
    c = local.config
    assert (c.max_tokens, c.temperature, c.seed, c.n_ctx, c.threads) == (256, 0.8, None, 4096, 2)
    assert c.model_path == Path.home() / "m.gguf" and local.stop == b"\n#"
    assert LocalBackend({"stop": "é\\n"}).stop == "é\n".encode()  # non-ASCII text kept as it is


def test_a_third_party_backend_gets_its_options_checked_and_typed(tmp_path):
    c = Weather().config
    assert (c.city, c.days, c.scale, c.metric, c.cache, c.flags) == (
        "Paris", 3, 1.0, True, None, [])
    c = Weather({"city": "Lyon", "days": "14", "scale": "0", "metric": "off",
                 "cache": "~/w.json", "flags": "-v --name 'a b'"}, tmp_path).config
    assert (c.city, c.days, c.scale, c.metric) == ("Lyon", 14, 0.0, False)
    assert c.cache == Path.home() / "w.json" and c.flags == ["-v", "--name", "a b"]
    bad = {
        "days=0": "backend Weather: option days='0' must be an integer from 1 to 14",
        "days=15": "backend Weather: option days='15' must be an integer from 1 to 14",
        "days=three": "backend Weather: option days='three' must be an integer from 1 to 14",
        "scale=-0.5": "backend Weather: option scale='-0.5' must be a number, at least 0",
        "metric=celsius": "backend Weather: option metric='celsius' must be true or false",
        "flags=-v 'x": "backend Weather: option flags=\"-v 'x\" must be arguments split like a "
                       "shell line (check the quotes)",
        "town=Lyon": "backend Weather: unknown option 'town'; its options are city, days, "
                     "scale, metric, cache, flags",
    }
    for pair, expected in bad.items():
        key, _, value = pair.partition("=")
        with pytest.raises(InvalidInput) as caught:
            Weather({key: value})
        assert str(caught.value) == expected
    with pytest.raises(TypeError, match="type <class 'dict'> is not one of"):
        Option("mapping", dict, None, "a type the framework does not read")


def test_a_plugin_backend_through_the_real_cli_and_worker(plugin_path, store_url, podium,
                                                          workers, monkeypatch, tmp_path):
    env = bare_env(PYTHONPATH=plugin_path)
    r = podium_cli("--store", store_url, "agent", "run", "--name", "w", "--backend", "weather",
                   "--option", "days=30", env=env)
    assert error_message(r) == "backend weather: option days='30' must be an integer from 1 to 14"

    [weather] = [b for b in json.loads(podium_cli("backends", "--json", env=env).stdout)
                 if b["name"] == "weather"]
    assert weather["available"] and weather["reason"] is None
    assert [(o["name"], o["type"], o["default"], o["min"], o["max"])
            for o in weather["options"]] == [
        ("city", "str", "Paris", None, None), ("days", "int", 3, 1, 14),
        ("scale", "float", 1.0, 0, None), ("metric", "bool", True, None, None),
        ("cache", "path", None, None, None), ("flags", "list[str]", [], None, None)]

    monkeypatch.setenv("PYTHONPATH", plugin_path)
    workers.start("w", backend="weather",
                  options=["city=Lyon", "days=5", "metric=no", f"cache={tmp_path}/c",
                           "flags=-a 'b c'"])
    t = podium.wait(podium.add_task("forecast").id, timeout_s=30)
    assert t.state is TaskState.COMPLETED, t.error
    assert t.output.decode() == repr(["Lyon", 5, 1.0, False, f"{tmp_path}/c", ["-a", "b c"]])


# -- podium backends ----------------------------------------------------------------------------

#: Every built-in backend's options, in order, as the README and the modules document them.
BUILT_IN = {
    "claude": ["model", "permission_mode", "allowed_tools", "disallowed_tools",
               "append_system_prompt", "mcp_config", "keep_session", "bin", "extra_args"],
    "codex": ["model", "sandbox", "profile", "check_login", "skip_git_repo_check", "bin",
              "extra_args"],
    "echo": [],
    "gemini": ["model", "approval_mode", "skip_trust", "bin", "extra_args"],
    "local": ["model_path", "max_tokens", "temperature", "seed", "n_ctx", "threads", "stop"],
    "openai": ["base_url", "model", "api_key_env", "temperature", "max_tokens", "system",
               "timeout", "stream", "price_in", "price_out"],
    "shell": ["shell"],
}


def test_backends_json_lists_every_built_in_backend_with_its_options():
    r = podium_cli("backends", "--json", env=bare_env())
    assert r.returncode == 0, r.stderr
    listing = {b["name"]: b for b in json.loads(r.stdout)}
    assert set(BUILT_IN) <= set(listing)
    for name, option_names in BUILT_IN.items():
        options = listing[name]["options"]
        assert [o["name"] for o in options] == option_names, name
        for o in options:
            assert set(o) == {"name", "type", "default", "help", "min", "max"}
            assert o["type"] in {"str", "int", "float", "bool", "path", "list[str]"}
            assert o["help"].strip(), (name, o["name"])

    def option(backend: str, name: str) -> dict:
        return next(o for o in listing[backend]["options"] if o["name"] == name)

    assert option("openai", "model")["default"] == "gpt-4o-mini"
    assert option("openai", "base_url")["default"] == "https://api.openai.com/v1"
    assert option("openai", "timeout")["default"] == 600.0
    temperature = option("openai", "temperature")
    assert (temperature["type"], temperature["min"], temperature["max"]) == ("float", 0, 2)
    assert option("openai", "stream") == {
        "name": "stream", "type": "bool", "default": True, "min": None, "max": None,
        "help": "false: one JSON answer instead of a stream"}
    assert [option("local", k)["default"] for k in ("max_tokens", "temperature", "n_ctx")] == [
        256, 0.8, 4096]
    assert option("local", "model_path")["type"] == "path"
    assert option("codex", "extra_args")["type"] == "list[str]"
    assert option("shell", "shell")["default"] == "/bin/sh"
    assert [option(b, k)["default"] for b, k in (
        ("claude", "keep_session"), ("codex", "check_login"), ("codex", "skip_git_repo_check"),
        ("gemini", "skip_trust"), ("claude", "bin"))] == [False, True, True, True, "claude"]

    # Whether each can run here, and why not: no agent CLI on PATH, no OpenAI key.
    for name in ("echo", "shell", "local"):
        assert listing[name]["available"] and listing[name]["reason"] is None, listing[name]
    for name in ("claude", "codex", "gemini"):
        assert not listing[name]["available"]
        assert f"the '{name}' program was not found on PATH" in listing[name]["reason"]
    assert not listing["openai"]["available"]
    assert "no API key: set OPENAI_API_KEY" in listing["openai"]["reason"]


def test_backends_text_shows_options_and_availability():
    r = podium_cli("backends", env=bare_env())
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode()
    assert "\necho  available\n  (no options)\n" in text
    assert "\nshell  available\n" in text and "\nlocal  available\n" in text
    assert "\nopenai  not available here: openai backend: no API key: set OPENAI_API_KEY" in text
    assert "\ncodex  not available here: the 'codex' program was not found on PATH" in text
    # One row per option: name, type with its bounds, default, help.
    for row in (r"  OPTION +TYPE +DEFAULT +HELP",
                r"  temperature +float, 0 to 2 +- +sampling temperature, passed through when given",
                r"  temperature +float, at least 0 +0\.8 +sampling temperature; 0 is greedy",
                r"  n_ctx +int, at least 16 +4096 +context window",
                r"  extra_args +list\[str\] +- +more arguments for gemini",
                r"  keep_session +bool +false +each task resumes",
                r"  shell +str +/bin/sh +the shell that runs each task's command"):
        assert re.search(f"^{row}", text, re.M), row


# -- the one capped output buffer ---------------------------------------------------------------

def test_capped_buffer_cuts_at_the_limit_and_emits_what_it_kept():
    emitted: list[bytes] = []
    buf = CappedBuffer(10, emitted.append)
    buf.feed(b"hello")
    assert (buf.value(), buf.truncated) == (b"hello", False)
    buf.feed(b"world, and more")
    buf.feed(b"still more")
    assert buf.value() == b"helloworld" and buf.size == 10 and buf.truncated
    assert emitted == [b"hello", b"world"]  # what was kept, as it came; nothing past the limit

    exact = CappedBuffer(5)
    exact.feed(b"12345")
    exact.feed(b"")
    assert (exact.value(), exact.truncated) == (b"12345", False)  # exactly the limit: whole

    nothing: list[bytes] = []
    zero = CappedBuffer(0, nothing.append)
    zero.feed(b"x")
    assert (zero.value(), zero.truncated, nothing) == (b"", True, [])


def test_process_output_is_capped_by_the_buffer(podium, workers, monkeypatch):
    monkeypatch.setenv("PODIUM_MAX_OUTPUT", "8")
    workers.start("sh", backend="shell")
    t = podium.wait(podium.add_task("printf 0123456789; printf abcdefghij >&2").id,
                    timeout_s=30)
    assert t.state is TaskState.COMPLETED, t.error
    assert (t.output, t.stderr, t.output_truncated) == (b"01234567", b"abcdefgh", True)
    streamed = "".join(e.data["chunk"] for e in podium.events(0, 1000, t.id)
                       if e.kind == "task.output")
    assert streamed == "01234567"


def test_openai_stream_text_is_capped_by_the_buffer():
    emitted: list[bytes] = []
    run = SimpleNamespace(max_output=7, emit=emitted.append, cancelled=False)
    stream = openai_backend._Stream(run)
    for piece in ("Hello", " world", "!"):
        stream.chunk({"choices": [{"index": 0, "delta": {"content": piece}}]})
    assert stream.output.value() == b"Hello w" and stream.output.truncated
    assert emitted == [b"Hello", b" w"]
