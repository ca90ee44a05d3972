"""Model variants on one loaded base model: plain, or with any set of LoRA adapters.

The base model is loaded once. Each adapter folder is wrapped into it once with the strict
`load_adapters` (one peft adapter name per folder); a variant then only switches which adapters are
active, and the plain variant runs inside ``peft_model.disable_adapter()``. No variant switch reloads
the base weights. One lock serialises use of the shared model (a web server has many sessions):
hold `VariantModel.activate(...)` for the whole generation.

A prefix-tuning (P-tuning v2) adapter is a variant of its own: peft cannot hold a prefix and LoRA
adapters in one model, so each prefix folder gets its own PeftModelForCausalLM around the same
base module, and the LoRA model's adapters are disabled while a prefix variant is active. A
variant stacking a prefix with any other adapter is refused.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbqa.errors import AdapterError

if TYPE_CHECKING:  # torch is imported only when a check runs
    from kbqa.adapters.verify import VerifyReport

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class Variant:
    """'plain' or a set of adapter folders, in the order they are stacked."""

    adapters: tuple[Path, ...] = ()

    @property
    def is_plain(self) -> bool:
        return not self.adapters

    @property
    def label(self) -> str:
        return "plain" if self.is_plain else " + ".join(p.name for p in self.adapters)

    @classmethod
    def of(cls, adapters: Iterable[Path | str] = ()) -> Variant:
        return cls(tuple(Path(a).expanduser().resolve() for a in adapters))


def is_adapter_folder(path: Path) -> bool:
    return path.is_dir() and (path / ADAPTER_CONFIG).is_file()


def adapter_fits(folder: Path, llm: str) -> bool | None:
    """Whether the base model an adapter records (adapter_config.json) is the model `llm` names:
    None when either cannot be told apart (then only loading it shows whether it fits)."""
    import json

    from kbqa.llm.loading import base_model_name
    from kbqa.llm.remote import is_remote

    if is_remote(llm):
        return False  # adapters apply on the serving side, not to a remote model
    try:
        recorded = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    base = recorded.get("base_model_name_or_path") if isinstance(recorded, dict) else None
    adapter_base, model = base_model_name(base or None) if base else None, base_model_name(llm)
    if adapter_base is None or model is None:
        return None
    return adapter_base == model


def refuse_unfit(folder: Path, llm: str) -> None:
    """AdapterError when the adapter records a base model other than the one `llm` names: loaded
    anyway, its ΔW would land on weights it was not trained for (on the default reader, a second
    copy of a LoRA already merged in)."""
    import json

    from kbqa.llm.loading import base_model_name

    if adapter_fits(folder, llm) is not False:
        return
    recorded = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = recorded.get("base_model_name_or_path")
    raise AdapterError(f"{folder} was trained on {base}, but the model is {base_model_name(llm) or llm}: "
                       f"choose its base model (--llm {base}) or transplant it "
                       "(kbqa adapters transplant)")


def discover_adapters(configured: Iterable[Path | str], roots: Iterable[Path | str]) -> list[Path]:
    """Configured adapter folders first, then every adapter folder directly under each root."""
    found: dict[Path, None] = {}
    for item in configured:
        path = Path(item).expanduser()
        if is_adapter_folder(path):
            found.setdefault(path.resolve(), None)
    for root in roots:
        root = Path(root).expanduser()
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            if not child.name.startswith(".") and is_adapter_folder(child):
                found.setdefault(child.resolve(), None)
    return list(found)


def _peft_name(folder: Path) -> str:
    # what kbqa.adapters.load_adapters names a folder's adapter when it is loaded on its own
    return "adapter0_" + re.sub(r"[^0-9A-Za-z_-]", "_", folder.name)


def _strip_lora(model: Any) -> None:
    """Undo a half-done first wrap: put every LoRA-wrapped layer's base layer back in place."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer) and name:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        try:
            delattr(model, "peft_config")
        except AttributeError:  # pragma: no cover
            pass


class VariantModel:
    """A LocalLLM whose base model is shared by every variant (see the module doc)."""

    def __init__(self, llm: Any, base: str | None = None) -> None:
        self.base_llm = llm
        # the model setting `llm` was loaded from: adapters recording another base are refused
        self.base = base
        self.base_model = llm.model
        self.peft_model: Any = None        # the LoRA adapters' peft model
        self.prefix_models: dict[Path, Any] = {}  # prefix folder → its own peft model
        self.names: dict[Path, str] = {}   # adapter folder → peft adapter name
        self.reports: dict[Path, Any] = {}
        self._checks: dict[Variant, VerifyReport] = {}
        self.lock = threading.Lock()  # a plain Lock: a generator may be closed on another thread

    @property
    def tokenizer(self) -> Any:
        return self.base_llm.tokenizer

    def _load(self, folder: Path) -> str:
        from kbqa.adapters import load_adapters
        from kbqa.adapters.prefix import (
            is_prefix_folder,
            load_prefix_adapter,
            refuse_foreign_cache,
        )
        from kbqa.llm.quantization import refuse_adapters

        if folder in self.names:
            return self.names[folder]
        refuse_adapters(self.base_model, folder)
        if is_prefix_folder(folder):  # wraps the base module without changing it
            refuse_foreign_cache(self.base_model, folder)
            model, report = load_prefix_adapter(self.base_model, folder)
            self.prefix_models[folder] = model
            self.names[folder] = report.name
            self.reports[folder] = report
            return report.name
        name = _peft_name(folder)
        if name in self.names.values():
            raise AdapterError(f"an adapter named {folder.name!r} from another folder is already "
                               "loaded; rename one of the folders")
        target = self.peft_model if self.peft_model is not None else self.base_model
        try:
            peft_model, reports = load_adapters(target, [folder])
        except BaseException:
            if self.peft_model is None:
                _strip_lora(self.base_model)
            elif name in getattr(self.peft_model, "peft_config", {}):
                self.peft_model.delete_adapter(name)
            raise
        self.peft_model = peft_model
        self.names[folder] = name
        self.reports[folder] = reports[0]
        return name

    def _load_variant(self, variant: Variant) -> list[str]:
        """Load the variant's adapters; a prefix adapter stacked with another one is refused."""
        from kbqa.adapters.prefix import is_prefix_folder

        prefixes = [f for f in variant.adapters if is_prefix_folder(f)]
        if prefixes and len(variant.adapters) > 1:
            raise AdapterError(f"variant '{variant.label}' stacks the prefix-tuning adapter "
                               f"{prefixes[0].name} with other adapters: a prefix adapter is a "
                               "variant on its own (peft cannot combine a prefix with LoRA)")
        if self.base:
            for folder in variant.adapters:
                refuse_unfit(folder, self.base)
        return [self._load(folder) for folder in variant.adapters]

    def prefix_model(self, variant: Variant) -> Any:
        """The prefix variant's own peft model, or None for plain and LoRA variants."""
        return self.prefix_models.get(variant.adapters[0]) if len(variant.adapters) == 1 else None

    def prepare(self, variant: Variant) -> None:
        """Load the variant's adapters (once each); raises AdapterError if one does not fit."""
        with self.lock:
            self._load_variant(variant)

    @contextmanager
    def _active(self, variant: Variant) -> Iterator[Any]:
        names = self._load_variant(variant)
        prefix = self.prefix_model(variant)
        if prefix is not None:
            view = self.base_llm.model_copy(update={"model": prefix,
                                                    "adapters": [str(variant.adapters[0])]})
            if self.peft_model is None:
                yield view
            else:
                with self.peft_model.disable_adapter():
                    yield view
            return
        if variant.is_plain:
            if self.peft_model is None:
                yield self.base_llm
            else:
                with self.peft_model.disable_adapter():
                    yield self.base_llm.model_copy(update={"model": self.peft_model,
                                                           "adapters": []})
            return
        self.peft_model.base_model.set_adapter(names)
        self.peft_model.eval()
        yield self.base_llm.model_copy(update={"model": self.peft_model,
                                               "adapters": [str(f) for f in variant.adapters]})

    @contextmanager
    def activate(self, variant: Variant) -> Iterator[Any]:
        """Hold the shared model in `variant`'s state; yields a LocalLLM view to generate with."""
        with self.lock, self._active(variant) as llm:
            yield llm

    def check_applied(self, variant: Variant, probe: str | None = None,
                      tolerance: float = 1e-3) -> VerifyReport:
        """Adapters active vs disabled on a probe prompt: do the logits move? (cached per variant)"""
        from kbqa.adapters.verify import DEFAULT_PROBE, VerifyReport, check_loaded

        if variant.is_plain:
            return VerifyReport(applied=False, max_logit_diff=0.0, modules=0,
                                reasons=["plain model"])
        if variant in self._checks and probe is None:
            return self._checks[variant]
        with self.lock, self._active(variant) as llm:
            check = check_loaded(llm.model, self.tokenizer,
                                 {self.names[f] for f in variant.adapters},
                                 probe or DEFAULT_PROBE, tolerance,
                                 [self.reports[f] for f in variant.adapters])
        if probe is None:
            self._checks[variant] = check
        return check
