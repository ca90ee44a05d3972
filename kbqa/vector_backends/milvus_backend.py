"""Vectors in Milvus: Milvus Lite inside the knowledge base folder, or a Milvus server/cluster.

One collection per knowledge base: INT64 primary key ``id`` = the chunk's SQLite rowid and a
FLOAT_VECTOR ``vector``, AUTOINDEX with metric IP (vectors are L2-normalised, so IP = cosine),
Strong consistency so a write is searchable as soon as it returns. Its name is derived from the
knowledge base's name plus a random suffix and recorded in the manifest, so two kbqa homes
sharing one cluster never collide.

Keeping Milvus and the SQLite manifest in step: Milvus cannot join the SQLite transaction, so
before a write touches Milvus it records the chunk ids it is about to change in a journal file
(``milvus.pending.json``, written atomically) and deletes the journal after the SQLite commit.
A journal that is still there means a write stopped in between (an exception, or a crash); then
`recover` re-derives exactly those ids from the committed manifest: ids it no longer lists are
deleted from Milvus, the others are re-inserted from the embedding cache. This is the
compensation after a failed write and the crash recovery at the next open or write alike.
While a journal exists, `load` does not compare counts (a writer may be half-way).

Milvus Lite specifics: it searches rows still in its in-memory buffer with a slow per-row scan
(docs/benchmarks.md §Vector stores at scale), so every write ends with a flush, which also
moves the rows from its write-ahead log into data files (seconds of index building then run in
Lite's background thread). A Milvus server needs no flush: growing segments are searched
efficiently and inserts are durable once acknowledged. For Lite's one-process limit see
milvus_connect.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kbqa.errors import KnowledgeBaseError
from kbqa.vector_backends import milvus_connect
from kbqa.vector_backends.base import IndexChoice, StoredVectors, VectorDelta, atomic_write

LITE_DIRNAME = "milvus.db"
JOURNAL_FILENAME = "milvus.pending.json"
META_URI = "milvus_uri"
META_COLLECTION = "milvus_collection"
_BATCH = 1000  # rows per insert/delete/get call: ~2 MB of 512-d vectors, far below gRPC's limit
_MAX_TOP_K = 16384  # Milvus refuses larger search limits


def new_meta(uri: str | None, kb_name: str) -> dict[str, str]:
    """Manifest entries for a new Milvus knowledge base (checks the client is installed)."""
    milvus_connect.pymilvus()
    if uri is None or milvus_connect.is_lite(uri):
        milvus_connect.pymilvus_lite()
        if uri is not None:  # a Lite file of the user's choosing: record where, not relative to cwd
            uri = os.path.abspath(Path(uri).expanduser())
    slug = re.sub(r"[^0-9A-Za-z]+", "_", kb_name).strip("_")[:40] or "kb"
    return {META_URI: uri or "", META_COLLECTION: f"kbqa_{slug}_{uuid.uuid4().hex[:8]}"}


def drop(folder: Path, meta: dict[str, str], token: str | None) -> None:
    """Drop the collection of a knowledge base that is being deleted.

    Lite data lives in the folder, which the caller removes; a server's collection must be
    dropped explicitly, or it would outlive the only record of its name.
    """
    uri = meta.get(META_URI, "")
    if not uri or milvus_connect.is_lite(uri):
        return
    client = milvus_connect.acquire(uri, token)
    try:
        with _wrapped(f"dropping collection {meta[META_COLLECTION]} at {uri}"):
            if client.has_collection(meta[META_COLLECTION]):
                client.drop_collection(meta[META_COLLECTION])
    finally:
        milvus_connect.release(uri, token)


@contextlib.contextmanager
def _wrapped(action: str) -> Iterator[None]:
    """pymilvus raises its own exception types; kbqa's callers expect KnowledgeBaseError."""
    milvus = milvus_connect.pymilvus()
    try:
        yield
    except milvus.MilvusException as exc:
        raise KnowledgeBaseError(f"Milvus error while {action}: {milvus_connect.message(exc)}") from exc


class MilvusBackend:
    """A knowledge base's vectors in one Milvus collection."""

    def __init__(self, folder: Path, dimension: int, kb_name: str, meta: dict[str, str],
                 token: str | None) -> None:
        recorded = meta.get(META_URI, "")
        self.lite = not recorded or milvus_connect.is_lite(recorded)
        # Absolute: pymilvus keys Lite servers by absolute path, and so do the shared clients.
        self.uri = os.path.abspath(recorded or folder / LITE_DIRNAME) if self.lite else recorded
        self.collection = meta[META_COLLECTION]
        self.dimension = dimension
        self.kb_name = kb_name
        self._token = token
        self._journal = folder / JOURNAL_FILENAME
        self._ready = False  # collection known to exist and be loaded
        self._client: Any = milvus_connect.acquire(self.uri, token)

    # ----------------------------------------------------------------- state

    @property
    def index_kind(self) -> str:
        with self._errors("describing the index"):
            return str(self._client.describe_index(self.collection, "vector")["index_type"]).lower()

    def describe(self) -> str:
        where = f"Milvus Lite in {self.uri}" if self.lite else f"Milvus at {self.uri}"
        return f"milvus ({where}, collection {self.collection})"

    @property
    def interrupted(self) -> bool:
        return self._journal.exists()

    def count(self) -> int:
        with self._errors("counting vectors"):
            rows = self._client.query(self.collection, filter="", output_fields=["count(*)"],
                                      consistency_level="Strong")
        return int(rows[0]["count(*)"])

    def load(self, generation: int, count: int) -> None:
        # A new knowledge base has no collection yet (Lite's folder moves when the KB is
        # created); a missing one is only created while the manifest has no chunks to lose.
        self._open_collection(create=count == 0)
        if self.interrupted:
            return
        stored = self.count()
        if stored != count and not self.interrupted:  # a writer starting meanwhile explains it
            raise KnowledgeBaseError(
                f"knowledge base {self.kb_name!r} is inconsistent: Milvus collection "
                f"{self.collection} holds {stored} vectors but the manifest lists {count} chunks; "
                "open it with repair=True to rebuild the vectors from the embedding cache")

    # ----------------------------------------------------------------- writing

    def stage(self, delta: VectorDelta, generation: int, choice: IndexChoice) -> None:
        touched = [] if delta.rebuild else sorted({int(i) for i in [*delta.removed,
                                                                    *delta.added_ids]})
        self._write_journal(generation, touched, delta.rebuild)
        with self._errors("writing vectors"):
            if delta.rebuild:
                self._recreate()
            else:
                self._open_collection(create=False)
                self._delete(delta.removed)
            self._upsert(delta.added_ids, delta.added(self.dimension))
            self._flush()

    def publish(self, generation: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._journal.unlink()

    def abort(self, generation: int) -> None:
        """Nothing yet: the journal stays, and the caller runs `recover` after its rollback."""

    def recover(self, stored: StoredVectors) -> None:
        journal = self._read_journal()
        if journal is None:
            return
        with self._errors("recovering an interrupted write"):
            if journal["rebuild"]:
                ids, vectors = stored(None)
                self._recreate()
            else:
                pending = [int(i) for i in journal["ids"]]
                ids, vectors = stored(pending)
                self._open_collection(create=False)
                self._delete(sorted(set(pending) - set(ids)))
            self._upsert(ids, vectors)
            self._flush()
        self.publish(int(journal["generation"]))

    # ----------------------------------------------------------------- reading

    def search(self, query: np.ndarray, n: int) -> list[tuple[int, float]]:
        if n <= 0:
            return []
        vector = np.asarray(query, dtype=np.float32).reshape(-1).tolist()
        with self._errors("searching"):
            hits = self._client.search(self.collection, data=[vector], limit=min(n, _MAX_TOP_K),
                                       output_fields=["id"], search_params={"metric_type": "IP"})
        return [(int(hit["id"]), float(hit["distance"])) for hit in hits[0]]

    def vectors(self, chunk_ids: Iterable[int]) -> dict[int, np.ndarray]:
        wanted = list(dict.fromkeys(int(i) for i in chunk_ids))
        found: dict[int, np.ndarray] = {}
        with self._errors("reading vectors"):
            for start in range(0, len(wanted), _BATCH):
                rows = self._client.get(self.collection, ids=wanted[start:start + _BATCH],
                                        output_fields=["vector"])
                found.update((int(row["id"]), np.asarray(row["vector"], dtype=np.float32))
                             for row in rows)
        return found

    def close(self) -> None:
        if self._client is not None:
            self._client = None
            milvus_connect.release(self.uri, self._token)

    # ----------------------------------------------------------------- helpers

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        where = "Milvus Lite" if self.lite else self.uri
        with _wrapped(f"{action} (knowledge base {self.kb_name!r}, {where}, "
                      f"collection {self.collection})"):
            yield

    def _open_collection(self, *, create: bool) -> None:
        """Make sure the collection exists and is loaded (once per instance)."""
        if self._ready:
            return
        with self._errors("opening the collection"):
            if not self._client.has_collection(self.collection):
                if not create:
                    raise KnowledgeBaseError(
                        f"knowledge base {self.kb_name!r}: its Milvus collection {self.collection} "
                        f"is missing; open it with repair=True to rebuild the vectors from the "
                        "embedding cache")
                self._create()
            elif self._not_loaded():
                self._load_collection()
            self._flush()  # Lite: rows its log replayed into memory are slow to search
        self._ready = True

    def _load_collection(self) -> None:
        try:
            self._client.load_collection(self.collection)
        except milvus_connect.pymilvus().MilvusException:
            if not self.lite:
                raise
            # Lite writes its per-segment index files from a background thread, in place: a
            # process that died during one leaves it truncated, and loading fails. They are
            # derived from the data files, so remove them and let the load rebuild them.
            folder = Path(self.uri, "collections", self.collection)
            for index_file in folder.glob("partitions/*/indexes/*.idx"):
                index_file.unlink()
            self._client.load_collection(self.collection)

    def _not_loaded(self) -> bool:
        state = self._client.get_load_state(self.collection)["state"]
        return state != milvus_connect.pymilvus().client.types.LoadState.Loaded

    def _create(self) -> None:
        milvus = milvus_connect.pymilvus()
        schema = milvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", milvus.DataType.INT64, is_primary=True)
        schema.add_field("vector", milvus.DataType.FLOAT_VECTOR, dim=self.dimension)
        self._client.create_collection(self.collection, schema=schema, consistency_level="Strong")
        index = self._client.prepare_index_params()
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="IP")
        # sync=False: an empty collection's index needs no waiting, and pymilvus's wait polls
        # every 0.5 s (and calls an RPC Milvus Lite lacks).
        self._client.create_index(self.collection, index, sync=False)
        self._client.load_collection(self.collection)

    def _recreate(self) -> None:
        if self._client.has_collection(self.collection):
            self._client.drop_collection(self.collection)
        self._create()
        self._ready = True

    def _delete(self, ids: list[int]) -> None:
        for start in range(0, len(ids), _BATCH):
            self._client.delete(self.collection, ids=[int(i) for i in ids[start:start + _BATCH]])

    def _upsert(self, ids: list[int], vectors: np.ndarray) -> None:
        """Upsert, not insert: a crashed write may have left rows under ids SQLite hands out again."""
        for start in range(0, len(ids), _BATCH):
            rows = [{"id": int(chunk_id), "vector": vector}
                    for chunk_id, vector in zip(ids[start:start + _BATCH],
                                                vectors[start:start + _BATCH])]
            self._client.upsert(self.collection, rows)

    def _flush(self) -> None:
        if self.lite:
            self._client.flush(self.collection)

    def _write_journal(self, generation: int, ids: list[int], rebuild: bool) -> None:
        record = {"generation": generation, "rebuild": rebuild, "ids": ids}
        atomic_write(self._journal, json.dumps(record).encode("utf-8"))

    def _read_journal(self) -> dict[str, Any] | None:
        try:
            return json.loads(self._journal.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            # Written atomically, so unreadable means tampered with: redo everything.
            return {"generation": -1, "rebuild": True, "ids": []}
