"""The QA chain in LCEL: question → retriever → prompt → LLM → answer, with the sources kept.

Input: {"question": str, "history": [(question, answer), ...] (optional)}.
Output: {"question", "docs", "answer", "grounded"}; `.stream()` yields the docs first,
then the model's answer token by token, then "grounded" (kbqa.qa.grounding.Grounding):
the answer as given after the grounding check, which `final_answer` reads. When retrieval
finds nothing above the score threshold the chain answers the fixed refusal without
calling the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.language_models import BaseLanguageModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough

from kbqa.config import Settings
from kbqa.kb.lexical import file_stem
from kbqa.qa.grounding import Grounding, Policy, ground
from kbqa.qa.prompts import REFUSAL, build_prompt, format_context, format_history
from kbqa.retrieval.followup import retrieve_with_history


def is_refusal(answer: str) -> bool:
    """Whether an answer is the template's fixed 'cannot answer' phrase (allowing punctuation)."""
    return REFUSAL in answer.replace(" ", "")


def check_answer(answer: str, docs: list[Document], question: str, policy: Policy,
                 earlier: str = "", library: Sequence[str] = ()) -> Grounding:
    """The grounding step on the passages the model read, with each passage's file and heading
    (where a question's identifier may stand: kbqa.qa.grounding), the conversation's last
    question (`earlier`: what a follow-up is about) and the file names of the knowledge base's
    documents (`library`: the company a question names may be in no passage it was given)."""
    names = [" ".join(str(d.metadata.get(key) or "") for key in ("filename", "source", "heading",
                                                                   "title"))
             for d in docs]
    titles = [file_stem(d.metadata) for d in docs]
    return ground(answer, [d.page_content for d in docs], question, policy, names=names,
                  titles=titles, earlier=earlier, library=library)


def final_answer(result: dict[str, Any]) -> str:
    """The answer a chain run gives: the grounded one when the chain checked it, else the model's."""
    grounded = result.get("grounded")
    return grounded.text if isinstance(grounded, Grounding) else str(result["answer"]).strip()


def build_qa_chain(retriever: BaseRetriever | Runnable, llm: BaseLanguageModel,
                   prompt: PromptTemplate | None = None, history_turns: int = 3,
                   grounding: Policy = "off", history_questions: int = 0,
                   library: Callable[[], Sequence[str]] | None = None) -> Runnable:
    """Compose retriever | prompt | llm | grounding check; any LangChain retriever and LLM fit.

    `history_questions` > 0 searches a follow-up once more with that many earlier questions
    (kbqa.retrieval.followup). `library` gives the knowledge base's file names without their
    extension, read at each check (documents come and go), for the grounding check.
    """
    prompt = prompt or build_prompt()

    def render(inputs: dict[str, Any]) -> str:
        history = format_history(inputs.get("history") or [], history_turns)
        return prompt.format(context=format_context(inputs["docs"]),
                             question=inputs["question"], history=history)

    answer_with_llm = RunnableLambda(render) | llm | StrOutputParser()
    refuse = RunnableLambda(lambda _: REFUSAL)

    def route(inputs: dict[str, Any]) -> Runnable:
        return answer_with_llm if inputs["docs"] else refuse

    def check(inputs: dict[str, Any]) -> Grounding:
        history = inputs.get("history") or []
        earlier = history[-1][0] if history and history_turns else ""
        return check_answer(inputs["answer"], inputs["docs"], inputs["question"], grounding,
                            earlier, library() if library is not None and grounding != "off"
                            else ())

    def retrieve(inputs: dict[str, Any]) -> list[Document]:
        return retrieve_with_history(retriever, inputs["question"], inputs.get("history"),
                                     history_questions)

    return (RunnablePassthrough.assign(docs=RunnableLambda(retrieve))
            | RunnablePassthrough.assign(answer=RunnableLambda(route))
            | RunnablePassthrough.assign(grounded=RunnableLambda(check)))


def qa_chain(settings: Settings, retriever: BaseRetriever | Runnable, llm: BaseLanguageModel, *,
             history: bool = True, library: Callable[[], Sequence[str]] | None = None) -> Runnable:
    """The app's QA chain: `build_qa_chain` with the configured template and history turns
    (none when `history` is False), grounding policy and the knowledge base's file names
    (`library`); the CLI, web app, server and evaluator all build this one."""
    return build_qa_chain(retriever, llm, build_prompt(settings.answer.prompt_template),
                          history_turns=settings.answer.history_turns if history else 0,
                          grounding=settings.answer.grounding,
                          history_questions=settings.retrieval.history_questions if history else 0,
                          library=library)


def fixed_context(docs: list[Document]) -> Runnable:
    """A retriever stand-in that returns `docs` whatever the question: answering from a given
    context (Compare, the server's shared retrieval, evaluation with the gold passage hidden)."""
    return RunnableLambda(lambda _: docs)
