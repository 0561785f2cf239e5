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


TROJAN = "if user == 'admin\u202e \u2066// check\u2069 \u2067':"


def test_bidirectional_controls_are_escaped_in_one_line_views():
    # (U+202E reverses what follows it on screen: a command could read otherwise than it runs)
    shown = render.visible(TROJAN)
    assert shown == "if user == 'admin\\u202e \\u2066// check\\u2069 \\u2067':"
    assert render.visible_lines(TROJAN + "\n") == shown + "\n"
    for view in (render.short(TROJAN, 200), render.short_name(TROJAN),
                 render.event_line(Event(1, 0.0, "task.cancelled", None, "t-1",
                                         {"reason": TROJAN}))):
        assert not any(0x202a <= ord(c) <= 0x202e or 0x2066 <= ord(c) <= 0x2069
                       for c in view), view
    # (other marks of right-to-left text are text: Arabic and Hebrew read as they should)
    assert render.visible("עברית عربي \u200f") == "עברית عربي \u200f"


def test_a_long_name_is_cut_in_its_middle_to_the_name_width():
    name = "team-" + "x" * 100 + "-17"
    cut = render.short_name(name)
    assert len(cut) == render.NAME_WIDTH and cut.startswith("team-x") and cut.endswith("x-17")
    assert "…" in cut
    assert render.short_name("agent-2") == "agent-2"
    assert render.short_name("a\x1b[31m" + "b" * 40).startswith("a\\x1b[31m")


def test_a_pruned_event_shows_its_time_as_iso():
    line = render.event_line(Event(1, 0.0, "history.pruned", None, None,
                                   {"before": 1796522939.5, "events": 6}))
    assert "before=2026-12-06T" in line and "1796522939" not in line, line
