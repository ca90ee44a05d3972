"""LocalLLM on a real tiny model: LangChain calls, streaming, stop strings, chat formats."""

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate

from kbqa.llm.local import LocalLLM, _chatglm_round_prompt, _cut_at_stop

# generation through the CPU kernels of whatever CPU runs it: CI reruns it under emulated ISAs
pytestmark = pytest.mark.numerics


def test_invoke_and_stream_agree_under_greedy_decoding(tiny_llm: LocalLLM):
    prompt = "Count: one, two, three,"
    full = tiny_llm.invoke(prompt)
    streamed = list(tiny_llm.stream(prompt))
    assert full and isinstance(full, str)
    assert len(streamed) > 1
    assert "".join(streamed).strip() == full


def test_stop_strings_cut_the_answer(tiny_llm: LocalLLM):
    prompt = "Count: one, two, three,"
    full = tiny_llm.invoke(prompt)
    stop_word = full.split()[1] if len(full.split()) > 1 else full[2:4]
    cut = tiny_llm.invoke(prompt, stop=[stop_word])
    assert stop_word not in cut and full.startswith(cut)
    assert "".join(tiny_llm.stream(prompt, stop=[stop_word])).strip() == cut


def test_works_inside_an_lcel_pipe(tiny_llm: LocalLLM):
    """The template's text reaches the model (LangChain's own callback sees it) and the pipe's
    output is exactly the model's greedy answer to that text."""
    from langchain_core.callbacks import BaseCallbackHandler

    class Prompts(BaseCallbackHandler):
        def __init__(self) -> None:
            self.seen: list[str] = []

        def on_llm_start(self, serialized, prompts, **kwargs):
            self.seen.extend(prompts)

    recorder = Prompts()
    chain = PromptTemplate.from_template("Say {word} in French.") | tiny_llm | StrOutputParser()
    answer = chain.invoke({"word": "hello"}, config={"callbacks": [recorder]})
    assert recorder.seen == ["Say hello in French."]
    assert answer and answer == tiny_llm.invoke("Say hello in French.")
    assert answer != tiny_llm.invoke("Count: one, two, three,")  # the prompt decides the answer


def test_chat_template_wraps_the_prompt_and_params_identify_the_model(tiny_llm: LocalLLM):
    rendered = tiny_llm.render("你好")
    assert "你好" in rendered and rendered != "你好"
    params = tiny_llm._identifying_params
    assert params["model_name"].startswith("smollm2") and params["temperature"] == 0.0


def test_chatglm_round_format_and_stop_helper():
    assert _chatglm_round_prompt("你好", "chatglm") == "[Round 0]\n问：你好\n答："
    assert _chatglm_round_prompt("你好", "chatglm2") == "[Round 1]\n\n问：你好\n\n答："
    assert _cut_at_stop("abc\n问：x", ["\n问："]) == ("abc", True)
    assert _cut_at_stop("abc", ["zz"]) == ("abc", False)


def test_closing_a_stream_early_stops_generation(tiny_llm: LocalLLM):
    """Closing the stream after its first chunk cancels generate() long before max_new_tokens
    and ends the thread kbqa generated in before close() returns; the same prompt left alone
    runs to the token limit (the control), so the stop is the cancellation's doing."""
    import threading
    import time

    prompt, limit = "Write a very long story about a cat.", 24
    info = tiny_llm.generate([prompt], max_new_tokens=limit).generations[0][0].generation_info
    assert info["finish_reason"] == "length"
    assert info["token_usage"]["completion_tokens"] == limit
    steps = []  # one forward pass per generated token
    hook = tiny_llm.model.register_forward_hook(lambda *_: steps.append(1))
    try:
        before = set(threading.enumerate())
        stream = tiny_llm._stream(prompt, max_new_tokens=limit)
        assert next(stream).text
        started = [t for t in threading.enumerate() if t not in before]
        assert started  # the generating thread
        stream.close()
        assert not [t for t in started if t.is_alive()]  # ended and joined by close()
        done = len(steps)
        time.sleep(0.5)
        assert len(steps) == done  # nothing generates any more
    finally:
        hook.remove()
    assert 0 < done < limit


def _prompt_tokens(llm: LocalLLM, prompt: str) -> int:
    return len(llm.tokenizer(llm.render(prompt), add_special_tokens=False)["input_ids"])


def test_generation_info_reports_usage_and_length_finish(tiny_llm: LocalLLM):
    prompt = "Write a very long story about a cat."
    result = tiny_llm.generate([prompt], max_new_tokens=5)
    info = result.generations[0][0].generation_info
    expected_prompt = _prompt_tokens(tiny_llm, prompt)
    assert info == {"finish_reason": "length",
                    "token_usage": {"prompt_tokens": expected_prompt, "completion_tokens": 5,
                              "total_tokens": expected_prompt + 5}}
    chunks = list(tiny_llm._stream(prompt, max_new_tokens=5))
    assert chunks[-1].text == "" and chunks[-1].generation_info == info


def test_generation_info_says_stop_when_a_stop_string_ends_it(tiny_llm: LocalLLM):
    prompt = "Count: one, two, three,"
    full = tiny_llm.invoke(prompt, max_new_tokens=40)
    stop_word = full.split()[1] if len(full.split()) > 1 else full[2:4]
    result = tiny_llm.generate([prompt], stop=[stop_word], max_new_tokens=40)
    info = result.generations[0][0].generation_info
    assert info["finish_reason"] == "stop"
    assert 0 < info["token_usage"]["completion_tokens"] < 40
    streamed = list(tiny_llm._stream(prompt, stop=[stop_word], max_new_tokens=40))
    assert streamed[-1].generation_info["finish_reason"] == "stop"


def test_prefix_cache_reuses_the_shared_prefix_and_keeps_answers(tiny_llm: LocalLLM):
    from kbqa.llm.prefix_cache import PrefixCache

    cached = tiny_llm.model_copy(update={"prefix_cache": PrefixCache()})
    fresh = tiny_llm.model_copy(update={"prefix_cache": None})
    base = "Facts: the red house has three doors and the blue house has five windows. "
    questions = [base + "How many doors?", base + "How many windows?", base + "How many doors?"]
    for question in questions:
        assert cached.invoke(question, max_new_tokens=12) == fresh.invoke(question, max_new_tokens=12)
    stats = cached.prefix_cache
    prompt_len = len(tiny_llm.tokenizer(tiny_llm.render(questions[2]))["input_ids"])
    # 2nd prompt reuses the shared facts; the 3rd, a repeat, everything but its last token
    assert stats.reused_tokens >= (prompt_len - 1) + 16
    streamed = "".join(cached.stream(questions[1], max_new_tokens=12)).strip()
    assert streamed == fresh.invoke(questions[1], max_new_tokens=12)


def test_prefix_cache_is_kept_apart_per_adapter_state(tiny_llm: LocalLLM):
    from kbqa.llm.prefix_cache import PrefixCache

    shared = PrefixCache()
    plain = tiny_llm.model_copy(update={"prefix_cache": shared})
    other = tiny_llm.model_copy(update={"prefix_cache": shared, "adapters": ["some/adapter"]})
    prompt = "Facts: the red house has three doors and the blue house has five windows. Doors?"
    plain.invoke(prompt, max_new_tokens=4)
    other.invoke(prompt, max_new_tokens=4)
    assert shared.reused_tokens == 0  # a state never reads another state's cache
    plain.invoke(prompt, max_new_tokens=4)
    assert shared.reused_tokens > 0


def test_closing_the_qa_chains_event_stream_stops_generation(tiny_llm: LocalLLM):
    """The web app's stop button and a client leaving the server close the service's event
    stream; LangChain's stream does not pass the close down to the model at once, so without a
    stop signal the model kept generating to max_new_tokens while the close waited."""
    import time

    from langchain_core.documents import Document

    from kbqa.config import Settings
    from kbqa.qa.chain import fixed_context, qa_chain
    from kbqa.service import _events

    limit = 40
    llm = tiny_llm.model_copy(update={"max_new_tokens": limit})
    chain = qa_chain(Settings(grounding="off"), fixed_context(
        [Document(page_content="猫是一种常见的家养动物。", metadata={"source": "cats.md"})]), llm)
    steps = []  # one forward pass per generated token (and one for the prompt)
    hook = tiny_llm.model.register_forward_hook(lambda *_: steps.append(1))
    try:
        events = _events(chain, "Write a very long story about a cat.", None)
        assert next(kind for kind, _ in events if kind == "token")
        events.close()
        done = len(steps)
        time.sleep(0.5)
        assert len(steps) == done  # nothing generates any more
    finally:
        hook.remove()
    assert 0 < done < limit / 2, done
