"""LoRA adapter work: strict loading now; profiles, cross-model transplant and merging build on it."""

from kbqa.fusion.loading import AdapterReport, load_adapters

__all__ = ["AdapterReport", "load_adapters"]
