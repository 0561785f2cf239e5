"""A bare DevTools client for the benchmarks: Debian's Chromium started by us, pages opened and
scripts run in them over the Chrome DevTools Protocol, and nothing else asked of the browser.

Playwright enables the Network domain on every page it drives, so the browser copies every
WebSocket frame each page receives into a DevTools event (its text escaped inside JSON) and
Playwright's driver (node) parses it: a tap that a person's tab does not have, paid for by the
same two cores the workers run on. Here no domain is enabled on any page: a page's session is
used only for ``Page.navigate``, ``Runtime.evaluate``, the viewport's size and focus, so no event
flows while it runs. (The session stays: it holds the focus emulation that lets every page
draw, as Playwright's pages do.)

The subset of Playwright's sync API that ``bench/web.py`` uses: ``launch()`` -> ``Browser``
with ``new_context()`` -> ``Context`` with ``new_page()`` -> ``Page`` with ``goto(url)`` and
``evaluate(function_text)``; ``close()`` on each.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as C
from websockets.sync.client import connect

#: Besides the benchmark's own flags: those Playwright starts Chromium with that change how a
#: page runs (headless, no throttling, no IPC flooding protection, no extensions).
BASE_ARGS = ["--headless", "--hide-scrollbars", "--mute-audio", "--disable-extensions",
             "--disable-ipc-flooding-protection", "--disable-hang-monitor",
             "--disable-breakpad", "--disable-default-apps", "--disable-dev-shm-usage",
             "--disable-back-forward-cache", "--disable-popup-blocking",
             "--disable-client-side-phishing-detection", "--no-default-browser-check",
             "--password-store=basic", "--use-mock-keychain", "--metrics-recording-only",
             "--disable-field-trial-config", "--no-service-autorun"]
LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class CdpError(RuntimeError):
    pass


class Browser:
    """Chromium with ``--remote-debugging-port=0``, one DevTools socket to its browser
    target; pages are flat sessions on that socket."""

    def __init__(self, executable: str, args: list[str]):
        self._profile = Path(tempfile.mkdtemp(prefix="podium-bench-chromium-"))
        self.proc = C.spawn([executable, *BASE_ARGS, *args, "--remote-debugging-port=0",
                             f"--user-data-dir={self._profile}", "about:blank"],
                            stderr=subprocess.PIPE)
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline().decode(errors="replace")
            if not line and self.proc.poll() is not None:
                raise CdpError(f"chromium exited {self.proc.returncode}")
            if m := LISTENING.search(line):
                url = m.group(1)
        if url is None:
            raise CdpError("chromium printed no DevTools address")
        self.proc.stderr.close()  # (it says no more that is read; a pipe left full would block)
        self._ws = connect(url, max_size=None, open_timeout=10)
        self._ids = itertools.count(1)
        self.version = self.send("Browser.getVersion")["product"]

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict:
        """One command and its reply (events that arrive meanwhile are dropped)."""
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self._ws.recv(timeout=max(0.0, deadline - time.monotonic())))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def new_context(self, viewport: dict | None = None) -> Context:
        return Context(self, self.send("Target.createBrowserContext")["browserContextId"],
                       viewport or {"width": 1280, "height": 800})

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        self._ws.close()
        C.stop([self.proc])
        shutil.rmtree(self._profile, ignore_errors=True)


class Context:
    """A browser context of its own (its cookies shared by its pages)."""

    def __init__(self, browser: Browser, context_id: str, viewport: dict):
        self.browser, self.id, self.viewport = browser, context_id, viewport

    def new_page(self) -> Page:
        target = self.browser.send("Target.createTarget", {
            "url": "about:blank", "browserContextId": self.id})["targetId"]
        session = self.browser.send("Target.attachToTarget",
                                    {"targetId": target, "flatten": True})["sessionId"]
        self.browser.send("Emulation.setDeviceMetricsOverride", {
            **self.viewport, "deviceScaleFactor": 1, "mobile": False}, session=session)
        # As Playwright does: each tab acts as the focused one, so that it draws (a tab behind
        # another gets no animation frames). (A window per page instead: 20 headless windows
        # cost 1.6 cores doing nothing, measured here.)
        self.browser.send("Emulation.setFocusEmulationEnabled", {"enabled": True},
                          session=session)
        return Page(self.browser, session)

    def close(self) -> None:
        self.browser.send("Target.disposeBrowserContext", {"browserContextId": self.id})


class Page:
    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session

    def _eval(self, expression: str, await_promise: bool = False) -> Any:
        r = self.browser.send("Runtime.evaluate", {
            "expression": expression, "awaitPromise": await_promise, "returnByValue": True},
            session=self.session)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise CdpError(f"in the page: {d.get('exception', {}).get('description') or d}")
        return r["result"].get("value")

    def goto(self, url: str, timeout: float = 30.0) -> None:
        """Navigate, then wait until a document of ``url``'s origin has loaded (the link's
        redirect followed)."""
        r = self.browser.send("Page.navigate", {"url": url}, session=self.session)
        if r.get("errorText"):
            raise CdpError(f"{url}: {r['errorText']}")
        origin = re.match(r"^https?://[^/]+", url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            href, state = self._eval("[location.href, document.readyState]")
            if state == "complete" and origin and href.startswith(origin.group(0)) \
                    and "token=" not in href:
                return
            time.sleep(0.02)
        raise CdpError(f"{url} did not load in {timeout}s")

    def evaluate(self, function_text: str) -> Any:
        """Call the JavaScript function ``function_text`` in the page and wait for its
        (promised) value, as Playwright's ``page.evaluate`` does with a function."""
        return self._eval(f"({function_text})()", await_promise=True)


def launch(executable: str, args: list[str]) -> Browser:
    return Browser(executable, args)
