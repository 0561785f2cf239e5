"""Typing a message into an interactive agent's pane: the interface the service is given.

The service imports no face: a face that can reach panes (the CLI and MCP, through
``podium.tmux.TmuxPanes``) gives the service a ``PaneDelivery``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Delivery:
    """What became of text typed into a pane: confirmed once all of it showed there."""

    confirmed: bool
    via: str  # where it was typed, e.g. "tmux pane %3"
    reason: str | None = None  # why it is not confirmed


class PaneDelivery(Protocol):
    """Types text into an interactive agent's pane (``podium.tmux.TmuxPanes`` does, with tmux)."""

    def deliver(self, pane_id: str, text: str, server: str | None = None) -> Delivery:
        """Type ``text`` into ``pane_id`` on ``server`` (as the agent registered it; None: the
        default one); raises ``PodiumError``, having typed nothing, when it cannot."""
        ...
