"""Pane delivery: text typed into a tmux pane arrives whole, and is confirmed only when it does.

Real tmux on a private server (its own -L socket per test), real programs in the panes: `cat`
reading a canonical-mode (cooked) tty, and a reader that puts its tty in raw mode as TUIs do.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys

import pytest
from test_tmux import TRICKY

from helpers import wait_for
from podium.errors import PodiumError
from podium.tmux import Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (scripts/test installs it)")

# Reads its tty in raw mode into a file, echoing what it reads when told to, as a TUI does.
RAW_READER = """
import os, sys, tty
tty.setraw(0)
out = open(sys.argv[1], "wb", buffering=0)
while True:
    data = os.read(0, 65536)
    out.write(data)
    if sys.argv[2] == "echo":
        os.write(1, data.replace(b"\\r", b"\\r\\n"))
"""

def long_line(size: int) -> str:
    """A line of at least ``size`` UTF-8 bytes, of 1- to 4-byte characters: some pieces end
    just before a multi-byte one."""
    word = "wörd-✓-日本-🎉 "
    return (word * (size // len(word.encode()) + 1)).strip()


@pytest.fixture
def server():
    name = "podium-test-" + secrets.token_hex(4)
    yield name
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True)


def pane(server: str, command: str) -> str:
    """A new window of ``server`` running ``command``; its pane id."""
    has = subprocess.run(["tmux", "-L", server, "has-session"], capture_output=True)
    new = ["new-window"] if has.returncode == 0 else ["new-session", "-x", "200", "-y", "50"]
    return subprocess.run(["tmux", "-L", server, *new, "-d", "-P", "-F", "#{pane_id}", command],
                          capture_output=True, text=True, check=True).stdout.strip()


def cooked_cat(server: str, out, setup: str = "") -> str:
    pane_id = pane(server, f"{setup}exec cat > {out}")
    wait_for(out.exists, what="cat started")
    return pane_id


def raw_reader(server: str, tmp_path, out, echo: bool, before: str = "") -> str:
    script = tmp_path / "raw_reader.py"
    script.write_text(RAW_READER)
    mode = "echo" if echo else "quiet"
    pane_id = pane(server, f"{before}exec {sys.executable} {script} {out} {mode}")
    wait_for(out.exists, what="raw reader started")  # its tty is raw once the file exists
    return pane_id


def received(out, expected: bytes) -> bytes:
    wait_for(lambda: out.read_bytes() == expected, timeout=5, what="the bytes in the file")
    return out.read_bytes()


def test_text_into_cooked_tty_is_confirmed_and_exact(server, tmp_path):
    out = tmp_path / "out.txt"
    pane_id = cooked_cat(server, out)
    text = TRICKY + "".join(f"line {i:03d} " + "x$`'\"\t" * 10 + "\n" for i in range(60)) + "end"
    delivery = Tmux(socket_name=server).deliver(pane_id, text)
    assert delivery.confirmed and delivery.reason is None
    received(out, (text + "\n").encode())


def test_long_lines_into_cooked_tty_arrive_whole_and_confirmed(server, tmp_path):
    out = tmp_path / "out.txt"
    pane_id = cooked_cat(server, out)
    first, last = long_line(5000), long_line(9000)
    text = f"{first}\nshort\n{last}"
    assert len(first.encode()) > 4095 and len(last.encode()) > 4095
    delivery = Tmux(socket_name=server).deliver(pane_id, text)
    assert delivery.confirmed, delivery.reason
    received(out, (text + "\n").encode())  # no line cut at 4095 bytes, no EOF character in it


def test_long_line_into_cooked_tty_without_eof_character_is_not_typed(server, tmp_path):
    out = tmp_path / "out.txt"
    pane_id = cooked_cat(server, out, setup="stty eof undef; ")
    tmux = Tmux(socket_name=server)
    with pytest.raises(PodiumError) as err:
        tmux.deliver(pane_id, long_line(5000))
    reason = str(err.value)
    assert reason.startswith("not typed: a line of 5") and "canonical mode" in reason
    assert "4095" in reason and "no EOF character" in reason
    # nothing of it reached cat: a short line delivered next is all the file holds
    assert tmux.deliver(pane_id, "after").confirmed
    received(out, b"after\n")


def test_long_line_when_the_tty_mode_cannot_be_read_is_not_typed(server, tmp_path,
                                                                  monkeypatch):
    import termios

    def unreadable(fd):
        raise termios.error(13, "Permission denied")

    out = tmp_path / "out.txt"
    pane_id = cooked_cat(server, out)
    monkeypatch.setattr(termios, "tcgetattr", unreadable)
    with pytest.raises(PodiumError, match=r"^not typed: .*could not be read.*4095"):
        Tmux(socket_name=server).deliver(pane_id, long_line(5000))
    assert out.read_bytes() == b""


def test_send_of_a_line_a_cooked_tty_would_cut_keeps_the_message(cli, podium, server,
                                                                 tmp_path):
    out = tmp_path / "out.txt"
    pane_id = cooked_cat(server, out, setup="stty eof undef; ")
    socket_path = subprocess.run(["tmux", "-L", server, "display-message", "-p",
                                  "#{socket_path}"], capture_output=True, text=True,
                                 check=True).stdout.strip()
    podium.store.register_agent("ia-1", [], "interactive:cat", "h", 1, 30,
                                {"interactive": True, "pane": pane_id, "tmux_socket": socket_path})
    text = long_line(5000)
    r = cli("send", "ia-1", "-", input=text.encode())
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err.startswith("podium: error: message 1 is in ia-1's inbox but could not be typed")
    assert "not typed: a line of" in err and "canonical mode" in err
    assert [m.body for m in podium.inbox("ia-1")] == [text]  # nothing lost
    assert not [e for e in podium.events() if e.kind == "message.delivered"]
    assert out.read_bytes() == b""


def test_long_line_into_raw_reader_arrives_whole_and_confirmed(server, tmp_path):
    out = tmp_path / "out.txt"
    pane_id = raw_reader(server, tmp_path, out, echo=True)
    text = long_line(20000)
    delivery = Tmux(socket_name=server).deliver(pane_id, text)
    assert delivery.confirmed, delivery.reason
    received(out, text.encode() + b"\r")  # raw: in one piece, and Enter is a carriage return


def test_text_that_never_shows_is_not_confirmed_though_typed(server, tmp_path):
    out = tmp_path / "out.txt"
    # the text is in the pane already, from before: only showing again would confirm it
    pane_id = raw_reader(server, tmp_path, out, echo=False, before="echo said-before; ")
    delivery = Tmux(socket_name=server).deliver(pane_id, "said-before", timeout=0.5)
    assert not delivery.confirmed
    assert delivery.reason.startswith("the whole text did not show in the pane within 0.5s")
    received(out, b"said-before\r")  # it did arrive; the report says only that none saw it


def test_same_text_twice_is_confirmed_each_time(server, tmp_path):
    out = tmp_path / "out.txt"
    pane_id = cooked_cat(server, out)
    tmux = Tmux(socket_name=server)
    assert [tmux.deliver(pane_id, "again $HOME").confirmed for _ in range(2)] == [True, True]
    received(out, b"again $HOME\n" * 2)


def test_unconfirmed_delivery_says_why_in_its_event(cli, podium, server, tmp_path):
    out = tmp_path / "out.txt"
    pane_id = raw_reader(server, tmp_path, out, echo=False)
    socket_path = subprocess.run(["tmux", "-L", server, "display-message", "-p",
                                  "#{socket_path}"], capture_output=True, text=True,
                                 check=True).stdout.strip()
    podium.store.register_agent("ia-1", [], "interactive:tui", "h", 1, 30,
                                {"interactive": True, "pane": pane_id, "tmux_socket": socket_path})
    assert cli("send", "ia-1", "hello").returncode == 0
    events = [json.loads(line) for line in
              cli("watch", "--from", "0", "--idle-timeout", "0.2", "--json").stdout.splitlines()]
    [delivered] = [e["data"] for e in events if e["kind"] == "message.delivered"]
    assert delivered["confirmed"] is False
    assert delivered["via"] == f"tmux pane {pane_id}"
    assert delivered["reason"].startswith("the whole text did not show in the pane within 5s")
