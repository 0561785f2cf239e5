"""HTTP transport security: a bearer token kept in the Podium home, and Origin/Host checks.

The token is generated once (``secrets.token_urlsafe``) into ``<home>/mcp-token`` with mode 0600
and read back on every start; ``podium mcp token`` prints it. Requests are checked in this order:
a ``Host`` that is not this server's (a loopback name or the bound address, with its port)
gets 421 (DNS rebinding), an ``Origin`` header that is not a loopback origin 403 (a browser
page on another site), a missing or wrong ``Authorization: Bearer`` token 401. The SDK's own
transport security then checks ``Host`` and ``Origin`` once more.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from urllib.parse import urlsplit

from podium.errors import StoreError

TOKEN_FILE = "mcp-token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def token_path(home: Path) -> Path:
    return Path(home) / TOKEN_FILE


def load_token(home: Path) -> str:
    """The HTTP bearer token, created (mode 0600) on first use."""
    path = token_path(home)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o600)  # readable by others: tighten it before using it
        token = path.read_text().strip()
    except OSError as e:
        raise StoreError(f"cannot read or create the MCP token {path}: {e.strerror}") from None
    if not token:
        raise StoreError(f"the MCP token file {path} is empty; delete it to make a new token")
    return token


def is_loopback_origin(origin: str) -> bool:
    """``http(s)://localhost``, ``127.0.0.1`` or ``[::1]``, with any port; nothing else."""
    try:
        parts = urlsplit(origin)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and host in LOOPBACK_NAMES
            and not parts.path.strip("/"))


def allowed_hosts(bind_host: str, port: int) -> list[str] | None:
    """``Host`` header values this server answers: a loopback name or the bound host, with the
    server's port (without it only on port 80). None when bound to every interface (any Host
    then; the token and Origin checks remain)."""
    if bind_host in ("0.0.0.0", "::", ""):
        return None
    out: list[str] = []
    for n in sorted({*LOOPBACK_NAMES, bind_host}):
        h = f"[{n}]" if ":" in n else n
        out += [f"{h}:{port}"] + ([h] if port == 80 else [])
    return out


ALLOWED_ORIGINS = [f"{scheme}://{h}{port}" for scheme in ("http", "https")
                   for h in ("127.0.0.1", "localhost", "[::1]") for port in ("", ":*")]


class Guard:
    """ASGI middleware in front of the MCP app: Host (421), Origin (403), then bearer token
    (401), each refused with a JSON ``{"error": ...}``. ``hosts``: ``allowed_hosts``."""

    def __init__(self, app, token: str, hosts: list[str] | None):
        self.app = app
        self._token = token.encode()
        self._hosts = None if hosts is None else {h.lower() for h in hosts}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self._hosts is not None and host.lower() not in self._hosts:
            await _deny(send, 421, f"Host {host!r} is not this server's (DNS rebinding?)")
            return
        origin = headers.get("origin")
        if origin is not None and not is_loopback_origin(origin):
            await _deny(send, 403, f"origin {origin!r} is not allowed (only loopback origins are)")
            return
        scheme, _, cred = headers.get("authorization", "").partition(" ")
        given = cred.strip().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self._token):
            await _deny(send, 401, "missing or wrong bearer token (see 'podium mcp token')",
                        [(b"www-authenticate", b'Bearer realm="podium"')])
            return
        await self.app(scope, receive, send)


async def _deny(send, status: int, message: str, extra: list | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
