"""The exceptions kbqa raises on purpose: each carries a message meant for the user."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


class KbqaError(Exception):
    """Base class: anything the CLI may print as a one-line error instead of a traceback."""


@dataclass(frozen=True)
class SettingProblem:
    """One invalid setting, told apart so a form can show it under its field in any language."""

    name: str  # the setting's short name ('top_k'); '' when no one setting is at fault
    # pydantic's error type ('greater_than_equal', 'literal_error', ...) or kbqa's own
    # ('template', 'not_adapter', 'missing_path')
    kind: str
    message: str  # in English, as the CLI prints it
    context: dict[str, Any] = field(default_factory=dict)  # e.g. {'ge': 1}, {'path': '...'}


class ConfigError(KbqaError):
    """A setting has a bad value or the config file cannot be read."""

    def __init__(self, message: str, problems: Sequence[SettingProblem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class ModelError(KbqaError):
    """A model folder or embedded model package is missing, incomplete or unusable."""


class UnsupportedFormatError(KbqaError):
    """A file's extension is not one kbqa can parse."""


class LoaderError(KbqaError):
    """A file of a supported format could not be read or yielded no text."""


class KnowledgeBaseError(KbqaError):
    """A knowledge base is missing, already exists, is locked or its files are inconsistent."""


class AdapterError(KbqaError):
    """A LoRA adapter does not fit the model it is applied to, or changed nothing."""


class KnowledgeBaseBusy(KnowledgeBaseError):
    """Another writer holds the knowledge base's lock (the server answers it 409, not 500)."""


class KnowledgeBaseMissing(KnowledgeBaseError):
    """The knowledge base does not exist, or was deleted since it was opened (the server: 404)."""


class KnowledgeBaseReplaced(KnowledgeBaseError):
    """The base was deleted and re-created since it was opened; a retry succeeds (the server: 409)."""
