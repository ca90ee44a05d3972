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
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.ui_support import APP, DOC_TEXT, QUESTION, ROOT

CHROMIUM = Path("/usr/bin/chromium")
DIRECT_ADAPTER = "qwen0.5b-cmrc-direct"  # the first adapter in adapters/: Compare's default
# read at import: the autouse fixture in conftest.py clears KBQA_* variables for each test
SCREENSHOT_DIR = os.environ.get("KBQA_SCREENSHOT_DIR")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed "
                                 "(apt-get install chromium fonts-noto-cjk)")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path, default_llm_folder: Path):
    home = Path(os.environ["KBQA_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'llm = "{default_llm_folder}"\n', encoding="utf-8")
    port = _free_port()
    log = (tmp_path / "streamlit.log").open("w")
    env = {**os.environ, "KBQA_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"streamlit did not start: {(tmp_path / 'streamlit.log').read_text()}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def page(tmp_path: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # a fresh profile (--user-data-dir) per test, as playwright wants it passed
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(180_000)
        yield page
        context.close()


def _shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / "screenshots" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SCREENSHOT_DIR) / path.name)
    return path


def _idle(page) -> None:
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=180_000)


_ANSWER_JS = """(index) => {
    const message = document.querySelectorAll('[data-testid="stChatMessage"]')[index];
    if (!message) return null;
    const parts = [...message.querySelectorAll('[data-testid="stMarkdownContainer"]')]
        .filter(el => !el.closest('[data-testid="stSpinner"]'));
    return parts.length ? parts[0].innerText.trim() : null;
}"""


def _ask(page, question: str, message: int) -> tuple[float, float]:
    """Press Enter on a question; seconds until the first answer text shows, and until the
    answer is complete (its timing caption, written after the last token, is shown)."""
    box = page.locator('[data-testid="stChatInputTextArea"]')
    box.fill(question)
    start = time.perf_counter()
    box.press("Enter")
    page.wait_for_function(f"() => !!({_ANSWER_JS})({message})", polling=10)
    first = time.perf_counter() - start
    page.wait_for_function(
        f"""() => {{ const m = document.querySelectorAll('[data-testid="stChatMessage"]')[{message}];
                   return m && m.innerText.includes(' total '); }}""", polling=10)
    full = time.perf_counter() - start
    _idle(page)
    return round(first, 3), round(full, 3)


def test_upload_ask_and_see_the_source(server: str, page, tmp_path: Path,
                                       default_llm_folder: Path) -> None:
    doc = tmp_path / "员工手册.md"
    doc.write_text(DOC_TEXT, encoding="utf-8")

    # Knowledge bases: create one, upload the file, ingest it
    page.goto(f"{server}/?page=knowledge")
    page.get_by_label("新知识库名称 / new knowledge base name").fill("default")
    page.get_by_role("button", name="创建 / create").click()
    page.get_by_text("created 'default'").wait_for()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(doc))
    page.get_by_text("员工手册.md").first.wait_for()
    page.get_by_role("button", name="导入 / ingest", exact=True).click()
    page.get_by_text("ingest result: 1 added").wait_for()
    page.get_by_text("1 document(s)", exact=False).wait_for()
    _idle(page)
    _shot(page, tmp_path, "knowledge")

    # Chat: ask; the answer streams in, then its source. Asked twice: the first question also
    # loads the model (cold), the second shows the steady state (warm).
    page.goto(f"{server}/?page=chat")
    timings: dict[str, object] = {"model": "embedded (Qwen2.5-Coder-0.5B-Instruct, bf16)"}
    for turn, (label, question) in enumerate([("cold", QUESTION),
                                              ("warm", "在公司工作满十年的员工每年享有几天带薪年假？")]):
        first, full = _ask(page, question, message=2 * turn + 1)
        timings[f"{label}_first_token_s"], timings[f"{label}_full_answer_s"] = first, full
        text = page.locator('[data-testid="stChatMessage"]').nth(2 * turn + 1).inner_text()
        assert "员工手册.md · 年假制度" in text, text
        assert ("10" in text or "十" in text) if turn == 0 else ("15" in text or "十五" in text), text
    _shot(page, tmp_path, "chat")
    (tmp_path / "screenshots" / "timings.json").write_text(json.dumps(timings, indent=1))
    if SCREENSHOT_DIR:
        shutil.copy(tmp_path / "screenshots" / "timings.json", SCREENSHOT_DIR)
    print("browser timings:", timings)

    # Compare: the same question, plain and the Qwen adapter side by side, from the same passages
    page.goto(f"{server}/?page=compare")
    page.get_by_label("问题 / question").fill(QUESTION)
    page.get_by_label("问题 / question").press("Enter")
    _idle(page)
    page.get_by_role("button", name="对比 / compare").click()
    page.get_by_text("shared context", exact=False).first.wait_for()
    _idle(page)
    _shot(page, tmp_path, "compare")
    columns = page.locator('[data-testid="stColumn"]')
    expect(columns).to_have_count(2)
    plain, adapter = ([line for line in columns.nth(i).inner_text().splitlines() if line.strip()]
                      for i in range(2))
    print("compare columns:", plain, adapter)
    # each column: the variant's name, its own answer (with the fact), its timing, what it ran as
    assert plain[0] == "plain" and plain[-1] == "plain model (adapters disabled, same weights)"
    assert adapter[0] == DIRECT_ADAPTER and adapter[-1].startswith("adapter applied"), adapter
    for column in (plain, adapter):
        assert "10" in column[1] or "十" in column[1], column
        assert " total " in column[2], column
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
    page.get_by_label("报告目录 / report folder").fill(str(report))
    page.get_by_label("报告目录 / report folder").press("Enter")
    page.get_by_text("has no report.html", exact=False).wait_for()
    page.get_by_text("答案对照 / answers side by side").wait_for()
    _idle(page)
    _shot(page, tmp_path, "evaluation")
    tables = page.locator('[data-testid="stTable"]')
    expect(tables).to_have_count(2)  # metrics, then answers side by side
    metrics = _table(tables.nth(0))
    print("evaluation metrics table:", metrics)
    assert len(metrics) == 1 and metrics[0]["variant"] == "plain"
    shown = {key: float(value) for key, value in metrics[0].items() if key != "variant"}
    assert shown == pytest.approx({"n": 2, "retrieval hit@1": 0.85, "retrieval hit@5": 0.91,
                                   "retrieval mrr": 0.88, "em": 0.32, "f1": 0.54,
                                   "rouge_l": 0.5, "refusal_rate": 0.66})
    assert _table(tables.nth(1)) == [{"qid": "q1", "plain": "10天"}]
    expect(page.get_by_text("指标 / metrics")).to_have_count(1)

    # Settings: change top-k, save; the file holds it and a reload of the page shows it
    page.goto(f"{server}/?page=settings")
    page.get_by_text("保存 / save").wait_for()
    top_k = page.get_by_label("top-k")
    assert top_k.input_value() != "7"
    top_k.fill("7")
    page.get_by_role("button", name="保存 / save").click()
    page.get_by_text("已保存 / saved to", exact=False).wait_for()
    _idle(page)
    _shot(page, tmp_path, "settings")
    saved = tomllib.loads((Path(os.environ["KBQA_HOME"]) / "config.toml").read_text("utf-8"))
    assert saved["top_k"] == 7 and saved["llm"] == str(default_llm_folder)
    page.reload()
    page.get_by_text("保存 / save").wait_for()
    assert page.get_by_label("top-k").input_value() == "7"


def _table(locator) -> list[dict[str, str]]:
    """A rendered st.table as rows of {header: cell text} (an unnamed index column left out)."""
    rows = locator.evaluate("""(el) => [...el.querySelectorAll('tr')].map(
        tr => [...tr.querySelectorAll('th, td')].map(cell => cell.innerText.trim()))""")
    header, *body = rows
    skip = 1 if header and header[0] == "" else 0
    return [dict(zip(header[skip:], row[skip:], strict=True)) for row in body]
