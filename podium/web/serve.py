"""``podium web``: bind the address, print the link, serve the dashboard with uvicorn until
Ctrl-C or SIGTERM (then the connections are closed and the event follower stopped).

The socket is bound here, before the app is made, so that the app knows its real port (port 0:
any free one) for its Host and Origin checks, and the printed link has it. Binding anything but
loopback needs ``allow_remote`` and prints a warning.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import signal
import socket
import sys
import threading
import webbrowser
from collections.abc import Callable, Iterator
from typing import Any

from podium.errors import InvalidInput
from podium.service import Podium
from podium.web.security import WILDCARDS, check_bind, is_loopback_host, load_token

#: Seconds the server waits for open connections at shutdown before closing them.
GRACEFUL_S = 3.0


class _RefusalNoise(logging.Filter):
    """uvicorn logs each WebSocket that the guard refuses with an HTTP status (401, 403, 421:
    the ASGI denial response) as an error of the app; it is none."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


def _server(config: Any) -> Any:
    """A uvicorn server that ends on SIGINT or SIGTERM by returning (exit status 0, the store
    closed by the caller), where uvicorn's own raises the signal again once it has shut
    down."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handlers = {sig: signal.signal(sig, self.handle_exit)
                        for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)

    return Server(config)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only then (without
    # it, Nagle and delayed ACKs add ~40 ms to small frames).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise InvalidInput(f"cannot listen on {host} port {port}: {e.strerror or e}") from None
    return sock


def link(host: str, port: int, token: str) -> str:
    """The link that signs a browser in (loopback when bound to every interface)."""
    shown = "127.0.0.1" if host in WILDCARDS else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/?token={token}"


def serve(podium: Podium, host: str = "127.0.0.1", port: int = 8766, open_browser: bool = False,
          allow_remote: bool = False, say: Callable[[str], None] | None = None) -> None:
    """Serve the dashboard over ``podium`` until stopped; ``say`` prints a line for the user
    (the link on a line of its own)."""
    import uvicorn

    from podium.web.app import create_app

    say = say or (lambda line: print(line, flush=True))
    check_bind(host, allow_remote)
    if importlib.util.find_spec("websockets") is None and \
            importlib.util.find_spec("wsproto") is None:
        raise InvalidInput("the dashboard's live stream needs the 'websockets' package: "
                           "pip install websockets")
    token = load_token(podium.home)
    sock = listen(host, port)
    port = sock.getsockname()[1]
    app = create_app(podium, token=token, bind_host=host, port=port)
    if not is_loopback_host(host):
        print(f"podium web: warning: listening on {host}, reachable from the network (anyone "
              "who can reach it still needs the token)", file=sys.stderr, flush=True)
    url = link(host, port, token)
    say(f"podium web: {url}")
    if open_browser:
        threading.Thread(target=webbrowser.open, args=(url,), name="podium-web-open",
                         daemon=True).start()
    # No per-message compression: on loopback it saves nothing, and it would compress every
    # frame once per open socket.
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="auto",
                            ws_per_message_deflate=False, ws_ping_interval=20.0,
                            timeout_graceful_shutdown=int(GRACEFUL_S))
    logging.getLogger("uvicorn.error").addFilter(_RefusalNoise())  # (after the Config's set-up)
    _server(config).run(sockets=[sock])
