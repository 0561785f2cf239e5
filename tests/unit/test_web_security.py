"""The dashboard guard's Host and Origin rules, for each kind of bound address (the requests
themselves are tested against a real server in tests/integration/test_web_api.py)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from podium.errors import InvalidInput
from podium.web.security import WebGuard, csrf_token, is_loopback_host
from podium.web.serve import check_bind, link


async def _app(scope, receive, send) -> None:  # (never reached by these checks)
    raise AssertionError


def guard(host: str) -> WebGuard:
    return WebGuard(_app, "tok", host, 8766)


def test_csrf_is_the_hmac_of_the_token():
    assert csrf_token("tok") == hmac.new(b"tok", b"csrf", hashlib.sha256).hexdigest()
    assert csrf_token("tok") != csrf_token("other")


@pytest.mark.parametrize("host, ok", [
    ("127.0.0.1:8766", True), ("localhost:8766", True), ("[::1]:8766", True),
    ("127.0.0.1", False), ("127.0.0.1:8767", False), ("evil.example:8766", False),
    ("127.0.0.1.evil.example:8766", False), ("user@127.0.0.1:8766", False),
    ("127.0.0.1:8766/x", False), ("", False), (None, False), ("a b:8766", False),
])
def test_host_on_loopback(host, ok):
    assert guard("127.0.0.1").host_ok(host) is ok


def test_host_bound_elsewhere_and_everywhere():
    assert guard("192.0.2.7").host_ok("192.0.2.7:8766")
    assert guard("192.0.2.7").host_ok("localhost:8766")
    assert not guard("192.0.2.7").host_ok("192.0.2.8:8766")
    everywhere = guard("0.0.0.0")
    assert everywhere.host_ok("anything.example:1234")
    assert not everywhere.host_ok("a;b")  # (malformed: never echoed anywhere)


@pytest.mark.parametrize("origin, ok", [
    ("http://127.0.0.1:8766", True), ("http://localhost:8766", True),
    ("http://[::1]:8766", True), ("http://127.0.0.1:8767", False),
    ("https://127.0.0.1:8766", False), ("http://evil.example:8766", False),
    ("http://127.0.0.1", False), ("null", False), ("file://", False),
    ("http://127.0.0.1:8766/path", False), ("http://127.0.0.1:99999", False),
])
def test_origin_is_this_servers_own(origin, ok):
    assert guard("127.0.0.1").origin_ok(origin, "127.0.0.1:8766") is ok


def test_origin_bound_everywhere_is_the_hosts_own():
    everywhere = guard("0.0.0.0")
    assert everywhere.origin_ok("http://192.0.2.7:8766", "192.0.2.7:8766")
    assert not everywhere.origin_ok("http://evil.example:8766", "192.0.2.7:8766")


def test_binding_needs_the_flag_beyond_loopback():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert is_loopback_host(host)
        check_bind(host, allow_remote=False)
    for host in ("0.0.0.0", "::", "192.0.2.7", "example.org"):
        assert not is_loopback_host(host)
        with pytest.raises(InvalidInput, match="--allow-remote"):
            check_bind(host, allow_remote=False)
        check_bind(host, allow_remote=True)


def test_the_link():
    assert link("127.0.0.1", 8766, "T") == "http://127.0.0.1:8766/?token=T"
    assert link("0.0.0.0", 8766, "T") == "http://127.0.0.1:8766/?token=T"
    assert link("::1", 8766, "T") == "http://[::1]:8766/?token=T"
