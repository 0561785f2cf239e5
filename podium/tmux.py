"""tmux: a team laid out in panes, and text delivered into a pane exactly.

Layout: window ``team`` has the dashboard pane (``podium dashboard``) on the left, 60% of the
window wide, and up to three agent panes stacked beside it; windows ``agents-2``, ``agents-3``...
hold up to four agent panes each (tiled); agents' panes in the order given (by name), every
pane running one Podium worker (or an interactive program wrapped by ``podium agent
interactive``), titled with the agent's name.

Delivery: text goes into a tmux paste buffer through stdin (``load-buffer -``), never through a
shell or ``send-keys`` quoting, is pasted into the pane, and Enter is sent once the pasted text
shows in the pane. Any bytes arrive as they were: ``$HOME``, quotes, backticks, tabs, newlines,
and lines longer than a canonical-mode tty holds (handed over in pieces). A delivery is
confirmed only when the whole text shows in the pane; otherwise it says why not. ``TmuxPanes``
is this delivery as the service takes it (``podium.service.PaneDelivery``).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import termios
import time
from dataclasses import dataclass

from podium.errors import BackendUnavailable, NotFound, PodiumError
from podium.service import Delivery

PANES_PER_WINDOW = 4
#: The size of a new team session's windows (until a terminal of another size attaches).
TEAM_SIZE = (240, 64)
#: The dashboard pane's share of its window's width (tmux's ``main-pane-width``): 144 of the
#: 240 columns a new session has; and its least width where tmux takes no percentage.
DASHBOARD_WIDTH = "60%"
DASHBOARD_MIN_COLUMNS = 100
SOCKET_ENV = "PODIUM_TMUX_SOCKET"
# A tty in canonical mode (what `cat`, `read` or a bare input() read) keeps at most 4095 bytes
# of a line (Linux's N_TTY buffer less the newline) and drops the rest, yet still echoes it: a
# cut line looks whole in the pane.
CANONICAL_LINE_BYTES = 4095
# A longer line is typed in pieces of at most this many bytes, each followed by the tty's EOF
# character, which in canonical mode hands the reader what is on the line without ending it;
# half the limit leaves room for input already on the line.
PIECE_BYTES = 2048


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
        """Create ``session``: window ``team`` has the dashboard pane on the left
        (``DASHBOARD_WIDTH`` of the window, kept so when the window is resized) and up to three
        agent panes stacked beside it; windows ``agents-2``, ``agents-3``... four agent panes
        each, tiled. Agents' panes follow the order of ``agents`` (top to bottom, left to
        right). Returns their pane ids, in that order."""
        require_tmux()
        srv = self.libtmux()
        if srv.has_session(session):
            raise PodiumError(f"tmux session {session!r} exists already; "
                              "attach to it, or choose another --tmux-session")
        sess = srv.new_session(session_name=session, window_name="team",
                               window_command=dashboard_cmd, start_directory=cwd,
                               x=TEAM_SIZE[0], y=TEAM_SIZE[1])
        sess.set_option("pane-border-status", "top")
        sess.set_option("pane-border-format", " #{pane_title} ")
        window = sess.windows[0]
        dashboard = window.panes[0].pane_id
        self.run("select-pane", "-t", dashboard, "-T", "dashboard")
        groups = [agents[:PANES_PER_WINDOW - 1]]
        rest = agents[PANES_PER_WINDOW - 1:]
        groups += [rest[i:i + PANES_PER_WINDOW] for i in range(0, len(rest), PANES_PER_WINDOW)]
        pane_ids: list[str] = []
        for number, group in enumerate(groups, 1):
            if not group:
                continue
            if number == 1:
                window_id, last, todo = window.window_id, dashboard, group
                ids = []
            else:
                name, cmd = group[0]
                window_id, last = self.run(
                    "new-window", "-d", "-P", "-F", "#{window_id} #{pane_id}", "-t",
                    f"={session}:", "-n", f"agents-{number}", "-c", cwd, cmd).split()
                ids, todo = [last], group[1:]
            for _, cmd in todo:
                # Split the pane made last: the new one comes after it in the window's order.
                last = self.run("split-window", "-d", "-P", "-F", "#{pane_id}", "-t", last,
                                "-c", cwd, cmd).strip()
                ids.append(last)
                self.run("select-layout", "-t", window_id, "tiled")  # room for the next split
            if number == 1:
                self._keep_dashboard_wide(window_id)
            else:
                self.run("select-layout", "-t", window_id, "tiled")
            for (name, _), pane_id in zip(group, ids):
                self.run("select-pane", "-t", pane_id, "-T", name)
                pane_ids.append(pane_id)
        self.run("select-pane", "-t", dashboard)
        return pane_ids

    def _keep_dashboard_wide(self, window_id: str) -> None:
        """The dashboard's window laid out main-vertical, the dashboard (its first pane) taking
        ``DASHBOARD_WIDTH`` of it, laid out again whenever the window is resized (an attaching
        terminal of another size)."""
        try:
            self.run("set-option", "-w", "-t", window_id, "main-pane-width", DASHBOARD_WIDTH)
        except PodiumError:  # a tmux before percentages: columns of the window as it is now
            width = int(self.run("display-message", "-p", "-t", window_id, "#{window_width}"))
            columns = max(DASHBOARD_MIN_COLUMNS, width * int(DASHBOARD_WIDTH.rstrip("%")) // 100)
            self.run("set-option", "-w", "-t", window_id, "main-pane-width", str(columns))
        self.run("select-layout", "-t", window_id, "main-vertical")
        self.run("set-hook", "-w", "-t", window_id, "window-resized",
                 f"select-layout -t {window_id} main-vertical", check=False)

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
        """The pane's text, scrollback included, wrapped lines joined."""
        return self.run("capture-pane", "-p", "-J", "-S", "-", "-t", pane_id)

    # -- delivery -------------------------------------------------------------------------
    def deliver(self, pane_id: str, text: str, enter: bool = True,
                timeout: float = 5.0) -> Delivery:
        """Paste ``text`` into the pane, then press Enter once it shows.

        Confirmed when the whole text (white space aside: the pane renders tabs as spaces and
        wraps lines) shows in the pane, scrollback included, more often than before the paste.
        Raises PodiumError, typing nothing, when a line is longer than the pane's tty would pass.
        """
        if not self.pane_exists(pane_id):
            raise NotFound(f"tmux pane {pane_id} does not exist (the agent's pane was closed)")
        data = self._typable(pane_id, text.encode("utf-8"))
        wanted = re.sub(r"\s+", "", text)
        before = self._times_shown(pane_id, wanted) if wanted else 0
        buf = "podium-" + secrets.token_hex(6)
        self.run("load-buffer", "-b", buf, "-", input=data)
        self.run("paste-buffer", "-d", "-p", "-b", buf, "-t", pane_id)
        if not wanted:
            reason = "the text is only white space, which does not show in a pane"
        elif not self._wait_shown(pane_id, wanted, before, timeout):
            reason = (f"the whole text did not show in the pane within {timeout:g}s (its program "
                      "may not echo what it reads, or shows it otherwise)")
        else:
            reason = None
        if enter:
            self.run("send-keys", "-t", pane_id, "Enter")
        return Delivery(reason is None, f"tmux pane {pane_id}", reason)

    def _typable(self, pane_id: str, data: bytes) -> bytes:
        """``data`` as it must be typed for the pane's tty to pass each line on whole."""
        lines = re.split(rb"([\r\n])", data)  # the tty ends a line at either (ICRNL)
        longest = max(len(line) for line in lines)
        if longest <= CANONICAL_LINE_BYTES:
            return data
        eof = self._canonical_eof(pane_id, f"a line of {longest} bytes")
        if eof is None:
            return data
        return b"".join(eof.join(_pieces(line)) for line in lines)

    def _canonical_eof(self, pane_id: str, long_line: str) -> bytes | None:
        """The EOF character of the pane's tty if it reads in canonical mode, None if not.

        Raises PodiumError when ``long_line`` could be cut: the mode cannot be read, or there
        is no EOF character to hand the line over in pieces."""
        tty = self.run("display-message", "-p", "-t", pane_id, "#{pane_tty}").strip()
        try:
            fd = os.open(tty, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                attrs = termios.tcgetattr(fd)
                disabled = os.fpathconf(fd, "PC_VDISABLE")
            finally:
                os.close(fd)
        except (OSError, termios.error) as e:
            raise PodiumError(f"not typed: {long_line}, and the mode of the pane's tty {tty!r} "
                              f"could not be read ({e}); in canonical mode a tty keeps "
                              f"{CANONICAL_LINE_BYTES} bytes of a line") from None
        if not attrs[3] & termios.ICANON:
            return None
        eof = attrs[6][termios.VEOF]
        if eof == bytes([disabled]):
            raise PodiumError(f"not typed: {long_line}, and the pane's tty {tty} reads in "
                              f"canonical mode, which keeps {CANONICAL_LINE_BYTES} bytes of a "
                              "line, with no EOF character set to hand it over in pieces")
        return eof

    def _times_shown(self, pane_id: str, wanted: str) -> int:
        return re.sub(r"\s+", "", self.capture(pane_id)).count(wanted)

    def _wait_shown(self, pane_id: str, wanted: str, before: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self._times_shown(pane_id, wanted) > before:
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


class TmuxPanes:
    """The service's pane delivery (``podium.service.PaneDelivery``) through tmux: each pane is
    typed into on the tmux server its agent registered (None: the default one)."""

    def deliver(self, pane_id: str, text: str, server: str | None = None) -> Delivery:
        return Tmux(socket_path=server).deliver(pane_id, text)


def _pieces(line: bytes) -> list[bytes]:
    """A line longer than a canonical tty keeps, cut into pieces of at most PIECE_BYTES bytes;
    never inside a UTF-8 character, so no read() of the program ends in the middle of one."""
    if len(line) <= CANONICAL_LINE_BYTES:
        return [line]
    pieces, start = [], 0
    while len(line) - start > PIECE_BYTES:
        end = start + PIECE_BYTES
        while line[end] & 0xC0 == 0x80:  # a UTF-8 continuation byte
            end -= 1
        pieces.append(line[start:end])
        start = end
    pieces.append(line[start:])
    return pieces
