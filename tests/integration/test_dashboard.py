"""The Textual dashboard through its pilot: a real store, real events, real worker processes."""

from __future__ import annotations

import asyncio
import time

from textual.widgets import DataTable, RichLog, Static

from podium.models import Outcome, TaskState
from podium.store import Finish
from podium.tui.app import Dashboard
from podium.tui.forms import Confirm, MessageForm, TaskForm
from podium.tui.output import OutputScreen

MARKUP = "echo '[bold]x[/] [red]y [/]'"


async def settle(pilot, app, pred, timeout=10.0, what="dashboard did not update in time"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(what)
        await pilot.pause(0.05)


def cell(table: DataTable, row: str, col: str) -> str:
    """A cell's text as shown (cells are rich Text)."""
    return str(table.get_cell(row, col))


def shown(widget) -> str:
    """The widget's lines as they are drawn now (borders aside)."""
    return "\n".join(widget.render_line(y).text for y in range(widget.size.height))


def row_order(table: DataTable) -> list[str]:
    return [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(table.row_count)]


async def type_text(pilot, text: str) -> None:
    await pilot.press(*["space" if ch == " " else ch for ch in text])


async def fill(pilot, app, values: dict[str, str]) -> None:
    """Type each value into its field of the open form (empty ones are left as they are)."""
    for key, value in values.items():
        app.screen.query_one(f"#f-{key}").focus()
        await pilot.pause()
        await type_text(pilot, value)


def test_dashboard_shows_reacts_and_adds(podium):
    store = podium.store
    for name in ("coder-10", "coder-1", "coder-2"):
        store.register_agent(name, ["coder"], "echo", "host", 1, 30, {})
    first = podium.add_task("first task")
    store.add_event("before.open", None, None)  # history the Events panel shows on opening

    async def scenario():
        app = Dashboard(podium)
        async with app.run_test(size=(180, 50)) as pilot:
            agents = app.query_one("#agents", DataTable)
            tasks = app.query_one("#tasks", DataTable)
            events = app.query_one("#events", RichLog)
            assert (agents.border_title, tasks.border_title, events.border_title) == \
                ("Agents", "Queue", "Events")
            assert row_order(agents) == ["coder-1", "coder-2", "coder-10"]  # by name
            assert first.id in tasks.rows
            assert cell(tasks, first.id, "state") == "queued"
            assert tasks.get_cell(first.id, "state").style == "cyan"  # states coloured
            # the last events are there on opening, not an empty box
            await settle(pilot, app, lambda: "task.queued" in shown(events)
                         and "before.open" in shown(events))

            # events from another writer update just the rows they name
            claimed = store.claim("coder-1", ["coder"], 30)
            assert claimed.id == first.id
            await settle(pilot, app, lambda: cell(tasks, first.id, "state") == "running")
            assert cell(agents, "coder-1", "state") == "busy"
            # the full task id shows in the agent's task column
            assert cell(agents, "coder-1", "task") == first.id
            await settle(pilot, app, lambda: first.id in shown(agents))
            store.finish("coder-1", Finish(claimed.id, claimed.attempts,
                                           Outcome(TaskState.COMPLETED, b"the output")))
            await settle(pilot, app, lambda: cell(tasks, first.id, "state") == "completed")
            second = podium.add_task("from outside")
            await settle(pilot, app, lambda: second.id in tasks.rows)

            # 'a' opens the form; Enter submits; the task it creates is real; markup shows as
            # typed, in the queue and in the events
            await pilot.press("a")
            await settle(pilot, app, lambda: isinstance(app.screen, TaskForm))
            await fill(pilot, app, {"prompt": MARKUP, "agent": "coder-1"})
            await pilot.press("enter")
            await settle(pilot, app, lambda: any(t.prompt == MARKUP for t in podium.tasks()))
            added = [t for t in podium.tasks() if t.prompt == MARKUP][0]
            assert added.target_agent == "coder-1"
            assert not isinstance(app.screen, TaskForm)
            await settle(pilot, app, lambda: added.id in tasks.rows)
            assert cell(tasks, added.id, "prompt") == MARKUP
            await settle(pilot, app, lambda: MARKUP in shown(tasks))

            # 'c' asks, then cancels the selected task
            tasks.focus()
            tasks.move_cursor(row=tasks.get_row_index(second.id))
            await pilot.press("c")
            await settle(pilot, app, lambda: isinstance(app.screen, Confirm))
            await pilot.press("y")
            await settle(pilot, app, lambda: podium.task(second.id).state.value == "cancelled")
            await settle(pilot, app, lambda: cell(tasks, second.id, "state") == "cancelled")

            # 'o' shows the selected task's output
            tasks.move_cursor(row=tasks.get_row_index(first.id))
            await pilot.press("o")
            await settle(pilot, app, lambda: isinstance(app.screen, OutputScreen))
            assert app.screen.body == "the output" and not app.screen.following
            await pilot.press("escape")

            # 's' sends a message to the selected agent
            agents.focus()
            agents.move_cursor(row=agents.get_row_index("coder-1"))
            await pilot.press("s")
            await settle(pilot, app, lambda: isinstance(app.screen, MessageForm))
            await type_text(pilot, "hi")
            await pilot.press("enter")
            await settle(pilot, app, lambda: [m.body for m in podium.inbox("coder-1")] == ["hi"])

            # the status line: one line however narrow the terminal
            await pilot.resize_terminal(60, 40)
            await settle(pilot, app, lambda: app.query_one("#status").size.width == 60)
            await pilot.pause(1.2)
            status = app.query_one("#status", Static)
            assert status.size.height == 1
            text = str(status.content)
            assert "\n" not in text and len(text) <= 60 and text.endswith("…"), text

    asyncio.run(scenario())


def test_active_work_first_and_the_form_fields(podium):
    store = podium.store
    store.register_agent("w-1", ["coder"], "echo", "host", 1, 30, {})
    done = podium.add_task("old, done")
    claimed = store.claim("w-1", ["coder"], 30)
    store.finish("w-1", Finish(claimed.id, claimed.attempts,
                               Outcome(TaskState.COMPLETED, b"")))
    failed = podium.add_task("old, cancelled")
    podium.cancel(failed.id)
    running = podium.add_task("runs now")
    store.claim("w-1", ["coder"], 30)
    low = podium.add_task("low one", priority="low")
    high = podium.add_task("high one", priority="high")
    blocked = podium.add_task("waits for low", depends_on=[low.id])

    async def scenario():
        app = Dashboard(podium)
        async with app.run_test(size=(180, 50)) as pilot:
            tasks = app.query_one("#tasks", DataTable)
            # running, then queued in the order they will be served, blocked, then history
            assert row_order(tasks) == [running.id, high.id, low.id, blocked.id,
                                        failed.id, done.id]
            # a task that finishes goes below the active ones
            tasks.move_cursor(row=tasks.get_row_index(high.id))
            podium.cancel(low.id)  # (its dependent is cancelled with it)
            await settle(pilot, app, lambda: row_order(tasks)[:2] == [running.id, high.id]
                         and set(row_order(tasks)[2:]) == {low.id, blocked.id, failed.id,
                                                             done.id})
            assert row_order(tasks)[2:4] in ([blocked.id, low.id], [low.id, blocked.id])
            assert tasks.get_row_index(high.id) == tasks.cursor_row  # the cursor stayed on it

            # the form's fields make the task they say; a refusal shows in the form
            await pilot.press("a")
            await settle(pilot, app, lambda: isinstance(app.screen, TaskForm))
            form = app.screen
            await fill(pilot, app, {"prompt": "review it", "role": "reviewer",
                                    "priority": "urgent", "depends": f"{high.id}, {running.id}",
                                    "timeout": "90"})
            await pilot.press("enter")
            await settle(pilot, app, lambda: "priority" in form.error)
            assert app.screen is form and "urgent" in form.error
            assert not [t for t in podium.tasks() if t.prompt == "review it"]
            form.query_one("#f-priority").value = "high"
            form.query_one("#f-timeout").focus()
            await pilot.press("enter")
            await settle(pilot, app, lambda: app.screen is not form)
            made = [t for t in podium.tasks() if t.prompt == "review it"]
            assert len(made) == 1
            t = made[0]
            assert (t.target_role, t.target_agent, t.priority.name, t.timeout_s) \
                == ("reviewer", None, "HIGH", 90.0)
            assert sorted(t.depends_on) == sorted([high.id, running.id])
            assert t.state is TaskState.BLOCKED
            await settle(pilot, app, lambda: t.id in tasks.rows)
            assert row_order(tasks).index(t.id) < row_order(tasks).index(done.id)

            # cancel is offered only for tasks that can be cancelled, and asks first
            tasks.focus()
            tasks.move_cursor(row=tasks.get_row_index(done.id))
            await pilot.pause()
            assert app.check_action("cancel_task", ()) is None
            await pilot.press("c")
            await pilot.pause(0.2)
            assert not isinstance(app.screen, Confirm)
            tasks.move_cursor(row=tasks.get_row_index(high.id))
            await pilot.pause()
            assert app.check_action("cancel_task", ()) is True
            await pilot.press("c")
            await settle(pilot, app, lambda: isinstance(app.screen, Confirm))
            assert high.id in app.screen.question and "high one" in app.screen.question
            await pilot.press("n")
            await settle(pilot, app, lambda: not isinstance(app.screen, Confirm))
            await pilot.pause(0.3)
            assert podium.task(high.id).state is TaskState.QUEUED

    asyncio.run(scenario())


def test_heartbeat_ages_idle_after_cancel_and_live_output(podium, workers):
    workers.start("w-1", backend="shell", heartbeat=0.5)

    async def scenario():
        app = Dashboard(podium, refresh_s=1.0)
        async with app.run_test(size=(180, 50)) as pilot:
            agents = app.query_one("#agents", DataTable)
            tasks = app.query_one("#tasks", DataTable)
            events_before = app.events_applied
            # no event comes while the agent just heartbeats: its age is still the store's
            await pilot.pause(3.5)
            assert app.events_applied == events_before
            assert time.time() - podium.agent("w-1").last_heartbeat < 1.5
            assert cell(agents, "w-1", "heartbeat") in ("0s", "1s", "2s")

            # a running task cancelled from the dashboard: the agent's row goes back to idle
            long = podium.add_task("sleep 30", agent="w-1")
            await settle(pilot, app, lambda: cell(agents, "w-1", "state") == "busy")
            assert cell(agents, "w-1", "task") == long.id
            tasks.focus()
            tasks.move_cursor(row=tasks.get_row_index(long.id))
            await pilot.press("c")
            await settle(pilot, app, lambda: isinstance(app.screen, Confirm))
            await pilot.press("y")
            await settle(pilot, app, lambda: cell(tasks, long.id, "state") == "cancelled")
            await settle(pilot, app, lambda: cell(agents, "w-1", "state") == "idle"
                         and cell(agents, "w-1", "task") == "-", timeout=10)
            assert podium.agent("w-1").state.value == "idle"

            # 'o' follows a running task's output live, and stops when it ends
            live = podium.add_task(f"echo first; echo {MARKUP[5:]}; printf 'esc\\033[31mred\\n'; "
                                   "sleep 1.5; echo second", agent="w-1")
            await settle(pilot, app, lambda: live.id in tasks.rows
                         and cell(tasks, live.id, "state") == "running")
            tasks.move_cursor(row=tasks.get_row_index(live.id))
            await pilot.press("o")
            await settle(pilot, app, lambda: isinstance(app.screen, OutputScreen))
            screen = app.screen
            await settle(pilot, app, lambda: "first" in screen.body)
            assert screen.following and "second" not in screen.body
            assert podium.task(live.id).state is TaskState.RUNNING
            await settle(pilot, app, lambda: "second" in screen.body and not screen.following)
            assert screen.body == "first\n[bold]x[/] [red]y [/]\nesc\x1b[31mred\nsecond\n"
            await settle(pilot, app, lambda: "[bold]x[/] [red]y [/]" in shown(
                screen.query_one("#output")))
            # (the program's ESC is shown, not sent to the terminal the dashboard is in)
            drawn = shown(screen.query_one("#output"))
            assert "esc\\x1b[31mred" in drawn and "\x1b" not in drawn
            assert "completed" in str(screen.query_one("#output-title").content)
            await pilot.press("escape")
            events = app.query_one("#events", RichLog)  # the output's markup, verbatim there too
            await settle(pilot, app, lambda: "[bold]x[/] [red]y [/]" in shown(events))

    asyncio.run(scenario())
