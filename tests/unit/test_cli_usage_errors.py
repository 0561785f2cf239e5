"""click's usage errors become the README's one error line (``podium.cli.usage_message``):
click's own message (which option, which choices), on one line, with its control characters
as escapes, the variable that can stand for a missing option, and where the help is.
tests/integration/test_cli_output.py runs them through the real command."""

from __future__ import annotations

import click
import pytest

from podium.cli import cli, usage_message


def _error(*args: str) -> click.UsageError:
    """The usage error the real command group raises for ``podium ARGS``."""
    with pytest.raises(click.UsageError) as raised:
        cli.main(args=list(args), prog_name="podium", standalone_mode=False)
    return raised.value


def test_bad_choice_names_the_option_its_choices_and_the_help():
    line = usage_message(_error("task", "add", "x", "--priority", "urgent"))
    assert line == ("Invalid value for '--priority' / '-p': 'urgent' is not one of 'high', "
                    "'normal', 'low' (see 'podium task add --help')")


def test_missing_choice_with_its_choices_on_several_lines_is_one_line():
    @click.command()
    @click.option("--kind", type=click.Choice(["note", "context"]), required=True)
    def command(kind):  # pragma: no cover - never runs
        pass

    with pytest.raises(click.MissingParameter) as raised:
        command.main(args=[], prog_name="podium remember", standalone_mode=False)
    assert "\n" in raised.value.format_message()  # (click's: "Choose from:\n\tnote,\n\t...")
    line = usage_message(raised.value)
    assert "\n" not in line and "\t" not in line
    assert line.startswith("Missing option '--kind'") and "note" in line and "context" in line
    assert line.endswith("(see 'podium remember --help')")


def test_missing_option_names_the_variable_that_can_give_it():
    line = usage_message(_error("hook", "stop"))
    assert "Missing option '--agent'" in line and "$PODIUM_AGENT_ID" in line


def test_an_unknown_option_holding_control_characters_cannot_drive_the_terminal():
    line = usage_message(_error("task", "list", "--\x1b[31mred"))
    assert "\x1b" not in line and "\\x1b[31mred" in line
    assert line.startswith("No such option")


def test_unknown_command_points_at_the_top_help():
    assert usage_message(_error("nosuchcommand")) == \
        "No such command 'nosuchcommand' (see 'podium --help')"
