"""The Textual dashboard through its pilot: real store, real events."""

from __future__ import annotations

import asyncio

from textual.widgets import DataTable

from podium.models import Outcome, TaskState
from podium.store import Finish
from podium.tui.app import Dashboard, TextScreen


async def settle(pilot, app, pred, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("dashboard did not update in time")
        await pilot.pause(0.05)


def test_dashboard_shows_reacts_and_adds(podium):
    store = podium.store
    store.register_agent("coder-1", ["coder"], "echo", "host", 1, 30, {})
    first = podium.add_task("first task")

    async def scenario():
        app = Dashboard(podium)
        async with app.run_test(size=(180, 50)) as pilot:
            agents = app.query_one("#agents", DataTable)
            tasks = app.query_one("#tasks", DataTable)
            assert "coder-1" in agents.rows and first.id in tasks.rows
            assert tasks.get_cell(first.id, "state") == "queued"

            # events from another writer update just the rows they name
            claimed = store.claim("coder-1", ["coder"], 30)
            await settle(pilot, app, lambda: tasks.get_cell(first.id, "state") == "running")
            assert agents.get_cell("coder-1", "state") == "busy"
            assert agents.get_cell("coder-1", "task") == first.id
            store.finish("coder-1", Finish(claimed.id, claimed.attempts,
                                           Outcome(TaskState.COMPLETED, b"the output")))
            await settle(pilot, app, lambda: tasks.get_cell(first.id, "state") == "completed")
            second = podium.add_task("from outside")
            await settle(pilot, app, lambda: second.id in tasks.rows)

            # 'a' opens the form; the task it creates is real
            await pilot.press("a")
            for ch in "echo $HOME":
                await pilot.press(ch if ch != " " else "space")
            await pilot.press("enter")  # to the agent field
            for ch in "coder-1":
                await pilot.press(ch)
            await pilot.press("enter")
            await settle(pilot, app, lambda: any(
                t.prompt == "echo $HOME" for t in podium.tasks()))
            added = [t for t in podium.tasks() if t.prompt == "echo $HOME"][0]
            assert added.target_agent == "coder-1"
            await settle(pilot, app, lambda: added.id in tasks.rows)

            # 'c' cancels the selected task
            tasks.focus()
            tasks.move_cursor(row=tasks.get_row_index(second.id))
            await pilot.press("c")
            await settle(pilot, app, lambda: podium.task(second.id).state.value == "cancelled")
            await settle(pilot, app, lambda: tasks.get_cell(second.id, "state") == "cancelled")

            # 'o' shows the selected task's output
            tasks.move_cursor(row=tasks.get_row_index(first.id))
            await pilot.press("o")
            await settle(pilot, app, lambda: isinstance(app.screen, TextScreen))
            assert "the output" in app.screen.body
            await pilot.press("escape")

            # 's' sends a message to the selected agent
            agents.focus()
            await pilot.press("s")
            for ch in "hi":
                await pilot.press(ch)
            await pilot.press("enter")
            await settle(pilot, app, lambda: [m.body for m in podium.inbox("coder-1")] == ["hi"])

    asyncio.run(scenario())
