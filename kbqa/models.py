"""The models one process loads once: embedder, LLM (with or without adapters), variants, reranker."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from langchain_core.language_models import BaseLLM

from kbqa.config import LLMSettings, Settings
from kbqa.errors import ConfigError

if TYPE_CHECKING:  # the modules behind these pull in torch: imported when first used
    from kbqa.adapters.variants import Variant, VariantModel
    from kbqa.embeddings.embedders import EncoderEmbeddings
    from kbqa.llm.local import LocalLLM
    from kbqa.retrieval.rerank import Reranker

GENERATION_FIELDS = ("max_new_tokens", "temperature", "top_p", "repetition_penalty", "refusal_bias",
                     "min_answerability")


class Models:
    """Loads each configured model on first use; `embeddings` and `llm` may be injected."""

    def __init__(self, settings: Settings, *, embeddings: EncoderEmbeddings | None = None,
                 llm: BaseLLM | None = None) -> None:
        self.settings = settings
        self._embeddings = embeddings
        self._llm = llm
        self._injected_llm = llm
        self._base_llm: BaseLLM | None = None
        self._variant_model: VariantModel | None = None

    @property
    def embeddings(self) -> EncoderEmbeddings:
        """The configured embedder, loaded once."""
        if self._embeddings is None:
            from kbqa.embeddings.embedders import load_embeddings

            self._embeddings = load_embeddings(self.settings.embeddings.model)
        return self._embeddings

    @property
    def llm(self) -> BaseLLM:
        """The configured LLM with the configured adapters, loaded once (remote: a client)."""
        if self._llm is None:
            from kbqa.llm.remote import RemoteLLM, is_remote

            s = self.settings
            if is_remote(s.llm.model):
                if s.llm.adapters:
                    raise ConfigError("adapters cannot be applied to a remote LLM: configure "
                                      "them on the serving side and name that variant in llm")
                self._llm = RemoteLLM.from_settings(s)
            else:
                self._llm = self._with_adapters(self._load_local_llm())
        return self._llm

    @property
    def base_llm(self) -> BaseLLM:
        """The LLM without adapters (variants add them on top, see kbqa.adapters.variants)."""
        if self._base_llm is None:
            from kbqa.llm.remote import is_remote

            if self._injected_llm is not None and not self.settings.llm.adapters:
                self._base_llm = self._injected_llm
            elif is_remote(self.settings.llm.model):
                self._base_llm = self.llm  # a remote model: adapters are chosen on the serving side
            else:
                self._base_llm = self._load_local_llm()
        return self._base_llm

    @property
    def variant_model(self) -> VariantModel:
        """The base model shared by every variant (plain, the configured adapters, others)."""
        if self._variant_model is None:
            from kbqa.adapters.variants import VariantModel

            self._variant_model = VariantModel(self.base_llm, base=self.settings.llm.model)
        return self._variant_model

    def ready(self, variant: Variant) -> bool:
        """Whether answering with `variant` needs no model or adapter loaded first."""
        return (self._embeddings is not None and self._variant_model is not None
                and all(folder in self._variant_model.names for folder in variant.adapters))

    @cached_property
    def reranker(self) -> Reranker | None:
        """The configured cross-encoder (None by default), loaded once."""
        from kbqa.retrieval.rerank import load_reranker

        return load_reranker(self.settings.retrieval.rerank)

    def apply(self, new: Settings) -> bool:
        """Take new settings: a new model or dtype is loaded at next use, generation parameters
        apply at once. Returns whether the embedder changed (its knowledge bases must reopen)."""
        current, self.settings = self.settings, new
        if (new.llm.model, new.llm.dtype) != (current.llm.model, current.llm.dtype):
            self._llm = self._injected_llm = self._base_llm = self._variant_model = None
        embedder_changed = new.embeddings.model != current.embeddings.model
        if embedder_changed:
            self._embeddings = None
        for llm in {id(x): x for x in (self._llm, self._base_llm) if x is not None}.values():
            apply_generation(llm, new.llm)
        return embedder_changed

    def _load_local_llm(self) -> LocalLLM:
        """The one place a local model is loaded from the settings."""
        from kbqa.llm.loading import answerability_probe_file, resolve_llm
        from kbqa.llm.local import LocalLLM
        from kbqa.qa.prompts import REFUSAL

        s = self.settings.llm
        folder = resolve_llm(s.model, self.settings.cache_dir, s.dtype)
        return LocalLLM.from_folder(folder, dtype=s.dtype, max_new_tokens=s.max_new_tokens,
                                    temperature=s.temperature, top_p=s.top_p,
                                    repetition_penalty=s.repetition_penalty, refusal=REFUSAL,
                                    refusal_bias=s.refusal_bias,
                                    probe_file=answerability_probe_file(s.model, folder),
                                    min_answerability=s.min_answerability)

    def _with_adapters(self, llm: LocalLLM) -> LocalLLM:
        """`llm` with the configured adapters loaded strictly (none: unchanged)."""
        if not self.settings.llm.adapters:
            return llm
        from kbqa.adapters import load_adapters
        from kbqa.adapters.variants import refuse_unfit
        from kbqa.llm.quantization import refuse_adapters

        refuse_adapters(llm.model, self.settings.llm.adapters[0])
        for folder in self.settings.llm.adapters:
            refuse_unfit(Path(folder), self.settings.llm.model)
        llm.model, reports = load_adapters(llm.model, list(self.settings.llm.adapters))
        llm.adapters = [report.folder for report in reports]
        return llm


def apply_generation(llm: BaseLLM, section: LLMSettings) -> None:
    """Set the generation parameters this LLM has (a remote one has no repetition_penalty)."""
    for name in GENERATION_FIELDS:
        if name in type(llm).model_fields:
            setattr(llm, name, getattr(section, name))
