"""The reader's hidden states at the end of kbqa's prompt, with whether the passages hold the
answer: the data an answerability probe (kbqa.llm.answerability) is fitted and measured on.

    python bench/answerability_features.py --home /tmp/cmrc-home --questions-from train --limit 600 \\
        --out bench/reports/answerability/train.npz
    python bench/answerability_features.py --home /tmp/cmrc-home --questions-from dev --limit 202 \\
        --out bench/reports/answerability/dev.npz
    python bench/answerability_features.py --home /tmp/synthetic-home --company synthetic \\
        --out bench/reports/answerability/synthetic.npz
    python bench/answerability_features.py --home /tmp/company-home --company dev \\
        --out bench/reports/answerability/company-dev.npz

Each CMRC question is asked as `kbqa eval` asks it (bench/refusal_calibration.py): with the
passages retrieval finds, and with the gold document's passages removed. The prompt is the
chain's; one forward pass of the model over it (no generation) gives every layer's hidden state
at the prompt's last token. The label is whether a gold answer stands in the passages (a
question asked with its gold passages may still miss it; one asked without may find it in
another document). Questions the retrieval gate refuses have no model call and no row.

With --company, the questions are company-format ones instead: `synthetic` generates documents
and questions (bench/synthetic_company.py, seeds other than the dev set's documents), `dev` is the
company-documents dev set (bench/company_docs.py). Each is asked as the app asks it: passages
retrieved with the conversation's history, the history in the prompt.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from cmrc_dev import EVAL, build_kb
from refusal_calibration import asked_questions, contexts

from kbqa.adapters.variants import Variant as ModelVariant
from kbqa.config import load_settings
from kbqa.qa.prompts import build_prompt, format_context, format_history
from kbqa.service import KbqaService


def holds_answer(docs: list, answers: list[str]) -> bool:
    """Whether any passage contains a gold answer, spaces ignored."""
    texts = [d.page_content.replace(" ", "") for d in docs]
    return any(a.replace(" ", "") in t for a in answers if a.strip() for t in texts)


def last_token_states(llm, prompt: str):
    """Every layer's hidden state (embeddings first) at the rendered prompt's last token."""
    import torch

    ids = llm.tokenizer(llm.render(prompt), return_tensors="pt",
                        add_special_tokens=False)["input_ids"][:, -llm.max_input_tokens:]
    with torch.inference_mode():
        output = llm.model(input_ids=ids, output_hidden_states=True, use_cache=False)
    return torch.stack([h[0, -1].float() for h in output.hidden_states]).numpy(), ids.shape[1]


def company_rows(home: Path, which: str, llm_name: str, dtype: str, seed: int) -> dict[str, list]:
    """Features of company-format questions: generated (`synthetic`) or the dev set (`dev`)."""
    import tempfile

    from company_docs import DATA, write_documents
    from synthetic_company import write

    settings = load_settings({"home": home, "kb": f"company-{which}", "llm": llm_name,
                              "llm_dtype": dtype})
    service = KbqaService(settings)
    folder = Path(tempfile.mkdtemp(prefix="company-docs-"))
    if which == "synthetic":
        documents, questions = write(folder, seed, 12)
    else:
        documents = write_documents(folder)
        questions = [json.loads(line) for line in
                     (DATA / "questions.jsonl").read_text(encoding="utf-8").splitlines() if line]
    if not service.knowledge_base(create=True).chunk_count:
        service.ingest(documents)
    template = build_prompt(settings.answer.prompt_template)
    rows: dict[str, list] = {key: [] for key in ("states", "labels", "qids", "kinds", "lengths")}
    with service.variant_model.activate(ModelVariant.of([])) as llm:
        for number, q in enumerate(questions):
            history = [tuple(turn) for turn in q.get("history") or []]
            docs = service.retrieve(q["question"], history=history)
            if not docs:
                continue
            prompt = template.format(context=format_context(docs), question=q["question"],
                                     history=format_history(history, settings.answer.history_turns))
            state, length = last_token_states(llm, prompt)
            answers = [a if isinstance(a, str) else "".join(a) for a in q.get("answers") or []]
            rows["states"].append(state.astype(np.float16))
            rows["labels"].append(bool(q.get("answerable", True)) and holds_answer(docs, answers))
            rows["qids"].append(f"{which}-{seed}-{q.get('id', number)}")
            rows["kinds"].append(q.get("kind", "answerable" if q.get("answerable") else "unanswerable"))
            rows["lengths"].append(length)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True,
                        help="KBQA home of the knowledge base (built there on first use)")
    parser.add_argument("--eval-dir", type=Path, default=EVAL)
    parser.add_argument("--questions-from", choices=("dev", "train"), default="dev")
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--limit", type=int, default=202)
    parser.add_argument("--llm", default="embedded", help="the model (kbqa's llm setting)")
    parser.add_argument("--dtype", default="auto", help="the model's weights (kbqa's llm_dtype)")
    parser.add_argument("--company", choices=("synthetic", "dev"),
                        help="company-format questions instead of CMRC ones")
    parser.add_argument("--seed", type=int, default=1, help="of the generated company documents")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.company:
        rows = company_rows(args.home, args.company, args.llm, args.dtype, args.seed)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out, states=np.stack(rows["states"]),
                            **{key: np.array(rows[key]) for key in ("labels", "qids", "kinds", "lengths")},
                            llm=np.array(args.llm), questions_from=np.array(f"company-{args.company}"))
        return
    settings = load_settings({"home": args.home, "kb": "cmrc", "llm": args.llm,
                              "llm_dtype": args.dtype})
    service = KbqaService(settings)
    build_kb(service, args.eval_dir)
    questions = asked_questions(args.eval_dir, args.questions_from)[args.offset:args.offset + args.limit]
    template = build_prompt(settings.answer.prompt_template)
    states, labels, qids, kinds, lengths = [], [], [], [], []
    start = time.perf_counter()
    with service.variant_model.activate(ModelVariant.of([])) as llm:
        for number, q in enumerate(questions, start=1):
            for kind, docs in contexts(service, q).items():
                if not docs:
                    continue
                prompt = template.format(context=format_context(docs), question=q["question"],
                                         history="")
                state, length = last_token_states(llm, prompt)
                states.append(state.astype(np.float16))
                labels.append(holds_answer(docs, q["answers"]))
                qids.append(q["qid"])
                kinds.append(kind)
                lengths.append(length)
            if number % 20 == 0:
                print(f"{number}/{len(questions)} questions, {len(states)} rows, "
                      f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, states=np.stack(states), labels=np.array(labels),
                        qids=np.array(qids), kinds=np.array(kinds), lengths=np.array(lengths),
                        llm=np.array(args.llm), questions_from=np.array(args.questions_from))


if __name__ == "__main__":
    main()
