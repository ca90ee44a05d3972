"""Transplant a LoRA adapter from the base model it was trained on to a different architecture.

Steps (each one reported, nothing guessed):
1. parse every donor key into (layer, role, A/B) with the donor's profile; the rest is listed
   as unparsed and left out;
2. compute each donor role's ΔW = scale·B·A (rows sliced out of fused donor modules);
3. pick donor layers for every target layer (layermap: proportional or interpolate);
4. carry ΔW across: copied as is when the role has the same shape (and head size) in both
   models, else mapped through both base models' singular subspaces (alignment) — which needs
   both models' weights, and refuses modules whose subspaces are too dissimilar;
5. place role ΔWs at their rows of the target module (fused qkv per head or in blocks,
   gate/up halves), re-factor each module's ΔW into B·A of one rank by truncated SVD
   (singular values split evenly), and write a peft folder plus transplant_report.json.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from kbqa.errors import AdapterError
from kbqa.adapters.alignment import Subspace, align_delta, subspace
from kbqa.adapters.base_weights import BaseWeights
from kbqa.adapters.layermap import donor_layers_for
from kbqa.adapters.loading import read_adapter_config, read_adapter_weights
from kbqa.adapters.prefix import refuse_prefix
from kbqa.adapters.profiles import ArchitectureProfile, ModuleSpec, profile_for, read_model_config

KEY_PATTERN = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])"
                         r"(?:\.[^.]+)?\.weight$")
ATTENTION_ROLES = ("q", "k", "v", "o")


@dataclass(frozen=True)
class TransplantOptions:
    """How to map; defaults suit a same-family transplant and are safe across widths."""

    layer_map: str = "proportional"
    rank: int | None = None  # None: the smallest rank that re-factors every module exactly
    max_rank: int = 64
    subspace_rank: int = 128
    min_similarity: float = 0.5
    align_all: bool = False  # use the subspace map even where shapes agree


@dataclass
class TransplantReport:
    donor_family: str
    target_family: str
    options: dict[str, Any]
    rank: int = 0
    modules: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    unparsed_keys: list[str] = field(default_factory=list)
    unused_donor_layers: list[int] = field(default_factory=list)

    def totals(self) -> dict[str, Any]:
        errors = [m["refactor_error"] for m in self.modules]
        return {"target_modules": len(self.modules), "skipped": len(self.skipped),
                "unparsed_keys": len(self.unparsed_keys),
                "delta_norm": sum(m["delta_norm"] for m in self.modules),
                "max_refactor_error": max(errors, default=0.0)}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "totals": self.totals()}


@dataclass(frozen=True)
class _RoleDelta:
    delta: torch.Tensor
    module: str  # donor module name


def _scale(config: Any, module: str, rank: int) -> float:
    alpha = config.lora_alpha
    for pattern, value in (config.alpha_pattern or {}).items():
        if re.fullmatch(rf"(.*\.)?{pattern}", module):
            alpha = value
    return alpha / rank ** 0.5 if config.use_rslora else alpha / rank


def donor_deltas(weights: dict[str, torch.Tensor], config: Any, profile: ArchitectureProfile,
                 report: TransplantReport) -> dict[tuple[int, str], _RoleDelta]:
    """ΔW per (layer, role) of the donor; keys that do not parse go to report.unparsed_keys."""
    if getattr(config, "use_dora", False):
        raise AdapterError("DoRA adapters cannot be transplanted (their magnitude vector is "
                           "tied to the donor's weight norms)")
    if getattr(config, "fan_in_fan_out", False):
        raise AdapterError("fan_in_fan_out adapters (GPT-2 Conv1D) are not supported")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in weights.items():
        match = KEY_PATTERN.match(key)
        parsed = match and profile.parse_module(match["module"])
        if not parsed:
            report.unparsed_keys.append(key)
            continue
        pairs.setdefault(match["module"], {})[match["part"]] = tensor
    deltas: dict[tuple[int, str], _RoleDelta] = {}
    for module, pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            report.unparsed_keys.extend(f"{module}.lora_{p}.weight (its pair is missing)"
                                        for p in pair)
            continue
        layer, spec = profile.parse_module(module)  # type: ignore[misc]
        lora_a, lora_b = pair["A"].float(), pair["B"].float()
        if tuple(lora_b.shape) != (profile.module_shape(spec)[0], lora_a.shape[0]) or \
                lora_a.shape[1] != profile.module_shape(spec)[1]:
            raise AdapterError(f"donor adapter does not fit its own base model: {module} has "
                               f"B {tuple(lora_b.shape)}, A {tuple(lora_a.shape)}, module "
                               f"{profile.module_shape(spec)} (wrong donor model?)")
        full = _scale(config, module, lora_a.shape[0]) * (lora_b @ lora_a)
        for role in spec.roles:
            deltas[(layer, role)] = _RoleDelta(full[profile.role_rows(role)], module)
    return deltas


def refactor(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(A, B, relative error) with B·A the best rank-`rank` approximation of delta.

    √σ goes to each side so A and B have comparable norms (as trained adapters do); missing
    rank is padded with zeros so every module shares the adapter's r.
    """
    u, s, vh = torch.linalg.svd(delta.float(), full_matrices=False)
    k = min(rank, s.numel())
    root = s[:k].sqrt()
    lora_b = torch.zeros(delta.shape[0], rank)
    lora_a = torch.zeros(rank, delta.shape[1])
    lora_b[:, :k] = u[:, :k] * root
    lora_a[:k] = root[:, None] * vh[:k]
    norm = float(delta.norm())
    error = float((delta - lora_b @ lora_a).norm()) / norm if norm > 0 else 0.0
    return lora_a, lora_b, error


def numerical_rank(delta: torch.Tensor) -> int:
    s = torch.linalg.svdvals(delta.float())
    return int((s > s[0] * 1e-5).sum()) if s.numel() and s[0] > 0 else 0


class _Mapper:
    """Carries donor role ΔWs to target roles: copy when shapes agree, else subspace-align."""

    def __init__(self, donor: ArchitectureProfile, target: ArchitectureProfile,
                 donor_weights: BaseWeights | None, target_weights: BaseWeights | None,
                 options: TransplantOptions) -> None:
        self.donor, self.target, self.options = donor, target, options
        self.donor_weights, self.target_weights = donor_weights, target_weights
        self._subspaces: dict[tuple[str, int, str], Subspace] = {}

    def needs_alignment(self, role: str) -> bool:
        if self.options.align_all:
            return True
        same_heads = role not in ATTENTION_ROLES or self.donor.head_dim == self.target.head_dim
        return self.donor.role_shape(role) != self.target.role_shape(role) or not same_heads

    def _subspace(self, side: str, layer: int, role: str) -> Subspace:
        key = (side, layer, role)
        if key not in self._subspaces:
            profile, weights = ((self.donor, self.donor_weights) if side == "donor"
                                else (self.target, self.target_weights))
            assert weights is not None
            spec = profile.spec_for(role)
            base = weights.get(spec.name(layer))[profile.role_rows(role)]
            self._subspaces[key] = subspace(base, self.options.subspace_rank)
        return self._subspaces[key]

    def carry(self, delta: torch.Tensor, donor_layer: int, target_layer: int,
              role: str) -> tuple[torch.Tensor, dict[str, Any]]:
        if not self.needs_alignment(role):
            return delta, {"mapping": "direct"}
        aligned = align_delta(delta, self._subspace("donor", donor_layer, role),
                              self._subspace("target", target_layer, role))
        return aligned.delta, {"mapping": "subspace", "similarity": aligned.similarity,
                               "captured": aligned.captured}


def _target_role(mapper: _Mapper, deltas: dict[tuple[int, str], _RoleDelta], layer: int,
                 role: str, report: TransplantReport) -> tuple[torch.Tensor, dict[str, Any]] | None:
    """The blended, carried ΔW for one target (layer, role), or None (recorded in skipped)."""
    options = mapper.options
    sources = donor_layers_for(layer, mapper.target.num_layers, mapper.donor.num_layers,
                               options.layer_map)
    present = [(i, w) for i, w in sources if (i, role) in deltas]
    if not present:
        return None
    total = torch.zeros(mapper.target.role_shape(role))
    details = []
    for donor_layer, weight in present:
        carried, info = mapper.carry(deltas[(donor_layer, role)].delta, donor_layer, layer, role)
        if info.get("similarity", 1.0) < options.min_similarity:
            report.skipped.append({"target_layer": layer, "role": role,
                                   "donor_layer": donor_layer,
                                   "reason": f"subspace similarity {info['similarity']:.3f} "
                                             f"below {options.min_similarity}"})
            return None
        total += weight * carried
        details.append({"donor_module": deltas[(donor_layer, role)].module,
                        "donor_layer": donor_layer, "weight": weight, **info})
    missing = [i for i, _ in sources if (i, role) not in deltas]
    return total, {"role": role, "sources": details, "missing_donor_layers": missing}


def _check_widths(mapper: _Mapper, roles: set[str]) -> None:
    aligned = sorted(role for role in roles if mapper.needs_alignment(role))
    if aligned and (mapper.donor_weights is None or mapper.target_weights is None):
        shapes = ", ".join(f"{r}: {mapper.donor.role_shape(r)} → {mapper.target.role_shape(r)}"
                           for r in aligned)
        raise AdapterError(f"donor and target differ in width ({shapes}); mapping needs both "
                           "base models' safetensors weights (give the donor model folder with "
                           "--donor); kbqa never pads or truncates")


def build_target_deltas(deltas: dict[tuple[int, str], _RoleDelta], mapper: _Mapper,
                        report: TransplantReport) -> dict[str, tuple[torch.Tensor, list]]:
    """Full ΔW per target module name, with the per-role provenance for the report."""
    donor_roles = {role for _, role in deltas}
    for role in sorted(donor_roles - set(mapper.target.roles)):
        report.skipped.append({"role": role, "reason": f"target family "
                               f"{mapper.target.family} has no '{role}' projection"})
    _check_widths(mapper, donor_roles & set(mapper.target.roles))
    used: set[int] = set()
    modules: dict[str, tuple[torch.Tensor, list]] = {}
    for layer in range(mapper.target.num_layers):
        for spec in mapper.target.modules:
            placed = _place_module(spec, layer, deltas, mapper, report)
            if placed is not None:
                modules[spec.name(layer)] = placed
                used.update(s["donor_layer"] for r in placed[1] for s in r["sources"])
    donor_layers = {layer for layer, _ in deltas}
    report.unused_donor_layers = sorted(donor_layers - used)
    return modules


def _place_module(spec: ModuleSpec, layer: int, deltas: dict[tuple[int, str], _RoleDelta],
                  mapper: _Mapper, report: TransplantReport) -> tuple[torch.Tensor, list] | None:
    full = torch.zeros(mapper.target.module_shape(spec))
    roles = []
    for role in spec.roles:
        carried = _target_role(mapper, deltas, layer, role, report)
        if carried is None:
            continue
        full[mapper.target.role_rows(role)] = carried[0]
        roles.append(carried[1])
    return (full, roles) if roles else None


def _donor_folder(config: Any, donor: Path | None) -> Path:
    if donor is not None:
        return Path(donor).expanduser()
    name = config.base_model_name_or_path or ""
    if name.startswith("embedded"):
        raise AdapterError(f"the donor base model is the embedded model {name!r}: pass its folder "
                           "as donor (kbqa.llm.loading.resolve_llm gives it; `kbqa adapters "
                           "transplant` does this itself)")
    base = Path(name).expanduser()
    if name and (base / "config.json").is_file():
        return base
    raise AdapterError(f"donor base model {config.base_model_name_or_path!r} (from "
                       "adapter_config.json) is neither an embedded model nor a local model folder; give it with --donor")


def refuse_prefix_transplant(adapter: Path) -> None:
    """AdapterError for a prefix-tuning adapter: what it holds has no meaning on another model."""
    refuse_prefix([Path(adapter).expanduser()], "transplant",
                  "a prefix's keys and values belong to the model it was trained on (its layers, "
                  "heads and every layer's key/value space): train or import a prefix for the "
                  "target model instead")


def transplant(adapter: Path, target: Path, out: Path, donor: Path | None = None,
               options: TransplantOptions | None = None,
               base_name: str | None = None) -> TransplantReport:
    """Write a target-model peft adapter to `out`, built from the donor `adapter`; see module doc.

    `base_name` is recorded as the result's base model ('embedded:NAME', the same on every
    machine); without it, the target folder's absolute path is.
    """
    options = options or TransplantOptions()
    adapter, target, out = (Path(p).expanduser() for p in (adapter, target, out))
    refuse_prefix_transplant(adapter)
    config = read_adapter_config(adapter, "transplant")
    weights = read_adapter_weights(adapter)
    donor_folder = _donor_folder(config, donor)
    donor_profile = profile_for(read_model_config(donor_folder))
    target_profile = profile_for(read_model_config(target))
    report = TransplantReport(donor_family=donor_profile.family,
                              target_family=target_profile.family, options=asdict(options))
    deltas = donor_deltas(weights, config, donor_profile, report)
    if not deltas:
        raise AdapterError(f"no key of {adapter} names a {donor_profile.family} projection "
                           f"(e.g. {report.unparsed_keys[:2]}): wrong donor model?")
    mapper = _Mapper(donor_profile, target_profile, _weights_or_none(donor_folder),
                     _weights_or_none(target), options)
    modules = build_target_deltas(deltas, mapper, report)
    if not modules:
        raise AdapterError(f"nothing of {adapter} could be mapped onto {target_profile.family}: "
                           f"{report.skipped[:3]}")
    rank = options.rank or max(1, min(options.max_rank,
                                      max(numerical_rank(d) for d, _ in modules.values())))
    report.rank = rank
    tensors = {}
    for name, (delta, roles) in modules.items():
        lora_a, lora_b, error = refactor(delta, rank)
        tensors[f"base_model.model.{name}.lora_A.weight"] = lora_a.contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = lora_b.contiguous()
        report.modules.append({"module": name, "roles": roles, "delta_norm": float(delta.norm()),
                               "refactor_error": error})
    _write(out, base_name or str(target.resolve()), sorted(modules), rank, config, tensors, report)
    return report


def _weights_or_none(folder: Path) -> BaseWeights | None:
    try:
        return BaseWeights(folder)
    except AdapterError:
        return None


def _write(out: Path, base_name: str, module_names: list[str], rank: int, donor_config: Any,
           tensors: dict[str, torch.Tensor], report: TransplantReport) -> None:
    from peft import LoraConfig
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, bias="none",
               target_modules=module_names, task_type=donor_config.task_type or "CAUSAL_LM",
               base_model_name_or_path=base_name).save_pretrained(str(out))
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "transplant_report.json").write_text(
        json.dumps(report.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
