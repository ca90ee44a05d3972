"""kbqa: offline, Chinese-first knowledge-base question answering."""

import os as _os

# Never reach a model hub or a telemetry host: kbqa runs offline by design.
for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "SCARF_NO_ANALYTICS": "true",
    "DO_NOT_TRACK": "1",
}.items():
    _os.environ.setdefault(_name, _value)

__version__ = "0.1.0"
