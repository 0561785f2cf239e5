"""``podium agent run`` with one fix applied in this process only: a non-blocking ``poke``.

Used by the benchmarks only when ``_common.poke_blocks()`` finds the installed Podium still has
the self-deadlock described in bench/README.md (an inline backend's worker pokes its own wake-up
socket after every task with a *blocking* send, and only drains the socket when the queue is
empty: after ``net.unix.max_dgram_qlen`` + 1 tasks in a row the send blocks forever). The fix
is the one proposed for ``podium/wake.py``: send with ``MSG_DONTWAIT`` and ignore a full queue
(a wake-up is pending already). Nothing else changes.

    python bench/_worker.py --store URL agent run --name N --backend echo
"""

from __future__ import annotations

import socket
import sys

from podium import wake


def _poke(self) -> None:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"!", socket.MSG_DONTWAIT, str(self.path))
    except OSError:  # BlockingIOError: its queue is full, so a wake-up is pending already
        pass


wake.Listener.poke = _poke

if __name__ == "__main__":
    from podium.cli import main

    sys.argv[0] = "podium"
    sys.exit(main())
