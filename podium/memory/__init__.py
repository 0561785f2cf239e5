"""Semantic memory below the service: embedders turn text into vectors, vector stores keep and
search them (the interfaces: ``base``). ``open_embedder`` and ``open_vectors`` pick them by
name and URL; the memories themselves live in the task store (``podium.service.memory``).

Its parts: ``embeddings`` (the offline ``minilm`` model, choosing an embedder),
``openai_embedder`` (any OpenAI-compatible ``/embeddings`` endpoint), ``matrix`` (exact search
in process over BLOB rows), ``sqlite_vectors``, ``postgres_vectors``, ``chroma`` (the stores),
``stores`` (choosing one from ``--memory URL``).
"""

from podium.memory.base import Embedder, VectorStore
from podium.memory.embeddings import open_embedder
from podium.memory.stores import open_vectors

__all__ = ["Embedder", "VectorStore", "open_embedder", "open_vectors"]
