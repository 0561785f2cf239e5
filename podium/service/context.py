"""Shared context: documents by key, versioned, put in front of prompts."""

from __future__ import annotations

from typing import Any

from podium import limits
from podium.models import ContextEntry
from podium.service.base import ServiceBase


class ContextCalls(ServiceBase):
    def set_context(self, key: str, value: Any, by: str | None = None) -> ContextEntry:
        key = limits.name(key, "context key")
        value = limits.text(value, "context value", allow_empty=True)
        return self.store.set_context(key, value, limits.optional_name(by, "updated by"))

    def get_context(self, key: str) -> ContextEntry:
        return self.store.get_context(limits.name(key, "context key"))

    def list_context(self) -> list[ContextEntry]:
        return self.store.list_context()
