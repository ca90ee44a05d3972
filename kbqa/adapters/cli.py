"""`kbqa adapters …`: inspect, transplant, verify and train LoRA and prefix (P-tuning v2) adapters.

Models are given as 'embedded', 'embedded:NAME' or a local folder (as for --llm); embedded
models are converted once into $KBQA_HOME/cache. Errors are AdapterError/KbqaError, which
kbqa.cli.main prints as one line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kbqa.adapters.train import Example

DESCRIPTION = """\
LoRA and prefix-tuning (P-tuning v2) adapters: look inside them, move LoRA between
architectures, prove they apply. A prefix adapter is used on its own: it cannot be transplanted,
fused or merged.

examples:
  kbqa adapters inspect adapters/x --model embedded
  kbqa adapters transplant adapters/llama-lora --donor /models/llama-7b \\
      --target /models/chatglm-6b --out adapters/llama-lora-on-chatglm
  kbqa adapters verify --model embedded adapters/x
  kbqa adapters train --model embedded --cmrc CMRC/train --out adapters/y --steps 120
  kbqa adapters fuse adapters/x adapters/y --weights 0.7,0.3 --model embedded --out adapters/xy
  kbqa adapters merge adapters/x --model embedded --out models/qwen-x
  kbqa adapters train --kind prefix --virtual-tokens 16 --model embedded --cmrc CMRC/train \\
      --out adapters/p --steps 120
  kbqa adapters import-ptuning ptuning/output/checkpoint-3000 --model /models/chatglm-6b \\
      --out adapters/chatglm-ptuning
  kbqa adapters distill --teacher-adapter adapters/x --model embedded:OTHER \\
      --start-from adapters/x-transplanted --cmrc CMRC/train --out adapters/x-distilled
"""

DISTILL_HELP = """\
Trans-LoRA-style distillation, the optional step after a transplant: the donor base with its
adapter (the teacher) answers unlabeled prompts, and a LoRA on the target (by default started
from the transplanted adapter, --start-from) is trained on those answers. No gold answers are
used: with --cmrc each question is shown with a window of its passage, as in training, and the
teacher's greedy answer is the target. Writes OUT (peft folder), OUT/teacher_answers.jsonl (the
teacher's answers, reused on a rerun), OUT/loss.png and a card."""

TRANSPLANT_HELP = """\
Map a LoRA trained on one base model (the donor) onto another (the target): module names
(q/k/v → fused query_key_value, gate/up → gate_up_proj …), depth (--layer-map) and width
(through both base models' singular subspaces; needs both models' safetensors weights).
Writes a peft folder that loads strictly on the target, plus transplant_report.json listing
every target module's sources, ‖ΔW‖, subspace similarity and re-factoring error, and all
that was skipped and why."""


def _model_folder(spec: str) -> Path:
    from kbqa.config import load_settings
    from kbqa.llm.loading import resolve_llm

    settings = load_settings()
    return resolve_llm(spec, settings.cache_dir, settings.llm.dtype)


def _portable_name(spec: str) -> str | None:
    """'embedded:NAME' for an embedded model (the same on every machine), else None."""
    from kbqa.llm.loading import DEFAULT_LLM

    return f"embedded:{DEFAULT_LLM}" if spec == "embedded" else (
        spec if spec.startswith("embedded:") else None)


def add_adapters_parser(subparsers: Any) -> None:
    """Register `adapters inspect|transplant|verify|train|fuse|merge|import-ptuning`."""
    adapters = subparsers.add_parser(
        "adapters", help="inspect, transplant, verify, train, fuse and merge LoRA adapters",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = adapters.add_subparsers(dest="adapters_command", metavar="ACTION", required=True)

    inspect = actions.add_parser("inspect", help="config, tensors and per-module ΔW norms",
                                 description="Print an adapter's LoRA config, its tensor count "
                                 "and ‖scale·B·A‖ per module; with --model also the "
                                 "architecture profile of that model (from config.json only).")
    inspect.add_argument("adapter", nargs="?", type=Path, help="peft adapter folder")
    inspect.add_argument("--model", help="model folder, 'embedded' or 'embedded:NAME'")

    transplant = actions.add_parser("transplant", help="map an adapter onto another architecture",
                                    description=TRANSPLANT_HELP)
    transplant.add_argument("adapter", type=Path, help="donor peft adapter folder")
    transplant.add_argument("--target", required=True, help="target model folder or 'embedded…'")
    transplant.add_argument("--donor", help="donor base model (default: the adapter's "
                            "base_model_name_or_path, if it is a local folder)")
    transplant.add_argument("--out", required=True, type=Path, help="output adapter folder")
    transplant.add_argument("--layer-map", choices=["proportional", "interpolate"],
                            default="proportional",
                            help="depth mapping: nearest relative depth, or a linear blend of "
                                 "the two nearest donor layers (default proportional)")
    transplant.add_argument("--rank", type=int, help="LoRA rank of the result (default: the "
                            "smallest exact one, at most --max-rank)")
    transplant.add_argument("--max-rank", type=int, default=64)
    transplant.add_argument("--subspace-rank", type=int, default=128,
                            help="singular directions used for width alignment (default 128)")
    transplant.add_argument("--min-similarity", type=float, default=0.5,
                            help="skip width-aligned modules whose base subspaces are less "
                                 "similar than this (0..1, default 0.5)")
    transplant.add_argument("--align-all", action="store_true",
                            help="use the subspace map even where donor and target shapes agree")

    verify = actions.add_parser("verify", help="prove adapters load strictly and change logits",
                                description="Load the adapters strictly into the model, check "
                                "ΔW ≠ 0 in every module and that the probe's logits move by "
                                "more than --tolerance. Exit status 1 when not applied.")
    verify.add_argument("adapters", nargs="+", type=Path, help="peft adapter folder(s)")
    verify.add_argument("--model", required=True, help="model folder, 'embedded' or 'embedded:NAME'")
    verify.add_argument("--probe", help="prompt whose logits are compared")
    verify.add_argument("--tolerance", type=float, default=1e-3)

    train = actions.add_parser("train", help="LoRA or prefix fine-tuning on Alpaca JSON or CMRC "
                               "RAG data",
                               description="Supervised LoRA or prefix-tuning (P-tuning v2) "
                               "training (answer tokens only), "
                               "batch 1, CPU-capable on small models; resumable with --resume; "
                               "writes OUT (peft folder), OUT/loss.png and OUT/checkpoint.")
    train.add_argument("--model", required=True, help="base model folder, 'embedded' or 'embedded:NAME'")
    data = train.add_mutually_exclusive_group(required=True)
    data.add_argument("--alpaca", type=Path, help="Alpaca-format JSON (instruction/input/output)")
    data.add_argument("--cmrc", type=Path, help="folder with questions.jsonl and docs.jsonl")
    data.add_argument("--rag", type=Path, help="folder with questions.jsonl and docs.jsonl: the "
                      "docs are indexed as a knowledge base and each question gets the passages "
                      "kbqa retrieves for it, some with the answer removed (target: the refusal)")
    train.add_argument("--refusal-share", type=float, default=0.3,
                       help="with --rag: share of questions taught to refuse (default 0.3)")
    train.add_argument("--out", required=True, type=Path, help="output adapter folder")
    train.add_argument("--kind", choices=["lora", "prefix"], default="lora",
                       help="lora (default) or prefix: peft prefix tuning, i.e. P-tuning v2")
    train.add_argument("--virtual-tokens", type=int, default=16,
                       help="with --kind prefix: prefix length in virtual tokens (default 16)")
    train.add_argument("--prefix-projection", action="store_true",
                       help="with --kind prefix: train the prefix through a two-layer MLP; the "
                            "folder stores its output")
    train.add_argument("--prefix-init", choices=["text", "random"], default="text",
                       help="with --kind prefix: start from the keys and values of the first "
                            "example's tokens (default), or from peft's random prefix")
    train.add_argument("--steps", type=int, default=100)
    train.add_argument("--rank", type=int, default=8)
    train.add_argument("--alpha", type=int, default=16)
    train.add_argument("--targets", default="q_proj,v_proj", help="comma-separated module names")
    train.add_argument("--lr", type=float,
                       help="learning rate (default 2e-4 for lora, 1e-2 for prefix)")
    train.add_argument("--max-length", type=int, default=384, help="tokens per example")
    train.add_argument("--save-every", type=int, default=50)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")

    fuse = actions.add_parser("fuse", help="combine several adapters into one",
                              description="Load the adapters strictly into the model and save "
                              "their weighted combination (peft add_weighted_adapter) as one "
                              "adapter folder. 'cat' (default) and 'svd' give the exact weighted "
                              "sum of the ΔWs; 'linear' mixes A and B separately (cross terms). "
                              "Exit status 1 if the result does not change the model.")
    fuse.add_argument("adapters", nargs="+", type=Path, help="peft adapter folders")
    fuse.add_argument("--model", required=True, help="model folder, 'embedded' or 'embedded:NAME'")
    fuse.add_argument("--weights", help="comma-separated, one per adapter (default: all 1)")
    fuse.add_argument("--method", default="cat", help="linear, cat, svd, ties, dare_linear, "
                      "dare_ties or magnitude_prune (default cat)")
    fuse.add_argument("--density", type=float, help="share kept by ties/dare/magnitude_prune")
    fuse.add_argument("--svd-rank", type=int, help="rank of the result for --method svd")
    fuse.add_argument("--out", required=True, type=Path, help="output adapter folder")

    merge = actions.add_parser("merge", help="bake adapters into a standalone model folder",
                               description="Load the adapters strictly, merge_and_unload, and "
                               "save a model folder (safetensors + tokenizer) that runs "
                               "without peft: `kbqa ask --llm OUT`.")
    merge.add_argument("adapters", nargs="+", type=Path, help="peft adapter folder(s)")
    merge.add_argument("--model", required=True, help="model folder, 'embedded' or 'embedded:NAME'")
    merge.add_argument("--dtype", choices=["bfloat16", "float32", "float16"], default="bfloat16")
    merge.add_argument("--out", required=True, type=Path, help="output model folder")

    ptuning = actions.add_parser(
        "import-ptuning", help="convert a ChatGLM P-tuning v2 checkpoint to a prefix adapter",
        description="Read ChatGLM's official P-tuning v2 checkpoint (pytorch_model.bin with "
        "transformer.prefix_encoder.*, read with weights_only; pre_seq_len and prefix_projection "
        "from the config.json beside it, else from the model's), check every key and shape "
        "against the model, and write a peft prefix-tuning folder (a projection MLP is evaluated "
        "once and stored as its output).")
    ptuning.add_argument("checkpoint", type=Path, help="checkpoint folder or its pytorch_model.bin")
    ptuning.add_argument("--model", required=True, help="the ChatGLM model folder it was trained on")
    ptuning.add_argument("--out", required=True, type=Path, help="output adapter folder")

    distill = actions.add_parser("distill", help="train a target LoRA on a donor adapter's answers "
                                 "(after a transplant)", description=DISTILL_HELP,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    distill.add_argument("--teacher-adapter", required=True, type=Path,
                         help="the donor's LoRA folder (the teacher)")
    distill.add_argument("--teacher-model", help="the donor base (default: the teacher "
                         "adapter's base_model_name_or_path)")
    distill.add_argument("--model", required=True, help="the target base: model folder, "
                         "'embedded' or 'embedded:NAME'")
    distill.add_argument("--start-from", type=Path, help="LoRA folder for the target to start "
                         "from, e.g. the transplanted adapter (default: a fresh LoRA)")
    distill.add_argument("--cmrc", required=True, type=Path,
                         help="folder with questions.jsonl and docs.jsonl: the prompts")
    distill.add_argument("--skip", type=int, default=0, help="leave out the first N prompts "
                         "(e.g. the ones the teacher adapter was trained on; default 0)")
    distill.add_argument("--examples", type=int, default=120,
                         help="prompts the teacher answers (default 120)")
    distill.add_argument("--out", required=True, type=Path, help="output adapter folder")
    distill.add_argument("--steps", type=int, default=60)
    distill.add_argument("--rank", type=int, default=8, help="without --start-from")
    distill.add_argument("--alpha", type=int, default=16, help="without --start-from")
    distill.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj",
                         help="without --start-from: comma-separated module names")
    distill.add_argument("--lr", type=float, default=2e-4, help="learning rate (default 2e-4)")
    distill.add_argument("--max-length", type=int, default=384, help="tokens per example")
    distill.add_argument("--max-new-tokens", type=int, default=48,
                         help="length limit of the teacher's answers in tokens (default 48)")
    distill.add_argument("--seed", type=int, default=0)

    for parser in (inspect, transplant, verify, train, fuse, merge, ptuning, distill):
        parser.add_argument("-v", "--verbose", action="store_true", help="show library logs")


def run_adapters_command(args: argparse.Namespace) -> int:
    handlers = {"inspect": _inspect, "transplant": _transplant, "verify": _verify,
                "fuse": _fuse, "merge": _merge,
                "train": _train, "import-ptuning": _import_ptuning, "distill": _distill}
    return handlers[args.adapters_command](args)


def _inspect(args: argparse.Namespace) -> int:
    from kbqa.errors import AdapterError

    if args.adapter is None and args.model is None:
        raise AdapterError("give an adapter folder, --model, or both")
    if args.adapter is not None:
        _print_adapter(args.adapter)
    if args.model is not None:
        from kbqa.adapters.profiles import profile_for_folder

        print(json.dumps(profile_for_folder(_model_folder(args.model)).summary(), indent=2))
    return 0


def _print_adapter(folder: Path) -> None:
    from kbqa.adapters.loading import read_adapter_config, read_adapter_weights
    from kbqa.adapters.prefix import is_prefix_folder, read_prefix_config

    if is_prefix_folder(folder):
        raw = read_prefix_config(folder)
        weights = read_adapter_weights(folder)
        print(f"prefix adapter (P-tuning v2) {folder}\n  base: {raw.get('base_model_name_or_path')}"
              f"\n  {raw['num_virtual_tokens']} virtual tokens × {raw['num_layers']} layers × "
              f"{raw['num_attention_heads']} key/value heads × "
              f"{raw['token_dim'] // raw['num_attention_heads']}\n  tensors: "
              + ", ".join(f"{k} {tuple(v.shape)} ‖·‖ {float(v.float().norm()):.4g}"
                          for k, v in weights.items()))
        return
    config = read_adapter_config(folder, "inspect")
    weights = read_adapter_weights(folder)
    targets = config.target_modules
    if not isinstance(targets, str):  # full module names after a transplant: show the leaves
        leaves = sorted({t.rsplit(".", 1)[-1] for t in targets})
        targets = f"{len(config.target_modules)} modules named {leaves}"
    print(f"adapter {folder}\n  base: {config.base_model_name_or_path}\n  r={config.r} "
          f"alpha={config.lora_alpha} rslora={config.use_rslora} dora={config.use_dora}\n"
          f"  target_modules: {targets}\n  tensors: {len(weights)}")
    scale = config.lora_alpha / (config.r ** 0.5 if config.use_rslora else config.r)
    total = 0.0
    for key in sorted(k for k in weights if ".lora_A." in k):
        lora_b = weights.get(key.replace(".lora_A.", ".lora_B."))
        if lora_b is None:
            print(f"  {key}: no matching lora_B")
            continue
        norm = scale * float((lora_b.float() @ weights[key].float()).norm())
        total += norm
        print(f"  {key.split('.lora_A.')[0].removeprefix('base_model.model.')}: ‖ΔW‖ {norm:.4g}")
    print(f"  total ‖ΔW‖ {total:.4g}")


def _transplant(args: argparse.Namespace) -> int:
    from kbqa.adapters.transplant import TransplantOptions, transplant

    options = TransplantOptions(layer_map=args.layer_map, rank=args.rank, max_rank=args.max_rank,
                                subspace_rank=args.subspace_rank,
                                min_similarity=args.min_similarity, align_all=args.align_all)
    from kbqa.adapters.loading import read_adapter_config
    from kbqa.adapters.transplant import refuse_prefix_transplant

    refuse_prefix_transplant(args.adapter)
    # an embedded donor named in adapter_config.json is resolved here, with the app's cache
    recorded = read_adapter_config(args.adapter).base_model_name_or_path or ""
    donor_spec = args.donor or (recorded if recorded.startswith("embedded") else None)
    donor = _model_folder(donor_spec) if donor_spec else None
    report = transplant(args.adapter, _model_folder(args.target), args.out, donor=donor,
                        options=options, base_name=_portable_name(args.target))
    totals = report.totals()
    print(f"{report.donor_family} → {report.target_family}: {totals['target_modules']} modules "
          f"at rank {report.rank}, max re-factor error {totals['max_refactor_error']:.2e}, "
          f"{totals['skipped']} skipped, {totals['unparsed_keys']} unparsed keys, "
          f"unused donor layers {report.unused_donor_layers}")
    for skipped in report.skipped[:10]:
        print(f"  skipped: {skipped}")
    print(f"written {args.out} (report: {args.out / 'transplant_report.json'})")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from kbqa.adapters.verify import DEFAULT_PROBE, verify_adapter

    report = verify_adapter(_model_folder(args.model), None, args.adapters,
                            probe=args.probe or DEFAULT_PROBE, tolerance=args.tolerance)
    for adapter in report.adapters:
        print(f"{adapter.folder}: {adapter.tensors} tensors, {adapter.modules} modules, "
              f"‖ΔW‖ {adapter.delta_norm:.4g}")
    print(f"max |Δlogit| {report.max_logit_diff:.4g} over {report.modules} modules: "
          f"{'applied' if report.applied else 'NOT applied'}")
    for reason in report.reasons:
        print(f"  {reason}")
    return 0 if report.applied else 1


def _fuse(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kbqa.errors import AdapterError
    from kbqa.adapters.fuse import fuse_adapters
    from kbqa.adapters.verify import check_loaded

    try:
        weights = ([float(w) for w in args.weights.split(",")] if args.weights
                   else [1.0] * len(args.adapters))
    except ValueError as exc:
        raise AdapterError(f"--weights must be numbers separated by commas: {exc}") from exc
    folder = _model_folder(args.model)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    peft_model = fuse_adapters(model, list(args.adapters), weights, method=args.method,
                               name="fused", density=args.density, svd_rank=args.svd_rank)
    check = check_loaded(peft_model, AutoTokenizer.from_pretrained(folder), {"fused"})
    args.out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(args.out), selected_adapters=["fused"])
    _flatten_selected(args.out, "fused")
    _record_fused(args.out, _portable_name(args.model) or str(folder.resolve()), args, weights)
    print(f"fused {len(args.adapters)} adapters ({args.method}, weights {weights}) → {args.out}; "
          f"max |Δlogit| {check.max_logit_diff:.4g}: {'applied' if check.applied else 'NOT applied'}")
    for reason in check.reasons:
        print(f"  {reason}")
    return 0 if check.applied else 1


def _record_fused(out: Path, base: str, args: argparse.Namespace, weights: list[float]) -> None:
    """Record the base as the model was named ('embedded:NAME' is the same on every machine,
    where peft wrote this machine's folder) and replace peft's empty card with what was fused."""
    from kbqa.adapters.train import record_base_model

    record_base_model(out, base)
    parts = "\n".join(f"- `{Path(folder)}` × {weight:g}" for folder, weight in
                      zip(args.adapters, weights))
    (out / "README.md").write_text(
        f"# {out.name}\n\nLoRA adapter for `{base}`, made by `kbqa adapters fuse` "
        f"(method {args.method}) from:\n\n{parts}\n\n"
        "Each part's card has its data and training.\n", encoding="utf-8")


def _flatten_selected(out: Path, name: str) -> None:
    """peft saves a non-default adapter under OUT/NAME/; move it up so OUT is the adapter folder."""
    nested = out / name
    if nested.is_dir():
        for item in nested.iterdir():
            item.replace(out / item.name)
        nested.rmdir()


def _merge(args: argparse.Namespace) -> int:
    from kbqa.adapters.merge import merge_to_folder

    out = merge_to_folder(_model_folder(args.model), list(args.adapters), args.out, args.dtype)
    print(f"merged {len(args.adapters)} adapter(s) into {out} ({args.dtype}); "
          f"use it with: kbqa ask --llm {out}")
    return 0


def _rag_examples(folder: Path, home: Path, refusal_share: float,
                  seed: int) -> tuple[list[Example], str]:
    """Index the docs with the default settings, then build examples from what kbqa retrieves."""
    from kbqa.adapters.rag_data import RagQuestion, rag_examples, retrieval_over
    from kbqa.config import RetrievalSettings

    top_k = RetrievalSettings().top_k
    retrieve = retrieval_over(folder / "docs.jsonl", home, top_k + 5)
    rows = [json.loads(line) for line in
            (folder / "questions.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    questions = [RagQuestion(r["question"], tuple(r.get("answers") or ())) for r in rows
                 if r.get("answers")]
    examples, mix = rag_examples(questions, retrieve, top_k=top_k, refusal_share=refusal_share,
                                 seed=seed)
    described = (f"{mix.answerable} answerable, {mix.refusals} refusals; skipped "
                 f"{mix.skipped_no_gold} without the answer in the top {top_k} and "
                 f"{mix.skipped_empty} with nothing retrieved")
    print(f"RAG examples: {described}")
    return examples, (
        f"`--rag {folder}`: {len(questions)} questions over the passages of its docs.jsonl, "
        f"indexed as a knowledge base with kbqa's default settings; each question gets the "
        f"top {top_k} passages kbqa retrieves for it, in kbqa's prompt template. A share of "
        f"{refusal_share:g} (seed {seed}) have every passage holding the answer removed and the "
        f"fixed refusal as target. Examples: {described}.")


def _train(args: argparse.Namespace) -> int:
    from kbqa.adapters.card import write_training_card
    from kbqa.adapters.train import TrainOptions, alpaca_examples, cmrc_examples, train_lora

    if args.rag:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="kbqa-rag-") as home:  # rebuilt the same each run
            examples, data = _rag_examples(args.rag, Path(home), args.refusal_share, args.seed)
    elif args.alpaca:
        examples = alpaca_examples(args.alpaca)
        data = f"`--alpaca {args.alpaca}`: {len(examples)} instruction/output records."
    else:
        examples = cmrc_examples(args.cmrc, seed=args.seed)
        data = (f"`--cmrc {args.cmrc}`: {len(examples)} questions, each with one window of its "
                "passage around the answer, in kbqa's prompt template.")
    learning_rate = args.lr if args.lr is not None else (1e-2 if args.kind == "prefix" else 2e-4)
    options = TrainOptions(kind=args.kind, virtual_tokens=args.virtual_tokens,
                           prefix_projection=args.prefix_projection,
                           prefix_init=args.prefix_init,
                           rank=args.rank, alpha=args.alpha,
                           targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
                           steps=args.steps, learning_rate=learning_rate,
                           max_length=args.max_length,
                           save_every=args.save_every, seed=args.seed)
    result = train_lora(_model_folder(args.model), examples, args.out, options,
                        resume=args.resume,
                        base_name=_portable_name(args.model))
    write_training_card(args.out, base=_portable_name(args.model) or Path(args.model).name,
                        data=data, options=options, result=result,
                        command=getattr(args, "command_line", ["kbqa", "adapters", "train"]))
    tail = result.losses[-10:]
    print(f"{result.steps} steps in {result.seconds:.0f}s; mean loss of the last {len(tail)} "
          f"steps {sum(tail) / max(1, len(tail)):.3f}; adapter {args.out}; "
          + (f"loss curve {result.plot}" if result.plot else "no plot (matplotlib missing)"))
    return 0


def _distill(args: argparse.Namespace) -> int:
    from kbqa.adapters.card import write_training_card
    from kbqa.adapters.distill import (TEACHER_FILE, distillation_examples, teacher_answers)
    from kbqa.adapters.loading import read_adapter_config
    from kbqa.adapters.train import TrainOptions, cmrc_examples, options_from_adapter, train_lora
    from kbqa.errors import AdapterError

    recorded = read_adapter_config(args.teacher_adapter, "distillation").base_model_name_or_path
    teacher_spec = args.teacher_model or recorded
    if not teacher_spec:
        raise AdapterError(f"{args.teacher_adapter} does not name its base model; give "
                           "--teacher-model")
    prompts = [e.prompt for e in cmrc_examples(args.cmrc, seed=args.seed)]
    prompts = prompts[args.skip:args.skip + args.examples]
    if not prompts:
        raise AdapterError(f"no prompts left in {args.cmrc} after skipping {args.skip}")
    args.out.mkdir(parents=True, exist_ok=True)
    answers = teacher_answers(_model_folder(teacher_spec), [args.teacher_adapter], prompts,
                              max_new_tokens=args.max_new_tokens,
                              cache=args.out / TEACHER_FILE)
    examples = distillation_examples(answers)
    options = TrainOptions(rank=args.rank, alpha=args.alpha,
                           targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
                           steps=args.steps, learning_rate=args.lr, max_length=args.max_length,
                           save_every=max(args.steps, 1), seed=args.seed)
    if args.start_from:
        options = options_from_adapter(args.start_from, options)
    result = train_lora(_model_folder(args.model), examples, args.out, options,
                        base_name=_portable_name(args.model), start_from=args.start_from)
    start = (f"starting from the LoRA in `{args.start_from}`" if args.start_from
             else "starting from a fresh LoRA")
    data = (f"`--cmrc {args.cmrc}`: {len(prompts)} questions (after skipping {args.skip}, order "
            f"seed {args.seed}), each with one window of its passage, in kbqa's prompt template. "
            f"No gold answer is used as a target: the teacher, `{teacher_spec}` with the adapter "
            f"`{args.teacher_adapter}`, answered each one greedily ({TEACHER_FILE}); "
            f"{len(examples)} non-empty answers are the targets. Training ran on the target "
            f"{start}.")
    write_training_card(args.out, base=_portable_name(args.model) or Path(args.model).name,
                        data=data, options=options, result=result,
                        command=getattr(args, "command_line", ["kbqa", "adapters", "distill"]),
                        made_by="distilled by `kbqa adapters distill` from a teacher's answers")
    tail = result.losses[-10:]
    print(f"teacher answers: {len(examples)} of {len(prompts)} non-empty; {result.steps} steps "
          f"in {result.seconds:.0f}s; mean loss of the last {len(tail)} steps "
          f"{sum(tail) / max(1, len(tail)):.3f}; adapter {args.out}")
    return 0


def _import_ptuning(args: argparse.Namespace) -> int:
    from kbqa.adapters.prefix import import_chatglm_ptuning

    model = _model_folder(args.model)
    out = import_chatglm_ptuning(args.checkpoint, model, args.out, _portable_name(args.model))
    config = json.loads((out / "ptuning_import.json").read_text(encoding="utf-8"))
    print(f"imported {config['pre_seq_len']} virtual tokens × {config['num_layers']} layers × "
          f"{config['kv_heads']} key/value heads × {config['head_dim']} "
          f"({'projection folded' if config['prefix_projection_folded'] else 'no projection'}) "
          f"→ {out} (every key and shape checked)")
    return 0
