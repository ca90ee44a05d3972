"""Prefix tuning (P-tuning v2) as a second adapter kind, on tiny real models.

A tiny Qwen2 with the embedded model's real tokenizer is trained for a few steps; the folder must
load strictly, change what LocalLLM generates, switch with LoRA and plain on one base model, and
be refused wherever a prefix has no meaning (transplant, merge, fuse, stacking). ChatGLM's
official P-tuning v2 checkpoints are built by the real ChatGLM-6B / ChatGLM2 modeling code
(tests/chatglm_models.py) with pre_seq_len set, converted, and compared key by key with what
the model's own get_prompt() feeds its layers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from kbqa.adapters import load_adapters
from kbqa.adapters.prefix import PREFIX_KEY, import_chatglm_ptuning, load_prefix_adapter
from kbqa.adapters.train import Example, TrainOptions, train_lora
from kbqa.adapters.variants import Variant, VariantModel
from kbqa.errors import AdapterError
from kbqa.llm.local import LocalLLM
from tests.chatglm_models import (
    CLASSES,
    import_folder,
    legacy_config,
    load_chatglm,
    save_chatglm,
)
from tests.fusion_models import save_adapter

LAYERS, KV_HEADS, HEAD_DIM, TOKENS = 2, 2, 16, 4
PROMPTS = ["根据资料回答问题。资料：长城是中国古代的军事防御工程，全长两万多公里。问题：长城有多长？",
           "根据资料回答问题。资料：长城是中国古代的军事防御工程，全长两万多公里。问题：长城是什么？"]
EXAMPLES = [Example("资料：北京是中国的首都。问题：中国的首都是哪里？", "北京"),
            Example("资料：上海位于长江入海口。问题：上海在哪里？", "长江入海口")]


def save_tiny_qwen(folder: Path, tokenizer_folder: Path, layers: int = LAYERS,
                   seed: int = 3) -> Path:
    """A random Qwen2 (4 query heads, 2 key/value heads of 16) with a real Qwen tokenizer."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    torch.manual_seed(seed)
    config = Qwen2Config(hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=KV_HEADS, intermediate_size=128,
                         vocab_size=len(tokenizer), max_position_embeddings=512,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def qwen(tmp_path_factory, default_llm_folder: Path) -> Path:
    return save_tiny_qwen(tmp_path_factory.mktemp("qwen") / "tiny-qwen2", default_llm_folder)


@pytest.fixture(scope="module")
def prefix(qwen: Path, tmp_path_factory) -> Path:
    """A prefix trained for three steps with kbqa's trainer (answer-token loss), from peft's
    random start: far from any text, so it changes the tiny model's answers for sure."""
    out = tmp_path_factory.mktemp("prefix") / "tiny-prefix"
    train_lora(qwen, EXAMPLES, out, TrainOptions(kind="prefix", virtual_tokens=TOKENS, steps=3,
                                                 learning_rate=1e-2, max_length=64,
                                                 save_every=3, prefix_init="random"),
               progress=False, base_name=str(qwen))
    return out


@pytest.fixture(scope="module")
def lora(qwen: Path, tmp_path_factory) -> Path:
    return save_adapter(qwen, tmp_path_factory.mktemp("lora") / "tiny-lora",
                        targets=["q_proj", "v_proj"])


def _llm(folder: Path) -> LocalLLM:
    return LocalLLM.from_folder(folder, dtype="float32", max_new_tokens=6)


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return model(input_ids=ids).logits.float()


def _reference_answers(llm: LocalLLM, model) -> list[str]:
    """Greedy answers from `model.generate` with no cache handed in (peft puts the prefix in)."""
    answers = []
    for prompt in PROMPTS:
        ids = llm.tokenizer(llm.render(prompt), return_tensors="pt",
                            add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=6, do_sample=False, temperature=None,
                                 top_p=None, top_k=None)
        answers.append(llm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
                       .strip())
    return answers


def test_trained_prefix_is_a_peft_folder_with_the_models_geometry(prefix: Path, qwen: Path):
    config = json.loads((prefix / "adapter_config.json").read_text())
    assert config["peft_type"] == "PREFIX_TUNING"
    assert config["base_model_name_or_path"] == str(qwen)
    assert (config["num_layers"], config["num_attention_heads"], config["token_dim"]) == (
        LAYERS, KV_HEADS, KV_HEADS * HEAD_DIM)
    weights = load_file(str(prefix / "adapter_model.safetensors"))
    assert set(weights) == {PREFIX_KEY}
    assert weights[PREFIX_KEY].shape == (TOKENS, LAYERS * 2 * KV_HEADS * HEAD_DIM)
    assert len(json.loads((prefix / "losses.json").read_text())) == 3


def test_text_init_is_exactly_the_model_reading_those_tokens_first(qwen: Path):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from kbqa.adapters.prefix import geometry_for, prefix_config
    from kbqa.adapters.train import init_prefix_from_tokens

    model = AutoModelForCausalLM.from_pretrained(qwen)
    peft_model = get_peft_model(model, prefix_config(geometry_for(model.config), 5,
                                                     inference=False))
    init_prefix_from_tokens(peft_model, [11, 22, 33])  # cycled to five: 11 22 33 11 22
    ids = [40, 50, 60, 70]
    with torch.no_grad():
        prefixed = peft_model(input_ids=torch.tensor([ids])).logits
        with peft_model.disable_adapter():
            read_first = peft_model(input_ids=torch.tensor([[11, 22, 33, 11, 22, *ids]])).logits
    torch.testing.assert_close(prefixed, read_first[:, 5:], atol=1e-5, rtol=1e-5)


def test_prefix_projection_trains_and_saves_its_output_as_a_plain_prefix(qwen: Path,
                                                                          tmp_path: Path):
    out = tmp_path / "projected"
    train_lora(qwen, EXAMPLES, out, TrainOptions(kind="prefix", virtual_tokens=TOKENS, steps=2,
                                                 prefix_projection=True, learning_rate=1e-2,
                                                 max_length=64, save_every=1), progress=False)
    assert json.loads((out / "adapter_config.json").read_text())["prefix_projection"] is False
    resumed = train_lora(qwen, EXAMPLES, out, TrainOptions(
        kind="prefix", virtual_tokens=TOKENS, steps=3, prefix_projection=True,
        learning_rate=1e-2, max_length=64, save_every=1), resume=True, progress=False)
    assert len(resumed.losses) == 3  # two restored from the checkpoint (MLP included), one new
    model = _llm(qwen).model
    _, reports = load_adapters(model, [out])
    assert reports[0].modules == LAYERS and reports[0].delta_norm > 0


def test_prefix_changes_local_llm_output_and_plain_comes_back(prefix: Path, qwen: Path):
    variants = VariantModel(_llm(qwen))
    with variants.activate(Variant()) as llm:
        plain = [llm.invoke(p) for p in PROMPTS]
        plain_logits = _logits(llm.model, llm.tokenizer)
    chosen = Variant.of([prefix])
    cache = variants.base_llm.prefix_cache
    counted = (cache.reused_tokens, cache.computed_tokens)
    with variants.activate(chosen) as llm:
        assert llm.adapters == [str(prefix.resolve())]
        # twice: a second round would find the first round's prompts in LocalLLM's prefix cache
        adapted = [llm.invoke(p) for p in PROMPTS]
        again = [llm.invoke(p) for p in PROMPTS]
        reference = _reference_answers(llm, llm.model)
        adapted_logits = _logits(llm.model, llm.tokenizer)
    assert adapted == again == reference
    # no cache is handed to generate(): peft puts the prefix into an empty one only, so a reused
    # cache would lose it (and one peft replaced would be counted as reused while it stayed empty)
    assert (cache.reused_tokens, cache.computed_tokens) == counted
    assert adapted != plain
    assert (adapted_logits - plain_logits).abs().max() > 1e-2
    with variants.activate(Variant()) as llm:
        assert [llm.invoke(p) for p in PROMPTS] == plain
        assert torch.equal(_logits(llm.model, llm.tokenizer), plain_logits)  # same model, inputs
    check = variants.check_applied(chosen)
    assert check.applied and check.max_logit_diff > 1e-2 and check.modules == LAYERS


def test_switching_lora_prefix_plain_on_one_base_model(prefix: Path, lora: Path, qwen: Path):
    variants = VariantModel(_llm(qwen))
    tokenizer = variants.tokenizer
    lora_variant, prefix_variant = Variant.of([lora]), Variant.of([prefix])
    with variants.activate(Variant()) as llm:
        plain = _logits(llm.model, tokenizer)
    seen: dict[str, list[torch.Tensor]] = {"lora": [], "prefix": [], "plain": []}
    for name, variant in [("lora", lora_variant), ("prefix", prefix_variant), ("plain", Variant()),
                          ("prefix", prefix_variant), ("lora", lora_variant),
                          ("plain", Variant())]:
        with variants.activate(variant) as llm:
            seen[name].append(_logits(llm.model, tokenizer))
    for after in seen["plain"]:
        assert torch.equal(after, plain)  # the same module, the same input: bit for bit
    for name in ("lora", "prefix"):
        assert torch.equal(seen[name][0], seen[name][1])
        assert (seen[name][0] - plain).abs().max() > 1e-2
    assert (seen["lora"][0] - seen["prefix"][0]).abs().max() > 1e-2
    assert variants.prefix_models[prefix.resolve()].get_base_model() is variants.base_model
    assert variants.peft_model.get_base_model() is variants.base_model
    # the prefix variant runs without LoRA: the same as the prefix alone on a fresh model
    alone, _ = load_adapters(_llm(qwen).model, [prefix])
    torch.testing.assert_close(seen["prefix"][0], _logits(alone, tokenizer), atol=1e-5, rtol=0)
    assert variants.check_applied(prefix_variant).applied
    assert variants.check_applied(lora_variant).applied


def test_stacking_a_prefix_with_other_adapters_is_refused(prefix: Path, lora: Path, qwen: Path):
    variants = VariantModel(_llm(qwen))
    with pytest.raises(AdapterError, match="stacks the prefix-tuning adapter"):
        variants.prepare(Variant.of([lora, prefix]))
    assert not variants.lock.locked()
    with pytest.raises(AdapterError, match="cannot stack the prefix-tuning adapter"):
        load_adapters(_llm(qwen).model, [lora, prefix])


def _copy_prefix(prefix: Path, out: Path, weights: dict | None = None,
                 **config_changes) -> Path:
    out.mkdir()
    config = json.loads((prefix / "adapter_config.json").read_text())
    config.update(config_changes)
    (out / "adapter_config.json").write_text(json.dumps(config))
    tensors = load_file(str(prefix / "adapter_model.safetensors"))
    save_file(weights if weights is not None else tensors, str(out / "adapter_model.safetensors"))
    return out


def test_misfit_and_empty_prefixes_are_refused(prefix: Path, qwen: Path, tmp_path: Path,
                                               default_llm_folder: Path):
    tensor = load_file(str(prefix / "adapter_model.safetensors"))[PREFIX_KEY]
    cases = {
        "deeper": (_copy_prefix(prefix, tmp_path / "deeper"), "does not fit"),
        "short": (_copy_prefix(prefix, tmp_path / "short", {PREFIX_KEY: tensor[:, :-1].clone()}),
                  "has shape"),
        "rows": (_copy_prefix(prefix, tmp_path / "rows", num_virtual_tokens=TOKENS + 1),
                 "has shape"),
        "extra": (_copy_prefix(prefix, tmp_path / "extra", {PREFIX_KEY: tensor,
                                                          "extra": torch.ones(2)}),
                  "1 expected"),
        "zero": (_copy_prefix(prefix, tmp_path / "zero", {PREFIX_KEY: torch.zeros_like(tensor)}),
                 "is all zero"),
        "nan": (_copy_prefix(prefix, tmp_path / "nan",
                             {PREFIX_KEY: tensor.clone().fill_(float("nan"))}), "NaN"),
        "heads": (_copy_prefix(prefix, tmp_path / "heads", num_attention_heads=4, token_dim=64),
                  "does not fit"),
    }
    from transformers import AutoModelForCausalLM

    deeper = save_tiny_qwen(tmp_path / "deeper-qwen", default_llm_folder, layers=LAYERS + 1)
    models = {path: AutoModelForCausalLM.from_pretrained(path) for path in (qwen, deeper)}
    for name, (folder, message) in cases.items():  # every check comes before peft wraps it
        with pytest.raises(AdapterError, match=message):
            load_adapters(models[deeper if name == "deeper" else qwen], [folder])
    assert not any(hasattr(model, "peft_config") for model in models.values())


def test_prefix_is_refused_by_transplant_merge_and_fuse(prefix: Path, lora: Path, qwen: Path,
                                                        tmp_path: Path):
    from kbqa.adapters.fuse import fuse_adapters
    from kbqa.adapters.merge import merge_to_folder
    from kbqa.adapters.transplant import transplant

    with pytest.raises(AdapterError, match="cannot transplant .*prefix-tuning"):
        transplant(prefix, qwen, tmp_path / "t", donor=qwen)
    with pytest.raises(AdapterError, match="cannot merge .*cannot be merged into the weights"):
        merge_to_folder(qwen, [prefix], tmp_path / "m")
    with pytest.raises(AdapterError, match="cannot fuse .*prefix-tuning"):
        fuse_adapters(_llm(qwen).model, [lora, prefix], [0.5, 0.5])
    assert not (tmp_path / "t").exists() and not (tmp_path / "m").exists()


def test_verify_proves_a_prefix_changes_the_logits(prefix: Path, qwen: Path):
    from kbqa.adapters.verify import verify_adapter

    report = verify_adapter(qwen, None, [prefix])
    assert report.applied and report.max_logit_diff > 1e-2 and report.modules == LAYERS
    strict = verify_adapter(qwen, None, [prefix], tolerance=1e3)  # the logits decide
    assert not strict.applied and "not above 1000" in strict.reasons[0]


# --- ChatGLM's official P-tuning v2 format, on the real ChatGLM-6B and ChatGLM2 code ----------

GLM_LAYERS, GLM_HEADS, GLM_GROUPS, PRE_SEQ_LEN = 2, 4, 2, 5


@pytest.fixture(scope="module")
def glm_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("glm-prefix")
    return {"chatglm": save_chatglm(root / "chatglm-6b", "chatglm", layers=GLM_LAYERS,
                                    heads=GLM_HEADS),
            "chatglm2": save_chatglm(root / "chatglm2-6b", "chatglm2", layers=GLM_LAYERS,
                                     heads=GLM_HEADS, groups=GLM_GROUPS)}


def _ptuned_chatglm(folder: Path, version: str, projection: bool, seed: int = 5):
    """The folder's real model class built with pre_seq_len set, as THUDM's ptuning builds it."""
    modeling = import_folder(folder)
    configuration = import_folder(folder, "configuration_chatglm")
    config_class, model_class, _ = CLASSES[version]
    config = getattr(configuration, config_class).from_pretrained(folder)
    config.name_or_path = str(folder)
    config.pre_seq_len, config.prefix_projection = PRE_SEQ_LEN, projection
    legacy_config(config)
    torch.manual_seed(seed)
    model = getattr(modeling, model_class)(config).float().eval()
    with torch.no_grad():  # a trained-looking prefix encoder (skip_init leaves memory as it was)
        for parameter in model.transformer.prefix_encoder.parameters():
            parameter.normal_(0.0, 0.5)
    return model, config


def _official_checkpoint(model, config, folder: Path) -> Path:
    """What THUDM's ptuning/main.py saves: the prefix_encoder's tensors and the config."""
    folder.mkdir(parents=True)
    state = {k: v.clone() for k, v in model.state_dict().items() if "prefix_encoder" in k}
    torch.save(state, folder / "pytorch_model.bin")
    saved = {k: v for k, v in config.to_dict().items() if k != "max_length"}  # legacy_config's
    (folder / "config.json").write_text(json.dumps(saved, default=str), encoding="utf-8")
    return folder


@pytest.mark.parametrize("projection", [False, True], ids=["embedding", "projection"])
@pytest.mark.parametrize("version", ["chatglm", "chatglm2"])
def test_official_ptuning_checkpoint_gives_the_models_own_prefix(glm_folders, version,
                                                                 projection, tmp_path):
    folder = glm_folders[version]
    glm, config = _ptuned_chatglm(folder, version, projection)
    checkpoint = _official_checkpoint(glm, config, tmp_path / "checkpoint-100")
    out = import_chatglm_ptuning(checkpoint, folder, tmp_path / "imported")
    with torch.no_grad():
        # ChatGLM's own: per layer (key, value), each (pre_seq_len, batch, heads, head_dim)
        theirs = glm.transformer.get_prompt(1, torch.device("cpu"), torch.float32)
    peft_model, report = load_prefix_adapter(load_chatglm(folder), out)  # the strict loader
    with torch.no_grad():
        ours = peft_model.get_prompt(1)  # a DynamicCache: (batch, heads, tokens, head_dim)
    kv_heads = GLM_GROUPS if version == "chatglm2" else GLM_HEADS
    assert len(theirs) == len(ours.layers) == GLM_LAYERS and report.modules == GLM_LAYERS
    for layer, (their_pair, our_layer) in enumerate(zip(theirs, ours.layers, strict=True)):
        for their, our in ((their_pair[0], our_layer.keys), (their_pair[1], our_layer.values)):
            assert their.shape == (PRE_SEQ_LEN, 1, kv_heads, 64 // GLM_HEADS)
            their = their.permute(1, 2, 0, 3)  # → (batch, heads, position, head_dim)
            assert our.shape == their.shape, layer
            if projection:  # the MLP is evaluated once at import, ChatGLM evaluates it per call
                torch.testing.assert_close(our, their, atol=1e-6, rtol=1e-6)
            else:  # the same numbers moved, never computed
                assert torch.equal(our, their)
    # keys and values of different layers and heads differ: a wrong permute would show
    assert not torch.equal(ours.layers[0].keys, ours.layers[0].values)
    # ChatGLM's own code cannot read peft's cache: running the prefix there is refused clearly
    with pytest.raises(AdapterError, match="its own format"):
        load_adapters(load_chatglm(folder), [out])


def test_ptuning_checkpoints_that_do_not_fit_are_refused(glm_folders, tmp_path):
    folder = glm_folders["chatglm2"]
    glm, config = _ptuned_chatglm(folder, "chatglm2", projection=True)
    checkpoint = _official_checkpoint(glm, config, tmp_path / "projected")
    # config.json says no projection: the MLP's tensors are unexpected
    saved = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**saved, "prefix_projection": False}))
    with pytest.raises(AdapterError, match="unexpected"):
        import_chatglm_ptuning(checkpoint, folder, tmp_path / "a")
    # a key missing
    (checkpoint / "config.json").write_text(json.dumps(saved))
    state = torch.load(checkpoint / "pytorch_model.bin", weights_only=True)
    torch.save({k: v for k, v in state.items() if "trans.2.bias" not in k},
               checkpoint / "pytorch_model.bin")
    with pytest.raises(AdapterError, match="missing"):
        import_chatglm_ptuning(checkpoint, folder, tmp_path / "b")
    # pre_seq_len disagrees with the tensors
    torch.save(state, checkpoint / "pytorch_model.bin")
    (checkpoint / "config.json").write_text(json.dumps({**saved, "pre_seq_len": PRE_SEQ_LEN + 1}))
    with pytest.raises(AdapterError, match="shape of"):
        import_chatglm_ptuning(checkpoint, folder, tmp_path / "c")
    # a checkpoint for v1 read against the v2 model: every shape differs
    v1, v1_config = _ptuned_chatglm(glm_folders["chatglm"], "chatglm", projection=False)
    other = _official_checkpoint(v1, v1_config, tmp_path / "v1")
    with pytest.raises(AdapterError):
        import_chatglm_ptuning(other, folder, tmp_path / "d")
    # a zero prefix converts to nothing
    zero = tmp_path / "zero"
    zero.mkdir()
    (zero / "config.json").write_text(json.dumps({**saved, "prefix_projection": False}))
    width = GLM_LAYERS * 2 * GLM_GROUPS * 16
    torch.save({"transformer.prefix_encoder.embedding.weight": torch.zeros(PRE_SEQ_LEN, width)},
               zero / "pytorch_model.bin")
    with pytest.raises(AdapterError, match="is all zero"):
        import_chatglm_ptuning(zero, folder, tmp_path / "e")
    assert not any((tmp_path / name).exists() for name in "abcde")


def test_import_ptuning_command(glm_folders, tmp_path, capsys):
    from kbqa.cli import main

    folder = glm_folders["chatglm"]
    glm, config = _ptuned_chatglm(folder, "chatglm", projection=False)
    checkpoint = _official_checkpoint(glm, config, tmp_path / "checkpoint")
    out = tmp_path / "adapter"
    assert main(["adapters", "import-ptuning", str(checkpoint / "pytorch_model.bin"),
                 "--model", str(folder), "--out", str(out)]) == 0
    assert "5 virtual tokens × 2 layers × 4 key/value heads × 16" in capsys.readouterr().out
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "PREFIX_TUNING"
    assert main(["adapters", "merge", str(out), "--model", str(folder),
                 "--out", str(tmp_path / "merged")]) != 0
    assert "cannot be merged" in capsys.readouterr().err


# --- a prefix variant where LoRA variants are: eval, the server, the Compare page, the CLI -------


def test_eval_runs_a_prefix_variant_and_refuses_stacking(prefix: Path, lora: Path, qwen: Path,
                                                         tmp_path: Path):
    from kbqa.config import load_settings
    from kbqa.evaluation import EvalConfig, parse_variant, run_eval
    from tests.cmrc_sample import cmrc_sample

    questions, docs = cmrc_sample(tmp_path, 1)
    settings = load_settings({"home": tmp_path / "home", "llm": str(qwen), "llm_dtype": "float32",
                              "max_new_tokens": 4}, environ={})
    stacked = EvalConfig(questions=questions, docs=(docs,), out=tmp_path / "stacked",
                         variants=(parse_variant("plain"), parse_variant(f"both={lora}+{prefix}")))
    with pytest.raises(AdapterError, match="stacks the prefix-tuning adapter"):
        run_eval(settings, stacked, progress=False, log=lambda _: None)
    config = EvalConfig(questions=questions, docs=(docs,), out=tmp_path / "out",
                        variants=(parse_variant("plain"), parse_variant(f"ptuned={prefix}"),
                                  parse_variant(f"lora={lora}")))
    metrics = run_eval(settings, config, progress=False, log=lambda _: None)
    assert metrics["ptuned"]["verify"]["max_logit_diff"] > 1e-2
    assert metrics["ptuned"]["verify"]["modules"] == LAYERS
    rows = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text()
            .splitlines()]
    assert {r["variant"] for r in rows} == {"plain", "ptuned", "lora"}


def test_server_serves_a_prefix_variant(prefix: Path, qwen: Path, tmp_path: Path):
    import openai

    from tests.serve_support import kbqa_server

    with kbqa_server(tmp_path / "home", qwen, variants={"ptuned": [prefix]}) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=server.admin_key)
        assert [m.id for m in client.models.list()] == ["plain", "ptuned"]
        messages = [{"role": "user", "content": PROMPTS[0]}]
        answers = [client.chat.completions.create(model=name, messages=messages, max_tokens=6)
                   for name in ("plain", "ptuned", "plain")]
        variants = server.state.service.variant_model
        with variants.activate(Variant.of([prefix])) as llm:
            expected = llm.invoke(PROMPTS[0], max_new_tokens=6)
    plain, ptuned, plain_again = (a.choices[0].message.content for a in answers)
    assert answers[1].model == "ptuned" and ptuned == expected
    assert ptuned != plain == plain_again


def test_compare_page_and_the_adapters_setting_take_a_prefix(prefix: Path, qwen: Path,
                                                             tmp_path: Path):
    from kbqa.config import load_settings
    from kbqa.service import KbqaService
    from kbqa.ui.common import variant_options

    settings = load_settings({"home": tmp_path / "home", "llm": str(qwen), "llm_dtype": "float32",
                              "max_new_tokens": 6, "adapters": [str(prefix)]}, environ={})
    service = KbqaService(settings)
    options = variant_options(service)
    assert options[f"adapter: {prefix.name}"] == Variant.of([prefix])
    # the `adapters` setting (kbqa ask --adapter) loads it strictly as the configured LLM
    assert service.llm.adapters == [str(prefix)]
    with service.variant_model.activate(Variant.of([prefix])) as llm:
        assert service.llm.invoke(PROMPTS[0]) == llm.invoke(PROMPTS[0])


def test_train_command_makes_a_prefix_adapter(qwen: Path, tmp_path: Path, capsys):
    from kbqa.cli import main

    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps([{"instruction": e.prompt, "input": "", "output": e.answer}
                                for e in EXAMPLES], ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "cli-prefix"
    assert main(["adapters", "train", "--kind", "prefix", "--virtual-tokens", "3",
                 "--prefix-projection", "--model", str(qwen), "--alpaca", str(data),
                 "--out", str(out), "--steps", "2", "--max-length", "64"]) == 0
    assert main(["adapters", "verify", "--model", str(qwen), str(out)]) == 0
    assert f"over {LAYERS} modules: applied" in capsys.readouterr().out
    text_start = tmp_path / "cli-text-prefix"  # the default start: the first example's tokens
    assert main(["adapters", "train", "--kind", "prefix", "--virtual-tokens", "3",
                 "--model", str(qwen), "--alpaca", str(data), "--out", str(text_start),
                 "--steps", "1", "--max-length", "64"]) == 0
    assert main(["adapters", "verify", "--model", str(qwen), str(text_start)]) == 0
    capsys.readouterr()
    assert main(["adapters", "transplant", str(out), "--target", str(qwen),
                 "--out", str(tmp_path / "t")]) == 1
    assert "cannot transplant" in capsys.readouterr().err


@pytest.mark.parametrize("kind, own, foreign", [
    ("prefix", ("virtual_tokens: 88", "prefix_init: text"), ("rank:", "alpha:", "targets:")),
    ("lora", ("rank: 8", "targets: q_proj, v_proj"), ("virtual_tokens:", "prefix_init:")),
])
def test_a_training_card_lists_only_its_own_kinds_settings(tmp_path, kind, own, foreign):
    from kbqa.adapters.card import write_training_card
    from kbqa.adapters.train import TrainOptions, TrainResult

    options = TrainOptions(kind=kind, virtual_tokens=88)
    card = write_training_card(tmp_path, base="base-x", data="data", options=options,
                               result=TrainResult(steps=3, seconds=1.0, losses=[1.0, 0.5, 0.2]),
                               command=["kbqa", "adapters", "train"]).read_text(encoding="utf-8")
    assert all(line in card for line in own), card
    assert not any(line in card for line in foreign), card


def test_a_card_names_per_module_targets_by_kind_not_by_path(tmp_path):
    """A LoRA started from a transplant lists one full path per module; the card counts them."""
    from kbqa.adapters.card import write_training_card
    from kbqa.adapters.train import TrainOptions, TrainResult

    paths = tuple(f"model.layers.{i}.self_attn.{p}" for i in range(3) for p in ("q_proj", "v_proj"))
    card = write_training_card(tmp_path, base="base-x", data="data",
                               options=TrainOptions(targets=paths),
                               result=TrainResult(steps=1, seconds=1.0, losses=[1.0]),
                               command=["kbqa"]).read_text(encoding="utf-8")
    assert "- targets: 6 modules (q_proj, v_proj)" in card, card
    assert "model.layers.0" not in card
