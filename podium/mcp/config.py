"""``podium mcp install``: register ``podium mcp serve`` in a project's ``.mcp.json``.

Claude Code reads project-scoped MCP servers from ``.mcp.json`` at the project root and starts
them there. The entry is meant to be committed, so it holds no path of this machine where it
can help it: the command is ``podium`` when it is on ``PATH``, else the project's own virtual
environment's ``podium`` by a path relative to the project; the store is left out when it is
the project's own (``podium`` finds ``.podium/`` from the project, as git finds ``.git``), a
path relative to the project when it lies inside it, else its URL, with a PostgreSQL password
left out unless asked for (the server then gets it as any libpq client does, from
``PGPASSWORD`` in Claude Code's environment or ``~/.pgpass``). What cannot be made portable is
said. Other servers in the file are kept; the file is replaced atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from podium.errors import InvalidInput, StoreError

SCOPES = ("project",)


def _podium_command(project: Path) -> tuple[str, list[str], str | None]:
    """The command (and first arguments) that runs this ``podium`` from ``project``, and a note
    when it holds this machine's paths."""
    if shutil.which("podium"):
        return "podium", [], None
    script = Path(sys.executable).parent / "podium"  # (the venv's own, not resolved further)
    if script.exists():
        try:
            return f"./{script.absolute().relative_to(project)}", [], None
        except ValueError:
            pass
    python = os.path.abspath(sys.executable)
    return python, ["-m", "podium"], (f"podium is not on PATH: the entry runs {python}, a path "
                                      "of this machine (put podium on PATH and run this again)")


def server_entry(project: Path, store: str | None) -> tuple[dict[str, Any], list[str]]:
    """The ``.mcp.json`` entry that serves the store named ``store`` (None: the project's own)
    from ``project``; and notes on what in it is not portable."""
    command, args, note = _podium_command(project)
    if store is not None:
        args += ["--store", store]
    entry = {"type": "stdio", "command": command, "args": [*args, "mcp", "serve"], "env": {}}
    return entry, [note] if note else []


def install(entry: dict[str, Any], directory: str | os.PathLike = ".", name: str = "podium",
            scope: str = "project") -> Path:
    """Write or merge ``entry`` (``server_entry``) into ``<directory>/.mcp.json`` as ``name``;
    returns the file's path."""
    if scope not in SCOPES:
        raise InvalidInput(f"bad scope {scope!r}: expected {', '.join(SCOPES)}")
    if not name.strip():
        raise InvalidInput("server name is empty")
    root = Path(directory).resolve()
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a directory")
    path = root / ".mcp.json"
    data: Any = {}
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8") or "{}")
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidInput(f"{path} is not valid JSON ({e}); fix or remove it first") from None
        except OSError as e:
            raise StoreError(f"cannot read {path}: {e.strerror}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path} does not hold a JSON object; fix or remove it first")
    servers = data.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise InvalidInput(f"{path}: mcpServers is not an object; fix or remove it first")
    servers[name] = entry
    text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".mcp.json.", dir=root)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e.strerror}") from None
    return path
