"""Who may use the dashboard: the token, its cookie, and the Host, Origin and CSRF checks.

The token is the MCP server's (``podium.mcp.security.load_token``: ``<home>/mcp-token``, mode
0600). ``GET /?token=T`` with the right T sets it as the cookie ``podium_token`` (HttpOnly,
SameSite=Strict, Path=/) and redirects (303) to ``/``, so the token leaves the address bar; a
request is then authenticated by that cookie or by ``Authorization: Bearer T`` (a WebSocket
also by ``?token=T``). ``WebGuard`` checks every request, HTTP and WebSocket, in this order:

1. ``Host`` is not this server's (a loopback name or the bound address, with the port): 421,
   which defeats DNS rebinding (any well-formed Host when bound to every interface, where only
   the token protects it);
2. an ``Origin`` that is not this server's own origin (a loopback name or the bound address,
   with the port): 403 -- another site's page, or another local server's;
3. no or a wrong token: 401 (a browser navigation gets a small page saying to open the link
   ``podium web`` printed);
4. a state-changing request (POST, PUT, PATCH, DELETE) without ``Content-Type:
   application/json`` and ``X-Podium-CSRF: <csrf_token(token)>``: 403 (a form on another site
   can send neither).

A refused WebSocket is answered with that HTTP status before it is accepted. Every HTTP response
carries headers that keep the page out of frames and its address out of referrers, and a
Content-Security-Policy that lets the page run only its own scripts.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from podium.errors import InvalidInput
from podium.mcp.security import LOOPBACK_NAMES, load_token

__all__ = ["COOKIE", "CSRF_HEADER", "WebGuard", "check_bind", "csrf_token", "is_loopback_host",
           "load_token"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "podium_token"
CSRF_HEADER = "x-podium-csrf"
#: Methods that change state: they need the CSRF header and a JSON body.
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Addresses that mean every interface.
WILDCARDS = frozenset({"0.0.0.0", "::", ""})
#: Sent with every HTTP response (the Content-Security-Policy is added per request).
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"cross-origin-resource-policy", b"same-origin")]

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Podium: sign in</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 4em auto">
<h1>Podium</h1>
<p>This dashboard needs its token. Open the link that <code>podium web</code> printed
(<code>http://{host}/?token=...</code>) in this browser: it signs you in and takes the token
out of the address.</p>
</body></html>
"""


#: What a ``Host`` header may hold: a name or an address, and a port.
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def csrf_token(token: str) -> str:
    """The CSRF header's value for ``token``: HMAC-SHA256(token, "csrf"), hex."""
    return hmac.new(token.encode(), b"csrf", hashlib.sha256).hexdigest()


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, allow_remote: bool, what: str = "the dashboard") -> None:
    """Refuse a non-loopback address unless ``allow_remote`` (one line saying why); ``what``
    would listen there (the dashboard, the MCP server)."""
    if not is_loopback_host(host) and not allow_remote:
        raise InvalidInput(f"--host {host} is not a loopback address: {what} would be reachable "
                           "from the network; add --allow-remote to do that anyway")


def _same(given: str, expected: bytes) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected)


def _split_host(value: str) -> tuple[str, int | None] | None:
    """A ``Host`` header's name and port (None: no port); None when it is malformed."""
    if not _HOST.fullmatch(value):
        return None
    try:
        parts = urlsplit(f"//{value}")
        name, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not name or parts.path or parts.query or parts.username is not None:
        return None
    return name, port


class WebGuard:
    """ASGI middleware in front of the dashboard: Host (421), Origin (403), token (401), CSRF
    (403), in that order (see the module's docstring); the ``?token=`` link's cookie."""

    def __init__(self, app: ASGIApp, token: str, bind_host: str, port: int):
        self.app = app
        self._token = token.encode()
        self._csrf = csrf_token(token).encode()
        self.port = port
        bound = bind_host.strip("[]")
        self.any_host = bound in WILDCARDS
        self.names = {*LOOPBACK_NAMES, bound} - {""}

    # -- the checks ---------------------------------------------------------------------
    def host_ok(self, host: str | None) -> bool:
        found = _split_host(host or "")
        if found is None:
            return False
        if self.any_host:
            return True
        name, port = found
        return name in self.names and (port == self.port or port is None and self.port == 80)

    def origin_ok(self, origin: str, host: str | None) -> bool:
        """This server's own origin: http, one of its names, its port; bound to every
        interface, also the origin of the ``Host`` the request came to."""
        try:
            parts = urlsplit(origin)
            name, port = parts.hostname, parts.port or (80 if parts.scheme == "http" else None)
        except ValueError:
            return False
        if parts.scheme != "http" or parts.path or parts.query or parts.username is not None:
            return False
        if name in self.names and port == self.port:
            return True
        return self.any_host and host is not None and origin == f"http://{host}"

    def authenticated(self, headers: dict[str, str], query: dict[str, list[str]],
                      websocket: bool) -> bool:
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and _same(value, self._token):
                return True
        scheme, _, cred = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _same(cred.strip(), self._token):
            return True
        return websocket and any(_same(t, self._token) for t in query.get("token", []))

    # -- ASGI ---------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        host = headers.get("host")
        websocket = kind == "websocket"
        reply = _Reply(scope, receive, send, host)
        if not self.host_ok(host):
            await reply.error(421, f"this server does not answer for host {host!r} (open the "
                                   "link 'podium web' printed)")
            return
        origin = headers.get("origin")
        if origin is not None and not self.origin_ok(origin, host):
            await reply.error(403, f"origin {origin!r} is not this server's")
            return
        method = scope.get("method", "GET")
        if not websocket and scope["path"] == "/" and "token" in query:
            await self._sign_in(reply, query["token"], method)
            return
        if not self.authenticated(headers, query, websocket):
            if not websocket and method == "GET" and "text/html" in headers.get("accept", "") \
                    and not scope["path"].startswith("/api/"):
                await reply.page(401, LOGIN_PAGE.format(host=html.escape(host or "")))
                return
            await reply.error(401, "missing or wrong token: open the link 'podium web' printed, "
                                   "or send 'Authorization: Bearer TOKEN' ('podium mcp token')",
                              [(b"www-authenticate", b'Bearer realm="podium"')])
            return
        if not websocket and method in STATE_CHANGING:
            media = headers.get("content-type", "").partition(";")[0].strip().lower()
            if media != "application/json":
                await reply.error(403, f"a {method} needs Content-Type: application/json")
                return
            if not _same(headers.get(CSRF_HEADER, ""), self._csrf):
                await reply.error(403, "missing or wrong X-Podium-CSRF header (GET /api/session "
                                       "gives it)")
                return
        await self.app(scope, receive, reply.send if not websocket else send)

    async def _sign_in(self, reply: _Reply, given: list[str], method: str) -> None:
        if method not in ("GET", "HEAD") or len(given) != 1 or not _same(given[0], self._token):
            await reply.error(401, "wrong token in the link: open the one 'podium web' printed "
                                   "('podium mcp token' prints the token)")
            return
        cookie = f"{COOKIE}={self._token.decode()}; HttpOnly; SameSite=Strict; Path=/"
        await reply.respond(303, b"", b"text/plain", [
            (b"location", b"/"), (b"set-cookie", cookie.encode()),
            (b"cache-control", b"no-store")])


def content_security_policy(host: str | None) -> bytes:
    """Only this server's own scripts, styles, images and connections (the WebSocket's too)."""
    connect = "'self'" + (f" ws://{host}" if host else "")
    return ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            f"img-src 'self' data: blob:; connect-src {connect}; frame-ancestors 'none'; "
            "base-uri 'none'; form-action 'self'; object-src 'none'").encode("latin-1")


class _Reply:
    """Answers for one request: the guard's refusals, and its security headers added to what
    the app sends."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, host: str | None):
        self.scope, self.receive, self._send = scope, receive, send
        # (a Host refused as malformed is not echoed into the policy)
        safe = host is not None and _split_host(host) is not None
        self.extra = [*SECURITY_HEADERS,
                      (b"content-security-policy", content_security_policy(
                          host if safe else None))]

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *self.extra]}
        await self._send(message)

    async def error(self, status: int, text: str, extra: list | None = None) -> None:
        body = json.dumps({"error": text}, ensure_ascii=False).encode()
        await self.respond(status, body, b"application/json", extra or [])

    async def page(self, status: int, text: str) -> None:
        await self.respond(status, text.encode(), b"text/html; charset=utf-8", [])

    async def respond(self, status: int, body: bytes, media: bytes,
                      extra: list[tuple[bytes, bytes]]) -> None:
        headers = [(b"content-type", media), (b"content-length", str(len(body)).encode()),
                   *extra]
        if self.scope["type"] == "websocket":
            await self._refuse_websocket(status, body, headers)
            return
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def _refuse_websocket(self, status: int, body: bytes,
                                headers: list[tuple[bytes, bytes]]) -> None:
        """Refuse a WebSocket before accepting it: with this HTTP status where the server can
        send one (the ASGI denial-response extension), else a plain close (a 403)."""
        message = await self.receive()
        if message["type"] != "websocket.connect":
            return
        if "websocket.http.response" in self.scope.get("extensions", {}):
            await self._send({"type": "websocket.http.response.start", "status": status,
                              "headers": headers})
            await self._send({"type": "websocket.http.response.body", "body": body})
        else:
            await self._send({"type": "websocket.close", "code": 1008})
