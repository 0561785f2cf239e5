"""The dashboard's ASGI app: the page (``static/``), the JSON API (``podium.web.api``), the live
event stream (``podium.web.stream``), all behind ``podium.web.security.WebGuard``.

``create_app`` builds it over one service; the app's lifespan starts and stops the one event
follower. URLs: ``/`` the page (``static/index.html``), ``/static/...`` its files (also
``/app.js`` and the like at the top level), ``/api/...`` the API, ``/api/events/ws`` the
WebSocket. Anything unknown under ``/api`` is a JSON 404; a known path asked with a method it
does not take, a JSON 405 saying in ``Allow`` which it takes (a plain GET of the WebSocket's
path: 426).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from podium.service import Podium
from podium.web.api import Api
from podium.web.calls import ServiceCalls
from podium.web.jsonio import error_response
from podium.web.security import WebGuard
from podium.web.stream import QUEUE_BATCHES, WINDOW, EventHub

STATIC = Path(__file__).resolve().parent / "static"
#: What ``/`` shows when the page's files are missing (a checkout without them).
NO_PAGE = ("<!doctype html><meta charset=utf-8><title>Podium</title>"
           "<p>The dashboard's page (podium/web/static/index.html) is missing from this "
           "installation; the API is at <a href=/api/openapi.json>/api/openapi.json</a>.")


class PageFiles(StaticFiles):
    """The page's files, revalidated on every load (a new version shows at once)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["cache-control"] = "no-cache"
        return response


async def _index(request: Request) -> Response:
    page = STATIC / "index.html"
    if not page.is_file():
        return HTMLResponse(NO_PAGE, headers={"cache-control": "no-cache"})
    return FileResponse(page, media_type="text/html; charset=utf-8",
                        headers={"cache-control": "no-cache"})


async def _top_level_file(request: Request) -> Response:
    """A file of the page asked for at the top level (``/app.js``), as under ``/static``."""
    name = request.path_params["name"]
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        return PlainTextResponse("Not Found", 404)
    return FileResponse(path, headers={"cache-control": "no-cache"})


#: The WebSocket's path (its route answers WebSockets only).
STREAM_PATH = "/api/events/ws"
#: What ``/api/...`` answers for a path no route has: every method.
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


def _api_fallback(routes: list[BaseRoute]):
    """What ``/api/...`` answers when no route took the request: 405 with ``Allow`` for a
    path that ``routes`` serve with other methods, else 404."""
    async def answer(request: Request) -> Response:
        path, method = request.url.path, request.method
        allowed: set[str] = set()
        for route in routes:
            if isinstance(route, Route) and route.methods and \
                    route.matches(request.scope)[0] is not Match.NONE:
                allowed |= route.methods
        if path == STREAM_PATH:
            if method in ("GET", "HEAD"):
                return error_response(426, f"{path} is a WebSocket: connect with "
                                           "'Upgrade: websocket'")
            allowed = {"GET"}
        if allowed:
            response = error_response(405, f"Method Not Allowed: {method} {path}")
            response.headers["allow"] = ", ".join(sorted(allowed))
            return response
        return error_response(404, f"no such route: {method} {path}")
    return answer


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    # (its headers kept: a 405 says which methods the route takes, in Allow)
    if request.url.path.startswith("/api/"):
        response = error_response(exc.status_code, f"{exc.detail}: {request.method} "
                                                   f"{request.url.path}")
        response.headers.update(exc.headers or {})
        return response
    return PlainTextResponse(str(exc.detail), exc.status_code, headers=exc.headers)


def create_app(podium: Podium, *, token: str, bind_host: str, port: int,
               stream_window: int = WINDOW, stream_queue: int = QUEUE_BATCHES) -> Starlette:
    """The dashboard over ``podium``, for a server bound to ``bind_host``:``port`` (the Host
    and Origin checks need both), accepting ``token`` (see ``podium.web.security``); the live
    stream keeps ``stream_window`` events in memory and ``stream_queue`` batches per socket
    (see ``podium.web.stream``)."""
    calls = ServiceCalls()
    hub = EventHub(podium, calls, stream_window, stream_queue)
    api = Api(podium, calls, token)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        hub.start()
        try:
            yield
        finally:
            hub.stop()

    api_routes = api.routes()
    routes = [
        *api_routes,
        WebSocketRoute(STREAM_PATH, hub.endpoint),
        Route("/api/{rest:path}", _api_fallback(api_routes), methods=ANY_METHOD),
        Route("/", _index, methods=["GET", "HEAD"]),
        Mount("/static", PageFiles(directory=STATIC, check_dir=False)),
        Route("/{name}", _top_level_file, methods=["GET", "HEAD"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(WebGuard, token=token, bind_host=bind_host,
                                           port=port)],
                    exception_handlers={HTTPException: _http_error})
    app.state.hub = hub
    return app
