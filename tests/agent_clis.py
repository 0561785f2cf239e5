"""Finding the real agent CLIs for the backend tests, and keeping them off the real APIs.

``scripts/test`` installs ``@anthropic-ai/claude-code``, ``@openai/codex`` and
``@google/gemini-cli`` from npm into ``.cache/npm`` (once) and exports ``PODIUM_TEST_NPM_BIN``.
A test that needs one skips when it is not installed, unless ``PODIUM_REQUIRE_AGENT_CLIS`` is
set (then it fails).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def npm_bin(name: str) -> str:
    """The absolute path of an npm-installed CLI, or a skip saying how to get it."""
    bin_dir = Path(os.environ.get("PODIUM_TEST_NPM_BIN") or ROOT / ".cache/npm/node_modules/.bin")
    path = bin_dir / name
    if path.exists() and os.access(path, os.X_OK):
        return str(path)
    why = f"{name} is not installed in {bin_dir} (./scripts/test installs it from npm)"
    if os.environ.get("PODIUM_REQUIRE_AGENT_CLIS"):
        pytest.fail(why)
    pytest.skip(why)


def isolate_env(monkeypatch, tmp_path: Path, prefixes: tuple[str, ...]) -> Path:
    """A fresh HOME, and no inherited variable starting with one of ``prefixes`` (credentials,
    base URLs, models), so the CLI under test sees only what the test gives it."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    for key in list(os.environ):
        if key.startswith(prefixes):
            monkeypatch.delenv(key)
    return home


def processes_in(directory: Path, exclude=()) -> list[tuple[int, str]]:
    """Live processes whose working directory is ``directory`` (but for the pids in
    ``exclude``, e.g. the workers themselves): (pid, command line)."""
    found = []
    target = str(directory.resolve())
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude or int(entry) == os.getpid():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") != target:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            with open(f"/proc/{entry}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[-1].split()[0] == b"Z":
                    continue  # a zombie is gone, waiting to be reaped
        except OSError:
            continue
        found.append((int(entry), cmd))
    return found
