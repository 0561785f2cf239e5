"""``podium store prune`` through the real command: what it reports, and one line for bad
input."""

from __future__ import annotations

import json
import os

import pytest

from helpers import error_line


def test_prune_everything_finished(cli, store_url):
    tid = cli("task", "add", "echo old").stdout.decode().strip()
    assert cli("task", "cancel", tid).returncode == 0
    kept = cli("task", "add", "echo queued").stdout.decode().strip()
    dry = cli("store", "prune", "--older-than", "0s", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] and report["removed"]["tasks"] == 1
    assert report["size_before"] is None
    p = cli("store", "prune", "--older-than", "0s")
    assert p.returncode == 0, p.stderr
    line = p.stdout.decode()
    assert line.startswith("removed ") and "1 finished tasks" in line and "MiB" in line
    listed = json.loads(cli("task", "list", "--json").stdout)
    assert [t["id"] for t in listed] == [kept]
    assert cli("task", "show", tid).returncode == 1


def test_prune_keep_results_json(cli):
    tid = cli("task", "add", "echo old").stdout.decode().strip()
    cli("task", "cancel", tid)
    p = cli("store", "prune", "--older-than", "0s", "--keep-results", "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["removed"]["outputs"] == 1 and report["removed"]["tasks"] == 0
    assert report["size_after"] <= report["size_before"]
    assert json.loads(cli("result", tid).stdout)["status"] == "cancelled"


@pytest.mark.parametrize("value", ["30", "30x", "-1d", "1.5h", "d", "", "36501d", "１d"])
def test_bad_durations_give_one_line(cli, value, tmp_path):
    p = cli("store", "prune", "--older-than", value)
    assert "--older-than" in error_line(p)
    assert not os.path.exists(tmp_path / "podium.db")  # refused before the store is opened


def test_older_than_is_required(cli):
    p = cli("store", "prune")
    assert p.returncode != 0 and b"Traceback" not in p.stderr
    assert b"--older-than" in p.stderr
