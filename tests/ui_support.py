"""Helpers for the Streamlit UI tests: a KBQA_HOME configured with the tiny real LLM."""

from __future__ import annotations

import os
from pathlib import Path

import tomli_w

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "streamlit_app.py"
DONOR_ADAPTER = ROOT / "adapters" / "smollm2-cmrc-donor"  # trained on SmolLM2: fits the tiny LLM
# the repository's adapters made for another base (Qwen): the tiny LLM's pages leave them out
OTHER_ADAPTERS = sorted(folder for folder in (ROOT / "adapters").iterdir()
                        if (folder / "adapter_config.json").is_file() and folder != DONOR_ADAPTER)

DOC_TEXT = (
    "# 年假制度\n\n"
    "入职满一年的员工每年享有十天带薪年假。在公司工作满十年的员工，每年享有十五天带薪年假。\n\n"
    "# 报销\n\n差旅费用应在出差结束后三十天内提交报销申请。\n"
)
QUESTION = "入职满一年的员工每年享有几天带薪年假？"


def home() -> Path:
    return Path(os.environ["KBQA_HOME"])


def write_config(llm_folder: Path, **extra: object) -> Path:
    """config.toml in KBQA_HOME pointing at the tiny LLM, with short answers, given as the model
    writes them: the tiny model's words are rarely in the passages, and the grounding check
    (tests/test_grounding.py) would make every answer the refusal."""
    path = home() / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    values = {"llm": str(llm_folder), "llm_dtype": "float32", "max_new_tokens": 8,
              "grounding": "off", **extra}
    path.write_text(tomli_w.dumps(values), encoding="utf-8")
    return path


def write_doc(folder: Path, name: str = "员工手册.md") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(DOC_TEXT, encoding="utf-8")
    return path


def app_test():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(APP), default_timeout=120)


def texts(at) -> str:
    """Everything the page shows as text (markdown, captions, alerts, expander labels)."""
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption]
    parts += [e.value for e in at.success] + [e.value for e in at.error]
    parts += [e.value for e in at.warning] + [e.value for e in at.info]
    parts += [e.label for e in at.expander]
    return "\n".join(str(p) for p in parts)
