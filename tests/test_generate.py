"""Generation: prompt readers, a well-formed resumable generations file on a tiny local model."""

from __future__ import annotations

import json

import pytest

from conftest import write_jsonl
from divtune.config import ConfigError
from divtune.generation.config import GenerateConfig
from divtune.generation.plan import plan_batches
from divtune.generation.prompts import read_prompts
from divtune.generation.run import run_generate
from divtune.generation.sample_file import load_done
from divtune.io import InputError

PROMPTS = ["Write a story about a dragon.", "The knight rode out.", "She opened the door.", "A robot paints."]


def _pairs(pool, prompt, n):
    return [
        {"pool_id": pool, "prompt": prompt, "chosen": f"c{i}", "rejected": f"r{i}", "score_chosen": 2,
         "score_rejected": 1, "quality_chosen": 0.5, "quality_rejected": 0.1, "weight": 1.0}
        for i in range(n)
    ]


def _cfg(tiny_lm_dir, prompts, output, **kw):
    values = dict(model=str(tiny_lm_dir), prompts=str(prompts), output=str(output), num_samples=3,
                  max_new_tokens=6, batch_size=4, seed=7, show_progress=False)
    values.update(kw)
    return GenerateConfig(**values)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- prompt readers


def test_text_prompts_use_line_numbers_and_skip_blank_lines(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("first prompt\n\n  second prompt  \n")
    prompts = read_prompts(path)
    assert [(p.prompt_id, p.prompt) for p in prompts] == [(1, "first prompt"), (3, "second prompt")]


def test_prepared_pairs_give_unique_prompts_by_pool_and_dir_means_test_jsonl(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", _pairs("a", "P-a", 2) + _pairs("b", "P-b", 3) + _pairs("a", "P-a", 1))
    for source in (tmp_path, tmp_path / "test.jsonl"):
        prompts = read_prompts(source)
        assert [(p.prompt_id, p.prompt) for p in prompts] == [("a", "P-a"), ("b", "P-b")]
    assert [p.prompt_id for p in read_prompts(tmp_path, max_prompts=1)] == ["a"]


def test_responses_jsonl_takes_test_pools_with_text_from_test_jsonl(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", _pairs("t1", "P-t1", 1) + _pairs("t2", "P-t2", 1))
    write_jsonl(tmp_path / "responses.jsonl", [
        {"pool_id": "x", "split": "train", "index": 0, "text": "y", "score": 1, "quality": 0.0},
        {"pool_id": "t2", "split": "test", "index": 0, "text": "y", "score": 1, "quality": 0.0},
        {"pool_id": "t1", "split": "test", "index": 0, "text": "y", "score": 1, "quality": 0.0},
        {"pool_id": "t2", "split": "test", "index": 1, "text": "z", "score": 3, "quality": 0.2},
    ])
    prompts = read_prompts(tmp_path / "responses.jsonl")
    assert [(p.prompt_id, p.prompt) for p in prompts] == [("t2", "P-t2"), ("t1", "P-t1")]


def test_jsonl_prompt_list_with_and_without_ids(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "one", "prompt_id": "x"}, {"prompt": "two"}])
    assert [(p.prompt_id, p.prompt) for p in read_prompts(path)] == [("x", "one"), (2, "two")]


def test_missing_prompt_field_names_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"text": "no prompt here"}])
    with pytest.raises(InputError) as info:
        read_prompts(path)
    assert info.value.line == 2 and info.value.field == "prompt" and "p.jsonl" in str(info.value)


def test_duplicate_prompt_id_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "prompt_id": 1}, {"prompt": "b", "prompt_id": 1}])
    with pytest.raises(InputError, match="duplicate prompt_id"):
        read_prompts(path)


def test_plan_covers_every_sample_once_in_bounded_batches():
    batches = plan_batches(n_prompts=5, num_samples=3, batch_size=4)
    items = [item for batch in batches for item in batch]
    assert sorted(items) == [(p, s) for p in range(5) for s in range(3)]
    assert all(1 <= len(b) <= 4 for b in batches) and len(batches) == 4


# ---------------------------------------------------------------- end to end on the tiny model


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


@pytest.fixture(scope="module")
def uninterrupted(tiny_lm_dir, prompts_file, tmp_path_factory):
    output = tmp_path_factory.mktemp("full") / "gen.jsonl"
    run_generate(_cfg(tiny_lm_dir, prompts_file, output))
    return output


def test_generations_file_is_well_formed(uninterrupted, tiny_lm_dir):
    rows = _lines(uninterrupted)
    assert len(rows) == len(PROMPTS) * 3
    keys = {(r["prompt_id"], r["sample_index"]) for r in rows}
    assert keys == {(i + 1, s) for i in range(len(PROMPTS)) for s in range(3)}
    for row in rows:
        assert row["prompt"] == PROMPTS[row["prompt_id"] - 1]
        assert isinstance(row["text"], str)
        assert row["model"] == tiny_lm_dir.name
        assert (row["temperature"], row["top_p"], row["top_k"], row["repetition_penalty"], row["max_new_tokens"]) == (
            1.0, 0.95, 50, 1.1, 6)
        assert isinstance(row["seed"], int)
        assert 1 <= row["num_new_tokens"] <= 6
    # Sampling really samples: 12 random 6-token continuations are not all the same.
    assert len({r["text"] for r in rows}) > 1
    config = (uninterrupted.parent / "gen.jsonl.config.yaml").read_text()
    assert "top_k: 50" in config and "num_samples: 3" in config


def test_same_seed_same_samples_other_seed_differs(uninterrupted, tiny_lm_dir, prompts_file, tmp_path):
    again = run_generate(_cfg(tiny_lm_dir, prompts_file, tmp_path / "again.jsonl"))
    other = run_generate(_cfg(tiny_lm_dir, prompts_file, tmp_path / "other.jsonl", seed=8))
    texts = [r["text"] for r in _lines(uninterrupted)]
    assert [r["text"] for r in _lines(again)] == texts
    assert [r["text"] for r in _lines(other)] != texts


def test_interrupted_run_resumes_to_the_uninterrupted_result(uninterrupted, tiny_lm_dir, prompts_file, tmp_path):
    output = tmp_path / "gen.jsonl"
    cfg = _cfg(tiny_lm_dir, prompts_file, output)
    run_generate(cfg, stop_after_batches=1)
    assert len(_lines(output)) == 4  # one batch of 4 sequences
    # Simulate a kill in the middle of writing the second batch: one whole line, then a torn one.
    full = uninterrupted.read_text().splitlines(keepends=True)
    with open(output, "a") as handle:
        handle.write(full[4])
        handle.write(full[5][: len(full[5]) // 2])
    run_generate(cfg)
    rows = _lines(output)
    keys = [(r["prompt_id"], r["sample_index"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(PROMPTS) * 3
    by_key = {(r["prompt_id"], r["sample_index"]): r["text"] for r in rows}
    assert by_key == {(r["prompt_id"], r["sample_index"]): r["text"] for r in _lines(uninterrupted)}
    # A finished file is left alone by a further run.
    before = output.read_bytes()
    run_generate(cfg)
    assert output.read_bytes() == before


def test_resume_with_other_decoding_settings_is_refused(uninterrupted, tiny_lm_dir, prompts_file, tmp_path):
    output = tmp_path / "gen.jsonl"
    run_generate(_cfg(tiny_lm_dir, prompts_file, output, max_prompts=1))
    with pytest.raises(ConfigError, match="temperature"):
        run_generate(_cfg(tiny_lm_dir, prompts_file, output, max_prompts=1, temperature=0.7))


def test_load_done_cuts_a_torn_line(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text('{"prompt_id": 1, "sample_index": 0}\n{"prompt_id": 1, "sam')
    assert load_done(path) == {("1", 0)}
    assert path.read_text() == '{"prompt_id": 1, "sample_index": 0}\n'


def test_name_option_and_vllm_missing_error(tiny_lm_dir, prompts_file, tmp_path):
    output = run_generate(_cfg(tiny_lm_dir, prompts_file, tmp_path / "g.jsonl", name="base", max_prompts=1,
                               num_samples=1))
    assert _lines(output)[0]["model"] == "base"
    try:  # where vllm is missing, the backend must say how to get it (its own environment, documented)
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="its own environment: see 'vLLM environment' in docs/generate.md"):
            run_generate(_cfg(tiny_lm_dir, prompts_file, tmp_path / "v.jsonl", backend="vllm"))


def test_cli_generate_writes_file_and_config(tiny_lm_dir, prompts_file, tmp_path):
    from typer.testing import CliRunner

    from divtune.cli import app

    output = tmp_path / "cli.jsonl"
    result = CliRunner().invoke(app, [
        "generate", "--model", str(tiny_lm_dir), "--prompts", str(prompts_file), "--output", str(output),
        "--num-samples", "2", "--max-new-tokens", "4", "--top-k", "5", "--max-prompts", "2", "--name", "tiny",
    ])
    assert result.exit_code == 0, result.output
    rows = _lines(output)
    assert len(rows) == 4 and {r["top_k"] for r in rows} == {5} and {r["model"] for r in rows} == {"tiny"}
    assert (tmp_path / "cli.jsonl.config.yaml").is_file()


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="num_samples"):
        GenerateConfig.load(None, ["num_samples=0"], model="m", prompts="p", output="o")
    with pytest.raises(ConfigError, match="top_p"):
        GenerateConfig.load(None, ["top_p=1.5"], model="m", prompts="p", output="o")


def test_long_prompts_keep_their_start(tiny_tokenizer):
    from divtune.generation.prompts import truncate_prompt

    long_prompt = "Once upon a time there was a dragon. " * 40
    cut, was_cut = truncate_prompt(tiny_tokenizer, long_prompt, 10)
    assert was_cut and long_prompt.startswith(cut.strip()[:20])
    assert len(tiny_tokenizer(cut, add_special_tokens=False)["input_ids"]) <= 10
    same, was_cut = truncate_prompt(tiny_tokenizer, "A short prompt.", 50)
    assert (same, was_cut) == ("A short prompt.", False)
    assert truncate_prompt(tiny_tokenizer, long_prompt, None) == (long_prompt, False)


def test_shared_prompt_cache_gives_the_same_samples(tiny_lm_dir, prompts_file, tmp_path):
    # Batches of 5 rows over prompts with 3 samples each hold uneven shares of
    # prompts (3+2, 1+3+1, ...), and prompts of different lengths are left-padded.
    # Same seed, same logits up to float rounding: the same sampled tokens.
    shared = run_generate(_cfg(tiny_lm_dir, prompts_file, tmp_path / "shared.jsonl", batch_size=5,
                               max_new_tokens=12, share_prompt_cache=True))
    plain = run_generate(_cfg(tiny_lm_dir, prompts_file, tmp_path / "plain.jsonl", batch_size=5,
                              max_new_tokens=12, share_prompt_cache=False))
    shared_texts = [(r["prompt_id"], r["sample_index"], r["text"]) for r in _lines(shared)]
    assert shared_texts == [(r["prompt_id"], r["sample_index"], r["text"]) for r in _lines(plain)]
    assert len({t for _, _, t in shared_texts}) > 1  # not one degenerate string for every prompt


def test_shared_prompt_cache_holds_each_distinct_prompt_once(tiny_lm_dir, tiny_tokenizer):
    from divtune.generation.hf import shared_prompt_cache
    from divtune.models import load_causal_lm

    model = load_causal_lm(str(tiny_lm_dir), device="cpu")
    texts = ["a much longer first prompt here", "short", "a much longer first prompt here"]
    tiny_tokenizer.padding_side = "left"
    encoded = tiny_tokenizer(texts, return_tensors="pt", padding=True)
    cache = shared_prompt_cache(model, encoded, [0, 1, 0])
    keys = cache.layers[0].keys
    assert keys.shape[0] == 3 and keys.shape[2] == encoded["input_ids"].shape[1] - 1
    assert keys[0].equal(keys[2]) and not keys[0].equal(keys[1])
    assert shared_prompt_cache(model, encoded, [0, 1, 2]) is None  # nothing shared
