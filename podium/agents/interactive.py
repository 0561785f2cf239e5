"""Interactive agents: a program with its own terminal UI (Claude Code, a shell, a REPL) in a pane.

``podium agent interactive --name N -- CMD ...`` registers the agent, runs CMD in the foreground
of its terminal (it owns the pane), heartbeats from a thread, and deregisters when CMD exits. A
CMD that cannot be started leaves no agent behind: it is looked for before the agent registers
(and an agent registered for it only now is removed if it still fails to start).
Text reaches it through ``podium send`` (a tmux paste, see ``podium.tmux``). Its state comes from
structured signals — Claude Code hooks calling ``podium hook`` — and only when none has arrived,
from the pane's activity (output in the last few seconds: busy; else idle).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time

from podium.agents import registration
from podium.errors import AgentReplaced, InvalidInput, NotFound, StoreError
from podium.models import AgentState
from podium.store import Store
from podium.tmux import Tmux

#: A pane with output this recent counts as busy when no hook says otherwise.
ACTIVITY_WINDOW_S = 3.0


class InteractiveAgent:
    def __init__(self, store: Store, name: str, argv: list[str], roles: list[str] | None = None,
                 lease_s: float = 30.0, heartbeat_s: float | None = None):
        self.store = store
        self.name = name
        self.argv = argv
        self.roles = list(roles or [])
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s or max(0.2, lease_s / 6)
        self.tmux = Tmux.current()
        self.pane = os.environ.get("TMUX_PANE")
        self._stop = threading.Event()
        self._holder = registration.this_process()
        #: Set when a beat found the name taken over (see ``podium.agents.heartbeat``).
        self._replaced: AgentReplaced | None = None

    def _meta(self) -> dict:
        meta = {"interactive": True, "command": self.argv, "workdir": os.getcwd()}
        if self.tmux and self.pane:
            meta.update(pane=self.pane, tmux_socket=self.tmux.socket_path,
                        tmux_session=os.environ.get("PODIUM_TMUX_SESSION"))
        return meta

    def _fallback_state(self) -> None:
        """Pane activity, used only while no hook has ever reported for this agent."""
        if not (self.tmux and self.pane):
            return
        agent = self.store.get_agent(self.name)
        if agent.note and agent.note.startswith("hook:"):
            return  # structured signals exist: trust them
        last = self.tmux.window_activity(self.pane)
        if last is None:
            return
        state = AgentState.BUSY if time.time() - last < ACTIVITY_WINDOW_S else AgentState.IDLE
        if agent.state is not state and agent.state.live:
            self.store.set_agent_state(self.name, state, "pane activity")

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                reply = self.store.heartbeat(self.name, self.lease_s, holder=self._holder)
                registration.end_taken(self.store.url, reply.taken)
                self._fallback_state()
            except AgentReplaced as e:  # (the program goes on; it is no longer the agent)
                self._replaced = e
                os.write(2, f"podium: {e}; no longer beating for it\n".encode())
                return
            except StoreError:
                pass  # the lease tolerates a missed beat; the next one retries

    def run(self) -> int:
        program = self.argv[0]
        if shutil.which(program) is None:  # (before registering: a typo leaves no agent behind)
            why = "no such program" if os.sep not in program else (
                "no such file" if not os.path.exists(program) else "not an executable file")
            raise InvalidInput(f"cannot start {program}: {why}")
        try:
            self.store.get_agent(self.name)
            existed = True
        except NotFound:
            existed = False
        registration.register(self.store, self.name, self.roles,
                              f"interactive:{os.path.basename(program)}", self.lease_s,
                              self._meta(), os.getpid())
        env = dict(os.environ, PODIUM_AGENT_ID=self.name, PODIUM_STORE=self.store.url)
        try:
            child = subprocess.Popen(self.argv, env=env)
        except OSError as e:  # (found, yet it would not start: a bad interpreter line, say)
            self.store.deregister(self.name)
            if not existed:  # (an agent of that name that was there before keeps its history)
                self.store.remove_agents([self.name])
            raise InvalidInput(f"cannot start {program}: {e.strerror}") from None

        def forward(signum, frame):
            if child.poll() is None:
                child.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGHUP, forward)
        beat = threading.Thread(target=self._heartbeats, daemon=True)
        beat.start()
        try:
            while True:
                try:
                    code = child.wait()
                    break
                except KeyboardInterrupt:
                    continue  # Ctrl-C belongs to the program in the pane
        finally:
            self._stop.set()
            if self._replaced is None:
                with contextlib.suppress(AgentReplaced):
                    self.store.deregister(self.name, holder=self._holder)
        return code
