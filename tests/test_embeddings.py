"""EncoderEmbeddings: batching and parallel workers give the same normalised vectors, in order."""

from __future__ import annotations

import numpy as np

from kbqa.embeddings.embedders import EncoderEmbeddings


class CharCodeEncoder:
    """Deterministic vectors from character codes, computed with numpy as real encoders are."""

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = np.zeros((len(texts), 8), dtype=np.float32)
        for row, text in zip(rows, texts):
            for position, char in enumerate(text):
                row[(ord(char) + position) % 8] += 1.0 + position % 3
        return rows


def test_workers_keep_order_and_values() -> None:
    texts = [f"第{i}段：西湖龙井" * (1 + i % 4) for i in range(37)]
    serial = EncoderEmbeddings(CharCodeEncoder(), "chars", 8, batch_size=4).embed_array(texts)
    parallel = EncoderEmbeddings(CharCodeEncoder(), "chars", 8, batch_size=4,
                                 workers=3).embed_array(texts)
    assert serial.shape == (37, 8)
    assert np.array_equal(serial, parallel)
    assert np.allclose(np.linalg.norm(parallel, axis=1), 1.0)
    one = EncoderEmbeddings(CharCodeEncoder(), "chars", 8, workers=3).embed_array(texts[5:6])
    assert np.array_equal(one, serial[5:6])
