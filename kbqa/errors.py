"""The exceptions kbqa raises on purpose: each carries a message meant for the user."""


class KbqaError(Exception):
    """Base class: anything the CLI may print as a one-line error instead of a traceback."""


class ConfigError(KbqaError):
    """A setting has a bad value or the config file cannot be read."""


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
