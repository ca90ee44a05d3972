"""Shared by the real-browser tests: `streamlit run` headless on a free port, Debian's chromium
driven by playwright, and helpers that wait for what the user sees (the CPU is shared: never read
the page at once after a click)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import tomli_w
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from tests.ui_support import APP, DOC_TEXT, ROOT

CHROMIUM = Path("/usr/bin/chromium")
# read at import: the autouse fixture in conftest.py clears KBQA_* variables for each test
SCREENSHOT_DIR = os.environ.get("KBQA_SCREENSHOT_DIR")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"]

BROWSER_MARKS = [pytest.mark.slow,
                 pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not "
                                    "installed (apt-get install chromium fonts-noto-cjk)")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def app_server(tmp_path: Path, config: dict[str, object]) -> Iterator[str]:
    """`streamlit run` on a free port with `config` as KBQA_HOME/config.toml; yields its URL."""
    home = Path(os.environ["KBQA_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(tomli_w.dumps(config), encoding="utf-8")
    port = free_port()
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


def shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / "screenshots" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SCREENSHOT_DIR) / path.name)
    return path


SETTLED_JS = """() => !document.querySelector('[data-testid="stStatusWidget"]')
    && !document.querySelector('[data-stale="true"]')"""


def idle(page) -> None:
    """Until the script run is over and no element of the previous run is still shown (Streamlit
    keeps those, marked stale, beside their replacements while it runs), twice 0.3 s apart: a
    click's rerun may not have started yet when this is first called."""
    settled_twice = 0
    deadline = time.monotonic() + 180
    while settled_twice < 2:
        page.wait_for_function(SETTLED_JS, polling=50,
                               timeout=max(1.0, deadline - time.monotonic()) * 1000)
        settled_twice += 1
        page.wait_for_timeout(300)
        if not page.evaluate(SETTLED_JS):
            settled_twice = 0


MESSAGE_JS = """(index) => {
    const m = document.querySelectorAll('[data-testid="stChatMessage"]')[index];
    return m ? m.innerText : '';
}"""


def message(page, index: int) -> str:
    return page.evaluate(MESSAGE_JS, index)


ANSWER_SHOWN_JS = """(index) => {
    const m = document.querySelectorAll('[data-testid="stChatMessage"]')[index];
    if (!m) return false;
    const skip = '[data-testid="stSpinner"], [data-testid="stCaptionContainer"], button, '
               + '[data-testid="stExpander"], [data-testid="stAlert"]';
    return [...m.querySelectorAll('[data-testid="stMarkdownContainer"]')]
        .some(el => !el.closest(skip) && el.innerText.trim());
}"""


def wait_answer_text(page, index: int) -> None:
    """Until chat message `index` shows answer text (its first token, while streaming)."""
    page.wait_for_function(f"() => ({ANSWER_SHOWN_JS})({index})", polling=10)


def wait_message(page, index: int, *texts: str) -> None:
    """Until chat message `index` shows any of `texts` ('▌' is the cursor of a streaming answer;
    '总计 ' is in the timing caption written once the answer is complete)."""
    page.wait_for_function(f"""() => {{ const t = ({MESSAGE_JS})({index});
        return {json.dumps(list(texts))}.some(x => t.includes(x)); }}""", polling=10)


def ask(page, question: str, message: int) -> tuple[float, float]:
    """Press Enter on a question; seconds until the first answer text shows, and until the
    answer is complete (its timing caption, written after the last token, is shown)."""
    box = page.locator('[data-testid="stChatInputTextArea"]')
    box.fill(question)
    start = time.perf_counter()
    box.press("Enter")
    wait_answer_text(page, message)
    first = time.perf_counter() - start
    wait_message(page, message, "总计 ")
    full = time.perf_counter() - start
    idle(page)
    return round(first, 3), round(full, 3)


def table(locator) -> list[dict[str, str]]:
    """A rendered st.table as rows of {header: cell text} (an unnamed index column left out)."""
    rows = locator.evaluate("""(el) => [...el.querySelectorAll('tr')].map(
        tr => [...tr.querySelectorAll('th, td')].map(cell => cell.innerText.trim()))""")
    header, *body = rows
    skip = 1 if header and header[0] == "" else 0
    return [dict(zip(header[skip:], row[skip:], strict=True)) for row in body]


def ingest(tmp_path: Path, kb: str = "公司制度") -> None:
    """The handbook in knowledge base `kb`, written on disk before the page opens it."""
    from kbqa.config import load_settings
    from kbqa.service import KbqaService

    doc = tmp_path / "docs" / "员工手册.md"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(DOC_TEXT, encoding="utf-8")
    KbqaService(load_settings()).ingest([doc], kb)


def sidebar_kb(page) -> str:
    """What the sidebar's knowledge base selector shows (its label and chosen value)."""
    return page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.evaluate(
        "el => el.innerText + ' ' + [...el.querySelectorAll('input')].map(i => i.value).join(' ')")


def pick(page, box, option: str) -> None:
    """Open selectbox `box` and click `option` in its list; wait until it shows it."""
    item = page.get_by_role("listbox").get_by_text(option, exact=True)
    # a click during a rerun or an expander's animation may not open the list, and a rerun may
    # re-render an open list under the click (the item is detached again and again): retry both
    for attempt in range(4):
        box.click()
        try:
            item.wait_for(timeout=5000)
            item.click(timeout=10_000)
            break
        except PlaywrightTimeout:
            if attempt == 3:
                raise
            page.keyboard.press("Escape")
            idle(page)
    idle(page)
    expect(box).to_have_value(option)


def choose(page, label: str, option: str) -> None:
    """Open the selectbox labelled `label` and click `option` in its dropdown list."""
    pick(page, page.get_by_label(label, exact=True), option)


