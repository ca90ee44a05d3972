"""Architecture profiles: where each linear role (q, k, v, o, gate, up, down) lives in a model.

A transplant needs to know, for donor and target alike, which module holds a role in layer i,
how many rows and columns the role has, and — for fused modules such as ChatGLM's
query_key_value or GLM's gate_up_proj — which rows of the fused weight belong to the role.
All of it follows from config.json alone, so profiles are built without loading any weights.
Adding an architecture means adding one builder to PROFILE_BUILDERS.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbqa.errors import AdapterError

ROLES = ("q", "k", "v", "o", "gate", "up", "down")
LAYOUTS = ("blocks", "per_head")


@dataclass(frozen=True)
class ModuleSpec:
    """One linear module per layer holding one role, or several fused roles.

    layout "blocks": the roles' rows follow each other ([all q][all k][all v], [gate][up]).
    layout "per_head": rows are interleaved per attention head, [head][q, k, v][head_dim]
    (ChatGLM-6B v1); every part then has the same number of heads.
    """

    pattern: str
    roles: tuple[str, ...]
    layout: str = "blocks"

    def name(self, layer: int) -> str:
        return self.pattern.format(i=layer)

    @property
    def leaf(self) -> str:
        return self.pattern.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class ArchitectureProfile:
    """Dimensions and module layout of one architecture, derived from its config."""

    family: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    modules: tuple[ModuleSpec, ...]

    def __post_init__(self) -> None:
        seen = [role for spec in self.modules for role in spec.roles]
        if len(seen) != len(set(seen)) or not set(seen) <= set(ROLES):
            raise ValueError(f"{self.family}: roles {seen} must be distinct members of {ROLES}")
        for spec in self.modules:
            if spec.layout not in LAYOUTS:
                raise ValueError(f"{self.family}: unknown layout {spec.layout!r}")

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles this architecture has, in canonical order (ChatGLM v1 has no gate)."""
        present = {role for spec in self.modules for role in spec.roles}
        return tuple(role for role in ROLES if role in present)

    def spec_for(self, role: str) -> ModuleSpec:
        for spec in self.modules:
            if role in spec.roles:
                return spec
        raise KeyError(f"{self.family} has no '{role}' projection")

    def role_shape(self, role: str) -> tuple[int, int]:
        """(rows, columns) of the role's own weight, i.e. of its ΔW."""
        q_width = self.num_heads * self.head_dim
        kv_width = self.num_kv_heads * self.head_dim
        shapes = {"q": (q_width, self.hidden_size), "k": (kv_width, self.hidden_size),
                  "v": (kv_width, self.hidden_size), "o": (self.hidden_size, q_width),
                  "gate": (self.intermediate_size, self.hidden_size),
                  "up": (self.intermediate_size, self.hidden_size),
                  "down": (self.hidden_size, self.intermediate_size)}
        return shapes[role]

    def module_shape(self, spec: ModuleSpec) -> tuple[int, int]:
        rows = sum(self.role_shape(role)[0] for role in spec.roles)
        return rows, self.role_shape(spec.roles[0])[1]

    def role_rows(self, role: str) -> list[int]:
        """Indices of the role's rows inside its (possibly fused) module's weight, in role order."""
        spec = self.spec_for(role)
        if spec.layout == "blocks":
            start = sum(self.role_shape(r)[0] for r in spec.roles[:spec.roles.index(role)])
            return list(range(start, start + self.role_shape(role)[0]))
        part, parts, dim = spec.roles.index(role), len(spec.roles), self.head_dim
        return [(head * parts + part) * dim + offset
                for head in range(self.num_heads) for offset in range(dim)]

    def parse_module(self, module: str) -> tuple[int, ModuleSpec] | None:
        """(layer, spec) for a full module name such as 'model.layers.3.self_attn.q_proj'."""
        for spec in self.modules:
            prefix, suffix = spec.pattern.split("{i}")
            if module.startswith(prefix) and module.endswith(suffix):
                middle = module[len(prefix):len(module) - len(suffix)]
                if middle.isdigit() and int(middle) < self.num_layers:
                    return int(middle), spec
        return None

    def summary(self) -> dict[str, Any]:
        return {"family": self.family, "num_layers": self.num_layers,
                "hidden_size": self.hidden_size, "num_heads": self.num_heads,
                "num_kv_heads": self.num_kv_heads, "head_dim": self.head_dim,
                "intermediate_size": self.intermediate_size,
                "modules": {spec.pattern: {"roles": list(spec.roles), "layout": spec.layout}
                            for spec in self.modules}}


def _llama_like(family: str, prefix: str = "model.layers.{i}",
                fused_gate_up: bool = False) -> Callable[[dict[str, Any]], ArchitectureProfile]:
    """LLaMA naming (q_proj ... down_proj), shared by Qwen2, Gemma3 and GLM (fused gate_up_proj)."""

    def build(config: dict[str, Any]) -> ArchitectureProfile:
        heads = config["num_attention_heads"]
        hidden = config["hidden_size"]
        attention = tuple(ModuleSpec(f"{prefix}.self_attn.{r}_proj", (r,)) for r in "qkvo")
        if fused_gate_up:
            mlp = (ModuleSpec(f"{prefix}.mlp.gate_up_proj", ("gate", "up")),
                   ModuleSpec(f"{prefix}.mlp.down_proj", ("down",)))
        else:
            mlp = tuple(ModuleSpec(f"{prefix}.mlp.{r}_proj", (r,)) for r in ("gate", "up", "down"))
        return ArchitectureProfile(
            family=family, num_layers=config["num_hidden_layers"], hidden_size=hidden,
            num_heads=heads, num_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or hidden // heads,
            intermediate_size=config["intermediate_size"], modules=attention + mlp)

    return build


def _chatglm(config: dict[str, Any]) -> ArchitectureProfile:
    """ChatGLM-6B (v1: per-head fused qkv, GELU MLP) or ChatGLM2/3 (block qkv, GQA, SwiGLU)."""
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    if "ffn_hidden_size" not in config and "multi_query_attention" not in config:
        prefix = "transformer.layers.{i}"
        return ArchitectureProfile(
            family="chatglm", num_layers=config["num_layers"], hidden_size=hidden,
            num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads,
            intermediate_size=config.get("inner_hidden_size") or 4 * hidden,
            modules=(ModuleSpec(f"{prefix}.attention.query_key_value", ("q", "k", "v"), "per_head"),
                     ModuleSpec(f"{prefix}.attention.dense", ("o",)),
                     ModuleSpec(f"{prefix}.mlp.dense_h_to_4h", ("up",)),
                     ModuleSpec(f"{prefix}.mlp.dense_4h_to_h", ("down",))))
    prefix = "transformer.encoder.layers.{i}"
    groups = config.get("multi_query_group_num", heads) if config.get("multi_query_attention") else heads
    return ArchitectureProfile(
        family="chatglm2", num_layers=config["num_layers"], hidden_size=hidden,
        num_heads=heads, num_kv_heads=groups, head_dim=config.get("kv_channels") or hidden // heads,
        intermediate_size=config["ffn_hidden_size"],
        modules=(ModuleSpec(f"{prefix}.self_attention.query_key_value", ("q", "k", "v")),
                 ModuleSpec(f"{prefix}.self_attention.dense", ("o",)),
                 ModuleSpec(f"{prefix}.mlp.dense_h_to_4h", ("gate", "up")),
                 ModuleSpec(f"{prefix}.mlp.dense_4h_to_h", ("down",))))


def _gemma3(config: dict[str, Any]) -> ArchitectureProfile:
    """Gemma3 text-only (gemma3_text) or the multimodal wrapper, whose LM sits in language_model."""
    if "text_config" in config:
        return _llama_like("gemma3", prefix="model.language_model.layers.{i}")(config["text_config"])
    return _llama_like("gemma3")(config)


PROFILE_BUILDERS: dict[str, Callable[[dict[str, Any]], ArchitectureProfile]] = {
    "llama": _llama_like("llama"),
    "mistral": _llama_like("mistral"),
    "qwen2": _llama_like("qwen2"),
    "gemma3": _gemma3,
    "gemma3_text": _gemma3,
    "glm": _llama_like("glm", fused_gate_up=True),
    "glm4": _llama_like("glm4", fused_gate_up=True),
    "chatglm": _chatglm,
}


def profile_for(config: dict[str, Any]) -> ArchitectureProfile:
    """The profile for a config dict (config.json's content), chosen by model_type."""
    model_type = config.get("model_type")
    builder = PROFILE_BUILDERS.get(model_type or "")
    if builder is None:
        raise AdapterError(f"no architecture profile for model_type {model_type!r}; "
                           f"supported: {', '.join(sorted(PROFILE_BUILDERS))}")
    try:
        return builder(config)
    except KeyError as exc:
        raise AdapterError(f"config of model_type {model_type!r} lacks {exc}") from exc


def read_model_config(folder: Path) -> dict[str, Any]:
    path = Path(folder).expanduser() / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"cannot read model config {path}: {exc}") from exc


def profile_for_folder(folder: Path) -> ArchitectureProfile:
    """The profile of a model folder, from its config.json only (no weights are read)."""
    return profile_for(read_model_config(folder))
