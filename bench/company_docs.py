"""The company-documents dev set: does kbqa answer what a company's own documents say, and refuse
what they do not?

    python bench/company_docs.py [--variant grounding=refuse] [--limit N]
    python bench/company_docs.py --generated 2    # generated documents instead (a held-out check)
    python bench/company_docs.py --regrade REPORT --floor 0.3  # today's grounding on recorded drafts

Six fictional documents of one company (bench/data/company_docs/documents: an employee handbook in
Markdown, an FAQ as TXT, service outlets as CSV, a product manual with spec and fault-code tables
and an IT policy as DOCX, a price list as XLSX; the DOCX and XLSX files are written at run time
from their .json sources, so nothing binary is committed) are ingested into a knowledge base in a
temporary KBQA_HOME. Every question in questions.jsonl (answerable ones with their gold facts,
some with chat history; unanswerable ones whose answer the documents do not hold) is asked through
`KbqaService.ask`, the path `kbqa ask` takes, at default settings plus the variant's overrides.

--generated SEED asks the questions of generated documents instead (bench/synthetic_company.py,
twelve fictional companies, about 320 questions): a set no setting was tuned on when SEED is not
one a probe was fitted on (the shipped probe used seed 1). Its reports are named generated-SEED-*.

Scoring: an answerable question is right when its answer, spaces removed and full-width forms
folded (NFKC), contains one of its gold facts (a fact given as a list needs all its parts);
refused when the answer is kbqa's fixed refusal. Prints the table and writes a JSON report per
variant, with every question, the passages it was answered from and the machine facts, under
bench/reports/company-docs/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

from machine_facts import with_machine

from kbqa.config import SHORT_NAMES, load_settings
from kbqa.service import KbqaService

DATA = Path(__file__).parent / "data" / "company_docs"
REPORTS = Path(__file__).parent / "reports" / "company-docs"
SHARED_CACHE = Path.home() / ".cache" / "kbqa-tests"  # the tests' model cache, reused when present


def normalise(text: str) -> str:
    """Full-width forms folded, case and whitespace dropped: "４０００ Pa" and "4000pa" match."""
    return "".join(unicodedata.normalize("NFKC", text).lower().split())


def is_right(answer: str, golds: list[str | list[str]]) -> bool:
    """Whether the answer contains one gold fact (a list: all of its parts)."""
    said = normalise(answer)
    return any(all(normalise(part) in said for part in ([gold] if isinstance(gold, str) else gold))
               for gold in golds)


def write_documents(folder: Path) -> list[Path]:
    """The documents as files: text formats copied, DOCX and XLSX built from their .json sources."""
    written = []
    for source in sorted((DATA / "documents").iterdir()):
        if source.name.endswith(".docx.json"):
            written.append(_docx(json.loads(source.read_text(encoding="utf-8")),
                                 folder / source.name.removesuffix(".json")))
        elif source.name.endswith(".xlsx.json"):
            written.append(_xlsx(json.loads(source.read_text(encoding="utf-8")),
                                 folder / source.name.removesuffix(".json")))
        else:
            target = folder / source.name
            target.write_bytes(source.read_bytes())
            written.append(target)
    return written


def _docx(spec: dict[str, Any], path: Path) -> Path:
    import docx

    document = docx.Document()
    for block in spec["blocks"]:
        if "h1" in block:
            document.add_heading(block["h1"], level=1)
        elif "h2" in block:
            document.add_heading(block["h2"], level=2)
        elif "p" in block:
            document.add_paragraph(block["p"])
        else:
            rows = block["table"]
            table = document.add_table(rows=len(rows), cols=len(rows[0]))
            table.style = "Table Grid"
            for r, row in enumerate(rows):
                for c, value in enumerate(row):
                    table.cell(r, c).text = value
    document.save(str(path))
    return path


def _xlsx(spec: dict[str, Any], path: Path) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in spec["sheets"].items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(str(path))
    return path


def parse_variant(text: str) -> dict[str, str]:
    """'grounding=refuse,top_k=5' or 'adapters=DIR+DIR' → settings overrides by short name;
    'default' → none."""
    if text == "default":
        return {}
    overrides = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in SHORT_NAMES:
            raise SystemExit(f"--variant {text!r}: expected KEY=VALUE with a setting's short name "
                             f"(e.g. grounding=refuse), got {part!r}")
        # adapters is a list: DIR+DIR, as in `kbqa eval --variant NAME=DIR+DIR`
        overrides[key.strip()] = (value.strip().split("+") if key.strip() == "adapters"
                                  else value.strip())
    return overrides


def ask_all(service: KbqaService, questions: list[dict]) -> list[dict]:
    """Each question through the service as `kbqa ask` does, with its history; one row each."""
    rows = []
    for number, q in enumerate(questions, start=1):
        history = [tuple(turn) for turn in q.get("history", [])]
        answer = service.ask(q["question"], history=history)
        passages = [d.page_content for d in service.retrieve(q["question"], history=history)]
        row = {"id": q["id"], "question": q["question"], "history": q.get("history", []),
               "answerable": q["answerable"], "kind": q["kind"], "answers": q["answers"],
               "answer": answer.text, "refused": answer.refused,
               "right": q["answerable"] and not answer.refused and is_right(answer.text, q["answers"]),
               "total_s": answer.timings["total"], "answerability": answer.answerability,
               "passages": passages,
               "sources": [s.location() for s in answer.sources]}
        grounding = getattr(answer, "grounding", None)
        if grounding is not None:
            row["grounding"] = grounding.as_dict()
        rows.append(row)
        mark = "refused" if answer.refused else ("right" if row["right"] else "wrong")
        print(f"[{number}/{len(questions)}] {mark:7} {row['total_s']:.1f}s {q['question']} → "
              f"{answer.text[:50]!r}", file=sys.stderr, flush=True)
    return rows


def summarise(rows: list[dict]) -> dict[str, Any]:
    answerable = [r for r in rows if r["answerable"]]
    missing = [r for r in rows if not r["answerable"]]
    share = lambda part, whole: round(len(part) / len(whole), 3) if whole else None
    return {"answerable": len(answerable), "unanswerable": len(missing),
            "answerable_right": share([r for r in answerable if r["right"]], answerable),
            "answerable_refused": share([r for r in answerable if r["refused"]], answerable),
            "unanswerable_refused": share([r for r in missing if r["refused"]], missing),
            "latency_p50_s": round(statistics.median(r["total_s"] for r in rows), 2),
            "by_kind": {kind: share([r for r in answerable if r["kind"] == kind and r["right"]],
                                    [r for r in answerable if r["kind"] == kind])
                        for kind in sorted({r["kind"] for r in answerable})}}


def regrade(report: dict[str, Any], floor: float) -> list[dict]:
    """A recorded run's rows with the current grounding step applied again to each recorded
    draft and its passages (a deterministic function of them: this equals asking again with the
    same drafts), then `floor` as min_answerability. Rows the gate refused stay refused. The
    knowledge base's file names are the report's (a report from before they were recorded is
    regraded without them)."""
    from pathlib import PurePath

    from kbqa.qa.chain import is_refusal
    from kbqa.qa.grounding import ground
    from kbqa.qa.prompts import REFUSAL

    rows = []
    for row in report["rows"]:
        recorded = row.get("grounding")
        if recorded and row.get("answerability") is not None:
            titles = [PurePath(source.split(" · ")[0]).stem for source in row["sources"]]
            earlier = row["history"][-1][0] if row.get("history") else ""
            text = ground(recorded["draft"], row["passages"], row["question"], "span",
                          names=row["sources"], titles=titles, earlier=earlier,
                          library=report.get("library", ())).text
            text = REFUSAL if row["answerability"] < floor else text
            refused = is_refusal(text)
            row = dict(row, answer=text, refused=refused,
                       right=row["answerable"] and not refused and is_right(text, row["answers"]))
        rows.append(row)
    return rows


FLOORS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)


def answerability_curve(rows: list[dict]) -> list[dict]:
    """The summary for each min_answerability floor above the run's own, from the probabilities
    the run recorded: a floor refuses exactly the answers below it and changes no other (the
    refusal replaces the answer whole), so this equals running again with that floor."""
    points = []
    for floor in FLOORS:
        moved = [dict(r, refused=True, right=False)
                 if r["answerability"] is not None and r["answerability"] < floor else r
                 for r in rows]
        summary = summarise(moved)
        points.append({"min_answerability": floor,
                       **{k: summary[k] for k in ("answerable_right", "answerable_refused",
                                                  "unanswerable_refused")}})
    return points


def run_variant(variant: str, questions: list[dict], home: Path, documents: list[Path],
                llm: str) -> dict[str, Any]:
    overrides = parse_variant(variant)
    # one knowledge base per embedder: a KB refuses vectors from another model
    kb = "company" if overrides.get("embedder", "embedded") == "embedded" else (
        "company-" + Path(overrides["embedder"]).name)
    settings = load_settings({"home": home, "kb": kb, "llm": llm, **overrides})
    service = KbqaService(settings)
    if not service.knowledge_base(create=True).chunk_count:
        start = time.perf_counter()
        results = service.ingest(documents)
        failed = [r for r in results if r.status == "failed"]
        if failed:
            raise SystemExit(f"{failed[0].path.name}: failed to ingest: {failed[0].error}")
        print(f"ingested {len(documents)} documents in {time.perf_counter() - start:.1f}s",
              file=sys.stderr)
    rows = ask_all(service, questions)
    answer = settings.answer.model_dump()
    return {"variant": variant, "settings": {"llm": llm, "mode": settings.retrieval.mode,
                                             "top_k": settings.retrieval.top_k,
                                             "min_coverage": settings.retrieval.min_coverage,
                                             "answer": {k: v for k, v in answer.items()
                                                        if k != "prompt_template"}},
            "chunks": service.knowledge_base().chunk_count,
            "library": service.library()(),  # the file names the grounding check reads
            "summary": summarise(rows),
            "answerability_curve": (answerability_curve(rows)
                                    if any(r["answerability"] is not None for r in rows) else None),
            "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", default=None,
                        help="settings overrides by short name, e.g. grounding=refuse (repeat to "
                             "compare; 'default' = no override; default: default)")
    parser.add_argument("--llm", default="embedded")
    parser.add_argument("--limit", type=int, default=None,
                        help="first N answerable and first N unanswerable questions")
    parser.add_argument("--cache", type=Path, default=SHARED_CACHE if SHARED_CACHE.is_dir() else None,
                        help="model cache to reuse (default: the tests' cache when present)")
    parser.add_argument("--out", type=Path, default=REPORTS)
    parser.add_argument("--regrade", type=Path, default=None, metavar="REPORT",
                        help="no model: apply today's grounding step and --floor to the drafts a "
                             "report recorded (run it with min_answerability=0) and print the summary")
    parser.add_argument("--floor", type=float, default=None,
                        help="min_answerability for --regrade (default: today's default)")
    parser.add_argument("--generated", type=int, default=None, metavar="SEED",
                        help="ask generated documents' questions (bench/synthetic_company.py) "
                             "instead of the dev set's")
    args = parser.parse_args()

    if args.regrade is not None:
        try:
            report = json.loads(args.regrade.read_text(encoding="utf-8"))
            report["rows"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"--regrade {args.regrade}: not a company_docs.py report ({exc})")
        floor = args.floor if args.floor is not None else load_settings(
            {"home": tempfile.gettempdir()}).llm.min_answerability
        summary = summarise(regrade(report, floor))
        print(json.dumps({"report": str(args.regrade), "floor": floor,
                          **{k: summary[k] for k in ("answerable", "unanswerable",
                                                     "answerable_right", "answerable_refused",
                                                     "unanswerable_refused", "by_kind")}},
                         ensure_ascii=False))
        return
    if args.generated is None:
        questions = [json.loads(line) for line in (DATA / "questions.jsonl").read_text(
            encoding="utf-8").splitlines() if line.strip()]
    else:
        questions = []  # written with their documents, below
    args.out.mkdir(parents=True, exist_ok=True)
    table = []
    with tempfile.TemporaryDirectory(prefix="kbqa-company-") as temp:
        home, folder = Path(temp) / "home", Path(temp) / "documents"
        home.mkdir()
        folder.mkdir()
        if args.cache is not None:  # models converted once are reused, not converted again
            (home / "cache").symlink_to(args.cache.resolve(), target_is_directory=True)
        if args.generated is None:
            documents = write_documents(folder)
        else:
            from synthetic_company import COMPANIES, write

            documents, generated = write(folder, args.generated, len(COMPANIES))
            questions = [dict(q, id=f"g{n}") for n, q in enumerate(generated, start=1)]
        if args.limit:
            questions = ([q for q in questions if q["answerable"]][: args.limit]
                         + [q for q in questions if not q["answerable"]][: args.limit])
        for variant in args.variant or ["default"]:
            report = run_variant(variant, questions, home, documents, args.llm)
            name = "".join(c if c.isalnum() or c in "-_" else "_" for c in variant)
            if args.generated is not None:
                name = f"generated-{args.generated}-{name}"
            (args.out / f"{name}.json").write_text(
                json.dumps(with_machine(report), ensure_ascii=False, indent=1), encoding="utf-8")
            table.append((variant, report["summary"]))
    print("\n| variant | answerable right | answerable refused | unanswerable refused | p50 s |")
    print("|---|---|---|---|---|")
    for variant, s in table:
        print(f"| {variant} | {s['answerable_right']} | {s['answerable_refused']} | "
              f"{s['unanswerable_refused']} | {s['latency_p50_s']} |")


if __name__ == "__main__":
    main()
