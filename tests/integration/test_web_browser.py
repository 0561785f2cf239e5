"""The web dashboard in a real browser: Debian's Chromium driven by Playwright, against the real
``podium web`` server on a temporary SQLite store, with real shell and echo agents started by
``podium up``. One server for the module (restarted once, on the same port and store, by the
reconnect test); each test opens its own page in one browser context that opened the printed
link once. Screenshots go to test-artifacts/web/ (and, with PODIUM_UPDATE_SCREENSHOT=1, the
README's to docs/dashboard.png).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers import all_events, wait_for
from podium.service import Podium

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "web"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: How long the page may take to show what an event says (it is pushed, not polled).
LIVE_MS = 10_000
LINK = re.compile(r"^podium web: (http://127\.0\.0\.1:\d+/\?token=\S+)$", re.M)
HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>",
           "ünïcødé ✓ 日本語 🎉 \u202e<b>bold?</b>"]

if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium is not installed (/usr/bin/chromium): apt-get install "
                "chromium (scripts/test installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")
sync_api.expect.set_options(timeout=LIVE_MS)


class WebServer:
    """``podium web`` as a subprocess, on a fixed port once it had a free one."""

    def __init__(self, store_url: str, workdir: Path):
        self.store_url = store_url
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.link = ""
        self.port = 0
        self.starts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        log = open(self.workdir / f"web-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "podium", "--store", self.store_url, "web", "--port",
             str(self.port)],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, cwd=self.workdir,
            start_new_session=True)
        log.close()
        assert self.proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise AssertionError(f"podium web exited {self.proc.wait()}: {lines} "
                                     f"{self.log()}")
            lines.append(line)
            if m := LINK.match(line.rstrip("\n")):
                self.link = m.group(1)
                self.port = urlsplit(self.link).port or 0
                return
        raise AssertionError(f"podium web printed no link: {lines}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def log(self) -> str:
        p = self.workdir / f"web-{self.starts}.log"
        return p.read_text(errors="replace")[-3000:] if p.exists() else ""


class Team:
    """The agents: two shell ones and one echo one, started once with ``podium up``."""

    SHELL = ["sh-1", "sh-2"]
    ECHO = ["echo-1"]

    def __init__(self, store_url: str, workdir: Path):
        self.store_url = store_url
        self.workdir = workdir
        self.started = False

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "podium", "--store", self.store_url, *args],
                           capture_output=True, cwd=self.workdir, timeout=60)
        assert p.returncode == 0, p.stderr.decode(errors="replace")
        return p

    def up(self) -> None:
        if not self.started:
            self.started = True
            self.cli("up", "2", "--backend", "shell", "--prefix", "sh", "--role", "shell")
            self.cli("up", "1", "--backend", "echo", "--prefix", "echo")

    def down(self) -> None:
        if self.started:
            self.cli("down", "--timeout", "5")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("web-browser")
    (d / "work").mkdir()
    return f"sqlite://{d / 'podium.db'}", d / "work"


@pytest.fixture(scope="module")
def server(store):
    url, workdir = store
    Podium.open(url).close()  # (the store exists before the server and the agents)
    s = WebServer(url, workdir)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def team(store, server):
    t = Team(*store)
    yield t
    t.down()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        # The first run on a machine builds the font cache: then, not in a test's time.
        warm = b.new_page()
        warm.set_content("<p>Podium ✓ 日本語</p>")
        warm.screenshot(timeout=120_000)
        warm.close()
        yield b
        b.close()


@pytest.fixture(scope="module")
def context(browser, server):
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="light")
    ctx.set_default_timeout(LIVE_MS)
    page = ctx.new_page()
    page.goto(server.link)
    page.close()
    yield ctx
    ctx.close()


class Watched:
    """A page, with what it did that it must not: uncaught errors and dialogs."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        # (shown with a failing test's output)
        page.on("console", lambda m: print(f"console {m.type}: {m.text}"))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


@pytest.fixture
def page(context, server, request):
    p = context.new_page()
    watched = Watched(p)
    yield p
    try:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        p.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
    finally:
        p.close()
    assert watched.errors == [], watched.errors
    assert watched.dialogs == [], watched.dialogs


def expect(locator):
    return sync_api.expect(locator)


def open_view(page, server, view: str = "team") -> None:
    page.goto(f"{server.base}/#/{view}")
    expect(page.locator("#connection")).to_have_text("live")


def add_task(page, prompt: str, agent: str | None = None, **fields: str) -> str:
    """Fill and submit the add-task form; returns the new task's id (the page shows it)."""
    before = page.url
    page.click('[data-action="new-task"]')
    form = page.locator("#add-task")
    form.locator("[name=prompt]").fill(prompt)
    if agent:
        form.locator("[name=agent]").fill(agent)
    for name, value in fields.items():
        control = form.locator(f"[name={name}]")
        if name == "priority":
            control.select_option(value)
        else:
            control.fill(value)
    form.locator("button[type=submit]").click()
    page.wait_for_url(lambda url: "#/task/" in url and url != before)
    return page.url.rsplit("/", 1)[1]


# -- the scenarios --------------------------------------------------------------------------

def test_the_printed_link_sets_the_cookie_and_leaves_the_token_out_of_the_url(browser, server):
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(server.link)
        assert page.url == f"{server.base}/"
        assert "token" not in page.url
        cookies = {c["name"]: c for c in ctx.cookies()}
        cookie = cookies["podium_token"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
        expect(page.locator("#connection")).to_have_text("live")
        # The cookie is not readable by the page's scripts.
        assert "podium_token" not in page.evaluate("document.cookie")
    finally:
        ctx.close()


def test_without_the_link_the_page_says_to_open_it(browser, server):
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        response = page.goto(f"{server.base}/")
        assert response is not None and response.status == 401
        assert "podium web" in page.inner_text("body")
    finally:
        ctx.close()


def test_agents_appear_live(page, server, team):
    open_view(page, server, "team")
    assert page.locator("#agents [data-agent]").count() == 0
    team.up()
    for name in Team.SHELL + Team.ECHO:
        row = page.locator(f'#agents [data-agent="{name}"]')
        expect(row.locator('[data-field="state"]')).to_have_text("idle")
    expect(page.locator('[data-count="agents"]')).to_have_text("3")


def test_the_readme_screenshot(page, server, team, store):
    """The team of three at work: finished tasks (one failed), one running, one queued behind
    it and one blocked on that; saved as docs/dashboard.png with PODIUM_UPDATE_SCREENSHOT=1."""
    team.up()
    open_view(page, server, "team")
    podium = Podium.open(store[0])
    try:
        finished = [podium.add_task(prompt, agent=agent) for prompt, agent in [
            ("review the error handling of the upload API; one paragraph", "echo-1"),
            ("python3 -c 'print(sum(range(10**6)))'", "sh-1"),
            ("summarise what the failing tests have in common", "echo-1"),
            ("test -f RELEASE-NOTES.md", "sh-1")]]
        wait_for(lambda: all(podium.task(t.id).state.value in ("completed", "failed")
                             for t in finished), 10, what="tasks")
        podium.add_task("sleep 2 && echo 'staging deployed'", agent="sh-2")
        release = podium.add_task("echo 'release v0.2 tagged'", agent="sh-2")
        podium.add_task("echo 'announce v0.2'", depends_on=[release.id])
    finally:
        podium.close()
    expect(page.locator('#agents [data-agent="sh-2"] [data-field="state"]')).to_have_text("busy")
    recent = page.locator("#recent-tasks")
    for state in ("running", "queued", "blocked", "failed"):
        expect(recent.locator('[data-field="state"]').filter(has_text=state)).to_have_count(1)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
    if os.environ.get("PODIUM_UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        page.screenshot(path=str(ROOT / "docs" / "dashboard.png"))


def test_agents_are_started_and_stopped_from_the_page(page, server, team):
    team.up()
    open_view(page, server, "team")
    form = page.locator("#team-up")
    form.locator("[name=n]").fill("1")
    form.locator("[name=backend]").select_option("echo")
    form.locator("[name=role]").fill("extra")
    form.locator("button[type=submit]").click()
    row = page.locator('#agents [data-agent="agent-1"]')
    expect(row.locator('[data-field="state"]')).to_have_text("idle", timeout=20_000)
    stop = row.locator("button.danger")
    stop.click()
    expect(stop).to_have_text("stop?")  # a second click is needed
    stop.click()
    expect(row.locator('[data-field="state"]')).to_have_text("stopped", timeout=20_000)


def test_a_task_added_from_the_form_streams_its_output_and_completes_live(page, server, team):
    team.up()
    open_view(page, server, "team")
    # The second line comes a second after the first: seen before it, the first was streamed.
    task_id = add_task(page, "echo first-line; sleep 2; echo second-line", agent="sh-1",
                       priority="high", timeout_s="30")
    output = page.locator("#task-output")
    expect(output).to_contain_text("first-line")
    assert "second-line" not in output.inner_text()
    expect(page.locator("#task-state")).to_have_text("running")
    expect(page.locator("#task-state")).to_have_text("completed")
    expect(output).to_have_text("first-line\nsecond-line\n")
    assert page.locator("#task-prompt").inner_text() == \
        "echo first-line; sleep 2; echo second-line"
    # It is in the history, completed.
    page.goto(f"{server.base}/#/history")
    expect(page.locator(f'#tasks [data-task="{task_id}"] [data-field="state"]')) \
        .to_have_text("completed")


def test_a_running_task_is_cancelled_from_its_page(page, server, team):
    team.up()
    open_view(page, server, "team")
    task_id = add_task(page, "sleep 30", agent="sh-2")
    expect(page.locator("#task-state")).to_have_text("running")
    cancel = page.locator('[data-action="cancel"]')
    expect(cancel).to_be_enabled()
    cancel.click()
    expect(page.locator("#task-state")).to_have_text("cancelled", timeout=8000)
    expect(cancel).to_be_disabled()
    # Retried, it runs again (the same task, afresh), and is cancelled once more.
    retry = page.locator('[data-action="retry"]')
    expect(retry).to_be_enabled()
    retry.click()
    expect(page.locator("#task-state")).to_have_text("running")
    expect(retry).to_be_disabled()
    cancel.click()
    expect(page.locator("#task-state")).to_have_text("cancelled", timeout=8000)
    page.goto(f"{server.base}/#/history?state=cancelled")
    expect(page.locator(f'#tasks [data-task="{task_id}"]')).to_have_count(1)


def test_a_broadcast_from_the_page_reaches_every_live_agent(page, server, team, store):
    team.up()
    open_view(page, server, "team")
    page.click('[data-action="broadcast"]')
    form = page.locator("#broadcast")
    form.locator("[name=prompt]").fill("echo broadcast-ok")
    form.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r"#/queue$"))
    page.goto(f"{server.base}/#/history?q=broadcast-ok")
    rows = page.locator("#tasks tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.locator('[data-field="state"]').filter(has_text="completed")).to_have_count(3)
    expect(rows.filter(has_text="sh-1")).not_to_have_count(0)


def test_a_message_sent_from_the_page_shows_in_the_inbox(page, server, team):
    team.up()
    open_view(page, server, "agent/echo-1")
    body = "please look at <b>this</b> ✓"
    form = page.locator("#send-message")
    form.locator("[name=body]").fill(body)
    form.locator("button[type=submit]").click()
    expect(page.locator("#inbox tbody tr").filter(has_text=body)).to_have_count(1)
    assert page.locator("#inbox b").count() == 0


def test_hostile_output_and_unicode_show_verbatim_as_text(page, server, team):
    team.up()
    open_view(page, server, "team")
    quoted = " ".join("'" + line.replace("'", "'\\''") + "'" for line in HOSTILE)
    task_id = add_task(page, f"printf '%s\\n' {quoted}", agent="sh-1")
    expect(page.locator("#task-state")).to_have_text("completed")
    output = page.locator("#task-output")
    assert output.inner_text() == "\n".join(HOSTILE) + "\n"
    assert page.locator("#task-output *").count() == 0  # text only: no element was made
    # The echo agent gives the same text back as its output, and the feed shows its chunks.
    echo_id = add_task(page, "\n".join(HOSTILE), agent="echo-1")
    expect(page.locator("#task-state")).to_have_text("completed")
    assert page.locator("#task-output").inner_text() == "\n".join(HOSTILE)
    assert page.locator("#task-prompt").inner_text() == "\n".join(HOSTILE)
    for where in ("#task-output", "#task-prompt", "#events", "body"):
        assert page.locator(f"{where} script, {where} img").count() == 0
    page.goto(f"{server.base}/#/history?q=onerror")
    expect(page.locator(f'#tasks [data-task="{echo_id}"]')).to_have_count(1)
    expect(page.locator(f'#tasks [data-task="{task_id}"]')).to_have_count(1)
    assert page.locator("#tasks img, #tasks script").count() == 0


def feed_ids(page) -> list[int]:
    return [int(x) for x in page.eval_on_selector_all(
        "#events [data-event-id]", "rows => rows.map(r => r.dataset.eventId)")]


def test_the_page_reconnects_after_a_server_restart_without_losing_or_doubling_events(
        page, server, team, store):
    team.up()
    open_view(page, server, "events")
    podium = Podium.open(store[0])
    try:
        before = podium.add_task("before the restart", agent="echo-1")
        wait_for(lambda: podium.task(before.id).state.value == "completed", 10, what="task")
        server.stop()
        expect(page.locator("#connection")).to_have_text("reconnecting")
        # Events while the server is down: the page must get them after it comes back.
        during = [podium.add_task(f"while the server was down {i}", agent="echo-1")
                  for i in range(3)]
        wait_for(lambda: all(podium.task(t.id).state.value == "completed" for t in during),
                 10, what="tasks during the outage")
        server.start()
        expect(page.locator("#connection")).to_have_text("live", timeout=15_000)
        after = podium.add_task("after the restart", agent="echo-1")
        wait_for(lambda: podium.task(after.id).state.value == "completed", 10, what="task")
        last = podium.store.last_event_id()
        expect(page.locator(f'#events [data-event-id="{last}"]')).to_have_count(1)
        shown = feed_ids(page)
        assert len(shown) == len(set(shown)), "an event is shown twice"
        everything = [e.id for e in all_events(podium.store) if e.id >= min(shown)]
        assert sorted(shown) == everything, "the feed misses events"
        assert page.evaluate("window.podium.live.connects") == 2
    finally:
        podium.close()


def test_shared_context_is_edited_from_the_page_and_changes_elsewhere_show_live(
        page, server, store):
    open_view(page, server, "context")
    editor = page.locator("#context")
    editor.locator("[name=key]").fill("plan")
    editor.locator("[name=value]").fill("step 1: <b>tests</b>")
    editor.locator("button[type=submit]").click()
    entry = page.locator('#context-entries [data-key="plan"]')
    expect(entry.locator('[data-field="version"]')).to_have_text("v1")
    expect(entry.locator("pre")).to_have_text("step 1: <b>tests</b>")
    podium = Podium.open(store[0])
    try:
        podium.set_context("plan", "step 2 (set elsewhere)", "someone")
    finally:
        podium.close()
    expect(entry.locator('[data-field="version"]')).to_have_text("v2")
    expect(entry.locator("pre")).to_have_text("step 2 (set elsewhere)")
    expect(page.locator("#context-note")).to_contain_text("changed to version 2")


def test_memory_is_searched_from_the_page_and_shows_text_verbatim(page, server, store):
    word = "quokkaflux"
    text = f"{word} deploys: keep <img src=x onerror=alert(1)> and <script>alert(3)</script> as is"
    podium = Podium.open(store[0])
    try:
        t = podium.add_task("echo the task the memory is about", role="nobody-takes-this")
        memory = podium.remember(text, task_id=t.id, agent="echo-1", role="writer")[0]
        podium.cancel(t.id, "only there to be remembered from")
    finally:
        podium.close()
    open_view(page, server, "memory")
    expect(page.locator('#nav a[data-view="memory"]')).to_have_class(re.compile(r"\bactive\b"))
    expect(page.locator('#memory-stats [data-field="model"]')).to_contain_text("MiniLM")
    form = page.locator("#memory-search")
    form.locator("[name=q]").fill(word)
    form.locator("[name=k]").fill("5")
    form.locator("[name=kind]").select_option("note")
    form.locator("[name=mode]").select_option("hybrid")
    form.locator("button[type=submit]").click()
    hit = page.locator(f'#memory-hits [data-memory="{memory.id}"]')
    expect(hit).to_have_count(1)
    expect(hit.locator('[data-field="snippet"]')).to_have_text(text)
    expect(hit.locator('[data-field="kind"]')).to_have_text("note")
    assert hit.locator(f'a[href="#/task/{t.id}"]').count() == 1
    assert hit.locator('a[href="#/agent/echo-1"]').count() == 1
    assert float(hit.locator('[data-field="score"]').inner_text()) > 0
    assert page.locator("#memory-hits img, #memory-hits script").count() == 0
    assert f"#/memory?q={word}" in page.url and "kind=note" in page.url
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "memory.png"))
    # An empty query is refused by the form itself; a bad one says the server's error.
    page.goto(f"{server.base}/#/memory?q=x&since=whenever")
    expect(page.locator("#memory-error")).to_contain_text("bad since")
