"""A process keeps SQLite's locks on its store however many connections it opens and closes.

Closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's own
included: a process that opened a SQLite store and then opened and closed the same file (or its
``-shm``) behind SQLite's back no longer says that a connection is open, and another process's
last connection to close then deletes the write-ahead log from under it. Its later writes go to
a log nobody else reads. Each case here opens the store, does what a face does beside it, lets
another process open and close the store, and checks that the log is still there and a write
made afterwards is seen by a third process. Real processes, real files.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from podium.memory.sqlite_vectors import SQLiteVectors
from podium.service import Podium


def _other_process(url: str, code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", f"from podium.service import Podium\np = Podium.open({url!r})\n"
         f"{code}\np.close()"], check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("beside", ["vector table", "second store closed"])
def test_what_a_process_does_beside_its_store_keeps_the_log(tmp_path, beside):
    db = tmp_path / "podium.db"
    url = f"sqlite://{db}"
    p = Podium.open(url)
    try:
        p.add_task("echo first")
        if beside == "vector table":  # (as the memory index opens it, beside the task store)
            SQLiteVectors(db, create=False).close()
        else:  # (a second service in the same process, used and closed: the web server's)
            other = Podium.open(url)
            other.add_task("echo from the other")  # (a commit reads the -shm header)
            other.close()
        _other_process(url, "p.tasks()")  # its last connection closes
        assert (tmp_path / "podium.db-wal").exists(), "the log was deleted under an open store"
        t = p.add_task("echo written after")
        seen = _other_process(url, f"print(p.task({t.id!r}).prompt)")
        assert seen.strip() == "echo written after"
    finally:
        p.close()
