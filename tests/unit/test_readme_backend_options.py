"""The README's "Backend options" section is what the backends declare: it is generated
(``podium backends --markdown``), and this test keeps it true. After changing an option:

    .venv/bin/podium backends --markdown   # and paste it over the section's generated part
"""

from __future__ import annotations

from pathlib import Path

from podium.agents.backends import MARKDOWN_NOTE, available, load, options_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_section() -> str:
    """The generated part of the section: from its note to the next heading."""
    text = README.read_text(encoding="utf-8")
    assert "\n## Backend options\n" in text, "README.md has no 'Backend options' section"
    section = text.split("\n## Backend options\n", 1)[1].split("\n## ", 1)[0]
    assert MARKDOWN_NOTE in section, "the section lost its generated part"
    return section[section.index(MARKDOWN_NOTE):].strip() + "\n"


def test_the_readme_lists_every_option_as_declared():
    assert readme_section() == options_markdown(), (
        "README.md's Backend options are out of date: paste `podium backends --markdown` "
        "over them")


def test_every_builtin_backend_and_option_is_in_it():
    generated = options_markdown()
    for name in available():
        cls = load(name)
        if not cls.__module__.startswith("podium."):
            continue
        assert f"**`{name}`**" in generated
        for option in cls.options:
            assert f"| `{option.name}` |" in generated.split(f"**`{name}`**", 1)[1]
