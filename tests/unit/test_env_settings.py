"""The numbers Podium reads from the environment (``PODIUM_MAX_OUTPUT``, ``PODIUM_CLAIM_BATCH``,
``PODIUM_RECALL``): parsed where they are used, in range or refused in one line naming the
variable; never on import, so a bad one fails only what uses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from podium import limits
from podium.agents.backends import Backend
from podium.agents.worker import Worker
from podium.errors import InvalidInput


class _Inline(Backend):
    name = "inline-test"
    inline = True


class _Slow(Backend):
    name = "slow-test"


@pytest.mark.parametrize(("variable", "read", "default", "low", "high"), [
    ("PODIUM_MAX_OUTPUT", limits.max_output, 16 * 1024 * 1024, 1, 1024 ** 3),
    ("PODIUM_CLAIM_BATCH", limits.claim_batch, 64, 1, 1000),
    ("PODIUM_RECALL", limits.env_recall, 0, 0, 20),
])
def test_each_setting_takes_its_range_and_refuses_the_rest(monkeypatch, variable, read,
                                                          default, low, high):
    monkeypatch.delenv(variable, raising=False)
    assert read() == default
    for blank in ("", "  "):  # (set but blank: unset, as click reads an option's envvar)
        monkeypatch.setenv(variable, blank)
        assert read() == default
    for good in (low, high, " 7 "):
        monkeypatch.setenv(variable, str(good))
        assert read() == int(good)
    for bad in ("abc", "-1", str(low - 1), str(high + 1), "1.5", "1e3", "٣", "9" * 5000, "+5"):
        monkeypatch.setenv(variable, bad)
        with pytest.raises(InvalidInput) as e:
            read()
        message = str(e.value)
        assert message.startswith(f"{variable}=") and f"from {low} to {high}" in message
        assert "\n" not in message and len(message) < 200


def test_the_message_follows_the_house_style(monkeypatch):
    monkeypatch.setenv("PODIUM_CLAIM_BATCH", "abc")
    with pytest.raises(InvalidInput, match=r"^PODIUM_CLAIM_BATCH='abc': a number of tasks from "
                                           r"1 to 1000$"):
        limits.claim_batch()


def test_a_worker_reads_them_when_it_is_made(monkeypatch, tmp_path):
    monkeypatch.setenv("PODIUM_MAX_OUTPUT", "8")
    monkeypatch.setenv("PODIUM_CLAIM_BATCH", "5")
    store = object()  # (never touched: the settings are read before anything else)
    inline = Worker(store, "w", _Inline(), workdir=tmp_path)  # type: ignore[arg-type]
    assert (inline.max_output, inline._batch) == (8, 5)
    slow = Worker(store, "w", _Slow(), workdir=tmp_path)  # type: ignore[arg-type]
    assert (slow.max_output, slow._batch) == (8, 1)  # (one task at a time, whatever the batch)
    assert Worker(store, "w", _Slow(), workdir=tmp_path,  # type: ignore[arg-type]
                  max_output=3).max_output == 3
    for variable, bad in (("PODIUM_MAX_OUTPUT", "-1"), ("PODIUM_CLAIM_BATCH", "0")):
        monkeypatch.setenv(variable, bad)
        with pytest.raises(InvalidInput, match=variable):
            Worker(store, "w", _Inline(), workdir=tmp_path)  # type: ignore[arg-type]
        monkeypatch.setenv(variable, "8")


def test_a_bad_setting_fails_no_import(tmp_path):
    """Importing the backends, the worker, the spawner and the CLI reads none of them."""
    env = dict(os.environ, PODIUM_MAX_OUTPUT="abc", PODIUM_CLAIM_BATCH="abc", PODIUM_RECALL="x")
    code = ("import podium.agents.backends, podium.agents.worker, podium.agents.spawner, "
            "podium.cli")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_a_directory_exists_is_one_and_can_be_read(tmp_path):
    assert limits.directory(str(tmp_path), "--workdir") == str(tmp_path)
    with pytest.raises(InvalidInput, match=r"^--workdir /nonexistent/x: no such directory$"):
        limits.directory("/nonexistent/x", "--workdir")
    (tmp_path / "f").write_text("")
    with pytest.raises(InvalidInput, match=r"^--workdir .*/f: not a directory$"):
        limits.directory(str(tmp_path / "f"), "--workdir")
    with pytest.raises(InvalidInput, match="is empty"):
        limits.directory("", "--workdir")
    with pytest.raises(InvalidInput, match=r"'/no\\x1bwhere'"):  # (shown escaped)
        limits.directory("/no\x1bwhere", "--workdir")
    if os.geteuid() != 0:  # (root reads any directory)
        locked = tmp_path / "locked"
        locked.mkdir(mode=0)
        try:
            with pytest.raises(InvalidInput, match="permission denied"):
                limits.directory(str(locked), "--workdir")
        finally:
            Path(locked).chmod(0o700)
