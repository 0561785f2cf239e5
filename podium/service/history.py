"""History: pruning what is old out of the store, and giving the space back."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from podium import limits
from podium.clock import iso, now
from podium.errors import InvalidInput
from podium.service.base import ServiceBase
from podium.store.base import Pruned


@dataclass
class PruneReport:
    """What ``prune`` removed (or would remove), and the store's size around it."""

    #: Everything older than this time was pruned.
    cutoff: float
    keep_results: bool
    dry_run: bool
    removed: Pruned
    #: The store's size in bytes before and after (None: a server's, which it does not tell).
    size_before: int | None = None
    size_after: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"cutoff": iso(self.cutoff), "keep_results": self.keep_results,
                "dry_run": self.dry_run, "removed": asdict(self.removed),
                "size_before": self.size_before, "size_after": self.size_after}


class HistoryCalls(ServiceBase):
    def prune(self, older_than: Any, keep_results: bool = False,
              dry_run: bool = False) -> PruneReport:
        """Remove events, and finished tasks with their dependency rows and messages, older
        than ``older_than`` (``30d``, ``12h``, ``90m``, ``3600s`` or seconds); with
        ``keep_results`` finished tasks stay with their results, without output and stderr.
        Queued, blocked and running tasks, agents and shared context are never touched.
        Afterwards an SQLite store is vacuumed, so that its file shrinks."""
        age = limits.age(older_than)
        for flag, what in ((keep_results, "keep_results"), (dry_run, "dry_run")):
            if not isinstance(flag, bool):
                raise InvalidInput(f"{what} must be true or false, got {type(flag).__name__}")
        cutoff = now() - age
        removed = self.store.prune(cutoff, keep_results, dry_run)
        report = PruneReport(cutoff, keep_results, dry_run, removed)
        if not dry_run:
            sizes = self.store.compact()
            if sizes is not None:
                report.size_before, report.size_after = sizes
        return report
