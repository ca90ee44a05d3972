"""Trans-LoRA-style distillation: the donor model with its adapter answers unlabeled prompts, and
the target's adapter (typically the transplanted one) is trained on those answers.

A transplant maps weights; it cannot know what the target does with them. A few steps of training
on the donor's own answers carry the donor adapter's behaviour across without any labelled data:
only prompts are needed, the teacher supplies the targets. The teacher's answers are kept in
OUT/teacher_answers.jsonl (the data the adapter learnt from, and a cache for reruns).
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from kbqa.adapters.train import Example
from kbqa.errors import AdapterError


TEACHER_FILE = "teacher_answers.jsonl"


@dataclass(frozen=True)
class TeacherAnswer:
    prompt: str
    answer: str


def teacher_answers(model_folder: Path, adapters: list[Path], prompts: list[str], *,
                    max_new_tokens: int = 48, cache: Path | None = None,
                    progress: bool = True) -> list[TeacherAnswer]:
    """Greedy answers of the base model with `adapters` loaded strictly, one per prompt.

    Answers already in `cache` (same prompt, same order) are reused; new ones are appended as
    they are made, so an interrupted run resumes.
    """
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kbqa.adapters.loading import load_adapters
    from kbqa.hardware import auto_dtype

    done = _read_cache(cache, prompts) if cache else []
    if len(done) == len(prompts):
        return done
    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    # bf16 only where the CPU multiplies it natively: emulated bf16 is many times slower
    model = AutoModelForCausalLM.from_pretrained(model_folder, dtype=getattr(torch, auto_dtype()))
    if adapters:
        model, _ = load_adapters(model, adapters)
    model.eval()
    with cache.open("a", encoding="utf-8") if cache else nullcontext() as sink:
        for prompt in tqdm(prompts[len(done):], desc="teacher", disable=not progress):
            answer = _generate(model, tokenizer, prompt, max_new_tokens)
            done.append(TeacherAnswer(prompt, answer))
            if sink is not None:
                sink.write(json.dumps({"prompt": prompt, "answer": answer},
                                      ensure_ascii=False) + "\n")
                sink.flush()
    return done


def _generate(model: torch.nn.Module, tokenizer: object, prompt: str, max_new_tokens: int) -> str:
    """The teacher's greedy answer, rendered in the chat template exactly as training encodes it."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             tokenize=False, add_generation_prompt=True)
    else:
        text = prompt
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip()


def _read_cache(cache: Path, prompts: list[str]) -> list[TeacherAnswer]:
    """The cached answers that match `prompts` in order; a cache for other prompts is refused.

    A last line without its newline was cut off by a crash: it is dropped from the file, so the
    rerun makes that answer again and appends whole lines after it."""
    if not cache.is_file():
        return []
    data = cache.read_bytes()
    whole = data[:data.rfind(b"\n") + 1]
    if len(whole) < len(data):
        with cache.open("r+b") as file:
            file.truncate(len(whole))
    try:
        rows = [json.loads(line) for line in whole.decode("utf-8").splitlines() if line]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{cache} is damaged ({exc}); remove it to ask the teacher again") from exc
    for index, row in enumerate(rows):
        if index >= len(prompts) or row.get("prompt") != prompts[index]:
            raise AdapterError(f"{cache} holds answers to other prompts (row {index + 1}); "
                               "remove it or choose another output folder")
    return [TeacherAnswer(r["prompt"], r["answer"]) for r in rows]


def distillation_examples(answers: list[TeacherAnswer]) -> list[Example]:
    """Training examples from the teacher's answers; empty answers teach nothing and are dropped."""
    return [Example(a.prompt, a.answer) for a in answers if a.answer]
