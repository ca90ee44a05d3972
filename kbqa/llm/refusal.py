"""A refusal threshold on the model's first token: refuse when the answer is not clearly preferred.

A small reader answers from a same-topic passage when it should say it cannot. Its own first
token tells how close it came to refusing: the margin is the best other token's logit minus the
logit of the refusal's first token (negative: the model starts to refuse by itself). With a bias
b > 0, a margin below b makes the answer the fixed refusal, written out token by token, so the
decision is one threshold on one number, measured on dev data (bench/refusal_calibration.py) and
cheap: it reads the logits generate() computes anyway. b = 0 leaves generation unchanged and only
records the margin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class RefusalThreshold:
    """A generate() logits processor for one generation: records the first step's refusal margin,
    and forces the refusal when it is below ``bias`` (bias 0: records only), or when the
    answerability probe (kbqa.llm.answerability), read at the same step, is below
    ``min_answerability``."""

    def __init__(self, refusal_ids: list[int], eos_id: int | None, bias: float,
                 min_answerability: float = 0.0) -> None:
        if not refusal_ids:
            raise ValueError("the refusal text must encode to at least one token")
        self.refusal_ids = refusal_ids
        self.eos_id = eos_id
        self.bias = bias
        self.min_answerability = min_answerability
        self.margin: float | None = None
        self.logprob: float | None = None  # log-probability of starting the refusal
        # set by the generating thread when a probe watches this generation
        self.read_answerability: Callable[[], float | None] | None = None
        self.answerability: float | None = None
        self.refusing = False
        self._prompt_length: int | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self._prompt_length is None:
            self._prompt_length = input_ids.shape[1]
            first = self.refusal_ids[0]
            row = scores[0].float()
            refusal_logit = row[first].item()
            others = row.clone()
            others[first] = float("-inf")
            self.margin = others.max().item() - refusal_logit
            self.logprob = (refusal_logit - torch.logsumexp(row, dim=0)).item()
            if self.read_answerability is not None:
                self.answerability = self.read_answerability()
            self.refusing = (self.bias > 0 and self.margin < self.bias) or (
                self.answerability is not None and self.answerability < self.min_answerability)
        if not self.refusing:
            return scores
        step = input_ids.shape[1] - self._prompt_length
        if step < len(self.refusal_ids):
            token = self.refusal_ids[step]
        elif self.eos_id is not None:
            token = self.eos_id
        else:
            return scores
        forced = torch.full_like(scores, float("-inf"))
        forced[:, token] = 0.0
        return forced
