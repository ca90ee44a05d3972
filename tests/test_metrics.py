"""CMRC-style scoring against hand-computed cases."""

import pytest

from kbqa.evaluation.metrics import exact_match, f1_score, remove_punctuation, segment


def test_segment_mixes_cjk_characters_and_words():
    assert segment("Python 3.11版本，发布于2022年。") == [
        "python", "3.11", "版", "本", "发", "布", "于", "2022", "年"]


def test_exact_match_ignores_punctuation_and_case():
    assert exact_match("“允明”。", ["允明"]) == 1.0
    assert exact_match("ABC公司", ["abc公司"]) == 1.0
    assert exact_match("允明字", ["允明"]) == 0.0


def test_f1_uses_longest_common_substring():
    # prediction 王处直的字是允明 → 8 tokens; gold 允明 → 2; LCS 2 → P=2/8, R=1 → F1=0.4
    assert f1_score("王处直的字是允明。", ["允明"]) == pytest.approx(0.4)
    # 1947 vs 1947年: P=1, R=1/2 → 2/3
    assert f1_score("1947", ["1947年"]) == pytest.approx(2 / 3)
    # common tokens that are not contiguous do not count beyond the longest run
    assert f1_score("甲乙丙丁", ["甲丙"]) == pytest.approx(2 * (1 / 4) * (1 / 2) / (1 / 4 + 1 / 2))


def test_scores_take_the_best_gold_answer():
    assert f1_score("第151位", ["151", "第151位"]) == 1.0
    assert exact_match("151", ["第151位", "151"]) == 1.0


def test_empty_and_unrelated_predictions_score_zero():
    assert f1_score("", ["允明"]) == 0.0
    assert f1_score("completely different", ["允明"]) == 0.0
    assert remove_punctuation("《三国志》，卷一！") == "三国志卷一"
