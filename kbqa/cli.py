"""The `kbqa` command line: ingest documents, ask questions, chat, manage knowledge bases."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from kbqa.errors import KbqaError

if TYPE_CHECKING:  # imported on use, so `kbqa --help` stays fast
    from kbqa.config import Settings
    from kbqa.kb.results import IngestResult
    from kbqa.qa.answers import Answer
    from kbqa.service import KbqaService

DESCRIPTION = """\
kbqa — offline knowledge-base question answering (Chinese first).

Drop documents into a knowledge base, then ask questions: a local LLM answers
from the retrieved passages and cites its sources. Nothing leaves the machine.

examples:
  kbqa ingest knowledge/                 build/update the 'default' knowledge base
  kbqa ask "年假有几天？"                   answer with sources
  kbqa chat --kb handbook                interactive, multi-turn
  kbqa kb list                           knowledge bases and their sizes
  kbqa eval --questions Q.jsonl --docs D --variant plain --variant A=adapters/x --out OUT
  kbqa keys add alice --allow handbook   create an API key (printed once, stored hashed)
  kbqa serve --port 8000                 OpenAI-compatible HTTP API (see README: Serving)
"""


def _add_common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (override config file and KBQA_* variables)")
    group.add_argument("--home", type=Path, help="data directory (default: $KBQA_HOME or ~/.kbqa)")
    group.add_argument("--config", type=Path, help="config file (default: HOME/config.toml)")
    group.add_argument("--kb", help="knowledge base name (default: 'default')")
    group.add_argument("-v", "--verbose", action="store_true", help="show timings and library logs")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and retrieval")
    group.add_argument("--llm", help="'embedded' (default), 'embedded:NAME' or a local model folder")
    group.add_argument("--adapter", dest="adapters", action="append", type=Path, metavar="DIR",
                       help="LoRA adapter folder (peft format); repeat for several")
    group.add_argument("--top-k", type=int, help="passages given to the model (default 3)")
    group.add_argument("--mode", dest="retrieval_mode", choices=["dense", "bm25", "hybrid"],
                       help="retrieval method (default bm25, the best on CMRC 2018)")
    group.add_argument("--threshold", dest="score_threshold", type=float,
                       help="drop passages with dense cosine similarity below this")
    group.add_argument("--min-coverage", type=float,
                       help="drop passages with less than this share of the question's terms "
                            "(0..1, default 0.35; 0 keeps all)")
    group.add_argument("--max-new-tokens", type=int, help="answer length limit in tokens")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kbqa", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="kbqa 0.1.0")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ingest = commands.add_parser("ingest", help="add or update files in a knowledge base",
                                 description="Parse, split, embed and index files. Unchanged files "
                                 "are skipped; changed ones are replaced; a file that fails is "
                                 "reported and the rest are still ingested.")
    ingest.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
    ingest.add_argument("--sync", action="store_true",
                        help="also remove documents whose files were deleted from these folders")
    store = ingest.add_argument_group(
        "vector store of a new knowledge base (an existing one keeps its own)")
    store.add_argument("--vector-store", choices=["faiss", "milvus"],
                       help="faiss (default: index files in the knowledge base folder) or milvus "
                            "(needs: pip install \"kbqa[milvus]\")")
    store.add_argument("--milvus-uri", metavar="URI",
                       help="a Milvus server such as http://HOST:19530; default: Milvus Lite "
                            "inside the knowledge base folder (one process at a time)")
    _add_common(ingest)

    ask = commands.add_parser("ask", help="answer one question with sources")
    ask.add_argument("question", help="the question, in Chinese or English")
    _add_common(ask)
    _add_model_options(ask)

    chat = commands.add_parser("chat", help="interactive multi-turn questions (empty line exits)")
    _add_common(chat)
    _add_model_options(chat)

    kb = commands.add_parser("kb", help="list, show or remove knowledge bases and documents")
    kb_commands = kb.add_subparsers(dest="kb_command", metavar="ACTION", required=True)
    kb_list = kb_commands.add_parser("list", help="all knowledge bases")
    _add_common(kb_list)
    kb_show = kb_commands.add_parser("show", help="documents and vector store of one knowledge base")
    _add_common(kb_show)
    kb_remove = kb_commands.add_parser("remove", help="remove a document, or a whole knowledge base")
    kb_remove.add_argument("document", nargs="?", help="document path as listed by `kb show`; "
                           "omit to delete the whole knowledge base")
    kb_remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _add_common(kb_remove)

    serve = commands.add_parser("serve", help="run the OpenAI-compatible HTTP API",
                                description="POST /v1/chat/completions (extra field 'kb' picks the "
                                "knowledge base), GET /v1/models, /v1/kbs/... and GET /health. "
                                "Every request but /health needs an API key: see `kbqa keys`.")
    serve.add_argument("--host", dest="serve_host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", dest="serve_port", type=int, help="port (default 8000)")
    _add_common(serve)
    _add_model_options(serve)

    keys = commands.add_parser("keys", help="API keys of `kbqa serve`: add, list, remove")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    key_add = key_commands.add_parser("add", help="create a key; it is printed once, stored hashed")
    key_add.add_argument("name", help="who or what uses the key")
    key_add.add_argument("--allow", action="append", required=True, metavar="KB",
                         help="knowledge base the key may use; repeat; '*' for all")
    _add_common(key_add)
    key_list = key_commands.add_parser("list", help="key names and their knowledge bases")
    _add_common(key_list)
    key_remove = key_commands.add_parser("remove", help="revoke a key")
    key_remove.add_argument("name")
    _add_common(key_remove)

    from kbqa.evaluation.cli import add_eval_parser

    add_eval_parser(commands, _add_common, _add_model_options)
    from kbqa.adapters.cli import add_adapters_parser

    add_adapters_parser(commands)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    from kbqa.config import load_settings

    keys = ("home", "kb", "llm", "adapters", "top_k", "retrieval_mode", "score_threshold",
            "min_coverage", "max_new_tokens", "serve_host", "serve_port", "vector_store",
            "milvus_uri")
    overrides = {key: getattr(args, key, None) for key in keys}
    return load_settings(overrides, config_file=args.config)


def _service(args: argparse.Namespace) -> KbqaService:
    from kbqa.service import KbqaService

    return KbqaService(_settings(args))


def _print_sources(answer: Answer) -> None:
    from kbqa.qa.snippets import aligned

    if not answer.sources:
        print("\n来源 / sources: （无相关段落 / no passage above the threshold）")
        return
    print("\n来源 / sources:")
    for number, source in enumerate(answer.sources, start=1):
        score = f"{source.score:.3f}" if isinstance(source.score, float) else "-"
        print(f"  [{number}] {source.location()}  (score {score})")
        for line in aligned(source.snippet):  # a table's rows with their columns lined up
            print(f"      {line}")


def _answer(service: KbqaService, question: str, history: list[tuple[str, str]],
            verbose: bool) -> Answer:
    """Stream the answer to stdout, then its sources (and timings with -v)."""
    from kbqa.qa.answers import Answer

    answer = None
    for kind, value in service.stream(question, history=history):
        if kind == "token" and isinstance(value, str):
            print(value, end="", flush=True)
        elif kind == "done" and isinstance(value, Answer):
            answer = value
    print()
    if answer is None:  # pragma: no cover - stream always ends with 'done'
        raise KbqaError("the answer stream ended without an answer")
    if answer.grounding is not None and answer.grounding.action in ("span", "refused"):
        # the streamed draft is not what the passages say (kbqa.qa.grounding): say what stands
        print(f"（资料中找不到上面答案的依据 / not supported by the sources → {answer.text}）")
    _print_sources(answer)
    if verbose:
        _print_timings(answer)
    return answer


def _print_timings(answer: Answer) -> None:
    """Where the time went, to stderr: stages, then token counts and decode speed if known."""
    order = ("retrieve", "prompt", "prefill", "decode", "first_token", "total")
    stages = [f"{name} {answer.timings[name]:.2f}s" for name in order if name in answer.timings]
    print("timings: " + ", ".join(stages), file=sys.stderr)
    usage, rate = answer.usage, answer.decode_rate()
    if usage:
        speed = f", decode {rate:.1f} tok/s" if rate else ""
        print(f"tokens: prompt {usage.get('prompt_tokens')}, answer {usage.get('completion_tokens')}"
              f" (finish: {answer.finish_reason}){speed}", file=sys.stderr)


def _cmd_ingest(args: argparse.Namespace) -> int:
    service = _service(args)
    kb = service.knowledge_base(create=True)
    results = kb.ingest(args.paths, progress=True)
    for folder in args.paths if args.sync else []:
        if folder.is_dir():
            results.extend(kb.sync(folder))
    failed = 0
    for result in results:
        detail = f"{result.chunks} chunks" if result.status != "failed" else result.error
        print(f"{result.status:>8}  {result.path}  {detail}")
        failed += result.status == "failed"
    counts = {s: sum(r.status == s for r in results) for s in dict.fromkeys(r.status for r in results)}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no supported files found"
    print(f"knowledge base '{kb.name}': {summary}; {kb.chunk_count} chunks in total")
    _note_pdf_layout(results)
    return 1 if failed or not results else 0


def _note_pdf_layout(results: list[IngestResult]) -> None:
    """Tell whoever ingested PDFs on the base install what the pdf extra would add."""
    from kbqa.ingest.pdf import layout_hint

    read = any(r.path.suffix.lower() == ".pdf" and r.status in ("added", "updated") for r in results)
    if read and (hint := layout_hint()):
        print(f"note: {hint}", file=sys.stderr)


def _cmd_ask(args: argparse.Namespace) -> int:
    _answer(_service(args), args.question, [], args.verbose)
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    service = _service(args)
    service.knowledge_base()  # fail before the first prompt if the KB is missing
    history: list[tuple[str, str]] = []
    print("kbqa chat — empty line or Ctrl-D to quit")
    while True:
        try:
            question = input("\n问> ").strip()
        except EOFError:
            break
        if not question:
            break
        answer = _answer(service, question, history, args.verbose)
        history = [*history, (question, answer.text)][-service.settings.answer.history_turns or None:]
    return 0


def _cmd_kb(args: argparse.Namespace) -> int:
    from kbqa.kb import folders

    service = _service(args)
    root = service.settings.kb_root
    if args.kb_command == "list":
        names = folders.list_names(root)
        if not names:
            print(f"no knowledge bases under {root}")
        for name in names:
            kb = service.knowledge_base(name)
            print(f"{name}\t{len(kb.documents())} documents\t{kb.chunk_count} chunks\t"
                  f"{kb.vector_store}")
        return 0
    kb = service.knowledge_base()
    if args.kb_command == "show":
        for record in kb.documents():
            print(f"{record.chunks:>6} chunks  {record.updated_at}  {record.source}")
        print(f"{len(kb.documents())} documents, {kb.chunk_count} chunks")
        print(f"vector store: {kb.vector_store}")
        return 0
    if args.document:  # through the service: an uploaded copy of the file goes too
        service.remove_document(kb.name, str(args.document))
        print(f"removed {args.document} from '{kb.name}'")
        return 0
    if not args.yes and input(f"delete knowledge base '{kb.name}'? [y/N] ").lower() != "y":
        print("kept")
        return 1
    service.delete_knowledge_base(kb.name)
    print(f"deleted knowledge base '{kb.name}'")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from kbqa.evaluation.cli import run_eval_command

    return run_eval_command(args, _settings(args))


def _cmd_adapters(args: argparse.Namespace) -> int:
    from kbqa.adapters.cli import run_adapters_command

    return run_adapters_command(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from kbqa.server.app import serve

    serve(_settings(args))
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    from kbqa.server import auth

    path = _settings(args).keys_path
    if args.keys_command == "add":
        key = auth.add_key(path, args.name, args.allow)
        print(f"API key for {args.name} (shown only now; {path} keeps its SHA-256):\n{key}")
    elif args.keys_command == "remove":
        auth.remove_key(path, args.name)
        print(f"removed API key {args.name}")
    else:
        for stored in auth.list_keys(path):
            print(f"{stored.name}\t{','.join(stored.kbs)}\t{stored.created}")
    return 0


COMMANDS = {"ingest": _cmd_ingest, "ask": _cmd_ask, "chat": _cmd_chat, "kb": _cmd_kb,
            "eval": _cmd_eval, "adapters": _cmd_adapters, "serve": _cmd_serve, "keys": _cmd_keys}


def _quiet_libraries() -> None:
    """Library progress bars and warnings drown the answer; -v brings them back."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.command_line = ["kbqa", *(sys.argv[1:] if argv is None else argv)]  # for model cards
    if not args.verbose:
        _quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except KbqaError as exc:
        print(f"kbqa: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
