"""Prefix tuning (P-tuning v2, ChatGLM's own fine-tuning method) as a second adapter kind.

A prefix adapter is a peft PREFIX_TUNING folder: one tensor, `prompt_embeddings`, of shape
(virtual tokens, num_layers·2·token_dim) with token_dim = key/value heads · head dim. For each
virtual token it holds, layer by layer, a key and a value for every key/value head: positions the
model attends to before the prompt. Nothing in the weights changes, so a prefix cannot be merged
into them, fused with a LoRA or transplanted onto another model; those are refused here.

Loading is strict, as for LoRA: the folder's geometry (layers, key/value heads, head size) must be
the model's, the file must hold exactly that one tensor in that shape, and an all-zero or
non-finite prefix is refused.

ChatGLM's official P-tuning v2 checkpoints (THUDM `ptuning/`: a pytorch_model.bin with
`transformer.prefix_encoder.embedding.weight`, and with prefix_projection the MLP
`transformer.prefix_encoder.trans.{0,2}.{weight,bias}`) convert to such a folder. The layouts
agree: ChatGLM's get_prompt() views the encoder's output as (batch, pre_seq_len, 2·layers, heads,
head_dim), peft's get_prompt() as (batch, virtual tokens, 2·layers, heads, head_dim); both take
index 2i as layer i's key and 2i+1 as its value. The flat vectors are therefore copied as they
are, and a projection MLP (constant at inference) is evaluated once and stored as its output.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbqa.errors import AdapterError

PREFIX_TYPE = "PREFIX_TUNING"
PREFIX_KEY = "prompt_embeddings"
CHATGLM_PREFIX = "transformer.prefix_encoder."
CHECKPOINT_FILE = "pytorch_model.bin"


@dataclass(frozen=True)
class PrefixGeometry:
    """What a prefix must provide for one model: a key and a value per layer, head and position."""

    num_layers: int
    kv_heads: int
    head_dim: int

    @property
    def token_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def width(self) -> int:
        """Columns of prompt_embeddings: every layer's key and value for one virtual token."""
        return self.num_layers * 2 * self.token_dim

    def parameters(self, virtual_tokens: int) -> int:
        return virtual_tokens * self.width


def peft_type(folder: Path) -> str | None:
    """The peft_type an adapter folder records (None when it has no readable adapter_config)."""
    try:
        raw = json.loads((Path(folder) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return raw.get("peft_type") if isinstance(raw, dict) else None


def is_prefix_folder(folder: Path) -> bool:
    return peft_type(folder) == PREFIX_TYPE


def refuse_prefix(folders: list[Path], action: str, why: str) -> None:
    """AdapterError naming the first prefix adapter among `folders`: `action` works on LoRA only."""
    for folder in folders:
        if is_prefix_folder(Path(folder)):
            raise AdapterError(f"cannot {action} {folder}: it is a prefix-tuning (P-tuning v2) "
                               f"adapter, and {why}")


def geometry_for(model_config: Any) -> PrefixGeometry:
    """The prefix a model takes, from its config (object or dict): kbqa's architecture profile
    knows grouped key/value heads (Qwen2, ChatGLM2's multi-query groups, ...)."""
    from kbqa.adapters.profiles import profile_for

    config = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
    if "num_hidden_layers" not in config and hasattr(model_config, "num_hidden_layers"):
        config["num_hidden_layers"] = model_config.num_hidden_layers  # not in to_dict() in 5.x
    profile = profile_for(config)
    return PrefixGeometry(profile.num_layers, profile.num_kv_heads, profile.head_dim)


def prefix_config(geometry: PrefixGeometry, virtual_tokens: int, projection: bool = False,
                  encoder_hidden_size: int | None = None, base: str | None = None,
                  inference: bool = True) -> Any:
    """A PrefixTuningConfig with the geometry spelled out (peft's own guess misses ChatGLM2's
    multi-query groups)."""
    from peft import PrefixTuningConfig, TaskType

    return PrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=virtual_tokens,
        num_layers=geometry.num_layers, token_dim=geometry.token_dim,
        num_attention_heads=geometry.kv_heads, num_transformer_submodules=1,
        prefix_projection=projection, encoder_hidden_size=encoder_hidden_size or geometry.token_dim,
        base_model_name_or_path=base, inference_mode=inference)


def read_prefix_config(folder: Path) -> dict[str, Any]:
    """adapter_config.json of a prefix folder, with the fields loading needs checked."""
    path = Path(folder) / "adapter_config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"cannot read {path}: {exc}") from exc
    if raw.get("peft_type") != PREFIX_TYPE:
        raise AdapterError(f"{folder}: peft_type {raw.get('peft_type')!r} is not {PREFIX_TYPE}")
    for key in ("num_virtual_tokens", "num_layers", "token_dim", "num_attention_heads"):
        if not isinstance(raw.get(key), int) or raw[key] <= 0:
            raise AdapterError(f"{path}: {key} must be a positive integer, got {raw.get(key)!r}")
    if raw.get("num_transformer_submodules", 1) != 1:
        raise AdapterError(f"{path}: num_transformer_submodules "
                           f"{raw['num_transformer_submodules']} (an encoder-decoder prefix); "
                           "kbqa runs decoder-only models")
    if raw["token_dim"] % raw["num_attention_heads"]:
        raise AdapterError(f"{path}: token_dim {raw['token_dim']} is not a multiple of "
                           f"num_attention_heads {raw['num_attention_heads']}")
    return raw


def check_fits(raw: dict[str, Any], geometry: PrefixGeometry, folder: Path) -> None:
    """AdapterError unless the folder's layers, key/value heads and head size are the model's."""
    found = PrefixGeometry(raw["num_layers"], raw["num_attention_heads"],
                           raw["token_dim"] // raw["num_attention_heads"])
    if found != geometry:
        raise AdapterError(
            f"prefix adapter {folder} does not fit this model: it has {found.num_layers} layers × "
            f"{found.kv_heads} key/value heads × head size {found.head_dim} (token_dim "
            f"{found.token_dim}); the model has {geometry.num_layers} × {geometry.kv_heads} × "
            f"{geometry.head_dim} (token_dim {geometry.token_dim}). A prefix is tied to the "
            "model it was trained on and cannot be transplanted.")


def check_prefix_tensors(weights: dict[str, Any], virtual_tokens: int,
                         geometry: PrefixGeometry, folder: Path) -> Any:
    """The prompt_embeddings tensor, after checking it is the only key, its shape and values."""
    import torch

    if set(weights) != {PREFIX_KEY}:
        missing = [PREFIX_KEY] if PREFIX_KEY not in weights else []
        extra = sorted(set(weights) - {PREFIX_KEY})
        raise AdapterError(f"prefix adapter {folder} does not fit: {len(weights)} tensors in the "
                           f"file, 1 expected ({PREFIX_KEY}); missing {missing}, unexpected "
                           f"{extra[:3]}")
    tensor = weights[PREFIX_KEY]
    expected = (virtual_tokens, geometry.width)
    if tuple(tensor.shape) != expected:
        raise AdapterError(f"prefix adapter {folder}: {PREFIX_KEY} has shape "
                           f"{tuple(tensor.shape)}, this model needs {expected} ({virtual_tokens} "
                           f"virtual tokens × {geometry.num_layers} layers · 2 · "
                           f"{geometry.token_dim})")
    if not bool(torch.isfinite(tensor).all()):
        raise AdapterError(f"prefix adapter {folder}: {PREFIX_KEY} holds NaN or infinite values")
    if not bool(tensor.any()):
        raise AdapterError(f"prefix adapter {folder} is all zero: every key and value of its "
                           "prefix is 0, which only dilutes attention (an untrained or wrongly "
                           "converted adapter)")
    return tensor


def refuse_foreign_cache(model: Any, folder: Path) -> None:
    """AdapterError unless `model` is a transformers model class: peft hands it the prefix as a
    transformers cache, which a model's own code (ChatGLM-6B, ChatGLM2) does not read."""
    from kbqa.llm.cpu_inference import is_transformers_native

    if not is_transformers_native(model):
        raise AdapterError(
            f"cannot run the prefix adapter {Path(folder).name} on {type(model).__name__}: peft "
            "gives the prefix to the model as a transformers cache, and this model's own code "
            "reads only its own format (ChatGLM runs a P-tuning prefix itself, through "
            "pre_seq_len). Prefix adapters run on transformers' own model classes (Qwen2, Llama, "
            "GLM-4, ...)")


def load_prefix_adapter(model: Any, folder: Path, index: int = 0) -> tuple[Any, Any]:
    """Wrap `model` (a plain transformers model, possibly holding LoRA layers) in a new
    PeftModelForCausalLM carrying the folder's prefix, strictly; returns it and its report.

    The model itself is not changed: several prefix models may wrap one base module. Whether the
    model can run the prefix is `refuse_foreign_cache`'s question, asked by the callers that run it.
    """
    import torch
    from peft import PeftModelForCausalLM, get_peft_model

    from kbqa.adapters.loading import AdapterReport, read_adapter_weights

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise AdapterError(f"adapter folder {folder} does not exist")
    raw = read_prefix_config(folder)
    geometry = geometry_for(model.config)
    check_fits(raw, geometry, folder)
    tensor = check_prefix_tensors(read_adapter_weights(folder), raw["num_virtual_tokens"],
                                  geometry, folder)
    config = prefix_config(geometry, raw["num_virtual_tokens"],
                           base=raw.get("base_model_name_or_path"))
    name = f"adapter{index}_" + re.sub(r"[^0-9A-Za-z_-]", "_", folder.name)
    with warnings.catch_warnings():  # "modify a model with PEFT for a second time": on purpose
        warnings.simplefilter("ignore", UserWarning)
        try:
            peft_model = get_peft_model(model, config, adapter_name=name)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise AdapterError(f"prefix adapter {folder} does not fit this model: {exc}") from exc
    if not isinstance(peft_model, PeftModelForCausalLM):
        raise AdapterError(f"peft built a {type(peft_model).__name__} for {folder}, not a causal LM")
    embedding = peft_model.prompt_encoder[name].embedding.weight
    with torch.no_grad():
        embedding.copy_(tensor.to(embedding.dtype))
    if not torch.equal(embedding.float(), tensor.float().to(embedding.dtype).float()):
        raise AdapterError(f"prefix adapter {folder}: the loaded prefix differs from the file")
    peft_model.eval()
    report = AdapterReport(name=name, folder=str(folder), tensors=1, modules=geometry.num_layers,
                           delta_norm=float(tensor.float().norm()))
    return peft_model, report


# --- ChatGLM's official P-tuning v2 checkpoints -------------------------------------------


@dataclass(frozen=True)
class ChatGLMPrefixSpec:
    """What a ChatGLM model built with pre_seq_len has in its prefix_encoder, from its config."""

    pre_seq_len: int
    projection: bool
    hidden_size: int
    geometry: PrefixGeometry
    version: str

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Key → shape of ChatGLM's PrefixEncoder (v1: MLP from hidden_size; v2: from the flat
        key/value width through hidden_size and back)."""
        width, hidden = self.geometry.width, self.hidden_size
        if not self.projection:
            return {"embedding.weight": (self.pre_seq_len, width)}
        inner = hidden if self.version == "chatglm" else width
        return {"embedding.weight": (self.pre_seq_len, inner),
                "trans.0.weight": (hidden, inner), "trans.0.bias": (hidden,),
                "trans.2.weight": (width, hidden), "trans.2.bias": (width,)}


def chatglm_prefix_spec(model_config: dict[str, Any],
                        checkpoint_config: dict[str, Any] | None) -> ChatGLMPrefixSpec:
    """The prefix ChatGLM builds for this model; pre_seq_len and prefix_projection come from the
    checkpoint's config.json (THUDM's ptuning writes one beside the weights) or the model's."""
    from kbqa.adapters.profiles import profile_for

    if model_config.get("model_type") != "chatglm":
        raise AdapterError(f"P-tuning v2 checkpoints in ChatGLM's format need a ChatGLM model, "
                           f"not model_type {model_config.get('model_type')!r}")
    profile = profile_for(model_config)
    geometry = PrefixGeometry(profile.num_layers, profile.num_kv_heads, profile.head_dim)
    source = checkpoint_config or {}
    for key in ("num_layers", "hidden_size", "num_attention_heads", "multi_query_group_num",
                "kv_channels"):
        if key in source and key in model_config and source[key] != model_config[key]:
            raise AdapterError(f"the checkpoint was trained on a model with {key} {source[key]}, "
                               f"this model has {model_config[key]}")
    pre_seq_len = source.get("pre_seq_len", model_config.get("pre_seq_len"))
    if not isinstance(pre_seq_len, int) or pre_seq_len <= 0:
        raise AdapterError("pre_seq_len is not set in the checkpoint's or the model's config.json "
                           f"(got {pre_seq_len!r}): cannot tell the prefix length")
    projection = bool(source.get("prefix_projection", model_config.get("prefix_projection",
                                                                        False)))
    return ChatGLMPrefixSpec(pre_seq_len, projection, profile.hidden_size, geometry,
                             profile.family)


def _checkpoint_path(checkpoint: Path) -> Path:
    checkpoint = Path(checkpoint).expanduser()
    path = checkpoint / CHECKPOINT_FILE if checkpoint.is_dir() else checkpoint
    if not path.is_file():
        raise AdapterError(f"no P-tuning checkpoint at {path}")
    return path


def read_chatglm_prefix(checkpoint: Path, spec: ChatGLMPrefixSpec) -> dict[str, Any]:
    """The prefix_encoder tensors of an official checkpoint (weights_only: no pickle code runs),
    every key and shape checked against `spec`."""
    import torch

    path = _checkpoint_path(checkpoint)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, hostile pickle, truncated download
        raise AdapterError(f"cannot read {path}: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AdapterError(f"{path} is not a state dict of tensors")
    expected = {CHATGLM_PREFIX + key: shape for key, shape in spec.expected_shapes().items()}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or extra or wrong:
        lines = [(f"{path} is not a P-tuning v2 checkpoint for this model "
                  f"(pre_seq_len {spec.pre_seq_len}, prefix_projection {spec.projection}):")]
        if missing:
            lines.append(f"  missing {missing}")
        if extra:
            lines.append(f"  unexpected {len(extra)} keys, e.g. {extra[:3]}")
        lines.extend(f"  shape of {k}: file {tuple(state[k].shape)}, expected {expected[k]}"
                     for k in wrong)
        raise AdapterError("\n".join(lines))
    return {key.removeprefix(CHATGLM_PREFIX): value for key, value in state.items()}


def fold_prefix(tensors: dict[str, Any], projection: bool) -> Any:
    """The encoder's output for virtual tokens 0..n-1 (what ChatGLM's get_prompt computes before
    its view): the embedding itself, or the projection MLP applied to it once."""
    import torch

    embedding = tensors["embedding.weight"].float()
    if not projection:
        return embedding.clone()
    with torch.no_grad():
        hidden = torch.tanh(torch.nn.functional.linear(
            embedding, tensors["trans.0.weight"].float(), tensors["trans.0.bias"].float()))
        return torch.nn.functional.linear(hidden, tensors["trans.2.weight"].float(),
                                          tensors["trans.2.bias"].float())


def import_chatglm_ptuning(checkpoint: Path, model_folder: Path, out: Path,
                           base_name: str | None = None) -> Path:
    """Convert an official ChatGLM P-tuning v2 checkpoint into a peft PREFIX_TUNING folder."""
    from safetensors.torch import save_file

    from kbqa.adapters.profiles import read_model_config

    path = _checkpoint_path(checkpoint)
    config_path = path.parent / "config.json"
    checkpoint_config = None
    if config_path.is_file():
        try:
            checkpoint_config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AdapterError(f"cannot read {config_path}: {exc}") from exc
    model_folder = Path(model_folder).expanduser()
    spec = chatglm_prefix_spec(read_model_config(model_folder), checkpoint_config)
    prefix = fold_prefix(read_chatglm_prefix(path, spec), spec.projection).contiguous()
    check_prefix_tensors({PREFIX_KEY: prefix}, spec.pre_seq_len, spec.geometry, path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = prefix_config(spec.geometry, spec.pre_seq_len,
                           base=base_name or str(model_folder.resolve()))
    config.save_pretrained(str(out))
    save_file({PREFIX_KEY: prefix}, str(out / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    (out / "ptuning_import.json").write_text(json.dumps({
        "source": str(path.resolve()), "pre_seq_len": spec.pre_seq_len,
        "prefix_projection_folded": spec.projection, "version": spec.version,
        "num_layers": spec.geometry.num_layers, "kv_heads": spec.geometry.kv_heads,
        "head_dim": spec.geometry.head_dim}, indent=2), encoding="utf-8")
    return out
