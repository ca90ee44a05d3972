"""`LocalLLM`: a LangChain `LLM` around a local Hugging Face causal language model.

The model and tokenizer are injected (or loaded once by `LocalLLM.from_folder`),
never at import time. The prompt string LangChain hands over is wrapped as one
user turn in the model's own chat format: the tokenizer's chat template
(Qwen, Llama, GLM-4, ChatGLM3, ...) or ChatGLM-6B/ChatGLM2's "问：/答：" rounds.
No conversation state lives in this object; history belongs in the prompt.

Every generation carries `generation_info` = {"finish_reason": "stop" | "length",
"token_usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}, as `RemoteLLM`
(and OpenAI-style LLMs) report it: on the `Generation` of `generate()` and on the last
chunk of `stream()`, so
LangChain callbacks (`on_llm_end`) and the API server see real token counts.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.llms import LLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import ConfigDict, Field

from kbqa.errors import ModelError
from kbqa.llm.answerability import AnswerabilityProbe, watching
from kbqa.llm.prefix_cache import PrefixCache, is_prompt_learning
from kbqa.llm.refusal import RefusalThreshold
from kbqa.llm.stop import signals_in


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text up to the first stop string, and whether one was found."""
    positions = [text.find(s) for s in stop if s and s in text]
    if not positions:
        return text, False
    return text[: min(positions)], True


def _chatglm_round_prompt(prompt: str, version: str) -> str:
    """ChatGLM-6B (v1) and ChatGLM2 have no chat template: they read '问：…答：' rounds."""
    if version == "chatglm":
        return f"[Round 0]\n问：{prompt}\n答："
    return f"[Round 1]\n\n问：{prompt}\n\n答："


def _chatglm_version(config: Any) -> str:
    """"chatglm" (ChatGLM-6B) or "chatglm2": both configs say model_type "chatglm", so the
    architecture decides (as in kbqa.adapters.profiles): v2 and later have ffn_hidden_size."""
    v2 = any(getattr(config, key, None) is not None
             for key in ("ffn_hidden_size", "multi_query_attention"))
    return "chatglm2" if v2 else "chatglm"


def _remote_code_files(config: dict[str, Any]) -> list[str]:
    """The folder's own Python files that auto_map points transformers at."""
    refs: list[str] = []
    for value in config.get("auto_map", {}).values():
        refs.extend(v for v in (value if isinstance(value, list) else [value]) if v)
    return sorted({ref.split("--")[-1].split(".")[0] + ".py" for ref in refs})


def _refusal_margin(generation: dict[str, Any]) -> dict[str, float | None]:
    """The first step's refusal margin and log-probability when this generation measured them
    (kbqa.llm.refusal), else {}."""
    threshold = _threshold_of(generation)
    if threshold is None or threshold.margin is None:
        return {}
    info = {"refusal_margin": threshold.margin, "refusal_logprob": threshold.logprob}
    if threshold.answerability is not None:
        info["answerability"] = threshold.answerability
    return info


def _threshold_of(generation: dict[str, Any]) -> RefusalThreshold | None:
    """The refusal threshold among a generation's logits processors, if any."""
    for processor in generation.get("logits_processor") or ():
        if isinstance(processor, RefusalThreshold):
            return processor
    return None


def _generation_info(prompt_tokens: int, completion_tokens: int, max_new_tokens: int,
                     ended: bool) -> dict[str, Any]:
    """OpenAI's finish_reason and usage: "length" only when the token budget ran out first."""
    reason = "length" if completion_tokens >= max_new_tokens and not ended else "stop"
    return {"finish_reason": reason,
            "token_usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class LocalLLM(LLM):
    """Greedy by default (temperature 0) so answers are reproducible and comparable."""

    model: Any = Field(exclude=True)
    tokenizer: Any = Field(exclude=True)
    model_name: str = "local"
    adapters: list[str] = Field(default_factory=list)
    system_prompt: str | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: list[str] = Field(default_factory=list)
    max_input_tokens: int = 3072
    # the answer template's fixed refusal, and the first-token margin below which it is given
    # instead of an answer (kbqa.llm.refusal; 0: the margin is only recorded)
    refusal: str | None = None
    refusal_bias: float = 0.0
    # kbqa.llm.answerability: a probe fitted on this model's weights, and the probability that
    # the passages hold the answer below which the refusal is given (0: only recorded)
    answerability_probe: AnswerabilityProbe | None = Field(None, exclude=True)
    min_answerability: float = 0.0
    # kbqa.llm.cpu_inference: packed weights, folded attention, a growing cache (same computation)
    cpu_speedups: bool = True
    # Shared by this LLM's adapter views (kbqa.adapters.variants), keyed by the weights in use; None = off.
    prefix_cache: PrefixCache | None = Field(default_factory=PrefixCache, exclude=True)

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @classmethod
    def from_folder(cls, folder: Path, *, dtype: str = "bfloat16", trust_remote_code: bool = True,
                    probe_file: Path | None = None, **fields: Any) -> LocalLLM:
        """Load model and tokenizer from a local folder (ChatGLM needs its remote code), and the
        answerability probe fitted on these weights when `probe_file` is given (strictly).

        dtype "int8" loads float32 weights and quantizes every nn.Linear dynamically
        (`quantize_int8`); "int8-weights" loads bfloat16 weights and stores every nn.Linear's
        weights in int8 (`quantize_int8_weights`). Both are CPU only, and LoRA adapters cannot
        attach to them. The `cpu_speedups` field applies kbqa.llm.cpu_inference (the same
        computation, faster; off only to measure transformers' own path).
        """
        import torch
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        from kbqa.allocator import keep_freed_memory
        from kbqa.llm.cpu_inference import speed_up
        from kbqa.llm.loading import weights_dtype
        from kbqa.llm.quantization import quantize_int8, quantize_int8_weights

        keep_freed_memory()
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        remote = trust_remote_code and "auto_map" in config
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote,
                                                      local_files_only=True)
            loader = AutoModelForCausalLM
            if remote and "AutoModelForCausalLM" not in config.get("auto_map", {}):
                loader = AutoModel  # ChatGLM-6B v1 registers only AutoModel
            model = loader.from_pretrained(folder, dtype=getattr(torch, weights_dtype(dtype)),
                                           trust_remote_code=remote, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"cannot load the model in {folder}: {exc}") from exc
        except Exception as exc:  # the folder's own code, run inside transformers
            if not remote:
                raise
            import transformers

            raise ModelError(
                f"the model code shipped in {folder} ({', '.join(_remote_code_files(config))}, "
                f"run with trust_remote_code) fails under transformers {transformers.__version__}: "
                f"{type(exc).__name__}: {exc}. ChatGLM-6B and ChatGLM2-6B's code predates "
                "transformers 5: serve such a model from an environment with the transformers "
                "it was written for and use it through llm = \"openai:...\"") from exc
        model.eval()
        if dtype == "int8":
            model = quantize_int8(model)
        elif dtype == "int8-weights":
            model = quantize_int8_weights(model)
        if fields.get("cpu_speedups", True):
            speed_up(model)
        fields.setdefault("model_name", folder.name)
        if probe_file is not None:
            config = model.config.get_text_config() if hasattr(model.config, "get_text_config") \
                else model.config
            fields["answerability_probe"] = AnswerabilityProbe.load(
                probe_file, config.hidden_size, config.num_hidden_layers)
        return cls(model=model, tokenizer=tokenizer, **fields)

    @property
    def _llm_type(self) -> str:
        return "kbqa-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "adapters": list(self.adapters),
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
        }

    def render(self, prompt: str) -> str:
        """The exact text the model reads for a user prompt, in its own chat format."""
        model_type = getattr(self.model.config, "model_type", "")
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": prompt}]
            if self.system_prompt:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True)
        if model_type.startswith("chatglm"):
            return _chatglm_round_prompt(prompt, _chatglm_version(self.model.config))
        return prompt

    def _generation_kwargs(self, prompt: str, stop: list[str] | None,
                           **kwargs: Any) -> tuple[dict, _Lease | None]:
        """generate() arguments, and the prefix-cache lease to return once generation ends."""
        import torch
        from transformers import LogitsProcessorList

        from kbqa.llm.cpu_inference import is_transformers_native

        inputs = self.tokenizer(self.render(prompt), return_tensors="pt", add_special_tokens=False)
        input_ids = inputs["input_ids"][:, -self.max_input_tokens:]
        temperature = kwargs.get("temperature", self.temperature)
        generation: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": kwargs.get("max_new_tokens", self.max_new_tokens),
            "repetition_penalty": kwargs.get("repetition_penalty", self.repetition_penalty),
            "do_sample": temperature > 0,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        if temperature > 0:
            generation.update(temperature=temperature, top_p=kwargs.get("top_p", self.top_p))
        else:
            generation.update(temperature=None, top_p=None, top_k=None)
        stops = [*(self.stop or []), *(stop or [])]
        if stops:
            generation.update(stop_strings=stops, tokenizer=self.tokenizer)
        threshold = self._refusal_threshold(
            kwargs.get("refusal_bias", self.refusal_bias),
            kwargs.get("min_answerability", self.min_answerability))
        if threshold is not None:
            generation["logits_processor"] = LogitsProcessorList([threshold])
        if is_prompt_learning(self.model):  # peft builds the cache: it starts with the prefix
            return generation, None
        lease = self._lease_cache(input_ids[0].tolist())
        if lease is not None:
            generation["past_key_values"] = lease.cache
        elif self.cpu_speedups and is_transformers_native(self.model):
            generation["past_key_values"] = self.new_cache()
        return generation, lease

    def _refusal_threshold(self, bias: float, min_answerability: float) -> RefusalThreshold | None:
        """This generation's refusal threshold, when the LLM knows its template's refusal."""
        if not self.refusal:
            return None
        ids = self.tokenizer(self.refusal, add_special_tokens=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        return RefusalThreshold(ids, eos, bias, min_answerability)

    @contextmanager
    def _probing(self, generation: dict[str, Any]) -> Iterator[None]:
        """Run in the generating thread around generate(): the probe reads the prompt's state
        (only on the weights it was fitted on: not with adapters on top)."""
        threshold, probe = _threshold_of(generation), self.answerability_probe
        if threshold is None or probe is None or self.adapters:
            yield
            return
        with watching(self.model, probe.layer) as capture:
            threshold.read_answerability = lambda: (
                None if capture.state is None else probe.probability(capture.state))
            yield

    def new_cache(self) -> Any:
        """An empty key/value cache of the kind generate() gets here: kbqa's growing one, or
        transformers' own without cpu_speedups."""
        from transformers import DynamicCache

        from kbqa.llm.cpu_inference import growing_cache

        config = self.model.config
        return growing_cache(config) if self.cpu_speedups else DynamicCache(config=config)

    def _lease_cache(self, ids: list[int]) -> _Lease | None:
        """The stored cache of this prompt's longest known prefix, or a fresh one to fill."""
        from kbqa.llm.cpu_inference import is_transformers_native

        if self.prefix_cache is None or not is_transformers_native(self.model):
            return None
        key = (id(self.model), tuple(self.adapters))
        cache, reused = self.prefix_cache.take(key, ids)
        if cache is None:
            cache = self.new_cache()
        self.prefix_cache.count(reused, len(ids))
        return _Lease(self.prefix_cache, key, ids, cache)

    def _ended(self, new_tokens: Any, text: str, stops: list[str]) -> bool:
        """Whether generation ended by itself (end-of-sequence token or a stop string)."""
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        last = int(new_tokens[-1]) if len(new_tokens) else None
        return last in eos_ids or _cut_at_stop(text, stops)[1]

    def _complete(self, prompt: str, stop: list[str] | None, **kwargs: Any
                  ) -> tuple[str, dict[str, Any]]:
        """The answer text and its generation_info."""
        import torch

        generation, lease = self._generation_kwargs(prompt, stop, **kwargs)
        with torch.inference_mode(), self._probing(generation):
            output = self.model.generate(**generation)
        if lease is not None:
            lease.give_back()
        prompt_tokens = generation["input_ids"].shape[1]
        new_tokens = output[0, prompt_tokens:]
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        stops = [*(self.stop or []), *(stop or [])]
        info = _generation_info(prompt_tokens, len(new_tokens), generation["max_new_tokens"],
                                self._ended(new_tokens, text, stops)) | _refusal_margin(generation)
        return _cut_at_stop(text, stops)[0].strip(), info

    def _call(self, prompt: str, stop: list[str] | None = None,
              run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> str:
        return self._complete(prompt, stop, **kwargs)[0]

    def _generate(self, prompts: list[str], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> LLMResult:
        """As LLM._generate, but keeping each answer's finish_reason and token usage."""
        generations = []
        for prompt in prompts:
            text, info = self._complete(prompt, stop, **kwargs)
            generations.append([Generation(text=text, generation_info=info)])
        return LLMResult(generations=generations)

    def _stream(self, prompt: str, stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[GenerationChunk]:
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True,
                                        skip_special_tokens=True, timeout=600)
        generation, lease = self._generation_kwargs(prompt, stop, **kwargs)
        cancel = threading.Event()  # the consumer closed this stream
        signals = signals_in(run_manager.handlers) if run_manager else []
        generation["stopping_criteria"] = StoppingCriteriaList([_Cancelled([cancel, *signals])])
        errors: list[BaseException] = []
        outputs: list[Any] = []

        def produce() -> None:
            try:
                with torch.inference_mode(), self._probing(generation):
                    outputs.append(self.model.generate(**generation, streamer=streamer))
                if lease is not None:
                    lease.give_back()
            except BaseException as exc:  # noqa: BLE001 -- surfaced in the consumer thread below
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=produce, daemon=True)
        worker.start()
        stops = [*(self.stop or []), *(stop or [])]
        hold = max((len(s) for s in stops), default=1) - 1
        text, sent = "", 0
        try:
            for piece in streamer:
                text += piece
                visible, stopped = _cut_at_stop(text, stops)
                if not stopped:  # hold back a tail that may be the start of a stop string
                    visible = visible[: len(visible) - hold] if hold else visible
                if len(visible) > sent:
                    delta = visible[sent:] if sent else visible.lstrip()
                    sent = len(visible)
                    if delta:
                        if run_manager:
                            run_manager.on_llm_new_token(delta)
                        yield GenerationChunk(text=delta)
                if stopped:
                    break
        finally:  # also when the consumer closes the stream early: stop generating, then return
            cancel.set()
            worker.join()
        if errors:
            raise errors[0]
        rest = _cut_at_stop(text, stops)[0][sent:].rstrip()
        if rest:
            if run_manager:
                run_manager.on_llm_new_token(rest)
            yield GenerationChunk(text=rest if sent else rest.lstrip())
        if outputs:  # absent only when the consumer stopped reading before the end
            prompt_tokens = generation["input_ids"].shape[1]
            new_tokens = outputs[0][0, prompt_tokens:]
            yield GenerationChunk(text="", generation_info=_generation_info(
                prompt_tokens, len(new_tokens), generation["max_new_tokens"],
                self._ended(new_tokens, text, stops)) | _refusal_margin(generation))


class _Lease:
    """A key/value cache on loan from a PrefixCache for one generation."""

    def __init__(self, owner: PrefixCache, key: Any, ids: list[int], cache: Any) -> None:
        self.owner, self.key, self.ids, self.cache = owner, key, ids, cache

    def give_back(self) -> None:
        """Store the cache (cropped to the prompt) for the next prompt; only after a clean run."""
        self.owner.put(self.key, self.ids, self.cache)


class _Cancelled:
    """A generate() stopping criterion that fires once the stream's consumer has gone away or
    the run's StopSignal is set."""

    def __init__(self, events: list[threading.Event]) -> None:
        self.events = events

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        stopped = any(event.is_set() for event in self.events)
        return torch.full((input_ids.shape[0],), stopped, dtype=torch.bool,
                          device=input_ids.device)
