"""Read single base-model weights from a safetensors model folder, lazily and without pickle.

Width alignment needs a handful of matrices from each base model; loading whole models for
that would double the memory of a transplant. Sharded folders are found through
model.safetensors.index.json. Folders with only .bin weights are refused (pickle).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kbqa.errors import AdapterError


class BaseWeights:
    """name → float32 tensor for one model folder; opens each shard only when needed."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).expanduser()
        index = self.folder / "model.safetensors.index.json"
        if index.is_file():
            mapping = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            self._files = {name: self.folder / shard for name, shard in mapping.items()}
        elif (self.folder / "model.safetensors").is_file():
            from safetensors import safe_open

            single = self.folder / "model.safetensors"
            with safe_open(str(single), "pt") as handle:
                self._files = {name: single for name in handle.keys()}
        else:
            raise AdapterError(f"{self.folder} has no safetensors weights (model.safetensors or "
                               "an index); width alignment needs both base models' weights")

    def get(self, module: str) -> torch.Tensor:
        """The weight of a linear module, e.g. 'model.layers.0.self_attn.q_proj'."""
        from safetensors import safe_open

        name = f"{module}.weight"
        if name not in self._files:
            raise AdapterError(f"{self.folder}: no tensor {name} in the base weights")
        with safe_open(str(self._files[name]), "pt") as handle:
            return handle.get_tensor(name).float()
