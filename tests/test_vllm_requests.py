"""The vLLM backend's requests, built as plain data and tested without vLLM.

The prompts vLLM gets are token for token those of the HF path (a Llama-3-style
chat template that writes ``{{ bos_token }}`` itself must not get a second BOS),
its sampling settings are the HF path's, adapters are served as LoRA, and the
engine is sized from the prompts. ``run_generate(backend="vllm")`` is run against
a stand-in ``vllm`` module that records what it is given.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from divtune.config import ConfigError
from divtune.generation.config import GenerateConfig, VLLMSettings
from divtune.generation.hf import pad_left
from divtune.generation.prompts import encode_prompts, prompt_token_ids, read_prompts
from divtune.generation.run import run_generate
from divtune.generation.vllm import (
    VLLM_LORA_RANKS,
    ModelPlan,
    build_vllm_request,
    lora_rank_slot,
    model_len,
    plan_model,
    sampling_kwargs,
)

DOCS = Path(__file__).resolve().parents[1] / "docs"

BOS, EOS, PAD = "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"
#: The shape of Llama-3's chat template: it writes the BOS token itself.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
PROMPTS = ["Write a story about a dragon.", "The knight rode out at dawn, looking for the lost city.",
           "She opened the door."]


def _llama3_style_tokenizer():
    """A byte-level BPE whose post-processor adds BOS (as Llama-3's does) and whose template starts with it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = [BOS, PAD, "<|start_header_id|>", "<|end_header_id|>", EOS]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(PROMPTS * 5 + ["user assistant system"] * 5, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    fast.chat_template = LLAMA3_TEMPLATE
    return fast


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory):
    """A model folder as far as generate needs one here: tokenizer files and a config.json with a context."""
    directory = tmp_path_factory.mktemp("llama3_style")
    _llama3_style_tokenizer().save_pretrained(directory)
    (directory / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 2048}))
    return directory


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


def _cfg(model, prompts, output, **kw):
    values = dict(model=str(model), prompts=str(prompts), output=str(output), num_samples=2, max_new_tokens=5,
                  batch_size=4, seed=3, show_progress=False, share_prompt_cache=False)
    values.update(kw)
    return GenerateConfig(**values)


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# ---------------------------------------------------------------- stand-ins for the HF model and for vllm


class _RecordingLM:
    """Stands in for the HF model: records the ids ``generate`` is fed, answers with two tokens and EOS."""

    def __init__(self, tokenizer):
        self.fed: list[list[int]] = []
        self.tokenizer = tokenizer

    def eval(self):
        return self

    def generate(self, input_ids, attention_mask, **kwargs):
        import torch

        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            self.fed.append([t for t, m in zip(ids, mask) if m])
        word = self.tokenizer("dragon", add_special_tokens=False)["input_ids"][:2]
        new = torch.tensor([word + [self.tokenizer.eos_token_id]] * input_ids.shape[0])
        return torch.cat([input_ids, new], dim=1)


class _FakeVLLM:
    """A ``vllm`` module stand-in with the real keyword names of LLM, SamplingParams and LoRARequest."""

    def __init__(self):
        self.engines: list[dict] = []
        self.calls: list[dict] = []
        fake = self

        class SamplingParams:
            def __init__(self, *, n, temperature, top_p, top_k, repetition_penalty, max_tokens, seed,
                         skip_special_tokens):
                self.kwargs = dict(n=n, temperature=temperature, top_p=top_p, top_k=top_k,
                                   repetition_penalty=repetition_penalty, max_tokens=max_tokens, seed=seed,
                                   skip_special_tokens=skip_special_tokens)

        class LoRARequest:
            def __init__(self, lora_name, lora_int_id, lora_path=""):
                assert lora_int_id >= 1 and lora_path
                self.kwargs = dict(lora_name=lora_name, lora_int_id=lora_int_id, lora_path=lora_path)

        class LLM:
            def __init__(self, model, **engine):
                fake.engines.append(dict(model=model, **engine))

            def generate(self, prompts, sampling_params, *, use_tqdm=True, lora_request=None):
                assert len(prompts) == len(sampling_params)
                fake.calls.append(dict(prompts=prompts, params=[p.kwargs for p in sampling_params],
                                       lora=lora_request.kwargs if lora_request else None))
                out = types.SimpleNamespace
                return [out(outputs=[out(text=f" sample {p.kwargs['seed']} ", token_ids=[5, 6, 7])])
                        for p in sampling_params]

        self.module = types.ModuleType("vllm")
        self.module.LLM, self.module.SamplingParams = LLM, SamplingParams
        self.lora_module = types.ModuleType("vllm.lora")
        self.request_module = types.ModuleType("vllm.lora.request")
        self.request_module.LoRARequest = LoRARequest

        class EngineArgs:
            def __init__(self, model, **engine):
                fake.engines.append(dict(model=model, **engine))
                self.max_model_len = engine["max_model_len"]

            def create_model_config(self):
                return types.SimpleNamespace(max_model_len=self.max_model_len)

        self.engine_module = types.ModuleType("vllm.engine")
        self.arg_utils_module = types.ModuleType("vllm.engine.arg_utils")
        self.arg_utils_module.EngineArgs = EngineArgs

    def install(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "vllm.engine", self.engine_module)
        monkeypatch.setitem(sys.modules, "vllm.engine.arg_utils", self.arg_utils_module)
        monkeypatch.setitem(sys.modules, "vllm", self.module)
        monkeypatch.setitem(sys.modules, "vllm.lora", self.lora_module)
        monkeypatch.setitem(sys.modules, "vllm.lora.request", self.request_module)
        return self


# ---------------------------------------------------------------- the prompt ids: same as the HF path, one BOS


def test_the_fixture_reproduces_the_double_bos_of_retokenising_templated_text(llama3_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama3_dir)
    text = tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], add_generation_prompt=True,
                                         tokenize=False)
    assert text.startswith(BOS)
    # What the old vllm path did: templated text tokenised again with special tokens.
    assert tokenizer(text)["input_ids"][:2] == [tokenizer.bos_token_id] * 2


def test_vllm_prompt_token_ids_equal_the_hf_paths_with_one_bos(llama3_dir, prompts_file, tmp_path, monkeypatch):
    import divtune.models
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama3_dir)
    recorder = _RecordingLM(tokenizer)
    monkeypatch.setattr(divtune.models, "load_causal_lm", lambda *a, **k: recorder)
    hf_out = run_generate(_cfg(llama3_dir, prompts_file, tmp_path / "hf.jsonl"))
    fake = _FakeVLLM().install(monkeypatch)
    vllm_out = run_generate(_cfg(llama3_dir, prompts_file, tmp_path / "vllm.jsonl", backend="vllm"))

    # The HF path's batches are the (prompt, sample) items in order: 3 prompts x 2 samples.
    hf_ids = recorder.fed
    vllm_ids = [p["prompt_token_ids"] for call in fake.calls for p in call["prompts"]]
    assert len(hf_ids) == len(vllm_ids) == len(PROMPTS) * 2
    assert vllm_ids == hf_ids
    bos = tokenizer.bos_token_id
    for ids in vllm_ids:
        assert ids[0] == bos and ids.count(bos) == 1
        assert tokenizer.decode(ids).endswith("assistant<|end_header_id|>\n\n")
    # Both files hold every sample, with the vllm text as the stand-in returned it.
    assert len(_lines(hf_out)) == len(_lines(vllm_out)) == 6
    row = _lines(vllm_out)[0]
    assert row["text"] == f"sample {row['seed']}" and row["num_new_tokens"] == 3


def test_plain_prompts_get_the_tokenizers_own_bos_once(llama3_dir, prompts_file):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama3_dir)
    cfg = _cfg(llama3_dir, prompts_file, "unused.jsonl", use_chat_template=False)
    ids = prompt_token_ids(tokenizer, read_prompts(prompts_file), cfg)
    assert all(row[0] == tokenizer.bos_token_id and row.count(tokenizer.bos_token_id) == 1 for row in ids)
    assert ids[0][1:] == tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]


def test_pad_left_is_the_tokenizers_own_left_padding(tiny_tokenizer):
    texts = ["a short one", "a much longer prompt about the dragon and the knight", "x"]
    tiny_tokenizer.padding_side = "left"
    expected = tiny_tokenizer(texts, padding=True, return_tensors="pt")
    padded = pad_left(encode_prompts(tiny_tokenizer, texts, use_chat_template=False), tiny_tokenizer.pad_token_id)
    assert padded["input_ids"].tolist() == expected["input_ids"].tolist()
    assert padded["attention_mask"].tolist() == expected["attention_mask"].tolist()


# ---------------------------------------------------------------- sampling, engine, LoRA


def test_sampling_kwargs_are_the_hf_paths_decoding_settings():
    cfg = GenerateConfig(model="m", prompts="p", output="o", temperature=0.7, top_p=0.9, top_k=40,
                         repetition_penalty=1.2, max_new_tokens=33)
    assert sampling_kwargs(cfg, 12) == dict(n=1, temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.2,
                                            max_tokens=33, seed=12, skip_special_tokens=True)
    # Greedy, as the HF path at temperature 0: top-p/top-k off, the repetition penalty kept.
    greedy = sampling_kwargs(cfg.model_copy(update={"temperature": 0.0}), 1)
    assert (greedy["temperature"], greedy["top_p"], greedy["top_k"], greedy["repetition_penalty"]) == (0.0, 1.0, 0, 1.2)


def test_request_has_one_seeded_request_per_sample_and_plain_json_data():
    cfg = GenerateConfig(model="m", prompts="p", output="o", max_new_tokens=10)
    plan = ModelPlan(base="/models/base", tokenizer="/models/base", model_max_len=4096)
    ids = [[1, 2, 3], [1, 4]]
    request = build_vllm_request(cfg, plan, ids, [(0, 0, 11), (0, 1, 12), (1, 0, 13)])
    assert [(r["prompt_index"], r["sample_index"], r["seed"]) for r in request.requests] == [(0, 0, 11), (0, 1, 12),
                                                                                            (1, 0, 13)]
    assert [r["prompt"] for r in request.requests] == [{"prompt_token_ids": [1, 2, 3]}] * 2 + [
        {"prompt_token_ids": [1, 4]}]
    assert [r["sampling"]["seed"] for r in request.requests] == [11, 12, 13]
    assert request.lora is None and "enable_lora" not in request.engine
    assert request.engine == dict(model="/models/base", tokenizer="/models/base", dtype="auto", seed=0,
                                  trust_remote_code=False, max_model_len=256, tensor_parallel_size=1,
                                  gpu_memory_utilization=0.9)
    assert json.loads(json.dumps(request.to_dict())) == request.to_dict()


def test_max_model_len_is_sized_from_the_prompts_never_the_models_default():
    settings = VLLMSettings()
    ids = [[0] * 300, [0] * 10]
    assert model_len(ids, 256, settings, model_max_len=131072) == 768  # 556 rounded up to 3 x 256
    assert model_len(ids, 212, settings, model_max_len=131072) == 512  # exactly 512
    assert model_len(ids, 256, settings, model_max_len=600) == 600  # rounded up, but not past the model's own
    assert model_len(ids, 256, settings) == 768  # context unknown: still sized from the prompts
    assert model_len(ids, 256, VLLMSettings(max_model_len=4096), model_max_len=8192) == 4096
    with pytest.raises(ConfigError, match=r"more than the model's context \(500\)"):
        model_len(ids, 256, settings, model_max_len=500)
    with pytest.raises(ConfigError, match="vllm.max_model_len=512 is less than .* = 556"):
        model_len(ids, 256, VLLMSettings(max_model_len=512))
    with pytest.raises(ConfigError, match="more than the model's context"):
        model_len(ids, 256, VLLMSettings(max_model_len=9000), model_max_len=8192)


def test_engine_takes_parallelism_memory_and_dtype_settings():
    cfg = GenerateConfig.load(None, ["vllm.tensor_parallel_size=4", "vllm.gpu_memory_utilization=0.6",
                                     "vllm.max_model_len=1024", "dtype=bfloat16", "seed=5"],
                              model="m", prompts="p", output="o")
    engine = build_vllm_request(cfg, ModelPlan(base="b", tokenizer="t"), [[1, 2]], []).engine
    assert (engine["tensor_parallel_size"], engine["gpu_memory_utilization"], engine["max_model_len"]) == (4, 0.6, 1024)
    assert (engine["dtype"], engine["seed"], engine["tokenizer"]) == ("bfloat16", 5, "t")


@pytest.mark.parametrize("rank, slot", [(1, 1), (4, 8), (8, 8), (16, 16), (17, 32), (300, 320), (512, 512)])
def test_lora_rank_slot_is_the_smallest_vllm_rank_that_holds_it(rank, slot):
    assert lora_rank_slot(rank) == slot and slot in VLLM_LORA_RANKS


def test_lora_rank_above_vllms_largest_is_a_one_line_error():
    with pytest.raises(ConfigError, match="above vLLM's largest") as info:
        lora_rank_slot(1024)
    assert "\n" not in str(info.value)


def _adapter(tmp_path, base: Path, **config) -> Path:
    adapter = tmp_path / "my-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "base_model_name_or_path": str(base), "r": 4, "lora_alpha": 8,
        "target_modules": ["q_proj", "v_proj"], "bias": "none", **config}))
    return adapter


def test_an_adapter_is_served_as_lora_on_its_base_not_merged(llama3_dir, tmp_path):
    adapter = _adapter(tmp_path, llama3_dir)
    plan = plan_model(str(adapter))
    assert (plan.base, plan.tokenizer, plan.adapter) == (str(llama3_dir), str(llama3_dir), str(adapter))
    assert plan.model_max_len == 2048
    cfg = GenerateConfig(model=str(adapter), prompts="p", output="o")
    request = build_vllm_request(cfg, plan, [[1, 2]], [(0, 0, 1)])
    assert request.lora == {"lora_name": "my-adapter", "lora_int_id": 1, "lora_path": str(adapter.resolve())}
    assert request.engine["model"] == str(llama3_dir)
    assert (request.engine["enable_lora"], request.engine["max_loras"], request.engine["max_lora_rank"]) == (True, 1, 8)


@pytest.mark.parametrize("config, named", [({"use_dora": True}, "use_dora"), ({"bias": "all"}, "bias=all"),
                                           ({"modules_to_save": ["lm_head"]}, "modules_to_save=['lm_head']")])
def test_an_adapter_vllm_cannot_serve_is_a_one_line_error(llama3_dir, tmp_path, config, named):
    plan = plan_model(str(_adapter(tmp_path, llama3_dir, **config)))
    with pytest.raises(ConfigError, match=re.escape(named)) as info:
        build_vllm_request(GenerateConfig(model="a", prompts="p", output="o"), plan, [[1]], [])
    assert "\n" not in str(info.value) and "--merge" in str(info.value)


def test_run_generate_vllm_with_an_adapter_passes_the_lora_request_and_resumes(
        llama3_dir, prompts_file, tmp_path, monkeypatch):
    adapter = _adapter(tmp_path, llama3_dir, r=16)
    fake = _FakeVLLM().install(monkeypatch)
    output = tmp_path / "lora.jsonl"
    cfg = _cfg(adapter, prompts_file, output, backend="vllm", max_prompt_tokens=None,
               vllm=VLLMSettings(chunk_size=4, tensor_parallel_size=2, gpu_memory_utilization=0.5))
    run_generate(cfg)
    (engine,) = fake.engines
    assert engine["model"] == str(llama3_dir) and engine["enable_lora"] and engine["max_lora_rank"] == 16
    assert (engine["tensor_parallel_size"], engine["gpu_memory_utilization"]) == (2, 0.5)
    assert engine["max_model_len"] == 256  # the prompts here are a few dozen tokens: not 2048, not 128k
    assert [len(call["prompts"]) for call in fake.calls] == [4, 2]  # chunks of vllm.chunk_size
    assert all(call["lora"]["lora_path"] == str(adapter.resolve()) for call in fake.calls)
    seeds = [p["seed"] for call in fake.calls for p in call["params"]]
    assert len(set(seeds)) == 6
    rows = _lines(output)
    assert sorted((r["prompt_id"], r["sample_index"]) for r in rows) == [(i, s) for i in (1, 2, 3) for s in (0, 1)]
    # Resuming: lines already written are skipped, only the missing sample is requested again.
    output.write_text("".join(json.dumps(r) + "\n" for r in rows[:5]))
    run_generate(cfg)
    assert [len(call["prompts"]) for call in fake.calls] == [4, 2, 1]
    assert len(_lines(output)) == 6


# ---------------------------------------------------------------- the environment check


def test_check_environment_makes_vllms_objects_from_the_request(llama3_dir, tmp_path, monkeypatch, capsys):
    from divtune.generation.vllm import main

    fake = _FakeVLLM().install(monkeypatch)
    monkeypatch.setattr("importlib.metadata.version", lambda name: {"vllm": "9.9"}.get(name, "1.0"))
    assert main([str(_adapter(tmp_path, llama3_dir))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: vllm 9.9, transformers 1.0, torch 1.0;") and "LoRA rank slot 8" in out
    (engine,) = fake.engines
    assert engine["model"] == str(llama3_dir) and engine["enable_lora"]
    assert engine["max_model_len"] == 512  # a short prompt + the default 256 new tokens, rounded up


def test_check_environment_without_vllm_says_where_the_recipe_is(llama3_dir, monkeypatch, capsys):
    from divtune.generation.vllm import main

    monkeypatch.setitem(sys.modules, "vllm", None)  # importing it raises ImportError, installed or not
    assert main([str(llama3_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'vLLM environment' in docs/generate.md" in err


# ---------------------------------------------------------------- settings: docs, one-line errors, no vllm import


@pytest.mark.parametrize("override, field", [
    ("vllm.tensor_parallel_size=0", "vllm.tensor_parallel_size"),
    ("vllm.gpu_memory_utilization=1.5", "vllm.gpu_memory_utilization"),
    ("vllm.gpu_memory_utilization=0", "vllm.gpu_memory_utilization"),
    ("vllm.max_model_len=abc", "vllm.max_model_len"),
    ("vllm.chunk_size=0", "vllm.chunk_size"),
    ("vllm.max_len=4", "vllm.max_len"),
])
def test_bad_vllm_settings_are_one_line_errors(override, field):
    with pytest.raises(ConfigError) as info:
        GenerateConfig.load(None, [override], model="m", prompts="p", output="o")
    message = str(info.value)
    assert message.startswith(field + ":") and "\n" not in message


def test_a_bad_vllm_setting_on_the_command_line_is_one_line(tmp_path, monkeypatch, capsys):
    from _cli_support import run_cli

    code, out = run_cli(["generate", "--model", "m", "--prompts", "p", "--output", tmp_path / "o",
                         "--backend", "vllm", "--set", "vllm.gpu_memory_utilization=2"], monkeypatch, capsys)
    lines = [line for line in out.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1, out
    assert lines[0].startswith("error: vllm.gpu_memory_utilization:"), out


def test_every_vllm_setting_is_documented_with_its_set_name():
    text = (DOCS / "generate.md").read_text(encoding="utf-8")
    missing = [name for name in VLLMSettings.model_fields if f"`vllm.{name}`" not in text]
    assert not missing, f"vllm settings missing from docs/generate.md: {missing}"


def test_the_builder_imports_neither_vllm_nor_torch():
    code = (
        "import sys\n"
        "from divtune.generation.config import GenerateConfig\n"
        "from divtune.generation.vllm import ModelPlan, build_vllm_request\n"
        "cfg = GenerateConfig(model='m', prompts='p', output='o')\n"
        "build_vllm_request(cfg, ModelPlan(base='b', tokenizer='b'), [[1, 2]], [(0, 0, 1)])\n"
        "print(sorted(m for m in ('vllm', 'torch') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
