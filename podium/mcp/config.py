"""``podium mcp install``: register ``podium mcp serve`` in a project's ``.mcp.json``.

Claude Code reads project-scoped MCP servers from ``.mcp.json`` at the project root. The entry
runs this Python (absolute path) as ``python -m podium --store <absolute store URL> mcp serve``,
so it works from any directory and without an activated venv. Other servers in the file are
kept; the file is replaced atomically.

``.mcp.json`` is meant to be committed with the project, so the URL written is the one the
service shares (``Podium.shareable_url``): a PostgreSQL store's password is left out unless asked
for, and the server then gets it the way any libpq client does, from ``PGPASSWORD`` in Claude
Code's environment or from ``~/.pgpass``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from podium.errors import InvalidInput, StoreError

SCOPES = ("project",)


def server_entry(store_url: str) -> dict[str, Any]:
    return {
        "type": "stdio",
        "command": os.path.abspath(sys.executable),  # the venv's python: not resolved further
        "args": ["-m", "podium", "--store", store_url, "mcp", "serve"],
        "env": {},
    }


def install(store_url: str, directory: str | os.PathLike = ".", name: str = "podium",
            scope: str = "project") -> tuple[Path, dict[str, Any]]:
    """Write or merge ``<directory>/.mcp.json`` with a server on ``store_url`` (written as it is
    given); returns the path and the entry written."""
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
    entry = server_entry(store_url)
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
    return path, entry
