"""Evaluation: run a small `kbqa eval` from files uploaded or picked under KBQA_HOME, and open a
report: metrics, the HTML report, answers side by side."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import streamlit as st

from kbqa.errors import KbqaError
from kbqa.evaluation.launch import start_eval
from kbqa.evaluation.reader import read_eval_report
from kbqa.kb.uploads import sanitize_filename, supported_suffixes
from kbqa.ui.common import ADAPTER_PREFIX, service, variant_formatter, variant_options
from kbqa.ui.i18n import language, t
from kbqa.vector_backends.base import atomic_write

Source = Literal["upload", "home", "path"]
SOURCES: tuple[Source, ...] = ("upload", "home", "path")
INPUTS = Path("eval") / "inputs"   # under KBQA_HOME: what was uploaded for runs
REPORTS = Path("eval")             # under KBQA_HOME: where runs from the page write their reports
SKIPPED = {"kb", "cache"}          # KBQA_HOME's knowledge bases and model cache hold no eval inputs
REPORT_FILES = ("metrics.json", "answers.jsonl", "report.html")
MAX_FOUND = 200
RUN_NAME = re.compile(r"^[\w.-]+$")

# the report is written for a browser window; inside the page's frame its plot must shrink to
# the frame's width instead of being cut off (also for reports written by older versions)
FIT_STYLE = "<style>img,svg{max-width:100%;height:auto}table{max-width:100%}</style>"


def fit_to_frame(html: str) -> str:
    """The report with a style that keeps images and tables within the frame's width."""
    head = html.find("</head>")
    return html[:head] + FIT_STYLE + html[head:] if head >= 0 else FIT_STYLE + html


def _walk(home: Path) -> Iterator[tuple[Path, list[str]]]:
    """Folders under KBQA_HOME with their files, leaving out knowledge bases, the model cache,
    hidden folders and report folders (their answers.jsonl is no questions file)."""
    for folder, dirs, files in os.walk(home):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not (here == home and d in SKIPPED))
        if here != home and ("metrics.json" in files or "eval.log" in files):
            dirs[:] = []
            continue
        yield here, sorted(f for f in files if not f.startswith("."))


def found_inputs(home: Path) -> tuple[list[Path], list[Path]]:
    """Under KBQA_HOME: question files (.jsonl, .json), and document sets (a .jsonl file or a
    folder holding documents kbqa reads)."""
    suffixes = supported_suffixes()
    questions: list[Path] = []
    docs: list[Path] = []
    for folder, files in _walk(home):
        for name in files:
            if name.endswith((".jsonl", ".json")):
                questions.append(folder / name)
                if name.endswith(".jsonl"):
                    docs.append(folder / name)
        if folder != home and any(Path(name).suffix.lower() in suffixes for name in files):
            docs.append(folder)
        if len(questions) > MAX_FOUND:
            break
    return questions[:MAX_FOUND], sorted(docs)[:MAX_FOUND]


def questions_jsonl(name: str, data: bytes) -> bytes:
    """A questions file as `kbqa eval` reads it: JSONL as given, a JSON array one object a line."""
    if not name.lower().endswith(".json"):
        return data
    try:
        rows = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KbqaError(t("eval.bad_json", name=name, reason=exc)) from exc
    if isinstance(rows, dict):  # a single object is one question (a JSONL file of one line)
        rows = [rows]
    if not isinstance(rows, list):
        raise KbqaError(t("eval.bad_json", name=name, reason="not a list of questions"))
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def _store(home: Path, kind: str, files: list[tuple[str, bytes]]) -> Path:
    """Uploaded files saved under KBQA_HOME/eval/inputs (same content, same place): a questions
    file, a docs.jsonl, or a folder of documents."""
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode("utf-8") + b"\0" + hashlib.sha256(data).digest())
    folder = home / INPUTS / f"{kind}-{digest.hexdigest()[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "questions":
        [(name, data)] = files
        target = folder / "questions.jsonl"
        atomic_write(target, questions_jsonl(name, data))
        return target
    if len(files) == 1 and files[0][0].lower().endswith(".jsonl"):
        target = folder / "docs.jsonl"
        atomic_write(target, files[0][1])
        return target
    docs = folder / "docs"
    docs.mkdir(exist_ok=True)
    for name, data in files:
        atomic_write(docs / sanitize_filename(name), data)
    return docs


def _relative(path: Path, home: Path) -> str:
    try:
        return str(path.relative_to(home))
    except ValueError:
        return str(path)


def _input(what: str, key: str, home: Path, found: list[Path], upload_types: list[str],
           upload_label: str, pick_label: str, help: str, multiple: bool = False
           ) -> tuple[Source, Any]:
    """One input of a run: uploaded, picked under KBQA_HOME, or (advanced) a typed server path.
    Returns the source and the uploaded files / the picked path / the typed text."""
    lang = language()
    source: Source = st.radio(t("eval.source", what=what), SOURCES, horizontal=True,
                              format_func=lambda s: t(f"eval.source.{s}", lang), key=f"{key}_source")
    if source == "upload":
        return source, st.file_uploader(upload_label, type=upload_types, help=help,
                                        accept_multiple_files=multiple, key=f"{key}_file")
    if source == "home":
        if not found:
            st.caption(t("eval.none_found", home=home))
        return source, st.selectbox(pick_label, [str(p) for p in found], index=None,
                                    format_func=lambda p: _relative(Path(p), home), help=help,
                                    placeholder=t("common.choose_one"), key=f"{key}_pick")
    return source, st.text_input(t("eval.path", what=what), key=key, help=help)


def _resolve(kind: str, source: Source, value: Any, home: Path) -> Path | None:
    """The path a run reads an input from (uploads are saved first); None when none is given."""
    if source == "upload":
        files = value if isinstance(value, list) else [value] if value is not None else []
        return _store(home, kind, [(f.name, f.getvalue()) for f in files]) if files else None
    if source == "home":
        return Path(value) if value else None
    if kind == "questions" and value.strip().lower().endswith(".json"):
        typed = Path(value.strip()).expanduser()
        return _store(home, kind, [(typed.name, typed.read_bytes())]) if typed.is_file() else typed
    return Path(value.strip()).expanduser() if value.strip() else None


def _launcher() -> None:
    """A small `kbqa eval` run from the page, with a progress bar; its report opens below."""
    svc = service()
    home = svc.settings.home
    with st.expander(t("eval.run_section")):
        found_questions, found_docs = found_inputs(home)
        questions = _input(t("eval.questions"), "eval_questions", home, found_questions,
                           ["jsonl", "json"], t("eval.upload_questions"),
                           t("eval.pick_file", what=t("eval.questions"), home=home),
                           t("eval.questions_help"))
        docs = _input(t("eval.docs"), "eval_docs", home, found_docs,
                      ["jsonl", *sorted(s.lstrip(".") for s in supported_suffixes())],
                      t("eval.upload_docs"), t("eval.pick_docs", home=home), t("eval.docs_help"),
                      multiple=True)
        options = {label: v for label, v in variant_options(svc).items() if not v.is_plain}
        chosen = st.multiselect(t("eval.variants"), list(options), format_func=variant_formatter(),
                                key="eval_variants", placeholder=t("common.choose"))
        limit = st.number_input(t("eval.limit"), 1, 1000, 10, key="eval_limit")
        name = st.text_input(t("eval.run_name", folder=home / REPORTS), value="ui-run",
                             key="eval_name")
        if not st.button(t("eval.run"), key="eval_run"):
            return
        if not RUN_NAME.match(name.strip()) or name.strip() == INPUTS.name:
            st.error(t("eval.bad_name"))
            return
        try:
            questions_path = _resolve("questions", *questions, home)
            docs_path = _resolve("docs", *docs, home)
            if questions_path is None or docs_path is None:
                st.error(t("eval.need_inputs"))
                return
            run = start_eval(questions_path, docs_path,
                             {label.removeprefix(ADAPTER_PREFIX): list(options[label].adapters)
                              for label in chosen},
                             home / REPORTS / name.strip(), int(limit))
        except (KbqaError, OSError) as exc:
            st.error(str(exc))
            return
        bar = st.progress(0.0, text=t("eval.starting"))
        while not run.finished():
            done = run.done()
            bar.progress(min(done / run.total, 1.0), text=t("eval.progress", done=done,
                                                              total=run.total))
            time.sleep(0.5)
        if run.process.returncode != 0:
            st.error(t("eval.failed", code=run.process.returncode))
            st.code(run.log_tail())
            return
        bar.progress(1.0, text=t("eval.progress", done=run.total, total=run.total))
        st.session_state["eval_report"] = str(run.out)
        st.session_state["eval_folder"] = ""


def _feedback_export() -> None:
    """👍/👎 given in Chat, with question, answer and sources, as JSON Lines for evaluators."""
    records = service().conversations.feedback()
    if not records:
        st.caption(t("eval.no_feedback"))
        return
    up = sum(r["rating"] == 1 for r in records)
    st.download_button(t("eval.export", up=up, down=len(records) - up),
                       data=service().conversations.export_feedback(),
                       file_name="kbqa-feedback.jsonl", mime="application/jsonl",
                       key="eval_feedback_export")


def found_reports(home: Path) -> list[Path]:
    """Report folders under KBQA_HOME/eval, newest first."""
    root = home / REPORTS
    if not root.is_dir():
        return []
    folders = [f for f in root.iterdir() if f.is_dir() and any((f / n).is_file() for n in REPORT_FILES)]
    return sorted(folders, key=lambda f: f.stat().st_mtime, reverse=True)[:MAX_FOUND]


def _report_folder(home: Path) -> str | None:
    """The report to open: one picked among those under KBQA_HOME/eval, or (advanced) a folder
    typed in, which wins while it is filled in."""
    reports = [str(f) for f in found_reports(home)]
    if st.session_state.get("eval_report") not in reports:
        st.session_state.pop("eval_report", None)
    picked = None
    if reports:
        picked = st.selectbox(t("eval.report"), reports, key="eval_report",
                              format_func=lambda p: _relative(Path(p), home))
    else:
        st.caption(t("eval.no_reports", folder=home / REPORTS))
    with st.expander(t("eval.report_path_section"), expanded=bool(st.session_state.get("eval_folder"))):
        typed = st.text_input(t("eval.report_path"), key="eval_folder")
    return typed.strip() or picked


def _column(key: str) -> str:
    """A report table's column in the user's language (metric and variant names stay)."""
    if key in ("variant", "question"):
        return t(f"eval.col.{key}")
    if key.startswith("retrieval "):
        return t("eval.col.retrieval", metric=key.removeprefix("retrieval "))
    return key


def render() -> None:
    st.header(t("eval.header"))
    st.caption(t("eval.caption"))
    _launcher()
    _feedback_export()
    folder = _report_folder(service().settings.home)
    if folder is None:
        return
    report = read_eval_report(folder)
    home = service().settings.home
    for problem in report.problems:
        st.warning(t(f"eval.problem.{problem.kind}", path=_relative(problem.path, home),
                     detail=problem.detail))
    rows = [{_column(key): value for key, value in row.items()} for row in report.metric_rows()]
    if rows:
        st.subheader(t("eval.metrics"))
        st.table(rows)
    comparisons = (report.metrics or {}).get("comparisons")
    if comparisons:
        with st.expander(t("eval.comparisons")):
            st.json(comparisons)
    side = [{_column(key): value for key, value in row.items()} for row in report.side_by_side()]
    if side:
        st.subheader(t("eval.side_by_side"))
        if len(side) <= 200:  # a plain table renders everywhere (and in screenshots)
            st.table(side)
        else:
            st.dataframe(side, hide_index=True, width="stretch")
    unanswerable = report.side_by_side("unanswerable")
    if unanswerable:
        with st.expander(t("eval.unanswerable")):
            st.dataframe(unanswerable, hide_index=True, width="stretch")
    if report.html:
        st.subheader("report.html")
        st.iframe(fit_to_frame(report.html), height="content", alt=t("eval.report_alt"))
    if not (rows or side or report.html):
        st.error(t("eval.no_report"))
