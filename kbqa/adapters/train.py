"""LoRA or prefix-tuning (P-tuning v2) supervised fine-tuning: Alpaca JSON or RAG-formatted CMRC.

Examples are rendered exactly as kbqa prompts the model at answer time (DEFAULT_TEMPLATE
inside the model's chat template), and the loss covers the answer tokens only. A plain torch
loop keeps it small and resumable: every `save_every` steps the adapter, the AdamW state
(safetensors, no pickle) and the loss history are written to OUT/checkpoint, and a rerun with
resume=True continues from there on the same data order.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from kbqa.errors import AdapterError


@dataclass(frozen=True)
class Example:
    prompt: str  # the user message (before the chat template)
    answer: str


ADAPTER_KINDS = ("lora", "prefix")


@dataclass(frozen=True)
class TrainOptions:
    kind: str = "lora"  # or "prefix": peft prefix tuning (kbqa.adapters.prefix)
    virtual_tokens: int = 16  # prefix length, for kind "prefix"
    prefix_projection: bool = False  # train the prefix through a two-layer MLP (P-tuning v2)
    prefix_init: str = "text"  # "text": the keys/values of the first example's tokens; "random"
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    steps: int = 100
    learning_rate: float = 2e-4
    max_length: int = 384
    save_every: int = 50
    seed: int = 0


@dataclass
class TrainResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    plot: Path | None = None


def alpaca_examples(path: Path) -> list[Example]:
    """instruction (+ input) → output records from an Alpaca-format JSON list."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
        return [Example(prompt=r["instruction"] + (f"\n{r['input']}" if r.get("input") else ""),
                        answer=r["output"]) for r in records]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AdapterError(f"{path} is not Alpaca-format JSON (instruction/input/output): "
                           f"{exc}") from exc


def cmrc_examples(folder: Path, window: int = 120, limit: int | None = None,
                  seed: int = 0) -> list[Example]:
    """RAG-style examples from questions.jsonl + docs.jsonl: a passage around the answer."""
    from langchain_core.documents import Document

    from kbqa.qa.prompts import build_prompt, format_context

    folder = Path(folder)
    docs = {d["doc_id"]: d for d in _jsonl(folder / "docs.jsonl")}
    prompt = build_prompt()
    examples = []
    for question in _jsonl(folder / "questions.jsonl"):
        doc = docs.get(question["doc_id"])
        answer = (question.get("answers") or [""])[0]
        at = doc["text"].find(answer) if doc and answer else -1
        if at < 0:
            continue
        passage = doc["text"][max(0, at - window):at + len(answer) + window]
        context = format_context([Document(page_content=passage,
                                           metadata={"filename": doc.get("title", "")})])
        examples.append(Example(prompt.format(context=context, question=question["question"]),
                                answer))
    random.Random(seed).shuffle(examples)
    return examples[:limit] if limit else examples


def _jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    except (OSError, ValueError) as exc:
        raise AdapterError(f"cannot read {path}: {exc}") from exc


def encode(tokenizer: Any, example: Example, max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) with labels = -100 on the prompt: loss on answer tokens only."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": example.prompt}],
                                             tokenize=False, add_generation_prompt=True)
    else:
        text = example.prompt
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(example.answer, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        answer_ids = answer_ids + [tokenizer.eos_token_id]
    answer_ids = answer_ids[:max_length // 2]
    prompt_ids = prompt_ids[-(max_length - len(answer_ids)):]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def _save_checkpoint(folder: Path, peft_model: Any, optimizer: torch.optim.Optimizer,
                     step: int, losses: list[float]) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(folder))
    if peft_model.active_peft_config.is_prompt_learning:  # the saved prefix may be an MLP's output
        save_file({name: p.detach().clone().contiguous() for name, p in
                   peft_model.named_parameters() if p.requires_grad},
                  str(folder / "trainable.safetensors"))
    state = {}
    for index, values in optimizer.state_dict()["state"].items():
        for name, value in values.items():
            state[f"{index}.{name}"] = torch.as_tensor(value).clone().contiguous()
    save_file(state, str(folder / "optimizer.safetensors"))
    (folder / "trainer_state.json").write_text(json.dumps({"step": step, "losses": losses}))


def _restore_checkpoint(folder: Path, peft_model: Any,
                        optimizer: torch.optim.Optimizer) -> tuple[int, list[float]]:
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    from kbqa.adapters.loading import read_adapter_weights

    if (folder / "trainable.safetensors").is_file():
        trainable = load_file(str(folder / "trainable.safetensors"))
        parameters = dict(peft_model.named_parameters())
        if set(trainable) != {n for n, p in parameters.items() if p.requires_grad}:
            raise AdapterError(f"{folder} was saved by a different training setup; start afresh")
        with torch.no_grad():
            for name, value in trainable.items():
                parameters[name].copy_(value)
    else:
        set_peft_model_state_dict(peft_model, read_adapter_weights(folder))
    flat = load_file(str(folder / "optimizer.safetensors"))
    state_dict = optimizer.state_dict()
    for key, value in flat.items():
        index, name = key.split(".", 1)
        state_dict["state"].setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(state_dict)
    saved = json.loads((folder / "trainer_state.json").read_text())
    return saved["step"], saved["losses"]


def _plot(losses: list[float], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(range(1, len(losses) + 1), losses, linewidth=0.8, label="loss")
    if len(losses) >= 10:
        smooth = [sum(losses[max(0, i - 9):i + 1]) / len(losses[max(0, i - 9):i + 1])
                  for i in range(len(losses))]
        axis.plot(range(1, len(losses) + 1), smooth, label="mean of 10")
    axis.set_xlabel("step")
    axis.set_ylabel("answer-token loss")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def options_from_adapter(folder: Path, options: TrainOptions) -> TrainOptions:
    """`options` with the rank, alpha and targets of the LoRA in `folder`, to continue training it."""
    from kbqa.adapters.loading import read_adapter_config

    config = read_adapter_config(Path(folder), "training")  # refuses anything but a LoRA
    return replace(options, kind="lora", rank=int(config.r), alpha=int(config.lora_alpha),
                   targets=tuple(sorted(config.target_modules)))


def train_lora(model_folder: Path, examples: list[Example], out: Path,
               options: TrainOptions = TrainOptions(), resume: bool = False,
               progress: bool = True,
               on_step: Callable[[int, float], None] | None = None,
               base_name: str | None = None,
               start_from: Path | None = None) -> TrainResult:
    """Train a LoRA or a prefix (options.kind) for options.steps steps (batch 1, cycling through
    examples); save to out as a peft folder.

    `base_name` is recorded as the adapter's base model (e.g. 'embedded:NAME', portable across
    machines); by default the model folder's absolute path. `start_from` is a LoRA folder for
    this model whose weights training starts from (loaded strictly; its rank, alpha and targets
    must be those of `options`, see options_from_adapter).
    """
    from peft import get_peft_model
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not examples:
        raise AdapterError("no training examples")
    torch.manual_seed(options.seed)
    out, model_folder = Path(out), Path(model_folder).expanduser()
    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    model = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32)
    peft_model = get_peft_model(model, _peft_config(model, options))
    if start_from is not None:
        _start_from(peft_model, Path(start_from), options)
    if options.kind == "prefix" and options.prefix_init == "text" and not options.prefix_projection:
        init_prefix_from_tokens(peft_model, encode(tokenizer, examples[0], options.max_length)[0])
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad],
                                  lr=options.learning_rate)
    checkpoint = out / "checkpoint"
    step, losses = (_restore_checkpoint(checkpoint, peft_model, optimizer)
                    if resume and (checkpoint / "trainer_state.json").is_file() else (0, []))
    peft_model.train()
    started = time.perf_counter()
    bar = tqdm(total=options.steps, initial=step, disable=not progress,
               desc="LoRA" if options.kind == "lora" else "prefix")
    while step < options.steps:
        ids, labels = encode(tokenizer, examples[step % len(examples)], options.max_length)
        loss = peft_model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if on_step:
            on_step(step, losses[-1])
        if step % options.save_every == 0 or step == options.steps:
            _save_checkpoint(checkpoint, peft_model, optimizer, step, losses)
    bar.close()
    peft_model.save_pretrained(str(out))
    record_base_model(out, base_name or str(model_folder.resolve()))
    (out / "losses.json").write_text(json.dumps(losses))
    return TrainResult(steps=step, seconds=time.perf_counter() - started, losses=losses,
                       plot=_plot(losses, out / "loss.png"))


def _start_from(peft_model: Any, folder: Path, options: TrainOptions) -> None:
    """Load the LoRA in `folder` into the freshly wrapped model: same geometry, every key, every shape."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    from kbqa.adapters.loading import check_keys, read_adapter_weights

    wanted = options_from_adapter(folder, options)
    if (wanted.rank, wanted.alpha, tuple(sorted(wanted.targets))) != (
            options.rank, options.alpha, tuple(sorted(options.targets))):
        raise AdapterError(f"{folder} has rank {wanted.rank}, alpha {wanted.alpha}, targets "
                           f"{', '.join(wanted.targets)}; training was set up for rank "
                           f"{options.rank}, alpha {options.alpha}, targets "
                           f"{', '.join(options.targets)}")
    weights = read_adapter_weights(folder)
    check_keys(get_peft_model_state_dict(peft_model), weights, folder)
    try:
        set_peft_model_state_dict(peft_model, weights)
    except RuntimeError as exc:  # a shape that does not fit this model
        raise AdapterError(f"adapter {folder} does not fit this model: {exc}") from exc


def _peft_config(model: Any, options: TrainOptions) -> Any:
    """LoraConfig, or a PrefixTuningConfig with the model's key/value geometry spelled out."""
    from peft import LoraConfig

    if options.kind == "lora":
        return LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=options.dropout,
                          target_modules=list(options.targets), task_type="CAUSAL_LM")
    if options.kind != "prefix":
        raise AdapterError(f"unknown adapter kind {options.kind!r}; use one of "
                           f"{', '.join(ADAPTER_KINDS)}")
    if options.prefix_init not in ("text", "random"):
        raise AdapterError(f"prefix_init must be 'text' or 'random', not {options.prefix_init!r}")
    if options.virtual_tokens <= 0:
        raise AdapterError(f"virtual tokens must be positive, got {options.virtual_tokens}")
    from kbqa.adapters.prefix import geometry_for, prefix_config

    return prefix_config(geometry_for(model.config), options.virtual_tokens,
                         projection=options.prefix_projection,
                         encoder_hidden_size=model.config.hidden_size, inference=False)


def init_prefix_from_tokens(peft_model: Any, ids: list[int]) -> None:
    """Start the prefix as the keys and values the base model computes for `ids` (cycled to the
    prefix length): the untrained prefix is then exactly the model reading that text first,
    where peft's random prefix starts far from anything the model has seen."""
    name = peft_model.active_adapter
    tokens = peft_model.peft_config[name].num_virtual_tokens
    ids = (list(ids) * (tokens // max(1, len(ids)) + 1))[:tokens]
    if len(ids) < tokens:
        raise AdapterError("no tokens to start the prefix from")
    with torch.no_grad(), peft_model.disable_adapter():
        cache = peft_model.get_base_model()(input_ids=torch.tensor([ids]),
                                            use_cache=True).past_key_values
        # peft reads a row as (2·layers, heads, head_dim), row 2i the key and 2i+1 the value of
        # layer i; the cache holds (batch, heads, position, head_dim) per layer
        parts = [side[0].transpose(0, 1) for layer in cache.layers
                 for side in (layer.keys, layer.values)]
        prefix = torch.stack(parts, dim=1).reshape(tokens, -1)
        embedding = peft_model.prompt_encoder[name].embedding.weight
        if prefix.shape != embedding.shape:
            raise AdapterError(f"the model's cache gives a prefix of shape {tuple(prefix.shape)}, "
                               f"the prefix encoder holds {tuple(embedding.shape)}")
        embedding.copy_(prefix)


def record_base_model(out: Path, base_name: str) -> None:
    """Record the base model ('embedded:NAME' or its folder) so transplant finds the donor itself.

    A prefix trained through a projection MLP is saved as the MLP's output (peft does this): the
    folder then holds a plain prefix, and says so (prefix_projection false) for any peft loader.
    """
    path = out / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_name
    if config.get("peft_type") == "PREFIX_TUNING":
        config["prefix_projection"] = False
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
