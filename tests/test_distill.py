"""Distillation after a transplant: the teacher's answers (cached), training that starts from a
given LoRA strictly, and `kbqa adapters distill` end to end on real small models."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from kbqa.adapters.distill import TEACHER_FILE, TeacherAnswer, teacher_answers
from kbqa.adapters.train import Example, TrainOptions, encode, train_lora
from kbqa.cli import main
from kbqa.errors import AdapterError
from tests.cmrc_sample import cmrc_sample
from tests.fusion_models import save_adapter, save_llama

ROLES = ["q_proj", "v_proj"]
EXAMPLES = [Example("问题：中国的首都是哪里？", "北京"), Example("问题：一年有几个月？", "十二个月")]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_llm_folder) -> dict[str, Path]:
    """Teacher: SmolLM2-135M with a LoRA. Student: a small random llama with SmolLM2's tokenizer,
    and a LoRA on it to start from (as a transplant would give)."""
    root = tmp_path_factory.mktemp("distill")
    student = save_llama(root / "student", vocab=49152)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_llm_folder / name, student / name)
    return {"teacher": tiny_llm_folder,
            "teacher_adapter": save_adapter(tiny_llm_folder, root / "teacher-lora", ROLES, seed=3),
            "student": student,
            "start": save_adapter(student, root / "start", ROLES, seed=4)}


def _answer_nll(model_folder: Path, adapter: Path, examples: list[Example]) -> float:
    """Mean answer-token loss of the model with `adapter`, on `examples`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kbqa.adapters.loading import load_adapters

    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    model, _ = load_adapters(AutoModelForCausalLM.from_pretrained(model_folder,
                                                                  dtype=torch.float32), [adapter])
    losses = []
    with torch.no_grad():
        for example in examples:
            ids, labels = encode(tokenizer, example, 96)
            losses.append(model(input_ids=torch.tensor([ids]),
                                labels=torch.tensor([labels])).loss.item())
    return sum(losses) / len(losses)


def test_teacher_answers_are_cached_and_a_cache_for_other_prompts_is_refused(models, tmp_path):
    prompts = [e.prompt for e in EXAMPLES]
    cache = tmp_path / TEACHER_FILE
    answers = teacher_answers(models["teacher"], [models["teacher_adapter"]], prompts,
                              max_new_tokens=5, cache=cache, progress=False)
    assert [a.prompt for a in answers] == prompts and all(a.answer for a in answers)
    rows = [json.loads(line) for line in cache.read_text(encoding="utf-8").splitlines()]
    assert [TeacherAnswer(**r) for r in rows] == answers
    # a rerun reads the cache and loads no model: a folder that does not exist is never opened
    again = teacher_answers(tmp_path / "no-model", [], prompts, cache=cache, progress=False)
    assert again == answers
    with pytest.raises(AdapterError, match="answers to other prompts"):
        teacher_answers(tmp_path / "no-model", [], ["另一个问题"] + prompts, cache=cache,
                        progress=False)


def test_an_answer_cut_off_by_a_crash_is_asked_again_and_the_cache_stays_whole(models, tmp_path):
    prompts = [e.prompt for e in EXAMPLES]
    cache = tmp_path / TEACHER_FILE
    answers = teacher_answers(models["teacher"], [models["teacher_adapter"]], prompts,
                              max_new_tokens=5, cache=cache, progress=False)
    first, second = cache.read_text(encoding="utf-8").splitlines()
    cache.write_text(first + "\n" + second[: len(second) // 2], encoding="utf-8")  # the crash
    again = teacher_answers(models["teacher"], [models["teacher_adapter"]], prompts,
                            max_new_tokens=5, cache=cache, progress=False)
    assert again == answers
    assert cache.read_text(encoding="utf-8").splitlines() == [first, second]
    cache.write_text("{not json\n" + second + "\n", encoding="utf-8")  # damaged, not cut off
    with pytest.raises(AdapterError, match="damaged"):
        teacher_answers(tmp_path / "no-model", [], prompts, cache=cache, progress=False)


def test_training_starts_from_the_given_lora_exactly_and_lowers_its_loss(models, tmp_path):
    from kbqa.adapters.loading import read_adapter_weights

    options = TrainOptions(rank=4, alpha=8, targets=tuple(ROLES), max_length=96, dropout=0.0)
    untouched = tmp_path / "zero-steps"
    train_lora(models["student"], EXAMPLES, untouched, TrainOptions(**{
        **options.__dict__, "steps": 0}), progress=False, start_from=models["start"])
    start, saved = read_adapter_weights(models["start"]), read_adapter_weights(untouched)
    assert set(start) == set(saved) and all(torch.equal(start[k], saved[k]) for k in start)

    trained = tmp_path / "trained"
    train_lora(models["student"], EXAMPLES, trained, TrainOptions(**{
        **options.__dict__, "steps": 8, "learning_rate": 1e-2}), progress=False,
        start_from=models["start"])
    before = _answer_nll(models["student"], models["start"], EXAMPLES)
    after = _answer_nll(models["student"], trained, EXAMPLES)
    assert after < before


def test_a_start_adapter_that_does_not_fit_is_refused(models, tmp_path):
    with pytest.raises(AdapterError, match="rank 4, alpha 8"):  # the geometry differs
        train_lora(models["student"], EXAMPLES, tmp_path / "a", TrainOptions(
            rank=8, alpha=16, targets=tuple(ROLES), steps=1), progress=False,
            start_from=models["start"])
    with pytest.raises(AdapterError, match="does not fit this model"):  # another model's LoRA
        train_lora(models["student"], EXAMPLES, tmp_path / "b", TrainOptions(
            rank=4, alpha=8, targets=tuple(ROLES), steps=1), progress=False,
            start_from=models["teacher_adapter"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b" / "adapter_model.safetensors").exists()


def test_distill_command_end_to_end(models, tmp_path, capsys):
    data = tmp_path / "cmrc"
    cmrc_sample(data, 3)
    out = tmp_path / "distilled"
    command = ["adapters", "distill", "--teacher-adapter", str(models["teacher_adapter"]),
               "--model", str(models["student"]), "--start-from", str(models["start"]),
               "--cmrc", str(data), "--skip", "1", "--examples", "2", "--steps", "2",
               "--max-new-tokens", "4", "--max-length", "256", "--out", str(out)]
    assert main(command) == 0
    assert "teacher answers: 2 of 2 non-empty" in capsys.readouterr().out
    rows = (out / TEACHER_FILE).read_text(encoding="utf-8").splitlines()
    assert len(rows) == 2
    gold = {json.loads(line)["question"] for line in (data / "questions.jsonl").read_text(
        encoding="utf-8").splitlines()}
    assert all(any(q in json.loads(r)["prompt"] for q in gold) for r in rows)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "No gold answer is used" in card and "distilled by `kbqa adapters distill`" in card
    assert "rank: 4" in card and "kbqa adapters distill --teacher-adapter" in card
    assert main(["adapters", "verify", "--model", str(models["student"]), str(out)]) == 0
    # the teacher's base comes from its adapter's config; the rerun reuses the cached answers
    assert main(command) == 0
    assert len((out / TEACHER_FILE).read_text(encoding="utf-8").splitlines()) == 2
