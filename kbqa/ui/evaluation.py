"""Evaluation: open a `kbqa eval` report folder: metrics, the HTML report, answers side by side."""

from __future__ import annotations

import streamlit as st
import streamlit.components.v1 as components

from kbqa.evaluation.reader import read_eval_report


def render() -> None:
    st.header("评测 / Evaluation")
    st.caption("打开 `kbqa eval --out DIR` 生成的报告目录。 Open a report folder written by "
               "`kbqa eval ... --out DIR` (metrics.json, answers.jsonl, report.html).")
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
        components.html(report.html, height=900, scrolling=True)
    if not (rows or side or report.html):
        st.error("这个目录里没有评测报告 / this folder holds no evaluation report")
