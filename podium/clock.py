"""Time and identifiers: one place decides how both look."""

import secrets
import threading
import time
from datetime import datetime, timezone

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def now() -> float:
    """Seconds since the epoch (the store keeps times as floats)."""
    return time.time()


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC with microseconds, e.g. ``2026-11-25T22:00:55.123456Z``."""
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_id(prefix: str, length: int = 10) -> str:
    """A short random id such as ``b-7kq2m9x4va`` (50 random bits at length 10)."""
    n = int.from_bytes(secrets.token_bytes((5 * length + 7) // 8), "big")
    chars = []
    for _ in range(length):
        n, r = divmod(n, 32)
        chars.append(_ALPHABET[r])
    return prefix + "-" + "".join(chars)


_sortable_lock = threading.Lock()
_sortable_last = [0, 0, ""]  # the last id's millisecond, counter and encoded millisecond
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits -> 2 characters


def _b32(n: int, length: int) -> str:
    chars = []
    for _ in range(length):
        n, r = divmod(n, 32)
        chars.append(_ALPHABET[r])
    return "".join(reversed(chars))


def sortable_id(prefix: str) -> str:
    """An id that sorts by creation time, e.g. ``t-1m8anzrqy53tem``.

    9 characters of milliseconds since the epoch (enough until the year 3084), then 5 of a
    counter that starts at a random value each millisecond and increases within it, so ids made
    by one process never repeat and ids of different processes collide with odds of 1 in 2**24
    per pair made in the same millisecond. New rows then land at the end of the indexes keyed
    by task id instead of at random pages, which keeps the writes per claim small.
    """
    ms = time.time_ns() // 1_000_000
    with _sortable_lock:
        last_ms, last_n, head = _sortable_last
        if ms <= last_ms:
            ms, n = last_ms, last_n + 1
            if n >= 1 << 25:  # a millisecond's counter ran out: borrow the next millisecond
                ms, n = ms + 1, int.from_bytes(secrets.token_bytes(3), "big")
                head = _b32(ms, 9)
        else:
            n = int.from_bytes(secrets.token_bytes(3), "big")
            head = _b32(ms, 9)
        _sortable_last[:] = ms, n, head
    return f"{prefix}-{head}{_PAIRS[n >> 15]}{_PAIRS[(n >> 5) & 1023]}{_ALPHABET[n & 31]}"
