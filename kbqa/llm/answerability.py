"""An answerability probe: whether the passages hold the answer, read off the reader's own state.

A small reader answers from a same-topic passage when it should refuse, and its first token does
not tell the two cases apart (kbqa.llm.refusal). Its hidden state at the prompt's last token
does, much better: a logistic regression on one layer's state, fitted on CMRC train questions
asked with and without their gold passage (bench/answerability_features.py and
bench/answerability_probe.py; figures in docs/benchmarks.md). The state is computed by the
prompt's forward pass anyway, so the probe costs one dot product. It is tied to the weights it
was fitted on and ships in their reader's folder (answerability.safetensors).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from kbqa.errors import ModelError

if TYPE_CHECKING:  # torch is imported when a probe is first used, not with kbqa.llm.local
    import torch
    from torch import nn

PROBE_FILE = "answerability.safetensors"
_TENSORS = ("mean", "scale", "weight", "bias")


class AnswerabilityProbe:
    """p(the passages hold the answer) = sigmoid(weight · (state − mean) / scale + bias), on the
    hidden state after `layer` decoder layers (hidden_states[layer] in transformers' terms).

    A plain class, not a dataclass: pydantic (LocalLLM's field) would resolve a dataclass's
    torch annotations, and torch is not imported with kbqa.llm.local."""

    def __init__(self, layer: int, mean: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor, fitted_on: str = "") -> None:
        self.layer, self.fitted_on = layer, fitted_on
        self.mean, self.scale, self.weight, self.bias = mean, scale, weight, bias

    def probability(self, state: torch.Tensor) -> float:
        z = ((state.float() - self.mean) / self.scale) @ self.weight + self.bias
        return z.sigmoid().item()

    def save(self, folder: Path) -> Path:
        """Write the probe as safetensors, its layer and provenance in the header (a temporary
        file renamed over the old one: a crash leaves the previous probe)."""
        from safetensors.torch import save_file

        path = Path(folder) / PROBE_FILE
        staging = path.with_name(f".{PROBE_FILE}.tmp")
        tensors = {name: getattr(self, name).contiguous() for name in _TENSORS}
        save_file(tensors, str(staging), metadata={"layer": str(self.layer),
                                                   "fitted_on": self.fitted_on})
        os.replace(staging, path)
        return path

    @classmethod
    def load(cls, path: Path, hidden_size: int, num_layers: int) -> AnswerabilityProbe:
        """Load strictly: exactly the four tensors, each of the model's hidden size, and a layer
        the model has; anything else is a ModelError."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as file:
                names = set(file.keys())
                metadata = file.metadata() or {}
                tensors = {name: file.get_tensor(name).float() for name in names}
        except (OSError, ValueError, SafetensorError) as exc:
            raise ModelError(f"cannot read the answerability probe {path}: {exc}") from exc
        if names != set(_TENSORS):
            raise ModelError(f"{path} holds {sorted(names)}, expected {list(_TENSORS)}")
        shapes = {name: tuple(tensors[name].shape) for name in _TENSORS}
        expected = {"mean": (hidden_size,), "scale": (hidden_size,), "weight": (hidden_size,),
                    "bias": (1,)}
        if shapes != expected:
            raise ModelError(f"{path} has shapes {shapes}; this model needs {expected}")
        try:
            layer = int(metadata["layer"])
        except (KeyError, ValueError) as exc:
            raise ModelError(f"{path} does not say which layer it reads") from exc
        if not 1 <= layer <= num_layers:
            raise ModelError(f"{path} reads layer {layer}; the model has {num_layers}")
        return cls(layer, tensors["mean"], tensors["scale"], tensors["weight"], tensors["bias"],
                   metadata.get("fitted_on", ""))


def layer_output_module(model: nn.Module, layer: int) -> nn.Module:
    """The module whose output is hidden_states[layer]: decoder layer `layer`-1, or the final
    norm for the last (transformers applies it before returning the last hidden state)."""
    if hasattr(model, "get_base_model"):  # peft: the layers of the model it wraps
        model = model.get_base_model()
    body = getattr(model, "model", model)
    layers = getattr(body, "layers", None)
    if layers is None or not hasattr(body, "norm"):
        raise ModelError(f"{type(model).__name__} has no decoder layers to read a probe from")
    return body.norm if layer == len(layers) else layers[layer - 1]


class LastTokenState:
    """The hidden state at the last position of the first forward pass this thread runs while
    watching (the prompt's, also when a cached prefix shortens it): other threads sharing the
    model are ignored."""

    def __init__(self) -> None:
        self.state: torch.Tensor | None = None
        self._thread = threading.get_ident()

    def __call__(self, module: nn.Module, args: object, output: object) -> None:
        if self.state is not None or threading.get_ident() != self._thread:
            return
        hidden = output[0] if isinstance(output, tuple) else output
        self.state = hidden[0, -1].detach().float().clone()


@contextmanager
def watching(model: nn.Module, layer: int) -> Iterator[LastTokenState]:
    """Record the prompt's last-token state at `layer` during the generation inside the block."""
    capture = LastTokenState()
    handle = layer_output_module(model, layer).register_forward_hook(capture)
    try:
        yield capture
    finally:
        handle.remove()
