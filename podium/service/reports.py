"""Reports: the team at a glance (status) and what it cost."""

from __future__ import annotations

from typing import Any

from podium.clock import now
from podium.service.team import TeamCalls


class ReportCalls(TeamCalls):
    def status(self) -> dict[str, Any]:
        agents = self.agents()
        t = now()
        by_state: dict[str, int] = {}
        for a in agents:
            by_state[a.state.value] = by_state.get(a.state.value, 0) + 1
        return {
            "store": self.url,
            "agents": {"total": len(agents), **by_state},
            "tasks": self.store.counts(),
            "live_agents": [a.to_dict(t) for a in agents if a.state.live],
            "last_event_id": self.store.last_event_id(),
            "warnings": self.store.exposure(),
        }

    def costs(self) -> dict[str, Any]:
        """Tokens and cost per agent, per role, per backend and overall.

        From each agent's counters, which add up every run it finished (retries and runs cut
        off included) and survive its restarts. An agent with several roles counts under
        each of them; one with none under the role ``None``.
        """
        fields = ("tasks", "tokens_in", "tokens_out", "cost_usd")

        def zero() -> dict[str, Any]:
            return {"agents": 0, "tasks": 0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0}

        rows: list[dict[str, Any]] = []
        roles: dict[str | None, dict[str, Any]] = {}  # (None: agents without a role)
        backends: dict[str, dict[str, Any]] = {}
        total = zero()
        for a in self.store.list_agents():
            row = {"agent": a.id, "backend": a.backend, "roles": a.roles, "state": a.state.value,
                   "tasks": a.tasks_done, "tokens_in": a.tokens_in, "tokens_out": a.tokens_out,
                   "cost_usd": a.cost_usd}
            rows.append(row)
            groups = [roles.setdefault(r, zero()) for r in (a.roles or (None,))]
            groups += [backends.setdefault(a.backend, zero()), total]
            for g in groups:
                g["agents"] += 1
                for f in fields:
                    g[f] += row[f]
        for g in [*roles.values(), *backends.values(), total]:
            g["cost_usd"] = round(g["cost_usd"], 6)
        return {
            "agents": rows,
            "roles": [{"role": r, **g} for r, g in
                      sorted(roles.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))],
            "backends": [{"backend": b, **g} for b, g in sorted(backends.items())],
            "total": total,
        }
