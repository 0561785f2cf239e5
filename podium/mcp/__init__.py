"""The MCP face: an AI orchestrator (Claude Code, any MCP client) drives the team through tools
that are thin wrappers over ``podium.service``.

``podium mcp serve`` (stdio, or streamable HTTP with ``--http``), ``podium mcp install`` (writes
``.mcp.json``) and ``podium mcp token`` (the HTTP bearer token) call into this package. Names are
imported lazily: only ``serve`` needs the MCP SDK, which takes a while to import.
"""

from __future__ import annotations

from typing import Any

_NAMES = {"build_server": "server", "serve": "server", "http_app": "server",
          "install": "config", "server_entry": "config", "load_token": "security"}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'podium.mcp' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"podium.mcp.{_NAMES[name]}"), name)
