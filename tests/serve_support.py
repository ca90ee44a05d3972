"""A real `kbqa serve` on 127.0.0.1 for the API tests: uvicorn in a thread, on a free port."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbqa.config import Settings
from kbqa.qa.prompts import build_prompt, format_context, format_history
from kbqa.server import auth
from kbqa.server.app import create_app, running
from kbqa.service import KbqaService

from tests.ui_support import DONOR_ADAPTER, write_doc

FINANCE_TEXT = "# 财务制度\n\n财务部的季度预算审批口令是青松七号，只有财务主管可以查看。\n"


@dataclass
class Server:
    url: str          # http://127.0.0.1:PORT
    home: Path
    app: Any
    hr_key: str       # allowed: hr
    admin_key: str    # allowed: *

    @property
    def state(self) -> Any:
        return self.app.state.kbqa


def server_settings(home: Path, llm_folder: Path, **extra: Any) -> Settings:
    options: dict[str, Any] = {"max_new_tokens": 8, "max_file_mb": 1, "serve_queue": 1,
                               "variants": {"donor": [DONOR_ADAPTER]}, **extra}
    return Settings(home=home, llm=str(llm_folder), llm_dtype="float32", **options)


def prepare_home(settings: Settings) -> tuple[str, str]:
    """Two knowledge bases (hr, finance) and two keys; returns (hr key, admin key)."""
    service = KbqaService(settings)
    docs = settings.home / "docs"
    service.ingest([write_doc(docs / "hr")], "hr")
    finance = docs / "finance" / "财务制度.md"
    finance.parent.mkdir(parents=True)
    finance.write_text(FINANCE_TEXT, encoding="utf-8")
    service.ingest([finance], "finance")
    for kb in service._kbs.values():
        kb.close()
    return (auth.add_key(settings.keys_path, "hr-team", ["hr"]),
            auth.add_key(settings.keys_path, "admin", ["*"]))


@contextmanager
def kbqa_server(home: Path, llm_folder: Path, **extra: Any) -> Iterator[Server]:
    settings = server_settings(home, llm_folder, **extra)
    hr_key, admin_key = prepare_home(settings)
    app = create_app(settings)
    with running(app) as url:
        yield Server(url=url, home=home, app=app, hr_key=hr_key, admin_key=admin_key)


def count(server: Server, text: str) -> int:
    """Tokens of `text` by the served model's own tokenizer."""
    tokenizer = server.state.service.variant_model.tokenizer
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def rendered(server: Server, prompt: str) -> str:
    """What the model reads for `prompt`: its chat template around it."""
    with server.state.backend.activate("plain") as llm:
        return llm.render(prompt)


def qa_prompt(server: Server, question: str, history: Sequence[tuple[str, str]] = ()) -> str:
    """The QA prompt for `question` over the hr KB, built from the chain's own parts."""
    settings = server.state.settings
    docs = server.state.service.retriever("hr").invoke(question)
    return build_prompt(settings.answer.prompt_template).format(
        context=format_context(docs), question=question,
        history=format_history(list(history), settings.answer.history_turns))


def draft_of(response: Any) -> str:
    """The model's own answer: the grounding check's draft where it replaced it."""
    grounding = response.model_extra.get("grounding") or {}
    return grounding.get("draft", response.choices[0].message.content)
