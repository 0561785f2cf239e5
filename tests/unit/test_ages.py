"""Ages (``--older-than``, ``PODIUM_RETENTION``): a whole number and a unit, within bounds."""

from __future__ import annotations

import pytest

from podium import limits
from podium.errors import InvalidInput


@pytest.mark.parametrize("text, seconds", [
    ("0s", 0), ("3600s", 3600), ("90m", 5400), ("12h", 43200), ("30d", 2592000),
    (" 7d ", 604800), ("36500d", limits.MAX_AGE_SECONDS), (120, 120), (0.5, 0.5),
])
def test_ages(text, seconds):
    assert limits.age(text) == seconds


@pytest.mark.parametrize("bad", ["30", "30x", "-1d", "1.5h", "d", "", "30 d", "1e3s", "١٢d",
                                 "36501d", "9" * 40 + "s", -1, float("nan"), True, None])
def test_bad_ages(bad):
    with pytest.raises(InvalidInput, match="bad --older-than"):
        limits.age(bad)


def test_retention_setting():
    assert limits.retention("30d") == (2592000.0, False)
    assert limits.retention("12h,keep-results") == (43200.0, True)
    for bad in ("30d,forever", "soon", "keep-results"):
        with pytest.raises(InvalidInput, match="PODIUM_RETENTION"):
            limits.retention(bad)
