"""A full disk under the store: commands say so in one line and change nothing, workers stay up
and carry on once there is room again.

The disk is a real, small tmpfs mounted by the test (as root; skipped elsewhere), filled to the
last byte with a real file.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time

import pytest

from conftest import Workers, run_cli
from helpers import wait_for
from podium.models import TaskState
from podium.service import Podium


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(d)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def fill(disk) -> None:
    """Write a file until the disk has no byte left."""
    with open(disk / "filler", "wb", buffering=0) as f:
        for size in (65536, 512, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC


def test_worker_survives_a_full_disk(small_disk, tmp_path):
    url = f"sqlite://{small_disk / 'podium.db'}"
    p = Podium.open(url)
    workers = Workers(url, tmp_path)  # (its logs are elsewhere, on the big disk)
    try:
        workers.start("w1", lease=3)
        first = p.add_task("before")
        wait_for(lambda: p.task(first.id).state is TaskState.COMPLETED, 10, what="first task")

        fill(small_disk)
        r = run_cli("task", "add", "while full", store_url=url)
        err = r.stderr.decode()
        assert r.returncode == 1 and "Traceback" not in err and "is full" in err, err
        assert len(err.strip().splitlines()) == 1
        assert [t.id for t in p.tasks()] == [first.id]  # nothing was added
        time.sleep(2)  # several heartbeats fail meanwhile
        assert workers.procs["w1"].poll() is None, workers.log("w1")
        assert "is full" in workers.log("w1")
        assert [a.id for a in p.agents()] == ["w1"]  # listing still works

        os.unlink(small_disk / "filler")
        after = p.add_task("after")
        wait_for(lambda: p.task(after.id).state is TaskState.COMPLETED, 15,
                 what="the worker to carry on once there is room")
        assert p.task(after.id).output == b"after"
    finally:
        workers.stop_all()
        p.close()


def test_up_on_a_full_disk_names_the_cause(small_disk):
    url = f"sqlite://{small_disk / 'podium.db'}"
    assert run_cli("up", "1", store_url=url).returncode == 0
    assert run_cli("down", store_url=url).returncode == 0
    fill(small_disk)
    r = run_cli("up", "1", store_url=url)
    err = r.stderr.decode()
    assert r.returncode == 1 and "Traceback" not in err and "full" in err, err
    assert "stopped" not in err  # (only this start's lines, not the previous run's)
    run_cli("down", store_url=url)
