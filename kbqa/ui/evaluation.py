"""Evaluation: open a `kbqa eval` report folder: metrics, the HTML report, answers side by side."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from kbqa.errors import KbqaError
from kbqa.evaluation.launch import start_eval
from kbqa.evaluation.reader import read_eval_report
from kbqa.ui.common import service, variant_options

# the report is written for a browser window; inside the page's frame its plot must shrink to
# the frame's width instead of being cut off (also for reports written by older versions)
FIT_STYLE = "<style>img,svg{max-width:100%;height:auto}table{max-width:100%}</style>"


def fit_to_frame(html: str) -> str:
    """The report with a style that keeps images and tables within the frame's width."""
    head = html.find("</head>")
    return html[:head] + FIT_STYLE + html[head:] if head >= 0 else FIT_STYLE + html


def _launcher() -> None:
    """A small `kbqa eval` run from the page, with a progress bar; its report opens below."""
    svc = service()
    with st.expander("运行一个小评测 / run a small evaluation"):
        questions = st.text_input("问题文件 / questions.jsonl", key="eval_questions")
        docs = st.text_input("文档 / documents (folder or docs.jsonl)", key="eval_docs")
        options = {label: v for label, v in variant_options(svc).items() if not v.is_plain}
        chosen = st.multiselect("与 plain 对比的变体 / variants compared with plain",
                                list(options), key="eval_variants")
        limit = st.number_input("问题数 / questions (--limit)", 1, 1000, 10, key="eval_limit")
        out = st.text_input("输出目录 / output folder",
                            value=str(svc.settings.home / "eval" / "ui-run"), key="eval_out")
        if not st.button("运行 / run", key="eval_run"):
            return
        if not questions.strip() or not docs.strip():
            st.error("请给出问题文件和文档 / give a questions file and documents")
            return
        try:
            run = start_eval(Path(questions.strip()).expanduser(), Path(docs.strip()).expanduser(),
                             {label.removeprefix("adapter: "): list(options[label].adapters)
                              for label in chosen},
                             Path(out.strip()).expanduser(), int(limit))
        except KbqaError as exc:
            st.error(str(exc))
            return
        bar = st.progress(0.0, text="starting…")
        while not run.finished():
            done = run.done()
            bar.progress(min(done / run.total, 1.0), text=f"{done} / {run.total} answers")
            time.sleep(0.5)
        if run.process.returncode != 0:
            st.error(f"kbqa eval failed (exit {run.process.returncode}):")
            st.code(run.log_tail())
            return
        bar.progress(1.0, text=f"{run.total} / {run.total} answers")
        st.session_state["eval_folder"] = str(run.out)


def _feedback_export() -> None:
    """👍/👎 given in Chat, with question, answer and sources, as JSON Lines for evaluators."""
    records = service().conversations.feedback()
    if not records:
        st.caption("问答页还没有人点赞或点踩 / no thumbs-up or thumbs-down given in Chat yet")
        return
    up = sum(r["rating"] == 1 for r in records)
    st.download_button(f"导出问答反馈 / export feedback: {up} 赞 up, {len(records) - up} 踩 down "
                       "(JSON Lines)",
                       data=service().conversations.export_feedback(),
                       file_name="kbqa-feedback.jsonl", mime="application/jsonl",
                       key="eval_feedback_export")


def render() -> None:
    st.header("评测 / Evaluation")
    st.caption("打开 `kbqa eval --out DIR` 生成的报告目录。 Open a report folder written by "
               "`kbqa eval ... --out DIR` (metrics.json, answers.jsonl, report.html).")
    _launcher()
    _feedback_export()
    folder = st.text_input("报告目录 / report folder", key="eval_folder")
    if not folder.strip():
        return
    report = read_eval_report(folder.strip())
    for problem in report.problems:
        st.warning(problem)
    rows = report.metric_rows()
    if rows:
        st.subheader("指标 / metrics")
        st.table(rows)
    comparisons = (report.metrics or {}).get("comparisons")
    if comparisons:
        with st.expander("与 plain 的配对比较 / paired comparisons against plain"):
            st.json(comparisons)
    side = report.side_by_side()
    if side:
        st.subheader("答案对照 / answers side by side")
        if len(side) <= 200:  # a plain table renders everywhere (and in screenshots)
            st.table(side)
        else:
            st.dataframe(side, hide_index=True, width="stretch")
    unanswerable = report.side_by_side("unanswerable")
    if unanswerable:
        with st.expander("金标文档隐藏时的答案 / answers with the gold passage hidden"):
            st.dataframe(unanswerable, hide_index=True, width="stretch")
    if report.html:
        st.subheader("report.html")
        st.iframe(fit_to_frame(report.html), height="content", alt="kbqa evaluation report")
    if not (rows or side or report.html):
        st.error("这个目录里没有评测报告 / this folder holds no evaluation report")
