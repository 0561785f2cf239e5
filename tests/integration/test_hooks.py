"""Interactive agents' state from Claude Code hook events (structured signals)."""

from __future__ import annotations

import json

from podium.hooks import HOOKS, install


def test_hook_events_set_agent_state(cli, podium):
    podium.store.register_agent("claude-1", [], "interactive:claude", "h", 1, 30, {})
    env = {"PODIUM_AGENT_ID": "claude-1"}
    steps = [("user-prompt-submit", {"prompt": "fix it"}, "busy"),
             ("notification", {"message": "Claude needs your permission to use Bash"},
              "waiting_input"),
             ("pre-tool-use", {"tool_name": "Bash"}, "busy"),
             ("stop", {}, "idle")]
    for name, payload, state in steps:
        r = cli("hook", name, input=json.dumps(payload).encode(), env=env)
        assert r.returncode == 0, r.stderr
        assert podium.agent("claude-1").state.value == state
    assert podium.agent("claude-1").note == "hook:stop"
    kinds = [e.kind for e in podium.events()]
    assert kinds.count("agent.state") == 4


def test_bad_hook_input_is_a_clear_error_and_changes_nothing(cli, podium):
    podium.store.register_agent("c", [], "interactive:claude", "h", 1, 30, {})
    before = podium.store.last_event_id()
    for args, data in [(("hook", "stop", "--agent", "c"), b"{not json"),
                       (("hook", "teleport", "--agent", "c"), b"{}"),
                       (("hook", "stop", "--agent", "ghost"), b"{}")]:
        r = cli(*args, input=data)
        assert r.returncode != 0
        assert r.stderr.decode().startswith("podium: error:") and b"Traceback" not in r.stderr
    assert podium.store.last_event_id() == before
    assert podium.agent("c").state.value == "idle"


def test_hooks_install_merges_settings(cli, tmp_path, store_url):
    settings = tmp_path / "proj" / ".claude" / "settings.local.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({
        "permissions": {"allow": ["Bash(ls)"]},
        "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}]},
    }))
    for _ in range(2):  # idempotent
        r = cli("hooks", "install", "--dir", str(tmp_path / "proj"))
        assert r.returncode == 0, r.stderr
    data = json.loads(settings.read_text())
    assert data["permissions"] == {"allow": ["Bash(ls)"]}
    for event, (name, _) in HOOKS.items():
        cmds = [h["command"] for e in data["hooks"][event] for h in e["hooks"]]
        ours = [c for c in cmds if " hook " in c]
        assert len(ours) == 1 and ours[0].endswith(f"hook {name}") and store_url in ours[0]
    assert "notify-send done" in [h["command"] for e in data["hooks"]["Stop"] for h in e["hooks"]]


def test_installed_hook_command_runs(tmp_path, podium, store_url):
    """The exact command written into the settings works when a shell runs it."""
    import subprocess

    podium.store.register_agent("c2", [], "interactive:claude", "h", 1, 30, {})
    data = install(tmp_path / "s.json", store_url)
    cmd = data["hooks"]["Notification"][0]["hooks"][0]["command"]
    r = subprocess.run(["sh", "-c", cmd], input=b'{"message": "waiting"}', capture_output=True,
                       env={"PODIUM_AGENT_ID": "c2", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert podium.agent("c2").state.value == "waiting_input"
    assert podium.agent("c2").note == "hook:notification: waiting"
