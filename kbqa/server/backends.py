"""Which LLM answers a request: the API's `model` names a variant of the one shared model.

Local: one base model is loaded once; each variant is a set of LoRA adapters switched on it
(`kbqa.adapters.variants.VariantModel`, whose lock serialises use of the model). 'plain' is always served,
'default' too when `adapters` is set, plus every entry of the `variants` setting.
Remote (`llm = "openai:URL#MODEL"`): the model is served elsewhere (vLLM serves LoRA adapters under
their own names), so a variant name is forwarded as the remote model name and nothing is locked.
Given a `Meter`, `activate` yields an LLM that records the token usage and finish reason into it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from kbqa.adapters.variants import Variant
from kbqa.config import Settings
from kbqa.llm.remote import RemoteLLM, is_remote, parse_remote
from kbqa.server.usage import Meter, UsageRecorder

if TYPE_CHECKING:
    from kbqa.service import KbqaService


class UnknownModel(LookupError):
    """The requested model is not one this server serves."""


class LocalBackend:
    """Variants of the shared local model; generation holds the variant lock."""

    def __init__(self, service: KbqaService, settings: Settings) -> None:
        self.service = service
        self.variants: dict[str, Variant] = {"plain": Variant()}
        if settings.llm.adapters:
            self.variants["default"] = Variant.of(settings.llm.adapters)
        self.variants.update({name: Variant.of(folders)
                              for name, folders in settings.server.variants.items()})

    def names(self) -> list[str]:
        return list(self.variants)

    def prepare(self) -> None:
        """Load the model and every adapter before the first request (fail at start, not later)."""
        for variant in self.variants.values():
            self.service.variant_model.prepare(variant)

    @contextmanager
    def activate(self, name: str, meter: Meter | None = None) -> Iterator[Any]:
        if name not in self.variants:
            raise UnknownModel(name)
        with self.service.variant_model.activate(self.variants[name]) as llm:
            if meter is None:
                yield llm
            else:
                yield llm.model_copy(update={"callbacks": [UsageRecorder(meter)]})


class RemoteBackend:
    """A remote OpenAI-compatible server; variant names are its model names."""

    def __init__(self, settings: Settings) -> None:
        self.llm = RemoteLLM.from_settings(settings)
        _, model = parse_remote(settings.llm.model)
        self._names = list(dict.fromkeys([model, *settings.server.variants]))

    def names(self) -> list[str]:
        return list(self._names)

    def prepare(self) -> None:
        """Nothing to load here: the remote server owns the weights."""

    @contextmanager
    def activate(self, name: str, meter: Meter | None = None) -> Iterator[Any]:
        if name not in self._names:
            raise UnknownModel(name)
        update: dict[str, Any] = {"model_name": name}
        if meter is not None:
            update["callbacks"] = [UsageRecorder(meter)]
        yield self.llm.model_copy(update=update)


Backend = LocalBackend | RemoteBackend


def make_backend(service: KbqaService, settings: Settings) -> Backend:
    """The remote backend for an 'openai:' LLM, else variants of the service's local model."""
    return RemoteBackend(settings) if is_remote(settings.llm.model) else LocalBackend(service, settings)
