"""tmux: the team layout, live pane workers, byte-exact delivery into a pane, clean down.

Real tmux on a private server (its own -L socket per test), real worker processes.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess

import pytest

from helpers import wait_for
from podium.service import Podium

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (scripts/test installs it)")


@pytest.fixture
def tmux_socket(monkeypatch):
    name = "podium-test-" + secrets.token_hex(4)
    monkeypatch.setenv("PODIUM_TMUX_SOCKET", name)
    yield name
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True)


def tmux(sock, *args) -> str:
    return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True,
                          check=True).stdout




def test_up_tmux_layout_task_in_pane_and_clean_down(cli, store_url, tmux_socket):
    r = cli("up", "5", "--tmux", "--session", "team", "--backend", "shell", "--json")
    assert r.returncode == 0, r.stderr
    agents = json.loads(r.stdout)
    assert [a["id"] for a in agents] == [f"agent-{i}" for i in range(1, 6)]
    panes = tmux(tmux_socket, "list-panes", "-s", "-t", "team", "-F",
                 "#{window_name} #{pane_id} #{pane_title}").split("\n")
    layout = [p.split() for p in panes if p]
    windows = [w for w, _, _ in layout]
    # first window: dashboard + 3 agents; then a window with the other 2
    assert windows.count("team") == 4 and windows.count("agents-2") == 2
    titles = {title: pane for _, pane, title in layout}
    assert set(titles) == {"dashboard", *[a["id"] for a in agents]}
    for a in agents:  # each pane's worker knows its pane
        assert a["meta"]["pane"] == titles[a["id"]] and a["meta"]["tmux_session"] == "team"

    marker = "visible-" + secrets.token_hex(4)
    r = cli("task", "add", "--agent", "agent-5", f"echo {marker}")
    task_id = r.stdout.decode().strip()
    assert cli("task", "wait", task_id, "--timeout", "30").returncode == 0
    wait_for(lambda: marker in tmux(tmux_socket, "capture-pane", "-p", "-t", titles["agent-5"]),
             what="task output in the agent's pane")
    # the dashboard pane shows the agents and the task, live
    wait_for(lambda: task_id in tmux(tmux_socket, "capture-pane", "-p", "-t", titles["dashboard"]),
             what="task in the dashboard pane")

    r = cli("down")
    assert r.returncode == 0, r.stderr
    states = {a["id"]: a["state"] for a in json.loads(cli("agents", "--json").stdout)}
    assert set(states.values()) == {"stopped"}
    assert subprocess.run(["tmux", "-L", tmux_socket, "has-session", "-t", "team"],
                          capture_output=True).returncode != 0


def test_down_requeues_a_running_pane_task(cli, store_url, tmux_socket):
    assert cli("up", "1", "--tmux", "--tmux-session", "t2", "--backend", "shell").returncode == 0
    task_id = cli("task", "add", "sleep 30; echo late").stdout.decode().strip()
    p = Podium.open(store_url)
    try:
        wait_for(lambda: p.task(task_id).state.value == "running", what="task running")
        assert cli("down").returncode == 0
        t = p.task(task_id)
        assert t.state.value == "queued" and t.attempts == 0  # handed back, nothing lost
    finally:
        p.close()


TRICKY = ("echo $HOME \"double\" 'single' `whoami` $(id -u) \\backslash %s %% ; | & > <\n"
          "\ttabbed\tline\n"
          "ünïcödé ✓ 日本語 🎉\n")


def test_send_into_interactive_pane_is_byte_exact(cli, store_url, tmux_socket, tmp_path):
    out = tmp_path / "received.txt"
    r = cli("up", "1", "--tmux", "--session", "cat", "--prefix", "cat",
            "--interactive", f"sh -c 'exec cat > {out}'")
    assert r.returncode == 0, r.stderr
    # 8 KB: many lines (a terminal line in canonical mode holds 4095 bytes)
    big = "".join(f"line {i:04d} " + "x$`'\"\t" * 10 + "\n" for i in range(120))
    text = TRICKY + big + "the end"
    assert len(text.encode()) > 8000
    r = cli("send", "cat-1", "-", input=text.encode())
    assert r.returncode == 0, r.stderr
    expected = (text + "\n").encode()  # Enter ends the last line
    wait_for(lambda: out.exists() and out.read_bytes() == expected, what="exact bytes in file")
    events = [json.loads(line) for line in
              cli("watch", "--from", "0", "--idle-timeout", "0.2", "--json").stdout.splitlines()]
    delivered = [e for e in events if e["kind"] == "message.delivered"]
    assert len(delivered) == 1 and delivered[0]["data"]["confirmed"] is True
    inbox = json.loads(cli("inbox", "cat-1", "--json").stdout)
    assert inbox[0]["body"] == text and inbox[0]["delivered_at"]
    assert cli("down").returncode == 0


def test_send_to_closed_pane_keeps_message(cli, podium, tmux_socket):
    # a live tmux server, and an interactive agent whose pane no longer exists
    tmux(tmux_socket, "new-session", "-d", "-s", "other", "sleep 600")
    socket_path = tmux(tmux_socket, "display-message", "-p", "#{socket_path}").strip()
    podium.store.register_agent("ia-1", [], "interactive:sh", "h", 1, 30,
                                {"interactive": True, "pane": "%999", "tmux_socket": socket_path})
    r = cli("send", "ia-1", "hello $HOME")
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err.startswith("podium: error: message 1 is in ia-1's inbox") and "%999" in err
    assert "Traceback" not in err
    assert [m.body for m in podium.inbox("ia-1")] == ["hello $HOME"]  # nothing lost


def test_up_tmux_dashboard_is_wide_and_agent_panes_in_name_order(cli, store_url, tmux_socket):
    from podium.tmux import DASHBOARD_MIN_COLUMNS

    r = cli("up", "6", "--tmux", "--session", "wide", "--backend", "shell")
    assert r.returncode == 0, r.stderr
    try:
        rows = [line.split() for line in tmux(
            tmux_socket, "list-panes", "-s", "-t", "wide", "-F",
            "#{window_index} #{pane_index} #{pane_title} #{pane_left} #{pane_top} "
            "#{pane_width} #{window_width}").splitlines() if line]
        panes = {title: [int(x) for x in (w, i, left, top, width, ww)]
                 for w, i, title, left, top, width, ww in rows}
        window, index, left, _, width, window_width = panes.pop("dashboard")
        # the dashboard: the first pane, on the left, usable wide
        assert (index, left) == (0, 0)
        assert width >= DASHBOARD_MIN_COLUMNS and width >= window_width // 2, panes
        # the agents beside it, then in windows of their own: in name order throughout
        by_place = sorted(panes, key=lambda t: (panes[t][0], panes[t][3], panes[t][2]))
        by_index = sorted(panes, key=lambda t: (panes[t][0], panes[t][1]))
        names = [f"agent-{i}" for i in range(1, 7)]
        assert by_place == names and by_index == names
        assert all(panes[f"agent-{i}"][0] == window for i in (1, 2, 3))
        assert all(panes[f"agent-{i}"][2] >= width for i in (1, 2, 3))  # right of it
        # a terminal of another size attaching: the dashboard keeps its share of the width
        tmux(tmux_socket, "resize-window", "-t", "wide:0", "-x", "200", "-y", "50")
        wait_for(lambda: int(tmux(tmux_socket, "display-message", "-p", "-t",
                                  "wide:0.0", "#{pane_width}")) >= 100,
                 what="dashboard laid out again after the resize")
    finally:
        assert cli("down").returncode == 0
