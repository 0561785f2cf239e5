"""What ``podium up`` (and ``agent run``, ``agent interactive``, ``demo``) refuse before they start
anything: one ``podium: error:`` line, exit 1, no agent registered, no worker left running, no
log written; and what ``up`` says about itself (its lease default, the attach command)."""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import sys

import pytest

from helpers import error_line
from podium.service import Podium


@pytest.fixture
def team(cli, store_url, tmp_path):
    """The CLI over an initialised store; ``podium down`` afterwards, whatever the test did."""
    assert cli("init").returncode == 0
    yield cli
    cli("down", "--timeout", "10")


def _agents(store_url: str) -> list[str]:
    p = Podium.open(store_url)
    try:
        return [a.id for a in p.agents()]
    finally:
        p.close()


def _nothing_started(store_url: str, tmp_path) -> None:
    assert _agents(store_url) == []
    assert not (tmp_path / "logs").exists()  # (no worker was even given a log)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert store_url not in ps  # (no worker, no spawner of this store's)


@pytest.mark.parametrize(("variable", "value"), [
    ("PODIUM_MAX_OUTPUT", "abc"), ("PODIUM_MAX_OUTPUT", "-1"), ("PODIUM_MAX_OUTPUT", "0"),
    ("PODIUM_CLAIM_BATCH", "abc"), ("PODIUM_CLAIM_BATCH", "0"), ("PODIUM_CLAIM_BATCH", "1001"),
    ("PODIUM_RECALL", "abc"), ("PODIUM_RECALL", "21"),
])
def test_up_refuses_a_bad_environment_setting_before_it_starts_a_worker(team, store_url,
                                                                        tmp_path, variable,
                                                                        value):
    line = error_line(team("up", "1", "--backend", "echo", env={variable: value}))
    assert line.startswith(f"podium: error: {variable}={value!r}: a number of "), line
    _nothing_started(store_url, tmp_path)


def test_a_bad_setting_fails_only_what_uses_it(team, store_url, tmp_path):
    bad = {"PODIUM_MAX_OUTPUT": "abc", "PODIUM_CLAIM_BATCH": "abc"}
    p = team("task", "list", env=bad)
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    for variable in bad:  # (an agent run by hand says so too, and registers nothing)
        line = error_line(team("agent", "run", "--name", "hand", "--backend", "echo",
                               env={variable: "abc"}))
        assert line.startswith(f"podium: error: {variable}='abc': "), line
    assert _agents(store_url) == []


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_up_refuses_a_workdir_that_is_no_directory(team, store_url, tmp_path, kind):
    path = str(tmp_path / "nonexistent")
    if kind == "file":
        (tmp_path / "nonexistent").write_text("")
    line = error_line(team("up", "1", "--workdir", path))
    said = "no such directory" if kind == "missing" else "not a directory"
    assert line == f"podium: error: --workdir {path}: {said}", line
    _nothing_started(store_url, tmp_path)


def test_up_with_good_settings_still_starts(team, store_url, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = {"PODIUM_MAX_OUTPUT": "4", "PODIUM_CLAIM_BATCH": "1", "PODIUM_RECALL": "0"}
    p = team("up", "1", "--backend", "shell", "--workdir", str(work), env=env)
    assert p.returncode == 0, p.stderr
    task_id = team("task", "add", "printf 0123456789").stdout.decode().strip()
    assert team("task", "wait", task_id, "--timeout", "30").returncode == 0
    podium = Podium.open(store_url)
    try:
        t = podium.task(task_id)
        assert (t.output, t.output_truncated) == (b"0123", True)
    finally:
        podium.close()


def test_interactive_with_a_missing_program_leaves_no_agent(team, store_url, tmp_path):
    for program in ("/nonexistent/prog", "no-such-program-" + secrets.token_hex(4)):
        line = error_line(team("agent", "interactive", "--name", "ia3", "--", program))
        assert line.startswith(f"podium: error: cannot start {program}: "), line
    script = tmp_path / "bad-interpreter"  # (found and executable, yet it cannot start)
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    error_line(team("agent", "interactive", "--name", "ia3", "--", str(script)))
    assert _agents(store_url) == []


def _demo(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TMPDIR=str(tmp_path))  # (where its store would be made)
    return subprocess.run([sys.executable, "-m", "podium", "demo", *args], capture_output=True,
                          env=env, cwd=tmp_path, timeout=120)


@pytest.mark.parametrize(("args", "said"), [
    (("--ai-backend", "nope"), "unknown backend 'nope'"),
    (("--ai-option", "bogus=1"), "backend local: unknown option 'bogus'"),
    (("--ai-backend", "shell", "--ai-option", "bogus=1"), "backend shell: unknown option"),
    (("--ai-option", "bogus"), "bad backend option 'bogus'"),
])
def test_demo_refuses_a_bad_ai_backend_or_option_before_it_starts(tmp_path, args, said):
    before = set(os.listdir(tmp_path))
    line = error_line(_demo(tmp_path, *args))
    assert said in line and "bootstrap" not in line, line
    assert set(os.listdir(tmp_path)) == before  # (no podium-demo-* store made)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps


def test_up_help_shows_the_lease_default():
    p = subprocess.run([sys.executable, "-m", "podium", "up", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0
    lease = p.stdout[p.stdout.index("--lease"):].split("--workdir")[0]
    assert "[default: 30.0]" in " ".join(lease.split()), lease


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_up_tmux_prints_an_attach_command_that_works(team, store_url, tmp_path, monkeypatch):
    socket = "podium-test-" + secrets.token_hex(4)
    monkeypatch.setenv("PODIUM_TMUX_SOCKET", socket)
    try:
        p = team("up", "1", "--tmux", "--tmux-session", "my team", "--backend", "shell")
        assert p.returncode == 0, p.stderr
        line = p.stdout.decode().splitlines()[-1]
        assert line == "tmux session my team: podium attach --tmux-session 'my team'", line
        argv = shlex.split(line.partition(": ")[2])
        assert argv[0] == "podium"
        # Run as printed: it gets as far as tmux attaching (which needs a terminal, not a pipe),
        # not a usage error or "no tmux session".
        got = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=60)
        assert "no tmux session" not in got.stderr and "No such option" not in got.stderr
        assert "terminal" in got.stderr, got.stderr
    finally:
        team("down", "--timeout", "10")
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
