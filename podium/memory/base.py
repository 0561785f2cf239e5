"""Semantic memory's two plugin interfaces: an ``Embedder`` turns text into vectors, a
``VectorStore`` keeps vectors by memory id and finds the nearest.

The memories themselves (text, provenance, keywords) live in the task store, beside the tasks
they came from (``podium.service.memory``); a vector store only holds ``(memory id, model id,
vector)`` rows, so any store can be re-filled from the task store (``podium memory reindex``).
Both are plugins found through entry points (``podium.embedders``, ``podium.vector_stores``),
Podium's own registered as a third-party package would register its own, each with declared,
typed options (``podium.agents.backends.options.Options``).

Vectors are ``numpy.float32`` arrays, L2-normalised by the embedder, so the cosine similarity
of two is their dot product. Every vector row records the model id (``Embedder.model_id``) and
the dimension; a search only compares vectors of one model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, ClassVar

from podium.agents.backends.options import Options

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vector = npt.NDArray[np.float32]  # shape (dimension,)
    Matrix = npt.NDArray[np.float32]  # shape (n, dimension)


class Embedder(ABC):
    """Text to unit vectors; one instance is used from one thread at a time."""

    #: The registered name (set by ``podium.plugins.load``).
    name: ClassVar[str] = ""
    #: What ``--embedder-option KEY=VALUE`` accepts.
    options: ClassVar[Options] = Options()

    #: Names the model and its version, e.g. ``all-MiniLM-L6-v2-int8@1.0.0``; stored with every
    #: vector, so that vectors of another model are never compared with this one's.
    model_id: str
    #: The length of every vector it returns.
    dimension: int

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> Matrix:
        """One L2-normalised float32 row per text (a batch, for indexing)."""

    def embed_query(self, text: str) -> Vector:
        """One text's vector, as fast as the model allows (a search's query)."""
        return self.embed([text])[0]

    def close(self) -> None:  # noqa: B027 - most embedders hold nothing to release
        """Release the model."""


class VectorStore(ABC):
    """Vectors by memory id, searched by cosine similarity; safe to use from one thread."""

    name: ClassVar[str] = ""
    options: ClassVar[Options] = Options()

    @abstractmethod
    def add(self, ids: Sequence[str], vectors: Matrix, model_id: str) -> None:
        """Store (or replace) the vector of each id, made by ``model_id``."""

    @abstractmethod
    def remove(self, ids: Collection[str]) -> int:
        """Forget these ids' vectors (ids it does not hold are no error); returns how many."""

    @abstractmethod
    def search(self, vector: Vector, k: int, model_id: str,
               only: Collection[str] | None = None) -> list[tuple[str, float]]:
        """The ``k`` ids nearest to ``vector`` among those made by ``model_id`` (and in
        ``only`` when it is given), best first, each with its cosine similarity (-1..1)."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """How many vectors each model id has here."""

    @abstractmethod
    def clear(self, model_id: str | None = None) -> int:
        """Forget every vector (of ``model_id`` only, when given); returns how many."""

    @abstractmethod
    def describe(self) -> str:
        """Where the vectors are, for ``podium memory stats``: no password in it."""

    def close(self) -> None:  # noqa: B027 - some stores hold no connection
        """Release connections and files."""
