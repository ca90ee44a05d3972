"""The generated company documents that train the answerability probe (bench/synthetic_company.py):
every answerable question's answer stands in its company's documents, and what a near-miss
question asks for stands in none of them, so the labels the probe learns from are true."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "bench"))
import synthetic_company  # noqa: E402  (bench/ is scripts, not a package)


@pytest.mark.parametrize("seed", [1, 2])
def test_answers_stand_in_their_documents_and_near_misses_do_not(seed: int) -> None:
    documents, questions = synthetic_company.generate(seed, len(synthetic_company.COMPANIES))
    assert sum(q["answerable"] for q in questions) > 100 and sum(not q["answerable"] for q in questions) > 100
    for q in questions:
        own = "\n".join(text for name, text in documents.items() if name.startswith(q["company"]))
        asked = q["question"].removeprefix(q["company"])
        if q["answerable"]:
            assert any(answer in own for answer in q["answers"]), q
        elif q["kind"] == "table-missing-attribute":
            attribute = asked.split("的", 1)[1].removesuffix("是多少？")
            assert attribute not in own, q
        elif q["kind"] == "outlet-missing-city":
            assert asked[:2] not in own, q
        elif q["kind"] in ("table-missing-product", "table-followup-missing"):
            model = asked.removeprefix("那").split("的")[0].split("呢")[0]
            for (kind, _), _attributes in synthetic_company.CATEGORIES.values():
                model = model.removeprefix(kind)
            assert model and model[0].isascii() and f"| {model} |" not in own, q


def test_the_same_seed_gives_the_same_set() -> None:
    assert synthetic_company.generate(3, 4) == synthetic_company.generate(3, 4)
