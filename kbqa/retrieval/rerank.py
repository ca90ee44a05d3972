"""Second-stage reranking: score (question, passage) pairs jointly and reorder the candidates.

No Chinese-capable cross-encoder ships its weights in a PyPI package (checked 2026-11-23: the
rerank packages either call a hosted API, download from a model hub at run time, or ship an
English/Portuguese model as a pickle), so kbqa ships none. Users bring one as a local folder in
sentence-transformers CrossEncoder / Hugging Face sequence-classification format (for example
bge-reranker-base or bge-reranker-v2-m3 downloaded elsewhere); `search(..., reranker=...)` then
reorders the fused candidates by its scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from kbqa.errors import ModelError


@runtime_checkable
class Reranker(Protocol):
    """Anything that scores passages for a question; higher = more relevant."""

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray: ...


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder loaded from a local folder (never a hub name)."""

    def __init__(self, folder: Path | str, device: str = "cpu", batch_size: int = 16) -> None:
        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelError(f"{folder} is not a cross-encoder model folder (no config.json)")
        from sentence_transformers import CrossEncoder

        self.name = folder.name
        self.batch_size = batch_size
        self._model = CrossEncoder(str(folder), device=device, local_files_only=True)

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float32)
        pairs = [(query, passage) for passage in passages]
        return np.asarray(self._model.predict(pairs, batch_size=self.batch_size,
                                              show_progress_bar=False), dtype=np.float32)


def load_reranker(setting: str | None) -> Reranker | None:
    """The reranker a `rerank` setting names: None/"none" for no reranking, else a model folder."""
    if setting is None or setting.strip().lower() in {"", "none"}:
        return None
    return CrossEncoderReranker(setting)
