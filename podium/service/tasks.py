"""Tasks: adding (checked first, so a failed call changes nothing), reading (listings, the
queue, dependents), cancelling, retrying, waiting for them; a task id given by its unique prefix
(``task_id_of``)."""

from __future__ import annotations

import re
import time
from typing import Any

from podium import limits
from podium.agents import registration
from podium.errors import InvalidInput, NotFound
from podium.models import Priority, Task, TaskSpec, TaskState
from podium.service.base import SAFETY_POLL_S, ServiceBase
from podium.store import Store

#: A whole task id as the store makes them (``podium.clock.sortable_id``): no prefix of another.
_WHOLE_ID = re.compile(r"t-[0-9a-z]{14}")
#: Candidates an ambiguous prefix's error lists.
AMBIGUOUS_SHOWN = 5


def task_id_of(store: Store, text: Any, where: str = "") -> str:
    """The id of the one task whose id is ``text`` or starts with it: every face's task id
    goes through here (``where`` it was given, for the errors: "in depends_on"). Unknown:
    ``NotFound``; a prefix of several: ``InvalidInput`` listing up to five of them."""
    text = limits.name(text, f"task id {where}".rstrip())
    if _WHOLE_ID.fullmatch(text):
        return text  # (the call it is for says so if there is no such task)
    found = store.task_ids_with_prefix(text, AMBIGUOUS_SHOWN + 1)
    if text in found or len(found) == 1:
        return text if text in found else found[0]
    if not found:
        raise NotFound(f"unknown task {text!r}" + (f" ({where})" if where else ""))
    shown = ", ".join(found[:AMBIGUOUS_SHOWN]) + (", ..." if len(found) > AMBIGUOUS_SHOWN else "")
    raise InvalidInput(f"ambiguous task id {text!r}: {shown} (give more of it)")


class TaskCalls(ServiceBase):
    def _task_id(self, text: Any, where: str = "") -> str:
        """A task id from a caller: whole, or a unique prefix (see ``task_id_of``)."""
        return task_id_of(self.store, text, where)

    def spec(
        self, prompt: Any, agent: str | None = None, role: str | None = None,
        priority: str | Priority | None = None, depends_on: list[str] | tuple[str, ...] = (),
        context: str | None = None, timeout_s: float | None = None, max_attempts: int = 3,
        retry: bool = False, session: str | None = None, recall: int | None = None,
    ) -> TaskSpec:
        """Validate a task request; raises ``InvalidInput`` without writing to the store (a
        dependency given by a prefix of its id is looked up)."""
        if depends_on is None:
            depends_on = ()
        if not isinstance(depends_on, (list, tuple)):
            raise InvalidInput(f"depends_on must be a list of task ids, got "
                               f"{type(depends_on).__name__}")
        if len(depends_on) > limits.MAX_LIST:
            raise InvalidInput(f"depends_on has {len(depends_on)} task ids: at most "
                               f"{limits.MAX_LIST} allowed")
        if not isinstance(retry, bool):
            raise InvalidInput(f"retry must be true or false, got {type(retry).__name__}")
        return TaskSpec(
            prompt=limits.text(prompt, "prompt"),
            context=(None if context is None
                     else limits.text(context, "context", allow_empty=True)),
            priority=Priority.parse(priority),
            target_agent=limits.optional_name(agent, "agent id"),
            target_role=limits.optional_name(role, "role"),
            depends_on=[self._task_id(d, "in depends_on") for d in depends_on],
            timeout_s=limits.timeout(timeout_s),
            max_attempts=limits.max_attempts(max_attempts),
            retry_on_failure=retry,
            session_id=limits.optional_name(session, "session"),
            recall=None if recall is None else limits.recall(recall),
        )

    def add_task(self, prompt: Any, **kwargs: Any) -> Task:
        return self.store.add_tasks([self.spec(prompt, **kwargs)], registration.may_run)[0]

    def add_tasks(self, specs: list[TaskSpec]) -> list[Task]:
        return self.store.add_tasks(specs, registration.may_run)

    def task(self, task_id: str) -> Task:
        return self.store.get_task(self._task_id(task_id))

    def tasks(self, state: str | None = None, agent: str | None = None, limit: int = 100,
              with_output: bool = False, before: int | None = None, role: str | None = None,
              text: str | None = None) -> list[Task]:
        """The newest ``limit`` tasks (oldest first); with ``before``, those older than the
        task of that ``seq`` (the next page back: ``before=`` the first one's ``seq``). Only
        those in ``state``, run by ``agent``, targeted at ``role``, or whose prompt holds
        ``text`` (ASCII letters in any case), when given."""
        st = None
        if state is not None:
            try:
                st = TaskState(state)
            except ValueError:
                names = ", ".join(s.value for s in TaskState)
                raise InvalidInput(f"bad state {state!r}: expected one of {names}") from None
        limit = limits.list_limit(limit)
        if agent is not None:
            self.store.get_agent(limits.name(agent, "agent id"))
        if before is not None:
            before = limits.integer(before, "before", 1, limits.MAX_EVENT_ID)
        role = limits.optional_name(role, "role")
        if text is not None:
            text = limits.name(text, "search text")
        return self.store.list_tasks(st, agent, limit, with_output, before, role, text)

    def queue(self, limit: int = 200) -> dict[TaskState, list[Task]]:
        """The running, queued and blocked tasks (at most ``limit`` of each) in the order they
        run: queued and blocked ones by priority, then oldest first; running ones oldest
        first."""
        return self.store.list_queue(limits.list_limit(limit))

    def task_states(self, task_ids: list[str]) -> dict[str, TaskState]:
        """The state of each of these tasks (whole ids) that exists."""
        states = {}
        for task_id in task_ids[:limits.MAX_LIST]:
            try:
                states[task_id] = self.store.task_state(limits.name(task_id, "task id"))
            except NotFound:
                pass  # (pruned, say)
        return states

    def dependents(self, task_id: str, limit: int = 100) -> list[str]:
        """The ids of the tasks that depend on this one (at most ``limit``), oldest first."""
        task_id = self._task_id(task_id)
        self.store.task_state(task_id)  # (NotFound for an unknown one)
        return self.store.dependents(task_id, limits.list_limit(limit))

    def cancel(self, task_id: str, reason: str = "cancelled by user") -> Task:
        return self.store.cancel(self._task_id(task_id), limits.text(reason, "reason"))

    def retry(self, task_id: str) -> Task:
        """Queue a failed or cancelled task again, afresh (attempts, error and output cleared;
        blocked while a dependency is to complete), with the dependents its end cancelled;
        ``Conflict`` for a task in another state."""
        return self.store.retry(self._task_id(task_id))

    def wait(self, task_id: str, timeout_s: float | None = None) -> Task:
        """Block until the task is finished (or ``timeout_s`` passes); returns it either way."""
        timeout_s = limits.wait_timeout(timeout_s)
        task_id = self._task_id(task_id)
        self.store.task_state(task_id)  # NotFound before we start waiting
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        waiter = self.store.event_waiter()
        last_recover = time.monotonic()
        try:
            while True:
                if self.store.task_state(task_id).finished:
                    break
                left = SAFETY_POLL_S if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    break
                waiter.wait(min(left, SAFETY_POLL_S))
                if time.monotonic() - last_recover >= SAFETY_POLL_S:
                    self._recover()  # nobody else may be alive to notice a dead agent
                    last_recover = time.monotonic()
        finally:
            waiter.close()
        return self.store.get_task(task_id)
