"""tmux: a team laid out in panes, and text delivered into a pane exactly.

Layout: window ``dashboard`` runs ``podium dashboard``; windows ``agents-1``, ``agents-2``...
hold up to four agent panes each (tiled), every pane running one Podium worker (or an
interactive program wrapped by ``podium agent interactive``), titled with the agent's name.

Delivery: text goes into a tmux paste buffer through stdin (``load-buffer -``), never through a
shell or ``send-keys`` quoting, is pasted into the pane, and Enter is sent only once the pasted
text is seen in the pane. Any bytes arrive as they were: ``$HOME``, quotes, backticks, tabs,
newlines.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass

from podium.errors import BackendUnavailable, NotFound, PodiumError

PANES_PER_WINDOW = 4
SOCKET_ENV = "PODIUM_TMUX_SOCKET"


def require_tmux() -> str:
    path = shutil.which("tmux")
    if path is None:
        raise BackendUnavailable("tmux is not installed: install it with 'apt-get install tmux' "
                                 "(or your system's package manager)")
    return path


@dataclass
class Tmux:
    """One tmux server: the default one, a named socket (-L) or a socket path (-S)."""

    socket_name: str | None = None
    socket_path: str | None = None

    @classmethod
    def from_env(cls, socket_name: str | None = None) -> Tmux:
        return cls(socket_name=socket_name or os.environ.get(SOCKET_ENV) or None)

    @classmethod
    def current(cls) -> Tmux | None:
        """The server this process runs inside ($TMUX), if any."""
        value = os.environ.get("TMUX")
        return cls(socket_path=value.split(",")[0]) if value else None

    def args(self) -> list[str]:
        if self.socket_path:
            return ["-S", self.socket_path]
        if self.socket_name:
            return ["-L", self.socket_name]
        return []

    def run(self, *args: str, input: bytes | None = None, check: bool = True) -> str:
        cmd = [require_tmux(), *self.args(), *args]
        res = subprocess.run(cmd, input=input, capture_output=True, timeout=30)
        if check and res.returncode != 0:
            msg = res.stderr.decode("utf-8", "replace").strip()
            raise PodiumError(f"tmux {args[0]} failed: {msg}")
        return res.stdout.decode("utf-8", "replace")

    def libtmux(self):
        import libtmux

        if self.socket_path:
            return libtmux.Server(socket_path=self.socket_path)
        return libtmux.Server(socket_name=self.socket_name)

    def has_session(self, name: str) -> bool:
        return self.libtmux().has_session(name)

    # -- layout ---------------------------------------------------------------------------
    def create_team(self, session: str, dashboard_cmd: str, agents: list[tuple[str, str]],
                    cwd: str) -> list[str]:
        """Create ``session``: window ``team`` has the dashboard pane (left) and up to three agent
        panes; windows ``agents-2``, ``agents-3``... four agent panes each. Returns the agents'
        pane ids, in order."""
        require_tmux()
        srv = self.libtmux()
        if srv.has_session(session):
            raise PodiumError(f"tmux session {session!r} exists already; "
                              "attach to it, or choose another --session")
        sess = srv.new_session(session_name=session, window_name="team",
                               window_command=dashboard_cmd, start_directory=cwd, x=240, y=64)
        sess.set_option("pane-border-status", "top")
        sess.set_option("pane-border-format", " #{pane_title} ")
        window = sess.windows[0]
        self.run("select-pane", "-t", window.panes[0].pane_id, "-T", "dashboard")
        groups = [agents[:PANES_PER_WINDOW - 1]]
        rest = agents[PANES_PER_WINDOW - 1:]
        groups += [rest[i:i + PANES_PER_WINDOW] for i in range(0, len(rest), PANES_PER_WINDOW)]
        pane_ids: list[str] = []
        for number, group in enumerate(groups, 1):
            if not group:
                continue
            if number > 1:
                name, cmd = group[0]
                window = sess.new_window(window_name=f"agents-{number}", window_shell=cmd,
                                         start_directory=cwd, attach=False)
                panes = [window.panes[0]]
                group_rest = group[1:]
            else:
                panes, group_rest = [], group
            for name, cmd in group_rest:
                panes.append(window.split(shell=cmd, start_directory=cwd, attach=False))
                window.select_layout("tiled")
            window.select_layout("main-vertical" if number == 1 else "tiled")
            for (name, _), pane in zip(group, panes):
                self.run("select-pane", "-t", pane.pane_id, "-T", name)
                pane_ids.append(pane.pane_id)
        return pane_ids

    def kill_session(self, session: str) -> bool:
        srv = self.libtmux()
        if not srv.has_session(session):
            return False
        self.run("kill-session", "-t", f"={session}")
        return True

    def pane_exists(self, pane_id: str) -> bool:
        out = self.run("list-panes", "-a", "-F", "#{pane_id}", check=False)
        return pane_id in out.split()

    def capture(self, pane_id: str) -> str:
        return self.run("capture-pane", "-p", "-J", "-t", pane_id)

    # -- delivery -------------------------------------------------------------------------
    def deliver(self, pane_id: str, text: str, enter: bool = True, timeout: float = 5.0) -> bool:
        """Paste ``text`` into the pane, then press Enter once it shows; True if it was seen."""
        if not self.pane_exists(pane_id):
            raise NotFound(f"tmux pane {pane_id} does not exist (the agent's pane was closed)")
        buf = "podium-" + secrets.token_hex(6)
        self.run("load-buffer", "-b", buf, "-", input=text.encode("utf-8"))
        self.run("paste-buffer", "-d", "-p", "-b", buf, "-t", pane_id)
        seen = self._wait_seen(pane_id, text, timeout)
        if enter:
            self.run("send-keys", "-t", pane_id, "Enter")
        return seen

    def _wait_seen(self, pane_id: str, text: str, timeout: float) -> bool:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            return True
        # Compare without white space: the pane renders tabs as spaces and wraps long lines.
        tail = re.sub(r"\s+", "", lines[-1])[-40:]
        deadline = time.monotonic() + timeout
        while True:
            screen = re.sub(r"\s+", "", self.capture(pane_id))
            if tail in screen:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def window_activity(self, pane_id: str) -> float | None:
        """Unix time of the last output in the pane's window (tmux tracks it per window)."""
        out = self.run("display-message", "-p", "-t", pane_id, "#{window_activity}", check=False)
        try:
            return float(out.strip())
        except ValueError:
            return None
