"""The web face: a dashboard in the browser, live from the event log (``podium web``).

A Starlette app over the same service as every other face, with no logic of its own:
``app`` builds it (``create_app``), ``security`` guards it (token cookie, Host, Origin, CSRF),
``api`` and ``control`` are its JSON routes (``jsonio`` their input and output, ``payloads``
the JSON shapes, ``openapi`` their description, ``calls`` the worker threads service calls run
on), ``stream`` the one event follower fanned out to every WebSocket, ``serve`` runs it with
uvicorn. The page itself is plain HTML, CSS and JavaScript in ``static/``, no build step.
Names are imported lazily: ``podium --help`` need not load Starlette.
"""

from __future__ import annotations

from typing import Any

_NAMES = {"create_app": "app", "serve": "serve"}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'podium.web' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"podium.web.{_NAMES[name]}"), name)
