"""One-line views show the store's text with its control characters as escapes
(``podium.render.visible``), so that a prompt or a name cannot drive the terminal (the CLI's
tables, event lines and status use them: tests/integration/test_cli.py runs them)."""

from __future__ import annotations

from podium import render
from podium.models import Event

NASTY = "title\x1b]0;pwned\x07 red\x1b[31m over\rwrite\ttab\x9bcsi"


def test_visible_escapes_every_control_character_but_newline():
    shown = render.visible(NASTY + "\nnext")
    assert shown == ("title\\x1b]0;pwned\\x07 red\\x1b[31m over\\x0dwrite\\x09tab\\x9bcsi"
                     "\nnext")
    assert render.visible("naïve 日本語 e\u0301 \u2028 🎻") == "naïve 日本語 e\u0301 \u2028 🎻"


def test_one_line_views_hold_no_control_character():
    views = [render.short(NASTY, 200), render.table([[NASTY, "x"]], ["A", "B"]),
             render.event_line(Event(1, 0.0, "task.cancelled", None, "t-1",
                                     {"reason": NASTY}))]
    for view in views:
        assert not any(ord(c) < 32 and c != "\n" or 0x7f <= ord(c) <= 0x9f for c in view), view
        assert "\\x1b]0;pwned\\x07" in view



def test_output_shown_as_lines_keeps_newlines_and_tabs_and_escapes_the_rest():
    # (the dashboard's output screen: CR-LF ends a line; a tab is laid out, ESC is shown)
    assert render.visible_lines(NASTY + "\r\nnext\n") == (
        "title\\x1b]0;pwned\\x07 red\\x1b[31m over\\x0dwrite\ttab\\x9bcsi\nnext\n")
