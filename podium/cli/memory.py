"""``podium memory ...``, ``podium remember``, ``podium task similar``: semantic memory, over
the service."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from podium import render
from podium.cli.base import Ctx, cli, pass_ctx, read_arg, write, write_json
from podium.cli.tasks import task
from podium.models import MEMORY_KINDS
from podium.service.memory import MemoryHit

MEMORY_HELP = ("Vector store: sqlite:///path, postgresql://host/db, chroma:///abs/dir or "
               "chroma://host:port (default: beside the task store; env PODIUM_MEMORY).")


def memory_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--memory URL`` (env ``PODIUM_MEMORY``, which the vector store reads itself)."""
    return click.option("--memory", "memory_url", metavar="URL", help=MEMORY_HELP)(f)


def _use(c: Ctx, memory_url: str | None) -> None:
    if memory_url is not None:
        c.podium.use_memory(memory_url)


def _provenance(m: dict[str, Any]) -> str:
    """Where a memory came from, in one line."""
    parts = [m["kind"]]
    if m["task_id"]:
        parts.append(m["task_id"])
    if m["kind"] == "context":
        parts.append(f"{m['meta'].get('key')} v{m['meta'].get('version')}")
    if m["agent_id"]:
        parts.append(f"agent {m['agent_id']}")
    if m["role"]:
        parts.append(f"role {m['role']}")
    if m["meta"].get("state"):
        parts.append(m["meta"]["state"])
    parts.append(f"by {m['source']}")
    return " · ".join(parts)


def write_hits(hits: list[MemoryHit], as_json: bool) -> None:
    if as_json:
        write_json({"hits": [h.to_dict() for h in hits]})
        return
    if not hits:
        write("(no memories match)\n")
        return
    lines = []
    for i, h in enumerate(hits, 1):
        d = h.to_dict()
        parts = []
        if h.keyword is not None:
            parts.append(f"keyword {h.keyword:.2f}" + (f" #{h.keyword_rank}" if h.keyword_rank
                                                       else ""))
        if h.vector is not None:
            parts.append(f"vector {h.vector:.2f} #{h.vector_rank}")
        lines += [f"{i:2d}. {h.score:.3f}  {_provenance(d)} · "
                  f"{render.when(h.memory.created_at)}",
                  f"    {h.memory.title}",
                  f"    {h.snippet}",
                  f"    {' · '.join([*parts, h.memory.id])}", ""]
    write("\n".join(lines))


@cli.group()
def memory() -> None:
    """Search, forget, count and re-embed what the team remembers."""


@memory.command("search")
@click.argument("text")
@click.option("--k", "-k", type=int, default=5, show_default=True, help="How many results.")
@click.option("--kind", type=click.Choice(MEMORY_KINDS), help="Only memories of this kind.")
@click.option("--role", "-r", help="Only memories of this role.")
@click.option("--since", metavar="T", help="Only memories since T: an age (7d, 12h) or an ISO "
                                           "date or time.")
@click.option("--mode", type=click.Choice(["hybrid", "keyword", "vector"]), default="hybrid",
              show_default=True, help="Rank by keywords and meaning, or by one of them.")
@click.option("--json", "as_json", is_flag=True)
@memory_option
@pass_ctx
def memory_search(c: Ctx, text, k, kind, role, since, mode, as_json, memory_url) -> None:
    """The memories most relevant to TEXT ('-': stdin), with scores, provenance, snippets."""
    _use(c, memory_url)
    hits = c.podium.memory_search(read_arg(text, "query"), k=k, kind=kind, role=role,
                                  since=since, mode=mode)
    write_hits(hits, as_json)


@memory.command("forget")
@click.argument("memory_ids", nargs=-1, metavar="[ID]...")
@click.option("--task", "task_id", metavar="ID", help="Forget every memory of this task.")
@click.option("--json", "as_json", is_flag=True)
@memory_option
@pass_ctx
def memory_forget(c: Ctx, memory_ids, task_id, as_json, memory_url) -> None:
    """Forget memories by id, or all of a task's (--task)."""
    if bool(memory_ids) == bool(task_id):
        raise click.UsageError("give memory ids or --task ID (one of them)")
    _use(c, memory_url)
    removed = (c.podium.forget_task(task_id) if task_id
               else c.podium.forget(list(memory_ids)))
    if as_json:
        write_json({"forgotten": removed})
    else:
        write(f"forgot {len(removed)} memor{'y' if len(removed) == 1 else 'ies'}: "
              f"{' '.join(removed)}\n")


@memory.command("stats")
@click.option("--json", "as_json", is_flag=True)
@memory_option
@pass_ctx
def memory_stats(c: Ctx, as_json, memory_url) -> None:
    """How much is remembered, embedded by which model, where, and its size."""
    _use(c, memory_url)
    s = c.podium.memory_stats()
    if as_json:
        write_json(s.to_dict())
        return
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(s.by_kind.items())) or "none"
    vectors = ", ".join(f"{n} of {m}" for m, n in sorted(s.vectors.items())) or "none"
    lines = [
        f"memories      {s.memories} ({kinds})",
        f"embedded      {s.embedded} by {s.model_id} ({s.embedder}, {s.dimension} "
        f"dimensions); {s.not_embedded} not yet"
        + (" (the next search embeds them, or 'podium memory reindex')" if s.not_embedded
           else ""),
        f"vector store  {s.vector_store}",
        f"vectors       {vectors}",
        f"size          text {s.text_bytes / 1024:.1f} KiB, vectors {s.vector_bytes / 1024:.1f} "
        "KiB",
        f"indexing      {s.indexing} (finished work remembered up to event {s.cursor} of "
        f"{s.last_event_id}); indexer on this host: "
        + (f"pid {s.indexer_pid}" if s.indexer_pid else "none"),
    ]
    if s.other_models:
        lines.append("other models  " + ", ".join(f"{n} by {m}" for m, n in
                                                  s.other_models.items()) +
                     " ('podium memory reindex' embeds them with this one)")
    write("\n".join(lines) + "\n")


@memory.command("index")
@click.option("--follow", is_flag=True,
              help="Keep remembering as tasks finish, until stopped: this host's indexer (a "
                   "worker starts one by itself).")
@click.option("--lock-fd", type=int, hidden=True)  # (the election lock a worker hands over)
@click.option("--json", "as_json", is_flag=True)
@memory_option
@pass_ctx
def memory_index(c: Ctx, follow, lock_fd, as_json, memory_url) -> None:
    """Remember the finished work not remembered yet, and embed what has no vector."""
    _use(c, memory_url)
    if follow:
        def say(line: str) -> None:
            click.echo(f"[memory indexer {time.strftime('%H:%M:%S')}] {line}", err=True)

        sys.exit(c.podium.follow_memory(lock_fd, say))
    done = c.podium.index_memory()
    if as_json:
        write_json(done)
    else:
        write(f"remembered {done['remembered']} memories of finished work, embedded "
              f"{done['embedded']}\n")


@memory.command("reindex")
@click.option("--json", "as_json", is_flag=True)
@memory_option
@pass_ctx
def memory_reindex(c: Ctx, as_json, memory_url) -> None:
    """Embed every memory again with the current model (after changing the embedder)."""
    _use(c, memory_url)
    shown = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if shown:
            click.echo(f"\rembedded {done}/{total}", err=True, nl=False)

    r = c.podium.reindex(progress)
    if shown:
        click.echo("", err=True)
    if as_json:
        write_json(r.to_dict())
    else:
        write(f"embedded {r.embedded} of {r.memories} memories with {r.model_id} in "
              f"{r.seconds:.1f} s (cleared {r.cleared_vectors} old vectors)\n")


@cli.command("remember")
@click.argument("text")
@click.option("--task", "task_id", metavar="ID",
              help="The task it is about (default: $PODIUM_TASK_ID, inside a task).")
@click.option("--kind", type=click.Choice(["note", "context"]), default="note",
              show_default=True)
@click.option("--role", "-r", help="The role it is for (default: the agent's first role).")
@click.option("--json", "as_json", is_flag=True)
@memory_option
@pass_ctx
def remember(c: Ctx, text, task_id, kind, role, as_json, memory_url) -> None:
    """Remember TEXT ('-': stdin) for the team; inside a task it records the task and agent."""
    agent = os.environ.get("PODIUM_AGENT_ID") or None
    task_id = task_id or os.environ.get("PODIUM_TASK_ID") or None
    _use(c, memory_url)
    memories = c.podium.remember(read_arg(text, "memory text"), kind=kind, task_id=task_id,
                                 agent=agent, role=role, source="agent" if agent else "cli")
    if as_json:
        write_json({"memories": [m.to_dict() for m in memories]})
    else:
        write(" ".join(m.id for m in memories) + "\n")


@task.command("similar")
@click.argument("task_or_text")
@click.option("--k", "-k", type=int, default=5, show_default=True, help="How many results.")
@click.option("--json", "as_json", is_flag=True)
@memory_option
@pass_ctx
def task_similar(c: Ctx, task_or_text, k, as_json, memory_url) -> None:
    """Finished tasks like task ID (or like TEXT): has the team solved this before?"""
    _use(c, memory_url)
    write_hits(c.podium.similar_tasks(read_arg(task_or_text, "text"), k=k), as_json)
