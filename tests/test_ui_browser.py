"""The real app in a real browser: `streamlit run` headless + playwright driving Debian's chromium.

Uploads a Chinese file, asks a question with the default model (Qwen2.5-Coder-0.5B), checks the
answer and its source appear; on Compare, both variants' answers (with the fact) and the shared
passage; on Evaluation, a report folder's metrics and answers as tables, value by value; on
Settings, a changed value saved to config.toml and shown again after a reload. It saves a
screenshot of each page under the test's tmp dir (copied to $KBQA_SCREENSHOT_DIR when set) and
records the time from pressing Enter to the first streamed token and to the full answer
(timings.json next to the screenshots).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import tomllib
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser_support import (
    BROWSER_MARKS,
    SCREENSHOT_DIR,
    ask,
    choose,
    idle,
    ingest,
    message,
    shot,
    sidebar_kb,
    table,
    wait_answer_text,
    wait_message,
)
from tests.ui_support import DOC_TEXT, QUESTION

DIRECT_ADAPTER = "qwen0.5b-cmrc-direct"  # the first adapter in adapters/: Compare's default

pytestmark = BROWSER_MARKS


def _lines_without_buttons(column) -> list[str]:
    """A column's text lines, less its copy button's (its label and icon)."""
    buttons = column.locator('[data-testid="stPopover"]').all_inner_texts()
    skip = {line.strip() for text in buttons for line in text.splitlines()}
    return [line for line in column.inner_text().splitlines()
            if line.strip() and line.strip() not in skip]


def test_upload_ask_and_see_the_source(server: str, page, tmp_path: Path,
                                       plain_llm_folder: Path) -> None:
    doc = tmp_path / "员工手册.md"
    doc.write_text(DOC_TEXT, encoding="utf-8")

    # Knowledge bases: create one, upload the file, ingest it
    page.goto(f"{server}/?page=knowledge")
    page.get_by_label("新知识库名称").fill("default")
    page.get_by_role("button", name="创建", exact=True).click()
    page.get_by_text("已创建知识库“default”").wait_for()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(doc))
    page.get_by_text("员工手册.md").first.wait_for()
    page.get_by_role("button", name="导入", exact=True).click()
    page.get_by_text("导入结果：新增 1 个").wait_for()
    page.get_by_text("1 个文档", exact=False).wait_for()
    idle(page)
    shot(page, tmp_path, "knowledge")

    # Chat: ask; the answer streams in, then its source. Asked twice: the first question also
    # loads the model (cold), the second shows the steady state (warm).
    page.goto(f"{server}/?page=chat")
    timings: dict[str, object] = {"model": "embedded (Qwen2.5-Coder-0.5B-Instruct, bf16)"}
    for turn, (label, question) in enumerate([("cold", QUESTION),
                                              ("warm", "在公司工作满十年的员工每年享有几天带薪年假？")]):
        first, full = ask(page, question, message=2 * turn + 1)
        timings[f"{label}_first_token_s"], timings[f"{label}_full_answer_s"] = first, full
        text = page.locator('[data-testid="stChatMessage"]').nth(2 * turn + 1).inner_text()
        load = re.search(r"模型加载 ([\d.]+) 秒", text)
        assert bool(load) == (label == "cold"), text  # the load is its own step, the first time
        if load:
            timings["cold_model_load_s_shown"] = float(load.group(1))
        assert "员工手册.md · 年假制度" in text, text
        assert ("10" in text or "十" in text) if turn == 0 else ("15" in text or "十五" in text), text
    shot(page, tmp_path, "chat")
    (tmp_path / "screenshots" / "timings.json").write_text(json.dumps(timings, indent=1))
    if SCREENSHOT_DIR:
        shutil.copy(tmp_path / "screenshots" / "timings.json", SCREENSHOT_DIR)
    print("browser timings:", timings)

    # Compare: the same question, plain and the Qwen adapter side by side, from the same passages
    page.goto(f"{server}/?page=compare")
    page.get_by_label("问题", exact=True).fill(QUESTION)
    page.get_by_label("问题", exact=True).press("Enter")
    idle(page)
    page.get_by_role("button", name="对比", exact=True).click()
    page.get_by_text("共享的检索上下文", exact=False).first.wait_for()
    idle(page)
    shot(page, tmp_path, "compare")
    columns = page.locator('[data-testid="stColumn"]')
    expect(columns).to_have_count(2)
    plain, adapter = (_lines_without_buttons(columns.nth(i)) for i in range(2))
    print("compare columns:", plain, adapter)
    # each column: the variant's name, its own answer (with the fact), its timing, what it ran as
    assert plain[0] == "plain" and plain[-1] == "plain 模型（禁用适配器，同一权重）"
    assert adapter[0] == DIRECT_ADAPTER and adapter[-1].startswith("适配器已生效"), adapter
    for column in (plain, adapter):
        assert "10" in column[1] or "十" in column[1], column
        assert "总计 " in column[2], column
    # the passages render after the heading above them: wait for them, not only for the heading
    expect(page.locator('[data-testid="stExpander"]')).to_have_count(1)
    context = page.locator('[data-testid="stExpander"]').all_inner_texts()
    assert len(context) == 1 and "员工手册.md · 年假制度" in context[0], context
    assert not page.locator('[data-testid="stException"]').count()

    # Evaluation: a small report folder; its metrics and answers render as tables
    report = tmp_path / "eval-run"
    report.mkdir()
    (report / "metrics.json").write_text(json.dumps({
        "plain": {"retrieval": {"hit@1": 0.85, "hit@5": 0.91, "mrr": 0.88},
                  "answer": {"em": 0.32, "f1": 0.54, "rouge_l": 0.5, "refusal_rate": 0.66}, "n": 2}}))
    (report / "answers.jsonl").write_text(
        json.dumps({"variant": "plain", "kind": "answerable", "qid": "q1", "answer": "10天"},
                   ensure_ascii=False) + "\n", encoding="utf-8")
    page.goto(f"{server}/?page=evaluation")
    _open_report(page, report)
    page.get_by_text("中没有 report.html", exact=False).wait_for()
    page.get_by_text("答案对照", exact=True).wait_for()
    idle(page)
    shot(page, tmp_path, "evaluation")
    tables = page.locator('[data-testid="stTable"]')
    expect(tables).to_have_count(2)  # metrics, then answers side by side
    metrics = table(tables.nth(0))
    print("evaluation metrics table:", metrics)
    assert len(metrics) == 1 and metrics[0]["变体"] == "plain"
    shown = {key: float(value) for key, value in metrics[0].items() if key != "变体"}
    assert shown == pytest.approx({"n": 2, "检索 hit@1": 0.85, "检索 hit@5": 0.91,
                                   "检索 mrr": 0.88, "em": 0.32, "f1": 0.54,
                                   "rouge_l": 0.5, "refusal_rate": 0.66})
    assert table(tables.nth(1)) == [{"qid": "q1", "plain": "10天"}]
    expect(page.get_by_text("指标", exact=True)).to_have_count(1)

    # Settings: change top-k, save; the file holds it and a reload of the page shows it
    page.goto(f"{server}/?page=settings")
    page.get_by_role("button", name="保存", exact=True).wait_for()
    top_k = page.get_by_label("检索段落数（top-k）")
    assert top_k.input_value() != "7"
    top_k.fill("7")
    page.get_by_role("button", name="保存", exact=True).click()
    page.get_by_text("已保存到", exact=False).wait_for()
    idle(page)
    shot(page, tmp_path, "settings")
    saved = tomllib.loads((Path(os.environ["KBQA_HOME"]) / "config.toml").read_text("utf-8"))
    assert saved["retrieval"]["top_k"] == 7 and saved["llm"]["model"] == str(plain_llm_folder)
    page.reload()
    page.get_by_role("button", name="保存", exact=True).wait_for()
    assert page.get_by_label("检索段落数（top-k）").input_value() == "7"


def _open_report(page, folder: Path) -> None:
    """Type a report folder outside KBQA_HOME (the page's advanced choice) and open it."""
    page.get_by_text("打开其他位置的报告目录（高级）").click()
    field = page.get_by_label("报告目录", exact=True)
    field.fill(str(folder))
    field.press("Enter")










def test_kb_create_selects_it_and_delete_needs_the_name_each_time(tiny_server: str, page,
                                                                 tmp_path: Path) -> None:
    page.set_default_timeout(60_000)
    page.goto(f"{tiny_server}/?page=knowledge")
    for name in ("公司制度", "临时库2"):
        page.get_by_label("新知识库名称").fill(name)
        page.get_by_role("button", name="创建", exact=True).click()
        page.get_by_text(f"已创建知识库“{name}”").wait_for()
        idle(page)
        # item 7: the new knowledge base is the one in use, so staged files go into it
        assert name in sidebar_kb(page), sidebar_kb(page)
        page.get_by_text(f"上传文件到“{name}”").wait_for()

    # item 1: delete 临时库2 by typing its name; then the next knowledge base is not armed
    page.get_by_text("删除一个知识库").click()
    choose(page, "要删除的知识库", "临时库2")
    confirm = page.get_by_label("输入要删除的知识库名称以确认")
    confirm.fill("临时库2")
    page.get_by_role("button", name="删除知识库", exact=True).click()
    # the message says what happened (on failure, expect shows the message the page gave)
    expect(page.locator('[data-testid="stAlert"]').first).to_contain_text("已删除知识库“临时库2”")
    idle(page)
    if not page.get_by_label("要删除的知识库", exact=True).is_visible():
        page.get_by_text("删除一个知识库").click()
    expect(page.get_by_label("输入要删除的知识库名称以确认")).to_have_value("", timeout=10_000)
    choose(page, "要删除的知识库", "公司制度")
    page.get_by_role("button", name="删除知识库", exact=True).click()  # nothing typed
    idle(page)
    page.get_by_text("名称不符", exact=False).first.wait_for()
    shot(page, tmp_path, "knowledge-delete-refused")
    assert (Path(os.environ["KBQA_HOME"]) / "kb" / "公司制度").is_dir()
    assert "公司制度" in sidebar_kb(page)


def test_question_while_an_answer_streams_keeps_the_earlier_exchange(tiny_server: str, page,
                                                                   tmp_path: Path) -> None:
    ingest(tmp_path)
    page.set_default_timeout(90_000)
    page.goto(f"{tiny_server}/?page=chat")
    box = page.locator('[data-testid="stChatInputTextArea"]')
    # the tiny model answers both at length (its max_new_tokens), so there is time to interrupt
    first_question, second_question = QUESTION, "在公司工作满十年的员工每年享有几天带薪年假？"
    box.fill(first_question)
    box.press("Enter")
    wait_answer_text(page, 1)  # the first answer is streaming ...
    box.fill(second_question)
    start = time.perf_counter()
    box.press("Enter")  # ... when the second question is sent
    wait_message(page, 3, "总计 ")
    waited = time.perf_counter() - start
    idle(page)
    messages = page.locator('[data-testid="stChatMessage"]').all_inner_texts()
    assert len(messages) == 4, messages
    assert first_question in messages[0] and second_question in messages[2]
    # the first answer is kept as far as it got, marked as cut short
    assert "已停止生成" in messages[1] and messages[1].split("已停止生成")[0].strip(), messages[1]
    # the second answer's total is the wait the user had, from pressing Enter
    total = float(re.search(r"总计 ([\d.]+) 秒", messages[3]).group(1))
    assert waited - 3.0 <= total <= waited, (total, waited)

    # the stop button ends an answer at once, keeping what was written: in a new conversation,
    # the first question again (the same prompt as above, so again a long answer)
    page.get_by_role("button", name="新对话").click()
    expect(page.locator('[data-testid="stChatMessage"]')).to_have_count(0)
    idle(page)
    box.fill(first_question)
    box.press("Enter")
    wait_answer_text(page, 1)
    page.get_by_role("button", name="停止生成").click()
    wait_message(page, 1, "总计 ")
    idle(page)
    assert "已停止生成" in message(page, 1), message(page, 1)
    # the rerun after the stop removes the button; on a loaded machine it may come a moment later
    expect(page.get_by_role("button", name="停止生成")).to_have_count(0, timeout=30_000)
    shot(page, tmp_path, "chat-stopped")
    # both conversations are saved: listed in the sidebar after a reload, the newest shown
    page.reload()
    wait_message(page, 1, "已停止生成")
    sidebar = page.locator('[data-testid="stSidebar"]').get_by_role("button")
    # the sidebar renders after the page's first message: wait for it, then read it
    expect(sidebar.filter(has_text=first_question)).to_have_count(2, timeout=30_000)
    titles = [t.strip() for t in sidebar.all_inner_texts()]
    assert titles.count(first_question) == 2, titles


def test_report_plot_fits_its_frame(tiny_server: str, page, tmp_path: Path) -> None:
    from PIL import Image

    report = tmp_path / "eval-run"
    report.mkdir()
    (report / "metrics.json").write_text(json.dumps({"plain": {"answer": {"f1": 0.5}, "n": 1}}))
    image = tmp_path / "plot.png"
    Image.new("RGB", (2400, 700), (30, 120, 200)).save(image)
    page.set_default_timeout(60_000)
    import base64

    data = base64.b64encode(image.read_bytes()).decode()
    (report / "report.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'></head><body><h1>kbqa evaluation</h1>"
        f"<h2>Plots</h2><img alt='metrics' src='data:image/png;base64,{data}'>"
        "<p id='end'>end of report</p></body></html>", encoding="utf-8")
    page.goto(f"{tiny_server}/?page=evaluation")
    _open_report(page, report)
    page.get_by_text("report.html", exact=True).wait_for()
    idle(page)
    frame_element = page.locator("iframe").first
    frame_element.wait_for()
    frame = frame_element.element_handle().content_frame()
    frame.locator("#end").wait_for()
    page.wait_for_timeout(1000)  # the frame's height follows its content
    shot(page, tmp_path, "evaluation-report")
    inside = frame.evaluate("""() => {
        const img = document.querySelector('img').getBoundingClientRect();
        const root = document.documentElement;
        return {imgRight: img.right, width: root.clientWidth, scrollWidth: root.scrollWidth,
                scrollHeight: root.scrollHeight};
    }""")
    frame_height = frame_element.bounding_box()["height"]
    # the whole plot is visible: nothing cut at the right, nothing at the bottom
    assert inside["imgRight"] <= inside["width"] + 1, inside
    assert inside["scrollWidth"] <= inside["width"] + 1, inside
    assert inside["scrollHeight"] <= frame_height + 1, (inside, frame_height)
    assert "components.v1.html" not in (tmp_path / "streamlit.log").read_text()


def test_a_table_source_is_a_table_with_the_answer_marked(tiny_server: str, page,
                                                         tmp_path: Path) -> None:
    import csv

    from kbqa.config import load_settings
    from kbqa.conversations import ConversationStore
    from kbqa.qa.snippets import highlighted_markdown
    from kbqa.service import KbqaService

    sheet = tmp_path / "docs" / "型号参数.csv"
    sheet.parent.mkdir(parents=True)
    hostile = '30分钟<img src=x onerror="window.__pwned=1"> **快充**'
    with sheet.open("w", encoding="utf-8", newline="") as out:
        csv.writer(out).writerows([("型号", "最大吸力", "续航"),
                                   *((f"星河X{n}", f"{n}000Pa", hostile if n == 3 else f"{n * 10}分钟")
                                     for n in range(1, 9))])
    KbqaService(load_settings()).ingest([sheet], "产品")
    page.set_default_timeout(90_000)
    page.goto(f"{tiny_server}/?page=chat")
    ask(page, "星河X3的最大吸力是多少？", message=1)
    source = page.locator('[data-testid="stChatMessage"]').nth(1).locator(
        '[data-testid="stExpander"]').first
    source.locator("summary").click()
    table = source.locator("table")
    expect(table).to_have_count(1)
    # the header, then the row asked about, then "…" for the rows left out
    assert [t.strip() for t in table.locator("th").all_inner_texts()] == ["型号", "最大吸力", "续航"]
    rows = [[c.strip() for c in row.locator("td").all_inner_texts()]
            for row in table.locator("tbody tr").all()]
    assert rows == [["星河X3", "3000Pa", hostile], ["…", "…", "…"]]
    # the document's HTML and Markdown are shown as text, never run
    assert not source.locator("img, strong").count()
    assert page.evaluate("() => window.__pwned") is None
    # the answer's longest run in the passage is marked, as highlighted_markdown says
    store = ConversationStore(Path(os.environ["KBQA_HOME"]) / "conversations.sqlite3")
    [conversation] = store.list()
    [turn] = store.turns(conversation.id)
    marked = re.findall("<mark>(.*?)</mark>", highlighted_markdown(turn.sources[0].snippet,
                                                                   turn.answer))
    print("answer:", turn.answer, "marked:", marked)
    assert [m.strip() for m in source.locator("mark").all_inner_texts()] == [
        m.replace("\\", "") for m in marked]
    shot(page, tmp_path, "chat-table-source")


_UPLOAD_BUTTON_JS = """() => {
    const p = document.querySelector(
        '[data-testid="stFileUploaderDropzone"] button [data-testid="stMarkdownContainer"] p');
    return {text: p.innerText, size: getComputedStyle(p).fontSize,
            after: getComputedStyle(p, '::after').content};
}"""


def test_chinese_by_default_english_after_the_switch(tiny_server: str, page,
                                                     tmp_path: Path) -> None:
    ingest(tmp_path)
    page.set_default_timeout(60_000)
    sidebar = page.locator('[data-testid="stSidebar"]')
    heading = page.locator('[data-testid="stMain"] h2').first
    uploader = page.locator('[data-testid="stFileUploader"]')
    page.goto(f"{tiny_server}/?page=knowledge")
    # Chinese by default: the frame, the page, and Streamlit's own upload texts
    expect(heading).to_have_text("知识库", timeout=60_000)
    idle(page)
    expect(sidebar.get_by_text("kbqa · 知识库问答")).to_be_visible()
    for name in ("问答", "知识库", "对比", "评测", "设置"):
        expect(sidebar.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text("上传文件到“公司制度”")).to_be_visible()
    expect(page.get_by_role("button", name="重建索引")).to_be_visible()
    expect(uploader.get_by_text("每个文件不超过", exact=False)).to_be_visible()
    expect(uploader.locator('[data-testid="stFileUploaderDropzoneInstructions"]')).to_be_hidden()
    idle(page)
    upload = page.evaluate(_UPLOAD_BUTTON_JS)
    # "Upload" is still in the page (Streamlit writes it) but takes no room; CSS shows 上传文件
    assert upload == {"text": "Upload", "size": "0px", "after": '"上传文件"'}, upload
    shot(page, tmp_path, "language-zh-knowledge")

    sidebar.get_by_text("English", exact=True).click()
    expect(heading).to_have_text("Knowledge bases", timeout=60_000)
    idle(page)
    expect(sidebar.get_by_text("kbqa · knowledge-base QA")).to_be_visible()
    expect(page.get_by_text("Upload files to “公司制度”")).to_be_visible()
    expect(page.get_by_role("button", name="Re-index")).to_be_visible()
    expect(page.get_by_role("button", name="重建索引")).to_have_count(0)
    # in English, Streamlit's own texts are left as they are
    expect(uploader.locator('[data-testid="stFileUploaderDropzoneInstructions"]')).to_be_visible()
    idle(page)
    assert page.evaluate(_UPLOAD_BUTTON_JS)["after"] in ("none", "normal")
    expect(page).to_have_url(re.compile(r"[?&]lang=en"))
    shot(page, tmp_path, "language-en-knowledge")

    # the other pages in English too, and a reload keeps the language
    for title in ("Chat", "Compare", "Evaluation", "Settings"):
        sidebar.get_by_text(title, exact=True).click()
        expect(heading).to_have_text(title, timeout=60_000)
        idle(page)
    expect(page.get_by_role("button", name="Save", exact=True)).to_be_visible()
    expect(page.get_by_text("Retrieval mode", exact=True)).to_be_visible()
    page.reload()
    expect(heading).to_have_text("Settings", timeout=60_000)
    idle(page)
    shot(page, tmp_path, "language-en-settings")

    sidebar.get_by_text("中文", exact=True).click()
    expect(heading).to_have_text("设置", timeout=60_000)
    idle(page)
    expect(page.get_by_role("button", name="保存", exact=True)).to_be_visible()
    expect(page.get_by_text("检索方式", exact=True)).to_be_visible()
    shot(page, tmp_path, "language-zh-settings")
