"""How shared and task context are put in front of a prompt.

Backends that take context (AI backends, and ``echo``) receive::

    # Shared context
    ## <key>
    <value>
    ...
    # Task context
    <the task's --context>
    # Task
    <the prompt>

With no context at all the prompt is handed over unchanged, byte for byte.
"""

from __future__ import annotations

from podium.models import ContextEntry


def compose(prompt: str, task_context: str | None, shared: list[ContextEntry]) -> str:
    if not task_context and not shared:
        return prompt
    parts: list[str] = []
    if shared:
        parts.append("# Shared context\n")
        for entry in shared:
            parts.append(f"## {entry.key}\n{entry.value}\n")
    if task_context:
        parts.append(f"# Task context\n{task_context}\n")
    parts.append(f"# Task\n{prompt}")
    return "\n".join(parts)
