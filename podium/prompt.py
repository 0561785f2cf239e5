"""How shared context, recalled memories and task context are put in front of a prompt.

Backends that take context (AI backends, and ``echo``) receive::

    # Shared context
    ## <key>
    <value>
    ...
    # Recalled memories
    <RECALL_INTRO>
    ## 1. <what it is and where it came from>
    <its text, cut to the recall budget>
    ...
    # Task context
    <the task's --context>
    # Task
    <the prompt>

(sections separated by an empty line; each one only when it has something). With no context
and nothing recalled the prompt is handed over unchanged, byte for byte. Memories are recalled
only for a task or an agent that asks for them (``--recall K``, ``podium.service.recall``).
"""

from __future__ import annotations

from dataclasses import dataclass

from podium.models import ContextEntry

#: The line that opens the recalled memories: what they are, and that they may be stale.
RECALL_INTRO = ("Podium recalled these from the team's memory because they look related to "
                "this task; they may be out of date.")


@dataclass(frozen=True)
class Recalled:
    """A memory recalled into a prompt: where it came from (one line) and its text."""

    source: str
    text: str


def compose(prompt: str, task_context: str | None, shared: list[ContextEntry],
            recalled: list[Recalled] | tuple[Recalled, ...] = ()) -> str:
    if not task_context and not shared and not recalled:
        return prompt
    parts: list[str] = []
    if shared:
        parts.append("# Shared context\n")
        for entry in shared:
            parts.append(f"## {entry.key}\n{entry.value}\n")
    if recalled:
        parts.append(f"# Recalled memories\n{RECALL_INTRO}\n")
        for i, memory in enumerate(recalled, 1):
            parts.append(f"## {i}. {memory.source}\n{memory.text}\n")
    if task_context:
        parts.append(f"# Task context\n{task_context}\n")
    parts.append(f"# Task\n{prompt}")
    return "\n".join(parts)
