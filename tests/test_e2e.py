"""End to end on the embedded default models: knowledge/ in, cited Chinese answers out.

These load the real default LLM (Qwen2.5-Coder-0.5B-Instruct from its PyPI
packages) and the USE multilingual embedder; the first run converts the model
(about a minute), later runs reuse the cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kbqa.config import load_settings
from kbqa.qa.prompts import REFUSAL
from kbqa.service import KbqaService

KNOWLEDGE = Path(__file__).resolve().parents[1] / "knowledge"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(default_llm_folder: Path, tmp_path_factory) -> KbqaService:
    home = tmp_path_factory.mktemp("home")
    service = KbqaService(load_settings({"home": home, "llm": str(default_llm_folder)}, environ={}))
    results = service.ingest([KNOWLEDGE])
    assert {r.status for r in results} == {"added"}, results
    return service


def test_answer_contains_the_fact_and_cites_its_file(service: KbqaService):
    answer = service.ask("入职满一年的员工每年享有几天带薪年假？")
    assert "10" in answer.text and not answer.refused
    assert answer.sources[0].filename == "employee_handbook.md"
    assert answer.sources[0].heading == "年假"


def test_answer_from_a_pdf_page_cites_the_page(service: KbqaService):
    answer = service.ask("售后服务热线是多少？")
    assert "400-820-1234" in answer.text
    cited = [s for s in answer.sources if s.filename == "price_and_service.pdf"]
    assert cited and cited[0].page == 2


def test_question_without_an_answer_is_refused(service: KbqaService):
    answer = service.ask("公司的股票代码是多少？")
    assert answer.refused and REFUSAL in answer.text


def test_stream_yields_sources_then_tokens(service: KbqaService):
    events = list(service.stream("报销款项多久打入工资卡？"))
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "sources" and kinds[-1] == "done" and "token" in kinds
    answer = events[-1][1]
    assert "".join(v for k, v in events if k == "token").strip() == answer.text
    assert "7个工作日" in answer.text
    assert answer.timings["first_token"] <= answer.timings["total"]
    stages = [answer.timings[name] for name in ("retrieve", "prompt", "prefill", "decode")]
    assert all(seconds >= 0 for seconds in stages)
    assert sum(stages) <= answer.timings["total"]
    usage = answer.usage
    assert answer.finish_reason == "stop" and usage["completion_tokens"] > 0
    assert usage["prompt_tokens"] > 100  # template + the retrieved passages, tokenised
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_cli_ingest_ask_and_kb_commands(default_llm_folder: Path, tmp_path: Path):
    env = {**os.environ, "KBQA_HOME": str(tmp_path / "home")}
    kbqa = [sys.executable, "-m", "kbqa.cli"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*kbqa, *args], env=env, capture_output=True, text=True, timeout=600)

    docs = tmp_path / "docs"
    shutil.copytree(KNOWLEDGE, docs)
    (docs / "empty.txt").write_bytes(b"")
    (docs / "junk.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    first = run("ingest", str(docs))
    assert first.returncode == 1, first.stderr  # two files failed: exit status says so
    assert first.stdout.count("added") >= 5 and "empty.txt" in first.stdout
    assert "failed" in first.stdout and "5 added, 2 failed" in first.stdout

    (docs / "empty.txt").unlink()
    (docs / "junk.pdf").unlink()
    second = run("ingest", str(docs))
    assert second.returncode == 0 and "5 skipped" in second.stdout

    ask = run("ask", "公司班车早上几点发车？", "--llm", str(default_llm_folder), "-v")
    assert ask.returncode == 0, ask.stderr
    assert "timings: retrieve" in ask.stderr and "prefill" in ask.stderr
    assert "tokens: prompt" in ask.stderr and "tok/s" in ask.stderr
    answer, _, sources = ask.stdout.partition("来源 / sources:")
    assert "7:40" in answer
    assert "faq.txt" in sources

    listing = run("kb", "list")
    assert "default\t5 documents" in listing.stdout
    removed = run("kb", "remove", str((docs / "faq.txt").resolve()))
    assert removed.returncode == 0, removed.stderr
    assert "4 documents" in run("kb", "show").stdout


def test_cli_errors_are_one_line_and_non_zero(tmp_path: Path):
    env = {**os.environ, "KBQA_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-m", "kbqa.cli", "ask", "问题", "--kb", "nope"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("kbqa: error: knowledge base 'nope' does not exist")
    assert "Traceback" not in result.stderr
    bad = subprocess.run([sys.executable, "-m", "kbqa.cli", "ask", "问题", "--top-k", "0"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "top_k" in bad.stderr
