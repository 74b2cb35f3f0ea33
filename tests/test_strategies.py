"""Inference-time strategies of `divtune generate`: iterative prompts and their context cap,
verbalized replies parsed from fixtures, top-up, seeds and resume (tiny local model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from divtune.config import ConfigError
from divtune.generation.config import GenerateConfig
from divtune.generation.run import run_generate
from divtune.generation.sample_file import system_name
from divtune.generation.strategies.prompts import IterativeSettings, VerbalizedSettings, fill, iterative_message
from divtune.generation.strategies.verbalized import calls_path, read_call
from divtune.generation.strategies.verbalized_parse import parse_probability, parse_verbalized

FIXTURES = Path(__file__).parent / "fixtures" / "verbalized"
PROMPTS = ["Write a story about a dragon.", "The knight rode out.", "She opened the door."]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


def _cfg(model, prompts, output, strategy, **kw):
    values = dict(model=str(model), prompts=str(prompts), output=str(output), num_samples=3, max_new_tokens=6,
                  batch_size=2, seed=3, show_progress=False, strategy=strategy)
    values.update(kw)
    return GenerateConfig(**values)


# ---------------------------------------------------------------- verbalized replies (fixtures)


@pytest.mark.parametrize(
    "fixture, form, texts, probabilities, problems",
    [
        ("well_formed.txt", "json",
         ["The dragon kept the fire in a jar.", "A dragon learned to swim instead.", "The smallest dragon sneezed sparks."],
         [0.4, 0.35, 0.25], {}),
        ("fenced_with_prose.txt", "json",
         ["The lighthouse keeper counted ships.", "A ship counted the lighthouse keepers.",
          "Nobody counted anything that night."],
         [0.5, 0.3, None], {"bad_probability": 1}),
        ("bare_list.txt", "json", ["First story.", "Second story, given as a bare string."], [0.6, None],
         {"bad_probability": 1, "item_without_text": 1}),
        ("cut_off.txt", "json_items", ["One complete story.", "A second complete story."], [0.5, 0.3],
         {"cut_off": 1}),
        ("tagged.txt", "tags", ["A robot painted the sunrise.", "A painter built a robot."], [0.7, None],
         {"bad_probability": 1}),
        ("prose_only.txt", "none", [], [], {"no_responses": 1}),
        ("empty.txt", "none", [], [], {"empty_reply": 1}),
    ],
)
def test_verbalized_replies_are_parsed_from_fixtures(fixture, form, texts, probabilities, problems):
    parsed = parse_verbalized((FIXTURES / fixture).read_text())
    assert parsed.form == form
    assert parsed.texts == texts
    assert [None if p is None else round(p, 6) for p in parsed.probabilities] == probabilities
    assert dict(parsed.problems) == problems


def test_probabilities_accept_numbers_strings_and_percentages_only_in_range():
    assert parse_probability(0.25) == 0.25 and parse_probability("0.5") == 0.5 and parse_probability(" 40% ") == 0.4
    assert parse_probability(1) == 1.0 and parse_probability(0) == 0.0
    for bad in (1.5, -0.1, "high", None, True, "200%", [0.1]):
        assert parse_probability(bad) is None, bad


def test_a_call_keeps_at_most_what_it_asked_and_can_take_a_bare_reply_whole():
    reply = (FIXTURES / "well_formed.txt").read_text()
    call = read_call(reply, asked=2, unstructured="drop")
    assert len(call["texts"]) == 2 and call["problems"] == {"beyond_asked": 1}
    prose = (FIXTURES / "prose_only.txt").read_text()
    assert read_call(prose, 3, "drop")["texts"] == []
    whole = read_call(prose, 3, "one_response")
    assert whole["texts"] == [prose.strip()] and whole["problems"] == {"taken_as_one_response": 1}
    assert read_call("  ", 3, "one_response")["texts"] == []  # an empty reply is never a response


# ---------------------------------------------------------------- templates and the iterative context cap


def test_templates_fill_only_their_own_placeholders():
    # JSON braces in a template need no escaping, and a prompt containing "{k}" is not filled again.
    assert fill('{prompt} as {"a": {k}}', prompt="say {k}", k=3) == 'say {k} as {"a": 3}'
    with pytest.raises(ConfigError, match="previous"):
        GenerateConfig.load(None, ["iterative.template={prompt} only"], model="m", prompts="p", output="o")
    with pytest.raises(ConfigError, match="k"):
        GenerateConfig.load(None, ["verbalized.template=Write for {prompt}"], model="m", prompts="p", output="o")


def test_iterative_message_shows_earlier_samples_and_drops_the_oldest_to_fit(tiny_tokenizer):
    count = lambda text: len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    previous = ["the first story about a dragon", "a second story about the sea", "third: the robot paints"]
    roomy = IterativeSettings(max_context_tokens=10_000)
    message, shown = iterative_message("Write a story.", previous, roomy, count)
    assert shown == 3 and message.startswith("Write a story.")
    assert message.index(previous[0]) < message.index(previous[1]) < message.index(previous[2])
    assert "Response 1:\nthe first story" in message

    all_but_oldest = fill(roomy.template, prompt="Write a story.", previous="\n\n".join(
        fill(roomy.previous_template, number=i, text=t) for i, t in enumerate(previous[1:], start=1)))
    tight = IterativeSettings(max_context_tokens=count(all_but_oldest))
    message, shown = iterative_message("Write a story.", previous, tight, count)
    assert shown == 2 and message == all_but_oldest and previous[0] not in message
    assert count(message) <= tight.max_context_tokens

    none_fit = IterativeSettings(max_context_tokens=3)
    assert iterative_message("Write a story.", previous, none_fit, count) == ("Write a story.", 0)


# ---------------------------------------------------------------- iterative on the tiny model


class Recorder:
    """Wraps the real sampler and records every message it is given, per call."""

    def __init__(self, real_class):
        self.real_class = real_class
        self.messages: list[list[str]] = []

    def __call__(self, cfg):
        sampler = self.real_class(cfg)
        original = sampler.sample

        def sample(messages, seed, max_new_tokens):
            self.messages.append(list(messages))
            return original(messages, seed, max_new_tokens)

        sampler.sample = sample
        return sampler


@pytest.fixture(scope="module")
def iterative_run(tiny_lm_dir, prompts_file, tmp_path_factory):
    import divtune.generation.run as gen

    recorder = Recorder(gen.HFSampler)
    output = tmp_path_factory.mktemp("iterative") / "gen.jsonl"
    original, gen.HFSampler = gen.HFSampler, recorder
    try:
        run_generate(_cfg(tiny_lm_dir, prompts_file, output, "iterative", max_new_tokens=8))
    finally:
        gen.HFSampler = original
    return output, recorder.messages


def test_iterative_sample_k_sees_samples_before_it(iterative_run):
    output, calls = iterative_run
    rows = _lines(output)
    assert len(rows) == 9 and {r["strategy"] for r in rows} == {"iterative"}
    assert all(r["model"].endswith("-iterative") for r in rows)  # the strategy is part of the system name
    text = {(r["prompt_id"], r["sample_index"]): r["text"] for r in rows}
    # Round k = sample k of every prompt; batches of 2 prompts: rounds hold 2 calls (2 + 1 prompts).
    assert [len(c) for c in calls] == [2, 1] * 3
    messages = [m for call in calls for m in call]
    for k in range(3):
        for p in range(3):
            message = messages[k * 3 + p]
            assert message.startswith(PROMPTS[p])
            shown = [text[(p + 1, j)] for j in range(k)]
            positions = [message.index(f"Response {j + 1}:\n{s}") for j, s in enumerate(shown)]
            assert positions == sorted(positions)
            assert rows[[(r["prompt_id"], r["sample_index"]) for r in rows].index((p + 1, k))]["n_previous_shown"] == k
    summary = json.loads((output.parent / "gen.jsonl.summary.json").read_text())
    assert summary["samples"] == 9 and summary["prompts_short"] == []
    assert summary["context_cap"]["samples_with_earlier_samples_dropped"] == 0


def test_iterative_resume_and_seed(iterative_run, tiny_lm_dir, prompts_file, tmp_path):
    full, _ = iterative_run
    output = tmp_path / "gen.jsonl"
    cfg = _cfg(tiny_lm_dir, prompts_file, output, "iterative", max_new_tokens=8)
    run_generate(cfg, stop_after_batches=3)
    lines = full.read_text().splitlines(keepends=True)
    assert output.read_text() == "".join(lines[:5])  # round 0 (3 samples) and round 1's first batch (2)
    with open(output, "a") as handle:  # killed while writing the next batch: a torn line
        handle.write(lines[5][:10])
    run_generate(cfg)
    assert output.read_text() == full.read_text()
    other = run_generate(_cfg(tiny_lm_dir, prompts_file, tmp_path / "other.jsonl", "iterative", max_new_tokens=8,
                              seed=4))
    assert [r["text"] for r in _lines(other)] != [r["text"] for r in _lines(full)]
    with pytest.raises(ConfigError, match="iterative"):
        run_generate(_cfg(tiny_lm_dir, prompts_file, output, "iterative", max_new_tokens=8,
                          iterative={"max_context_tokens": 5}))


class ScriptedIterative:
    """Fixed replies (one word count each) for iterative runs; records every message it is given."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.messages: list[str] = []

    def count_tokens(self, text):
        return len(text.split())

    def sample(self, messages, seed, max_new_tokens):
        out = []
        for message in messages:
            self.messages.append(message)
            out.append((f"story{len(self.messages) - 1}" + " word" * 4, 5))
        return out


def test_iterative_context_cap_drops_the_oldest_samples_and_counts_them(tiny_tokenizer, prompts_file, tmp_path,
                                                                       monkeypatch):
    import divtune.generation.run as gen

    scripted = ScriptedIterative(tiny_tokenizer)
    monkeypatch.setattr(gen, "HFSampler", lambda cfg: scripted)
    unused_model = tmp_path / "unused-model"  # the sampler is scripted: the folder only has to exist
    unused_model.mkdir()
    settings = IterativeSettings()
    replies = [f"story{i}" + " word" * 4 for i in range(5)]
    # A cap that holds the prompt, the instructions and exactly two earlier samples (5 words each).
    two_shown = iterative_message(PROMPTS[0], replies[:2], IterativeSettings(max_context_tokens=10_000),
                                  scripted.count_tokens)[0]
    cap = scripted.count_tokens(two_shown)
    output = run_generate(_cfg(str(unused_model), prompts_file, tmp_path / "g.jsonl", "iterative", num_samples=5,
                               max_prompts=1, batch_size=1, iterative={"max_context_tokens": cap}))
    rows = _lines(output)
    assert [r["text"] for r in rows] == replies
    assert [r["n_previous_shown"] for r in rows] == [0, 1, 2, 2, 2]
    # Samples 4 and 5 could not show every earlier sample: the oldest went, the newest two stayed.
    for k in (3, 4):
        message = scripted.messages[k]
        assert scripted.count_tokens(message) <= cap
        assert f"Response 1:\nstory{k - 2}" in message and f"Response 2:\nstory{k - 1}" in message
        assert not any(f"story{j}" in message for j in range(k - 2))
    assert "Response 2:\nstory1" in scripted.messages[2] and "story0" in scripted.messages[2]
    summary = json.loads((tmp_path / "g.jsonl.summary.json").read_text())
    assert summary["context_cap"] == {"samples_with_earlier_samples_dropped": 2, "earlier_samples_dropped": 1 + 2}


# ---------------------------------------------------------------- verbalized: top-up and resume


class ScriptedSampler:
    """Replies chosen by (prompt, call number); records what each call asked for."""

    def __init__(self, tokenizer, replies):
        self.tokenizer = tokenizer
        self.replies = replies
        self.calls: dict[str, int] = {}
        self.asked: list[str] = []

    def count_tokens(self, text):
        return len(text.split())

    def sample(self, messages, seed, max_new_tokens):
        out = []
        for message in messages:
            prompt = next(p for p in PROMPTS if message.startswith(p))
            n = self.calls.get(prompt, 0)
            self.calls[prompt] = n + 1
            self.asked.append(message)
            out.append((self.replies[prompt][min(n, len(self.replies[prompt]) - 1)], 5))
        return out


def _json_reply(*texts, probability=0.2):
    return json.dumps({"responses": [{"text": t, "probability": probability} for t in texts]})


def test_verbalized_tops_up_missing_responses_and_says_why_a_prompt_is_short(tiny_tokenizer, prompts_file, tmp_path,
                                                                           monkeypatch):
    import divtune.generation.run as gen

    replies = {
        PROMPTS[0]: [_json_reply("a1", "a2", "a3")],  # full at once
        PROMPTS[1]: [_json_reply("b1") + " and then the model rambles", (FIXTURES / "cut_off.txt").read_text()],
        PROMPTS[2]: [(FIXTURES / "prose_only.txt").read_text()],  # never parseable
    }
    scripted = ScriptedSampler(tiny_tokenizer, replies)
    monkeypatch.setattr(gen, "HFSampler", lambda cfg: scripted)
    # The sampler is scripted, so the model is never loaded; generate still checks that the spec names
    # something (an existing folder) before it writes anything.
    unused_model = tmp_path / "unused-model"
    unused_model.mkdir()
    output = run_generate(_cfg(str(unused_model), prompts_file, tmp_path / "v.jsonl", "verbalized", max_new_tokens=40,
                               verbalized={"max_calls": 3}))
    rows = _lines(output)
    by_prompt = {p: [(r["sample_index"], r["text"], r["call_index"]) for r in rows if r["prompt_id"] == p]
                 for p in (1, 2, 3)}
    assert by_prompt[1] == [(0, "a1", 0), (1, "a2", 0), (2, "a3", 0)]
    # Prompt 2: 1 response, then a top-up call asking for the 2 missing, answered with 2 complete items.
    assert by_prompt[2] == [(0, "b1", 0), (1, "One complete story.", 1), (2, "A second complete story.", 1)]
    assert by_prompt[3] == []
    assert [m.count("Write 3 different") + 2 * m.count("Write 2 different") for m in scripted.asked
            if m.startswith(PROMPTS[1])] == [1, 2]  # the top-up asks only for the 2 missing
    assert scripted.calls == {PROMPTS[0]: 1, PROMPTS[1]: 2, PROMPTS[2]: 3}
    assert {r["strategy"] for r in rows} == {"verbalized"} and {r["probability"] for r in rows} >= {0.2, 0.5}

    summary = json.loads((tmp_path / "v.jsonl.summary.json").read_text())
    assert summary["samples"] == 6 and summary["calls"] == 6 and summary["prompts_topped_up"] == 2
    assert summary["responses_asked"] == 3 + (3 + 2) + 3 * 3
    assert summary["responses_missing_or_unparseable"] == summary["responses_asked"] - 6
    (short,) = summary["prompts_short"]
    assert short["prompt_id"] == 3 and short["samples"] == 0 and short["calls"] == 3
    assert "3 missing after 3 of at most 3 calls" in short["why"]
    assert list(short["problems"].values()) == [3]  # three replies without any response in them
    log = _lines(calls_path(output))
    assert len(log) == 6 and all("reply" in call for call in log)


@pytest.fixture(scope="module")
def verbalized_run(tiny_lm_dir, prompts_file, tmp_path_factory):
    output = tmp_path_factory.mktemp("verbalized") / "gen.jsonl"
    # The tiny random model never writes JSON: each reply becomes one response, so every
    # prompt needs three calls (two top-ups) to reach three samples.
    run_generate(_cfg(tiny_lm_dir, prompts_file, output, "verbalized", max_new_tokens=4,
                      verbalized={"unstructured": "one_response", "overhead_tokens_per_response": 0}))
    return output


def test_verbalized_on_the_tiny_model_fills_every_prompt_by_top_up(verbalized_run, tiny_tokenizer):
    rows = _lines(verbalized_run)
    assert len(rows) == 9
    assert sorted((r["prompt_id"], r["sample_index"], r["call_index"]) for r in rows) == [
        (p, k, k) for p in (1, 2, 3) for k in range(3)]
    log = _lines(calls_path(verbalized_run))
    # Each prompt had three calls, the top-ups asking only for the samples still missing.
    assert sorted((c["prompt_id"], c["round"], c["asked"]) for c in log) == [
        (p, r, 3 - r) for p in (1, 2, 3) for r in range(3)]
    count = lambda text: len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    call_of = {(c["prompt_id"], c["round"]): c for c in log}
    for row in rows:
        call = call_of[(row["prompt_id"], row["call_index"])]
        assert row["position_in_call"] == 0 and row["text"] == call["texts"][0]
        # The whole reply was taken as the response, then cut to max_new_tokens (4) tokens.
        assert row["num_new_tokens"] == min(count(call["reply"].strip()), 4)
        assert count(row["text"]) <= 4 + 1  # a cut inside a character may re-encode one token longer
    expected_cut = sum(count(c["reply"].strip()) > 4 for c in log)
    summary = json.loads(verbalized_run.with_name("gen.jsonl.summary.json").read_text())
    assert summary["calls"] == 9 and summary["prompts_topped_up"] == 3 and summary["prompts_short"] == []
    assert summary["responses_asked"] == 3 * (3 + 2 + 1) and summary["responses_kept"] == 9
    assert summary["responses_cut_to_max_new_tokens"] == expected_cut == sum(c["cut_to_max_new_tokens"] for c in log)
    assert summary["problems"]["reply without structure taken whole as one response (unstructured: one_response)"] == 9


def test_verbalized_seed_changes_the_output(verbalized_run, tiny_lm_dir, prompts_file, tmp_path):
    other = run_generate(_cfg(tiny_lm_dir, prompts_file, tmp_path / "other.jsonl", "verbalized", max_new_tokens=4,
                              seed=4, verbalized={"unstructured": "one_response", "overhead_tokens_per_response": 0}))
    assert len(_lines(other)) == 9
    assert [r["text"] for r in _lines(other)] != [r["text"] for r in _lines(verbalized_run)]
    assert {r["seed"] for r in _lines(other)}.isdisjoint({r["seed"] for r in _lines(verbalized_run)})


def test_verbalized_resume_rebuilds_from_the_call_log(verbalized_run, tiny_lm_dir, prompts_file, tmp_path):
    output = tmp_path / "gen.jsonl"
    cfg = _cfg(tiny_lm_dir, prompts_file, output, "verbalized", max_new_tokens=4,
               verbalized={"unstructured": "one_response", "overhead_tokens_per_response": 0})
    run_generate(cfg, stop_after_batches=3)
    # Killed after logging the third batch's call but before writing its sample.
    lines = output.read_text().splitlines(keepends=True)
    output.write_text("".join(lines[:-1]))
    run_generate(cfg)
    assert output.read_text() == verbalized_run.read_text()
    assert calls_path(output).read_text() == calls_path(verbalized_run).read_text()


def test_strategy_names_and_backend_rules(tiny_lm_dir, prompts_file, tmp_path):
    base = dict(model="runs/base", prompts="p", output="o")
    assert system_name(GenerateConfig(**base, strategy="iterative")) == "base-iterative"
    assert system_name(GenerateConfig(**base, strategy="verbalized", name="base-verbalized")) == "base-verbalized"
    assert system_name(GenerateConfig(**base, name="mine", strategy="verbalized")) == "mine-verbalized"
    assert system_name(GenerateConfig(**base)) == "base"
    with pytest.raises(ConfigError, match="backend hf"):
        run_generate(_cfg(tiny_lm_dir, prompts_file, tmp_path / "x.jsonl", "iterative", backend="vllm"))
    for setting, least in (("verbalized.max_calls", 1), ("verbalized.responses_per_call", 1),
                           ("verbalized.overhead_tokens_per_response", 0), ("iterative.max_context_tokens", 1)):
        refused = rf"^{setting}: expected greater than or equal to {least}, got {least - 1}$"
        with pytest.raises(ConfigError, match=refused):
            GenerateConfig.load(None, [f"{setting}={least - 1}"], model="m", prompts="p", output="o")
    assert VerbalizedSettings(max_calls=1).max_calls == 1  # the least allowed


class InputRecorder(Recorder):
    """Also records the token ids each generate call was given (padding removed)."""

    def __init__(self, real_class):
        super().__init__(real_class)
        self.inputs: list[list[int]] = []

    def __call__(self, cfg):
        sampler = super().__call__(cfg)
        model = sampler.model
        original = model.generate

        def generate(input_ids, attention_mask, **kw):
            self.inputs += [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]
            return original(input_ids=input_ids, attention_mask=attention_mask, **kw)

        model.generate = generate
        return sampler


@pytest.mark.parametrize("strategy", ["iterative", "verbalized"])
def test_strategy_messages_reach_the_model_inside_its_chat_template(strategy, tiny_lm_dir, tiny_tokenizer, prompts_file,
                                                                   tmp_path, monkeypatch):
    import divtune.generation.run as gen

    recorder = InputRecorder(gen.HFSampler)
    monkeypatch.setattr(gen, "HFSampler", recorder)
    run_generate(_cfg(tiny_lm_dir, prompts_file, tmp_path / "t.jsonl", strategy, num_samples=2, max_new_tokens=3,
                      max_prompts=2, verbalized={"unstructured": "one_response", "max_calls": 1}))
    messages = [m for call in recorder.messages for m in call]
    instructions = "Here are the responses" if strategy == "iterative" else "Write 2 different responses"
    assert any(instructions in m for m in messages)  # the strategy's own message, not the bare prompt
    assert len(recorder.inputs) == len(messages) > 0
    tokenizer = tiny_tokenizer  # the tokenizer saved with the tiny model
    user, end, assistant = tokenizer.convert_tokens_to_ids(["<|user|>", "<|end|>", "<|assistant|>"])
    for message, ids in zip(messages, recorder.inputs):
        # The tiny template: <|user|>{message}<|end|><|assistant|>, its markers as single special tokens.
        assert ids[0] == user and ids[-2:] == [end, assistant]
        assert tokenizer.decode(ids[1:-2]) == message
        assert ids == tokenizer.apply_chat_template([{"role": "user", "content": message}],
                                                    add_generation_prompt=True, return_dict=True)["input_ids"]


def test_independent_lines_name_their_strategy(tiny_lm_dir, prompts_file, tmp_path):
    output = run_generate(_cfg(tiny_lm_dir, prompts_file, tmp_path / "i.jsonl", "independent", max_prompts=1))
    assert {r["strategy"] for r in _lines(output)} == {"independent"}
    summary = json.loads((tmp_path / "i.jsonl.summary.json").read_text())
    assert summary["samples"] == 3 and summary["strategy"] == "independent"


def test_cli_strategy_option(tiny_lm_dir, prompts_file, tmp_path):
    from typer.testing import CliRunner

    from divtune.cli import app

    output = tmp_path / "cli.jsonl"
    result = CliRunner().invoke(app, [
        "generate", "--model", str(tiny_lm_dir), "--prompts", str(prompts_file), "--output", str(output),
        "--num-samples", "2", "--max-new-tokens", "3", "--max-prompts", "1", "--strategy", "iterative",
        "--set", "iterative.max_context_tokens=1000",
    ])
    assert result.exit_code == 0, result.output
    rows = _lines(output)
    assert [r["n_previous_shown"] for r in rows] == [0, 1] and {r["strategy"] for r in rows} == {"iterative"}
    assert "strategy: iterative" in (tmp_path / "cli.jsonl.config.yaml").read_text()
    assert "max_context_tokens: 1000" in (tmp_path / "cli.jsonl.config.yaml").read_text()
