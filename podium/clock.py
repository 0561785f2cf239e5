"""Time and identifiers: one place decides how both look."""

import secrets
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
    """A short random id such as ``t-7kq2m9x4va`` (50 random bits at length 10)."""
    n = int.from_bytes(secrets.token_bytes((5 * length + 7) // 8), "big")
    chars = []
    for _ in range(length):
        n, r = divmod(n, 32)
        chars.append(_ALPHABET[r])
    return prefix + "-" + "".join(chars)
