"""Time and identifiers: one place decides how both look."""

import os
import secrets
import threading
import time
from datetime import UTC, datetime

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def now() -> float:
    """Seconds since the epoch (the store keeps times as floats)."""
    return time.time()


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC with microseconds, e.g. ``2026-11-25T22:00:55.123456Z``."""
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_id(prefix: str, length: int = 10) -> str:
    """A short random id such as ``b-7kq2m9x4va`` (50 random bits at length 10)."""
    n = int.from_bytes(secrets.token_bytes((5 * length + 7) // 8), "big")
    return f"{prefix}-{_b32(n, length)}"


_sortable_lock = threading.Lock()
# The last id's millisecond, counter and encoded millisecond.
_sortable_last: tuple[int, int, str] = (0, 0, "")
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits -> 2 characters


def _b32(n: int, length: int) -> str:
    chars = []
    for _ in range(length):
        n, r = divmod(n, 32)
        chars.append(_ALPHABET[r])
    return "".join(reversed(chars))


def _forget_last_id() -> None:
    # A forked child must not continue the parent's counter (both would make the same ids),
    # nor inherit the lock held by a thread that does not exist in it.
    global _sortable_lock, _sortable_last
    _sortable_lock = threading.Lock()
    _sortable_last = (0, 0, "")


os.register_at_fork(after_in_child=_forget_last_id)


def sortable_id(prefix: str) -> str:
    """An id that sorts by creation time, e.g. ``t-1m8anzrqy53tem``.

    9 characters of milliseconds since the epoch (enough until the year 3084), then 5 of a
    counter that starts at a random value (24 bits) each millisecond and increases within it:
    ids made by one process never repeat; two processes making a and b ids in the same
    millisecond collide with odds of about (a + b) / 2**24, and a collision fails the add (the
    id is unique in the store), it never mixes tasks up. New rows land at the end of the indexes
    keyed by task id instead of on random pages, which keeps the writes per claim small.
    """
    global _sortable_last
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
        _sortable_last = (ms, n, head)
    return f"{prefix}-{head}{_PAIRS[n >> 15]}{_PAIRS[(n >> 5) & 1023]}{_ALPHABET[n & 31]}"
