"""Agent state from Claude Code hooks, not from screen scraping.

Claude Code runs a command for each hook event with a JSON description on stdin. ``podium hook
EVENT`` records the state that event implies for the agent named by ``$PODIUM_AGENT_ID`` (set by
``podium agent interactive`` for the program it runs). ``install`` writes those hook commands into
a Claude Code settings file, merging with what is there.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from podium.errors import InvalidInput
from podium.models import AgentState

#: Claude Code hook event -> (our name for it, the agent state it implies)
HOOKS: dict[str, tuple[str, AgentState]] = {
    "SessionStart": ("session-start", AgentState.IDLE),
    "UserPromptSubmit": ("user-prompt-submit", AgentState.BUSY),
    "PreToolUse": ("pre-tool-use", AgentState.BUSY),
    "Notification": ("notification", AgentState.WAITING_INPUT),
    "Stop": ("stop", AgentState.IDLE),
}
BY_NAME = {name: (event, state) for event, (name, state) in HOOKS.items()}


def state_for(name: str) -> AgentState:
    if name not in BY_NAME:
        raise InvalidInput(f"unknown hook {name!r}: expected one of {', '.join(BY_NAME)}")
    return BY_NAME[name][1]


def parse_payload(data: bytes) -> dict:
    """The hook's JSON from stdin (empty is fine); malformed JSON is an error, not a crash."""
    if not data.strip():
        return {}
    try:
        payload = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInput(f"hook input is not valid JSON: {e}") from None
    if not isinstance(payload, dict):
        raise InvalidInput("hook input must be a JSON object")
    return payload


def hook_command(store_url: str, name: str) -> str:
    """The command Claude Code runs (it uses a shell: every part is quoted)."""
    return " ".join(shlex.quote(p) for p in
                    [sys.executable, "-m", "podium", "--store", store_url, "hook", name])


def install(settings: Path, store_url: str) -> dict:
    """Add Podium's hook commands to a Claude Code settings file; returns the new settings."""
    data: dict = {}
    if settings.exists():
        try:
            data = json.loads(settings.read_text(encoding="utf-8") or "{}")
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{settings} is not valid JSON ({e}); fix or remove it") from None
    hooks = data.setdefault("hooks", {})
    for event, (name, _) in HOOKS.items():
        cmd = hook_command(store_url, name)
        entries = [e for e in hooks.get(event, [])
                   if not any("podium" in h.get("command", "") and " hook " in h.get("command", "")
                              for h in e.get("hooks", []))]
        entries.append({"hooks": [{"type": "command", "command": cmd}]})
        hooks[event] = entries
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return data
