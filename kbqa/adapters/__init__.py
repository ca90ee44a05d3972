"""LoRA adapter work: strict loading, architecture profiles, cross-model transplant, verification,
training, fusing and merging. Heavy submodules are imported on use."""

from kbqa.adapters.loading import AdapterReport, load_adapters

__all__ = ["AdapterReport", "load_adapters"]
