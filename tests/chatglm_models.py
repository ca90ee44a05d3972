"""Tiny random ChatGLM-6B (v1) and ChatGLM2-6B models built from their real modeling code.

The torch code comes from the `modelscope` wheel (a test-only dependency, never imported by
kbqa nor here: its package __init__ pulls its whole framework). Its files are read as text and
written into a model folder the way a real ChatGLM checkout holds them (modeling_chatglm.py,
configuration_chatglm.py, tokenization_chatglm.py), with modelscope's own imports pointed at
`modelscope_stubs.py` (registry, logger, constants, base classes: see STUBS) — nothing else
is changed. transformers then loads the folder with trust_remote_code, as it loads a real one.
The tokenizers are the real ones too, over a small sentencepiece model trained here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import torch

# What modelscope's modeling files import from modelscope itself, and what they get instead.
STUBS = '''"""Stand-ins for the modelscope modules ChatGLM's modeling files import (tests only)."""
import logging as _logging


class _Registry:
    def register_module(self, *args, **kwargs):
        return lambda cls: cls


MODELS = _Registry()


class Models:
    chatglm_6b = "chatglm6b"
    chatglm2_6b = "chatglm2-6b"


class Tasks:
    chat = "chat"


class OutputKeys:
    RESPONSE = "response"
    HISTORY = "history"


class Model:
    def __init__(self, *args, **kwargs):
        pass


class TorchModel(Model):
    pass


class logging:
    @staticmethod
    def get_logger():
        return _logging.getLogger("chatglm")
'''

# (source file in the wheel, name in the model folder) per version
FILES = {
    "chatglm": {"chatglm/text_generation.py": "modeling_chatglm.py",
                "chatglm/configuration.py": "configuration_chatglm.py",
                "chatglm/tokenization.py": "tokenization_chatglm.py",
                "chatglm/quantization.py": "quantization.py"},
    "chatglm2": {"chatglm2/text_generation.py": "modeling_chatglm.py",
                 "chatglm2/configuration.py": "configuration_chatglm.py",
                 "chatglm2/tokenization.py": "tokenization_chatglm.py",
                "chatglm2/quantization.py": "quantization.py"},
}
CLASSES = {"chatglm": ("ChatGLMConfig", "ChatGLMForConditionalGeneration", "ChatGLMTokenizer"),
           "chatglm2": ("ChatGLM2Config", "ChatGLM2ForConditionalGeneration",
                        "ChatGLM2Tokenizer")}
_IMPORT = re.compile(r"^from (?:modelscope(?:\.[\w.]+)?|\.\.\.) import (?P<names>.+)$", re.MULTILINE)
_LOCAL = {"from .configuration import": "from .configuration_chatglm import",
          "from .tokenization import": "from .tokenization_chatglm import",
          "from modelscope.utils import logger as logging":
              "from modelscope.utils import logging"}


def _modelscope_dir() -> Path:
    """modelscope/models/nlp of the installed wheel, found without importing modelscope."""
    spec = importlib.util.find_spec("modelscope")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the tests need the modelscope wheel (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "nlp"


def real_sources(version: str) -> dict[str, str]:
    """The version's modeling, configuration and tokenization files, imports re-pointed."""
    out = {"modelscope_stubs.py": STUBS}
    for source, name in FILES[version].items():
        text = (_modelscope_dir() / source).read_text(encoding="utf-8")
        for old, new in _LOCAL.items():
            text = text.replace(old, new)
        text = _IMPORT.sub(lambda m: f"from .modelscope_stubs import {m['names']}", text)
        left = [line for line in text.splitlines()
                if re.match(r"\s*(from|import) modelscope", line)]
        if left:
            raise RuntimeError(f"{source}: modelscope imports left to stub: {left}")
        out[name] = text
    return out


def _sentencepiece(folder: Path, name: str, user_symbols: list[str], vocab: int) -> Path:
    """A small sentencepiece model over Chinese and English text (the real ones are not offline)."""
    import sentencepiece as spm

    lines = ["问：北京是中国的首都吗？答：是的，北京是中华人民共和国的首都。",
             "长城是中国古代的军事防御工程，全长两万多公里。",
             "The quick brown fox jumps over the lazy dog. Count: one, two, three, four.",
             "知识库问答系统从文档中检索段落，再由语言模型生成答案。",
             "上海位于长江入海口，是中国最大的城市之一。人口超过两千万。"] * 20
    corpus = folder / f"{name}.txt"
    corpus.write_text("\n".join(lines), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / name), vocab_size=vocab,
        model_type="bpe", character_coverage=1.0, byte_fallback=True,
        user_defined_symbols=user_symbols, minloglevel=2)
    corpus.unlink()
    (folder / f"{name}.vocab").unlink()
    return folder / f"{name}.model"


V1_SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "<unused_0>", "<sop>", "<eop>", "<ENC>",
               "<dBLOCK>", "<n>", "<|tab|>"] + [f"<|blank_{i}|>" for i in range(2, 81)]


def _write_tokenizer(folder: Path, version: str) -> dict[str, int]:
    """The real tokenizer's files; returns the special token ids the config must agree on."""
    if version == "chatglm":
        _sentencepiece(folder, "ice_text", V1_SPECIALS, 600)
        config = {"tokenizer_class": "ChatGLMTokenizer", "num_image_tokens": 0,
                  "remove_space": False, "do_lower_case": False,
                  "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]}}
    else:
        _sentencepiece(folder, "tokenizer", [], 500)
        config = {"tokenizer_class": "ChatGLMTokenizer", "remove_space": False,
                  "do_lower_case": False,
                  "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLM2Tokenizer", None]}}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    import sentencepiece as spm

    if version == "chatglm":
        sp = spm.SentencePieceProcessor(model_file=str(folder / "ice_text.model"))
        ids = {t: sp.piece_to_id(t) for t in ("[MASK]", "[gMASK]", "<sop>", "<eop>")}
        return {"vocab": sp.get_piece_size(), "mask_token_id": ids["[MASK]"],
                "gmask_token_id": ids["[gMASK]"], "bos_token_id": ids["<sop>"],
                "eos_token_id": ids["<eop>"]}
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    return {"vocab": sp.get_piece_size() + 5, "eos_token_id": sp.eos_id()}


def config_for(version: str, ids: dict[str, int], hidden: int = 64, layers: int = 2,
               heads: int = 4, groups: int = 2, ffn: int | None = None) -> dict:
    """config.json of a tiny model, with the keys a real ChatGLM folder's config has (ffn: the
    MLP width, by default 4·hidden for v1 and 2·hidden for v2's SwiGLU)."""
    config_class, model_class, _ = CLASSES[version]
    auto_map = {"AutoConfig": f"configuration_chatglm.{config_class}",
                "AutoModel": f"modeling_chatglm.{model_class}",
                "AutoModelForSeq2SeqLM": f"modeling_chatglm.{model_class}"}
    if version == "chatglm":  # THUDM/chatglm-6b registers no AutoModelForCausalLM
        return {"model_type": "chatglm", "architectures": ["ChatGLMModel"], "auto_map": auto_map,
                "vocab_size": ids["vocab"], "hidden_size": hidden, "num_layers": layers,
                "num_attention_heads": heads, "inner_hidden_size": ffn or 4 * hidden,
                "max_sequence_length": 256, "position_encoding_2d": True,
                "bos_token_id": ids["bos_token_id"], "eos_token_id": ids["eos_token_id"],
                "mask_token_id": ids["mask_token_id"], "gmask_token_id": ids["gmask_token_id"],
                "pad_token_id": 3, "use_cache": True, "layernorm_epsilon": 1e-5,
                "torch_dtype": "float32"}
    auto_map["AutoModelForCausalLM"] = f"modeling_chatglm.{model_class}"
    return {"model_type": "chatglm", "architectures": ["ChatGLMModel"], "auto_map": auto_map,
            "padded_vocab_size": ids["vocab"], "hidden_size": hidden, "num_layers": layers,
            "num_attention_heads": heads, "kv_channels": hidden // heads,
            "ffn_hidden_size": ffn or 2 * hidden, "seq_length": 256, "multi_query_attention": True,
            "multi_query_group_num": groups, "add_qkv_bias": True, "add_bias_linear": False,
            "rmsnorm": True, "post_layer_norm": True, "apply_query_key_layer_scaling": True,
            "attention_softmax_in_fp32": True, "fp32_residual_connection": False,
            "original_rope": True, "eos_token_id": ids["eos_token_id"], "pad_token_id": 0,
            "use_cache": True, "torch_dtype": "float32"}


def import_folder(folder: Path, name: str = "modeling_chatglm"):
    """A module of the folder's code, imported as a package (for tests that build by hand)."""
    package = f"_chatglm_real_{abs(hash(str(folder.resolve())))}"
    if package not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            package, folder / "__init__.py", submodule_search_locations=[str(folder)])
        (folder / "__init__.py").touch()
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{package}.{name}")


def legacy_config(config) -> None:
    """What transformers 5 took out of PretrainedConfig and ChatGLM2's constructor still reads."""
    for name, value in (("max_length", getattr(config, "seq_length", 2048)), ("use_cache", True)):
        if not hasattr(config, name):
            setattr(config, name, value)


def real_config(version: str, folder: Path, **fields) -> dict:
    """The real configuration class's dict (its defaults are the 6B model's) with `fields` set."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in real_sources(version).items():
        (folder / name).write_text(text, encoding="utf-8")
    configuration = import_folder(folder, "configuration_chatglm")
    return getattr(configuration, CLASSES[version][0])(**fields).to_dict()


def _construct(folder: Path, version: str, seed: int | None = None):
    """The real ForConditionalGeneration class of the folder's code, built from its config."""
    modeling = import_folder(folder)
    configuration = import_folder(folder, "configuration_chatglm")
    config_class, model_class, _ = CLASSES[version]
    model_config = getattr(configuration, config_class).from_pretrained(folder)
    model_config.name_or_path = str(folder)  # v1's constructor loads its tokenizer from there
    legacy_config(model_config)
    if seed is not None:
        torch.manual_seed(seed)
    return getattr(modeling, model_class)(model_config)


def save_chatglm(folder: Path, version: str, seed: int = 0, **sizes: int) -> Path:
    """A tiny model folder as a real one is laid out: config, safetensors weights, code, tokenizer."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in real_sources(version).items():
        (folder / name).write_text(text, encoding="utf-8")
    config = config_for(version, _write_tokenizer(folder, version), **sizes)
    (folder / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    model = _construct(folder, version, seed)
    for name, parameter in model.named_parameters():  # skip_init leaves memory as it was
        with torch.no_grad():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.02)
            elif "layernorm" in name or name.endswith("norm.weight"):
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, 0.08)
    from safetensors.torch import save_file

    state = {k: v.float().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def load_chatglm(folder: Path):
    """The folder's model, built by its own code, with its weights loaded strictly (float32)."""
    from safetensors.torch import load_file

    version = "chatglm2" if "ffn_hidden_size" in json.loads(
        (Path(folder) / "config.json").read_text()) else "chatglm"
    model = _construct(Path(folder), version)
    model.load_state_dict(load_file(str(Path(folder) / "model.safetensors")), strict=True)
    return model.float().eval()


def sample_ids(folder: Path, length: int = 12) -> torch.Tensor:
    """Prompt ids as each version's tokenizer frames them: v1 ends '[gMASK] <sop>', v2 starts
    '[gMASK] sop' (the forward pass of v1 finds its masks and 2D positions from them)."""
    config = json.loads((Path(folder) / "config.json").read_text())
    text = [20 + (7 * i) % 300 for i in range(length)]
    if "ffn_hidden_size" in config:
        vocab = config["padded_vocab_size"]
        return torch.tensor([[vocab - 4, vocab - 2, *text]])  # [gMASK], sop
    return torch.tensor([[*text, config["gmask_token_id"], config["bos_token_id"]]])
