"""Where a knowledge base keeps its vectors: FAISS files in its folder (the default) or Milvus.

The choice is made when a knowledge base is created and recorded in its manifest (meta key
``vector_store``; absent means FAISS, which is how every base made before Milvus existed reads),
so opening always uses what the base was built with, whatever the settings say now.

    base.py            the interface KnowledgeBase drives, and the write protocol
    faiss_backend.py   FAISS index files, one per generation
    milvus_backend.py  one Milvus collection, a journal for crash safety
    milvus_connect.py  lazy pymilvus import, shared clients, Milvus Lite's one-process rule
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from kbqa.errors import KnowledgeBaseError
from kbqa.vector_backends.base import IndexChoice, StoredVectors, VectorBackend, VectorDelta
from kbqa.vector_backends.faiss_backend import FaissBackend

VectorStoreKind = Literal["faiss", "milvus"]
META_KEY = "vector_store"

__all__ = ["META_KEY", "IndexChoice", "StoredVectors", "VectorBackend", "VectorDelta",
           "VectorStoreConfig", "VectorStoreKind", "drop", "initialise", "new_meta",
           "open_backend", "recorded_kind"]


@dataclass(frozen=True)
class VectorStoreConfig:
    """Where new knowledge bases put their vectors, and how to reach Milvus.

    `kind` and `milvus_uri` only matter when a base is created (None: Milvus Lite inside the
    base's folder; "http://host:19530": a Milvus server or cluster). `milvus_token` is needed
    whenever a server base is opened and is never written to disk.
    """

    kind: VectorStoreKind = "faiss"
    milvus_uri: str | None = None
    milvus_token: str | None = None


def recorded_kind(meta: dict[str, str]) -> VectorStoreKind:
    """The backend a manifest names; refuses names this kbqa does not know."""
    kind = meta.get(META_KEY, "faiss")
    if kind not in get_args(VectorStoreKind):
        raise KnowledgeBaseError(f"unknown vector store {kind!r} in the manifest; this kbqa knows "
                                 f"{', '.join(get_args(VectorStoreKind))}")
    return kind  # type: ignore[return-value]


def new_meta(config: VectorStoreConfig, kb_name: str) -> dict[str, str]:
    """Manifest entries recording the backend of a new knowledge base (none for FAISS)."""
    if config.kind == "faiss":
        return {}
    if config.kind == "milvus":
        from kbqa.vector_backends import milvus_backend

        return {META_KEY: "milvus", **milvus_backend.new_meta(config.milvus_uri, kb_name)}
    raise KnowledgeBaseError(f"unknown vector store {config.kind!r}; use faiss or milvus")


def initialise(folder: Path, dimension: int, meta: dict[str, str]) -> None:
    """Write a new base's initial vector files into its (staging) folder."""
    if recorded_kind(meta) == "faiss":
        FaissBackend.initialise(folder, dimension)


def open_backend(folder: Path, meta: dict[str, str], dimension: int, kb_name: str,
                 config: VectorStoreConfig) -> VectorBackend:
    """The backend the manifest records, connected (its state is read by `load`)."""
    if recorded_kind(meta) == "faiss":
        return FaissBackend(folder, dimension, kb_name)
    from kbqa.vector_backends.milvus_backend import MilvusBackend

    return MilvusBackend(folder, dimension, kb_name, meta, config.milvus_token)


def drop(folder: Path, meta: dict[str, str], config: VectorStoreConfig) -> None:
    """Delete vectors kept outside the folder of a knowledge base being deleted."""
    if recorded_kind(meta) == "milvus":
        from kbqa.vector_backends import milvus_backend

        milvus_backend.drop(folder, meta, config.milvus_token)
