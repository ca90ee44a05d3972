"""`kbqa eval`: scoring, paired statistics, input handling, the identical-variant abort, end to end."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from kbqa.config import load_settings
from kbqa.errors import AdapterError, KbqaError
from kbqa.evaluation import EvalConfig, parse_variant, read_questions, run_eval
from kbqa.evaluation.stats import mcnemar_exact, paired_bootstrap, win_tie_loss
from kbqa.evaluation.metrics import exact_match, f1_score, rouge_l
from kbqa.service import KbqaService

from tests.cmrc_sample import cmrc_sample

ROOT = Path(__file__).resolve().parents[1]
DIRECT_ADAPTER = ROOT / "adapters" / "qwen0.5b-cmrc-direct"


# ---------------------------------------------------------------- scoring, by hand


def test_rouge_l_is_character_lcs_f1_without_punctuation():
    # LCS(甲乙丙丁, 甲丙) = 2 → P = 2/4, R = 2/2 → F1 = 2/3 (a subsequence, unlike CMRC F1)
    assert rouge_l("甲乙丙丁", ["甲丙"]) == pytest.approx(2 / 3)
    # "iPhone 15发布于2023年。" → "iphone15发布于2023年" (16 chars); gold 2023年 (5): P=5/16, R=1
    assert rouge_l("iPhone 15发布于2023年。", ["2023年"]) == pytest.approx(10 / 21)
    assert rouge_l("“允明”", ["他叫允明", "允明"]) == 1.0
    assert rouge_l("", ["允明"]) == 0.0


def test_mixed_chinese_english_numbers_and_punctuation():
    # tokens: iphone, 15, 发, 布, 于, 2023, 年 (7); gold 2023年 → 2023, 年: LCS 2 → P=2/7, R=1
    assert f1_score("iPhone 15发布于2023年。", ["2023年"]) == pytest.approx(2 * (2 / 7) / (1 + 2 / 7))
    assert exact_match("“GPT-4”。", ["gpt4"]) == 1.0  # ASCII and Chinese punctuation both removed
    assert exact_match("3.14", ["314"]) == 1.0
    assert f1_score("3.14", ["314"]) == 0.0  # but F1 keeps 3.14 as one token, unlike 314


# ---------------------------------------------------------------- statistics, known answers


def test_bootstrap_of_a_constant_difference_is_that_constant():
    interval = paired_bootstrap([0.25] * 40)
    assert (interval.mean, interval.low, interval.high) == pytest.approx((0.25, 0.25, 0.25))


def test_bootstrap_interval_matches_the_normal_approximation():
    deltas = [1.0] * 30 + [0.0] * 70  # mean 0.3, standard error sqrt(.3*.7/100) ≈ 0.0458
    interval = paired_bootstrap(deltas, resamples=4000)
    half_width = 1.96 * math.sqrt(0.3 * 0.7 / 100)
    assert interval.mean == pytest.approx(0.3)
    assert interval.low == pytest.approx(0.3 - half_width, abs=0.02)
    assert interval.high == pytest.approx(0.3 + half_width, abs=0.02)
    assert paired_bootstrap(deltas, seed=3) == paired_bootstrap(deltas, seed=3)


def test_mcnemar_exact_on_known_tables():
    # 10 discordant pairs, all in the variant's favour: p = 2 · 0.5^10
    result = mcnemar_exact([False] * 10 + [True] * 5, [True] * 10 + [True] * 5)
    assert (result["b"], result["c"]) == (0, 10)
    assert result["p_value"] == pytest.approx(2 * 0.5 ** 10)
    balanced = mcnemar_exact([True, False, True, False], [False, True, True, False])
    assert (balanced["b"], balanced["c"], balanced["p_value"]) == (1, 1, 1.0)
    # b=1, c=6: two-sided exact binomial p = 2 · P(X ≤ 1 | n=7) = 2 · 8/128
    result = mcnemar_exact([True] + [False] * 6, [False] + [True] * 6)
    assert result["p_value"] == pytest.approx(16 / 128)


def test_win_tie_loss_counts():
    assert win_tie_loss([0.5, 0.0, -0.2, 1e-12, 0.1]) == {"win": 2, "tie": 2, "loss": 1}


# ---------------------------------------------------------------- inputs


def test_malformed_question_lines_are_reported_with_line_numbers(tmp_path: Path):
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join([
        json.dumps({"qid": "a", "question": "王处直的字是什么？", "answers": ["允明"]}),
        "{not json",
        json.dumps({"qid": "b", "question": "", "answers": ["x"]}),
        json.dumps({"qid": "c", "question": "问？", "answers": "not a list"}),
        json.dumps({"qid": "a", "question": "重复？", "answers": ["x"]}),
        "",
        json.dumps({"question": "没有 qid 的问题？", "answers": ["y"], "doc_id": "D1"}),
    ]), encoding="utf-8")
    questions, problems = read_questions(path)
    assert [q.qid for q in questions] == ["a", "line7"]
    assert questions[1].doc_id == "D1"
    assert [p.split(":")[1] for p in problems] == ["2", "3", "4", "5"]
    assert "duplicate qid 'a'" in problems[3]


def test_a_file_without_valid_questions_is_an_error(tmp_path: Path):
    path = tmp_path / "q.jsonl"
    path.write_text("{}\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(KbqaError, match="no valid questions"):
        read_questions(path)


def test_variant_specs(tmp_path: Path):
    assert parse_variant("plain").is_plain
    variant = parse_variant(f"both={tmp_path}+{tmp_path}")
    assert variant.name == "both" and variant.adapters == (tmp_path, tmp_path)
    for bad in ("fused", "=x", "plain=x", f"x={tmp_path / 'missing'}"):
        with pytest.raises(KbqaError):
            parse_variant(bad)


def test_the_default_variant_is_the_reader_adapter_on_its_base(tmp_path: Path):
    from kbqa.evaluation.data import with_default_reader
    from kbqa.llm.loading import EMBEDDED_READERS, PLAIN_DEFAULT_LLM

    reader = next(iter(EMBEDDED_READERS.values()))
    plain, default = parse_variant("plain"), parse_variant("default")
    assert plain.is_plain and not default.is_plain
    for llm in ("embedded", f"embedded:{reader.name}", f"embedded:{PLAIN_DEFAULT_LLM}"):
        model, variants = with_default_reader(llm, (plain, default))
        assert model == f"embedded:{PLAIN_DEFAULT_LLM}", llm
        assert variants[0] == plain
        assert variants[1].name == "default" and variants[1].adapters == (reader.adapter_folder(),)
    config = json.loads((reader.adapter_folder() / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == f"embedded:{PLAIN_DEFAULT_LLM}"
    # without 'default' nothing changes; on another model 'default' names nothing
    other = parse_variant(f"x={tmp_path}")
    assert with_default_reader("embedded", (plain, other)) == ("embedded", (plain, other))
    with pytest.raises(KbqaError, match="default reader"):
        with_default_reader("embedded:smollm2-135m-instruct", (plain, default))


def test_eval_compares_plain_with_the_default_reader(model_cache: Path, tmp_path: Path):
    """`kbqa eval --variant plain --variant default` on the default model runs both on its base."""
    questions, docs = cmrc_sample(tmp_path, 1)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "cache").symlink_to(model_cache, target_is_directory=True)
    settings = load_settings({"home": tmp_path / "home", "max_new_tokens": 16}, environ={})
    assert settings.llm.model == "embedded"
    out = tmp_path / "out"
    config = EvalConfig(questions=questions, docs=(docs,), out=out,
                        variants=(parse_variant("plain"), parse_variant("default")))
    metrics = run_eval(settings, config, progress=False, log=lambda _: None)
    assert metrics["default"]["verify"]["max_logit_diff"] > 1e-3
    assert json.loads((out / "run.json").read_text())["llm"].endswith("qwen2.5-coder-0.5b-instruct")
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert {r["variant"] for r in rows} == {"plain", "default"} and len(rows) == 4


# ---------------------------------------------------------------- the identical-variant abort


def _no_op_adapter(model_folder: Path, out: Path) -> Path:
    """A LoRA that loads strictly (ΔW ≠ 0) but is far too small to change any logit."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.fill_(1e-12)
    peft_model.save_pretrained(str(out))
    return out


def test_a_variant_identical_to_plain_aborts_before_answering(tiny_llm_folder: Path,
                                                              tmp_path: Path):
    questions, docs = cmrc_sample(tmp_path, 2)
    adapter = _no_op_adapter(tiny_llm_folder, tmp_path / "no-op")
    settings = load_settings({"home": tmp_path / "home", "llm": str(tiny_llm_folder),
                              "llm_dtype": "float32", "max_new_tokens": 8}, environ={})
    config = EvalConfig(questions=questions, docs=(docs,), out=tmp_path / "out",
                        variants=(parse_variant("plain"), parse_variant(f"fused={adapter}")))
    with pytest.raises(AdapterError, match="'fused' is identical to the plain model.*Δlogit"):
        run_eval(settings, config, progress=False, log=lambda _: None)
    assert not (tmp_path / "out" / "answers.jsonl").exists()  # nothing was answered


# ---------------------------------------------------------------- end to end, default model

# CMRC 2018's official scorer (cmrc2018_evaluate.py), re-written here without kbqa.evaluation.metrics so
# the per-question scores of a run are checked against an independent implementation: lower
# case, its punctuation list removed, each CJK character a token and other runs split into
# words (nltk.word_tokenize there, \w+ or one symbol here), F1 from the longest common
# *substring* of the token lists, EM on the strings with that punctuation removed; max over golds.
_CMRC_SP_CHAR = ['-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=', '，', '。', '：', '？', '！',
                 '“', '”', '；', '’', '《', '》', '……', '·', '、', '「', '」', '（', '）', '－', '～',
                 '『', '』']


def _cmrc_segments(text: str) -> list[str]:
    segments, run = [], ""
    for char in text.lower().strip():
        if char in _CMRC_SP_CHAR or "\u4e00" <= char <= "\u9fa5":
            segments += re.findall(r"\w+|[^\w\s]", run)
            run = ""
            if char not in _CMRC_SP_CHAR:
                segments.append(char)
        else:
            run += char
    return segments + re.findall(r"\w+|[^\w\s]", run)


def _cmrc_f1(prediction: str, golds: list[str]) -> float:
    predicted, best = _cmrc_segments(prediction), 0.0
    for gold in map(_cmrc_segments, golds):
        common = max((k for i in range(len(gold)) for j in range(len(predicted))
                      for k in range(1, min(len(gold) - i, len(predicted) - j) + 1)
                      if gold[i:i + k] == predicted[j:j + k]), default=0)
        if common:
            precision, recall = common / len(predicted), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def _cmrc_em(prediction: str, golds: list[str]) -> float:
    def clean(text: str) -> str:
        return "".join(c for c in text.lower().strip() if c not in _CMRC_SP_CHAR)
    return float(any(clean(prediction) == clean(gold) for gold in golds))


def test_the_independent_cmrc_scorer_on_hand_worked_cases():
    # 河北省曲阳县城 vs 河北省曲阳县: 7 and 6 tokens, common substring 6 → P = 6/7, R = 1
    assert _cmrc_f1("河北省曲阳县城", ["河北省曲阳县"]) == pytest.approx(12 / 13)
    # 2023, 年 common with [iphone, 15, 发, 布, 于, 2023, 年]: P = 2/7, R = 1
    assert _cmrc_f1("iPhone 15发布于2023年。", ["x", "2023年"]) == pytest.approx(4 / 9)
    # common substring 1 (not the subsequence 甲丙): P = 1/4, R = 1/2
    assert _cmrc_f1("甲乙丙丁", ["甲丙"]) == pytest.approx(1 / 3)
    # the end-to-end run's answers against its replaced golds: 河北省 or 曲阳县 in common with
    # the first (P = 3/6, R = 3/9: 0.4; a subsequence would give 0.8), all of the second
    # (P = 3/6, R = 1)
    assert _cmrc_f1("河北省曲阳县", ["河北省保定市曲阳县", "曲阳县"]) == pytest.approx(2 / 3)
    # 9 of the gold's 10 tokens (…院, cast; the full-width brackets dropped): P = 1, R = 9/10
    assert _cmrc_f1("中国空间技术研究院", ["中国空间技术研究院（CAST）"]) == pytest.approx(18 / 19)
    assert _cmrc_em("“允明”。", ["神策军", "允明"]) == 1.0 and _cmrc_em("允明。", ["允"]) == 0.0


@pytest.mark.slow
def test_eval_end_to_end_on_cmrc_dev_with_two_variants(plain_llm_folder: Path,
                                                       tmp_path: Path):
    questions, docs = cmrc_sample(tmp_path, 4)
    # The model answers all four exactly (允明, 神策军, 河北省曲阳县, 中国空间技术研究院), so two gold
    # lists are replaced by other spans (CMRC lists several golds per question): partial F1, the
    # max over golds, longest common substring (not subsequence) and punctuation get exercised.
    golds = {q["qid"]: q["answers"] for q in map(json.loads, questions.read_text().splitlines())}
    golds["DEV_58_QUERY_2"] = ["河北省保定市曲阳县", "曲阳县"]  # the second scores higher
    golds["DEV_77_QUERY_0"] = ["中国空间技术研究院（CAST）"]
    questions.write_text("".join(
        json.dumps({**q, "answers": golds[q["qid"]]}, ensure_ascii=False) + "\n"
        for q in map(json.loads, questions.read_text().splitlines())), encoding="utf-8")
    with questions.open("a", encoding="utf-8") as handle:
        handle.write('{"qid": "broken", "question": \n')
    settings = load_settings({"home": tmp_path / "home", "llm": str(plain_llm_folder),
                              "max_new_tokens": 32}, environ={})
    out = tmp_path / "out"
    config = EvalConfig(questions=questions, docs=(docs,), out=out,
                        variants=(parse_variant("plain"),
                                  parse_variant(f"direct={DIRECT_ADAPTER}")))
    service = KbqaService(settings.changed({"home": out / "home", "kb": "eval"}))
    logged: list[str] = []
    metrics = run_eval(settings, config, service=service, progress=False, log=logged.append)

    assert any("questions.jsonl:5: skipped" in line for line in logged)
    assert metrics["direct"]["verify"]["max_logit_diff"] > 1e-3
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 4 * 2  # variants × questions × (answerable, gold hidden)
    for row in rows:
        assert {"answer", "latency_s", "tokens", "chunk_ids", "scores", "refused"} <= set(row)
    answerable = [r for r in rows if r["kind"] == "answerable"]
    assert all(0.0 <= r["f1"] <= 1.0 and r["em"] in (0.0, 1.0) for r in answerable)
    saved = json.loads((out / "metrics.json").read_text())
    # every answerable row's EM and F1 as the independent CMRC scorer above gives them, from the
    # row's answer and the gold answers in the questions file; the saved means are theirs
    by_hand = {(r["variant"], r["qid"]): (_cmrc_em(r["answer"], golds[r["qid"]]),
                                          _cmrc_f1(r["answer"], golds[r["qid"]]))
               for r in answerable}
    assert len(by_hand) == 8
    for row in answerable:
        em, f1 = by_hand[row["variant"], row["qid"]]
        assert (row["em"], row["f1"]) == (em, pytest.approx(f1)), row
    assert {em for em, _ in by_hand.values()} == {0.0, 1.0}  # both outcomes checked
    assert any(0 < f1 < 1 for _, f1 in by_hand.values())  # and partial F1
    for name in ("plain", "direct"):
        assert saved[name]["n"] == 4
        assert set(saved[name]["retrieval"]) >= {"hit@1", "hit@5", "mrr"}
        assert set(saved[name]["answer"]) >= {"em", "f1", "rouge_l", "refusal_rate"}
        mine = [score for (variant, _), score in by_hand.items() if variant == name]
        assert saved[name]["answer"]["em"] == pytest.approx(sum(em for em, _ in mine) / 4)
        assert saved[name]["answer"]["f1"] == pytest.approx(sum(f1 for _, f1 in mine) / 4)
    comparison = saved["comparisons"]["direct"]
    assert comparison["n"] == 4 and sum(comparison["win_tie_loss_f1"].values()) == 4
    assert comparison["f1_delta"]["low"] <= comparison["f1_delta"]["mean"] <= comparison["f1_delta"]["high"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Answers side by side" in html
    assert "| direct |" in (out / "report.md").read_text()

    # resumable: a second run answers nothing new and reproduces the metrics
    before = (out / "answers.jsonl").read_text()
    again = run_eval(settings, config, service=service, progress=False, log=lambda _: None)
    assert (out / "answers.jsonl").read_text() == before
    assert again["direct"]["answer"]["f1"] == metrics["direct"]["answer"]["f1"]
