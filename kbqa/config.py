"""One `Settings` object, layered: defaults < config file < KBQA_* environment variables < CLI flags.

The config file is TOML at `<home>/config.toml` (or the path given with
--config / KBQA_CONFIG). Unknown keys and bad values are errors, not silently
ignored, because a typo in a setting should never quietly change answers.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kbqa.errors import ConfigError
from kbqa.llm.loading import default_home

if TYPE_CHECKING:
    from kbqa.vector_backends import VectorStoreConfig

ENV_PREFIX = "KBQA_"


class Settings(BaseModel):
    """Every knob kbqa reads; the field docs are what `kbqa --help` and the UI show."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    home: Path = Field(default_factory=default_home,
                       description="data directory: knowledge bases, model cache, config")
    llm: str = Field("embedded", description="'embedded', 'embedded:NAME', a local model folder, or "
                     "'openai:BASE_URL#MODEL' for an OpenAI-compatible server (see kbqa.llm.remote)")
    llm_api_key: str | None = Field(None, description="API key sent to a remote 'openai:' LLM")
    llm_dtype: Literal["auto", "bfloat16", "float32", "float16", "int8", "int8-weights"] = Field(
        "auto", description="weights of a local LLM; auto = bfloat16 where the CPU multiplies it "
                            "natively (AVX512-BF16, AMX), else float32 (emulated bf16 prefills "
                            "slower; docs/benchmarks.md); int8 = dynamic quantization on CPU "
                                "(faster, no LoRA adapters; see README); int8-weights = int8 "
                                "weights with bf16 activations on CPU (faster decoding, answers "
                                "close to bf16, no LoRA adapters)")
    adapters: list[Path] = Field(default_factory=list, description="LoRA adapter folders (peft)")
    embedder: str = Field("embedded", description="'embedded' or a sentence-transformers folder")
    kb: str = Field("default", description="knowledge base name")
    top_k: int = Field(3, ge=1, le=50, description="passages put into the prompt")
    retrieval_mode: Literal["dense", "bm25", "hybrid"] = "bm25"
    score_threshold: float | None = Field(
        None, ge=-1.0, le=1.0,
        description="drop passages whose dense cosine similarity is below this (higher = closer)")
    min_coverage: float | None = Field(
        # = retrieval.DEFAULT_MIN_COVERAGE (calibrated in docs/benchmarks.md §Retrieval tuning)
        0.35, ge=0.0, le=1.0,
        description="drop passages holding less than this IDF-weighted share of the question's "
                    "terms; when none is left the answer is a refusal (see retrieval.py)")
    index_type: Literal["auto", "flat", "ivf", "hnsw"] = Field(
        "auto", description="FAISS index: auto = exact flat below 100k chunks, IVF above "
                            "(see vector_index.py); applied at the knowledge base's next write; "
                            "Milvus picks its own")
    vector_store: Literal["faiss", "milvus"] = Field(
        "faiss", description="where NEW knowledge bases keep their vectors: faiss (files in the "
                             "knowledge base folder) or milvus (needs kbqa[milvus]); an existing "
                             "one keeps the store it was created with")
    milvus_uri: str | None = Field(
        None, description="Milvus for new knowledge bases: unset = Milvus Lite inside the "
                          "knowledge base folder (one process at a time), or a server/cluster "
                          "such as 'http://HOST:19530'")
    milvus_token: str | None = Field(
        None, description="token ('user:password' or an API key) for a Milvus server; never "
                          "stored with the knowledge base")
    mmr: float | None = Field(
        None, ge=0.0, le=1.0,
        description="maximal marginal relevance balance for the top-k passages (1 = relevance "
                    "only, lower = more diverse); unset = plain ranking")
    rerank: str | None = Field(
        None, description="a local cross-encoder folder (sentence-transformers CrossEncoder, e.g. "
                          "bge-reranker-base) to reorder retrieved passages; none ships with kbqa")
    chunk_size: int = Field(300, ge=50, le=4000)
    chunk_overlap: int = Field(50, ge=0, le=2000)
    max_new_tokens: int = Field(256, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, ge=0.5, le=2.0)
    history_turns: int = Field(3, ge=0, le=20, description="chat turns kept in the prompt")
    prompt_template: str | None = Field(None, description="custom template with {context} {question}")
    max_file_mb: int = Field(200, ge=1, le=10_000)
    variants: dict[str, list[Path]] = Field(
        default_factory=dict,
        description="`kbqa serve` model names → LoRA adapter folders ('plain' is always served)")
    serve_host: str = Field("127.0.0.1", description="address `kbqa serve` listens on")
    serve_port: int = Field(8000, ge=1, le=65535)
    serve_concurrency: int = Field(
        1, ge=1, le=256, description="generations run at once (1 for a local model: it is shared)")
    serve_queue: int = Field(
        8, ge=0, le=10_000, description="generation requests that may wait; beyond: 503 + Retry-After")
    api_keys_file: Path | None = Field(
        None, description="hashed API keys for `kbqa serve` (default HOME/api_keys.json)")

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, value: int, info: Any) -> int:
        size = info.data.get("chunk_size", 300)
        if value >= size:
            raise ValueError(f"chunk_overlap ({value}) must be smaller than chunk_size ({size})")
        return value

    @property
    def vector_store_config(self) -> VectorStoreConfig:
        """The vector store settings in the form KnowledgeBase takes them."""
        from kbqa.vector_backends import VectorStoreConfig

        return VectorStoreConfig(self.vector_store, self.milvus_uri, self.milvus_token)

    @property
    def config_path(self) -> Path:
        return self.home / "config.toml"

    @property
    def keys_path(self) -> Path:
        return self.api_keys_file or self.home / "api_keys.json"

    @property
    def kb_root(self) -> Path:
        return self.home / "kb"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    """KBQA_TOP_K=5 → {'top_k': '5'}; pydantic converts the strings; lists are comma-separated."""
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if name == "adapters":
            values[name] = [part for part in raw.split(",") if part]
        elif name == "variants":  # JSON: {"name": ["adapter/dir", ...]}
            try:
                values[name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{ENV_PREFIX}VARIANTS is not JSON: {exc}") from exc
        elif (name in {"score_threshold", "min_coverage", "mmr", "rerank", "milvus_uri",
                       "milvus_token"}
              and raw.strip().lower() in {"", "none"}):
            values[name] = None
        else:
            values[name] = raw
    return values


def validate_settings(values: dict[str, Any]) -> Settings:
    """Settings from raw values, or ConfigError naming each invalid key and why."""
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from exc


def load_settings(overrides: dict[str, Any] | None = None, *, config_file: Path | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """Resolve the layers; `overrides` are CLI flags (None values mean 'not given')."""
    environ = dict(os.environ if environ is None else environ)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    env_values = _from_env(environ)
    home = Path(given.get("home") or env_values.get("home") or default_home()).expanduser()
    path = config_file or (Path(environ["KBQA_CONFIG"]) if environ.get("KBQA_CONFIG") else None)
    path = path or home / "config.toml"
    file_values = _read_toml(path) if path.is_file() else {}
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")
    return validate_settings({**file_values, **env_values, **given, "home": home})


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    """Write the non-default settings as TOML, atomically (temp file + fsync + rename)."""
    path = path or settings.config_path
    data = settings.model_dump(mode="json", exclude_defaults=True, exclude={"home"})
    data = {k: v for k, v in data.items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, suffix=".tmp", delete=False) as out:
        tomli_w.dump(data, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(out.name, path)
    return path
