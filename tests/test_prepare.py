"""run_prepare end to end: output files and contracts, options, and the
integration runs on the shipped r/WritingPrompts data with the real MiniLM."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter, defaultdict

import numpy as np
import pytest

from divtune.io import is_stage_done, read_jsonl
from divtune.prepare import PrepareConfig, run_prepare

STYLE_ONLY = {"style": "stylometric"}
PAIR_FIELDS = {
    "pool_id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected",
    "quality_chosen", "quality_rejected", "weight",
}


def _story(topic: str, n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    words = ["the", "a", "dragon", "ran", "and", "she", "said", topic, "quietly", "night", "I", "was"]
    sentences = []
    for _ in range(n):
        k = int(rng.integers(3, 15))
        sentences.append(" ".join(rng.choice(words, k)).capitalize() + rng.choice([".", "!", "?"]))
    return " ".join(sentences)


@pytest.fixture()
def pools_file(tmp_path):
    rows = []
    for p in range(12):
        responses = [_story(f"topic{p}", 6 + i, seed=100 * p + i) for i in range(6)]
        scores = [1, 3, 8, 20, 2, 40] if p % 4 else [5, 5, 5, 5, 5, 5]  # every 4th prompt: all tied
        rows.append({"prompt": f"Prompt {p}", "responses": responses, "scores": scores})
    rows[1]["responses"][4] = rows[1]["responses"][0]  # a duplicate within a prompt
    path = tmp_path / "pools.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(tmp_path, inputs, **kw):
    base = dict(inputs=[str(i) for i in inputs], output=str(tmp_path / "out"), min_words=5,
                embedders=STYLE_ONLY, cache_dir=str(tmp_path / "cache"), show_progress=False, test_fraction=0.25)
    base.update(kw)
    return PrepareConfig(**base)


def test_outputs_and_contracts(tmp_path, pools_file):
    summary = run_prepare(_cfg(tmp_path, [pools_file]))
    out = tmp_path / "out"
    train, test = read_jsonl(out / "train.jsonl"), read_jsonl(out / "test.jsonl")
    responses = read_jsonl(out / "responses.jsonl")
    assert is_stage_done(out) and (out / "config.yaml").is_file()
    assert summary == json.loads((out / "summary.json").read_text())
    assert all(set(r) == PAIR_FIELDS for r in train + test)
    # 12 prompts, 72 responses, 1 duplicate dropped; 3 all-tied prompts give no pairs
    assert summary["responses"] == {**summary["responses"], "read": 72, "kept": 71, "dropped": {"duplicate_in_prompt": 1}}
    assert summary["prompts"]["train"] + summary["prompts"]["test"] == 12 and summary["prompts"]["test"] == 3
    assert sum(sum(v.values()) for v in summary["pools_without_pairs"].values()) == 3
    assert {k for v in summary["pools_without_pairs"].values() for k in v} == {"fewer than 2 distinct scores"}
    assert summary["pairs"] == {"train": len(train), "test": len(test)}
    assert len(responses) == 71
    # split by prompt
    assert not {r["pool_id"] for r in train} & {r["pool_id"] for r in test}
    assert {r["pool_id"]: r["split"] for r in responses} == {
        **{r["pool_id"]: "train" for r in train}, **{r["pool_id"]: "test" for r in test},
        **{r["pool_id"]: r["split"] for r in responses if not r["in_pairs"]},
    }
    # gap pairs: chosen > rejected, no response twice, weights mean 1 per pool
    by_pool = defaultdict(list)
    for r in responses:
        by_pool[r["pool_id"]].append(r)
    for pair in train + test:
        assert pair["score_chosen"] > pair["score_rejected"] and pair["quality_chosen"] > pair["quality_rejected"]
    for pool_id, rows in by_pool.items():
        paired = [r for r in rows if r["in_pairs"]]
        if paired:
            assert np.mean([r["weight"] for r in paired]) == pytest.approx(1.0, abs=1e-12)
            assert all(r["deviation"]["style"] is not None for r in paired)
        assert all(r["weight"] is None for r in rows if not r["in_pairs"])
        pairs = [p for p in train + test if p["pool_id"] == pool_id]
        texts = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
        assert len(texts) == len(set(texts))
    # quality: exact transform maps the global range onto [-1, 1]
    qualities = [r["quality"] for r in responses]
    assert min(qualities) == -1.0 and max(qualities) == pytest.approx(1.0)
    # chosen weight in the pair file equals the response's weight
    weight_of = {(r["pool_id"], r["text"]): r["weight"] for r in responses}
    assert all(p["weight"] == weight_of[(p["pool_id"], p["chosen"])] for p in train + test)


def test_same_seed_same_output_and_cache_reuse(tmp_path, pools_file):
    first = run_prepare(_cfg(tmp_path, [pools_file]))
    train1 = (tmp_path / "out" / "train.jsonl").read_text()
    second = run_prepare(_cfg(tmp_path, [pools_file], output=str(tmp_path / "second")))
    assert (tmp_path / "second" / "train.jsonl").read_text() == train1
    assert first["embedders"]["style"]["computed"] > 0 and second["embedders"]["style"]["computed"] == 0


def test_conversational_and_plain_load_with_datasets(tmp_path, pools_file):
    import datasets

    run_prepare(_cfg(tmp_path, [pools_file], conversational=True))
    conv = datasets.load_dataset("json", data_files=str(tmp_path / "out" / "train.jsonl"), split="train")
    assert conv[0]["prompt"][0]["role"] == "user" and conv[0]["chosen"][0]["role"] == "assistant"
    run_prepare(_cfg(tmp_path, [pools_file], output=str(tmp_path / "plain")))
    plain = datasets.load_dataset("json", data_files=str(tmp_path / "plain" / "train.jsonl"), split="train")
    assert isinstance(plain[0]["prompt"], str) and plain[0]["prompt"].startswith("Prompt ")


def test_caps_max_prompts_and_max_responses(tmp_path, pools_file):
    summary = run_prepare(_cfg(tmp_path, [pools_file], max_prompts=5, max_responses_per_prompt=4, test_fraction=0.2))
    responses = read_jsonl(tmp_path / "out" / "responses.jsonl")
    assert len({r["pool_id"] for r in responses}) == 5
    assert summary["prompts"]["dropped"]["over_max_prompts"] == 7
    assert all(n <= 4 for n in Counter(r["pool_id"] for r in responses).values())
    dropped = summary["responses"]["dropped"]
    assert summary["responses"]["read"] == summary["responses"]["kept"] + sum(dropped.values())
    assert dropped["over_max_responses_per_prompt"] > 0 and dropped["over_max_prompts"] > 0
    # the kept responses are each prompt's top 4 by score (scores 1, 3, 8, 20, 2, 40 or all 5)
    for pool_id in {r["pool_id"] for r in responses}:
        kept_scores = sorted(r["score"] for r in responses if r["pool_id"] == pool_id)
        assert kept_scores in ([3.0, 8.0, 20.0, 40.0], [5.0] * 4)


def test_all_pairs_and_weight_floor(tmp_path, pools_file):
    summary = run_prepare(_cfg(tmp_path, [pools_file], pairs="all", max_pairs_per_prompt=3, weight_floor=0.2))
    pairs = read_jsonl(tmp_path / "out" / "train.jsonl") + read_jsonl(tmp_path / "out" / "test.jsonl")
    assert all(n <= 3 for n in Counter(p["pool_id"] for p in pairs).values())
    assert summary["response_weights"]["train"]["min"] >= 0.2


def test_divpo_pairs(tmp_path, pools_file):
    summary = run_prepare(_cfg(tmp_path, [pools_file], pairs="divpo", rho=25, max_pairs_per_prompt=2))
    pairs = read_jsonl(tmp_path / "out" / "train.jsonl") + read_jsonl(tmp_path / "out" / "test.jsonl")
    assert pairs and all(p["weight"] == 1.0 for p in pairs)
    # 6 responses, rho 25: k = int(min(max(2, 1.5), 3)) = 2 -> 2 pairs from the top-2 and bottom-2
    for pool_id, n in Counter(p["pool_id"] for p in pairs).items():
        assert n == 2
    # top-2 scores are 40, 20; bottom-2 are 1, 2 (1, 3 in prompt 1, whose score-2 duplicate was dropped)
    assert {p["score_chosen"] for p in pairs} == {40.0, 20.0}
    for p in pairs:
        assert p["score_rejected"] in ({1.0, 3.0} if p["prompt"] == "Prompt 1" else {1.0, 2.0})
    assert summary["pair_mode"] == "divpo"


def test_cli_runs_with_config_and_set(tmp_path, pools_file):
    from typer.testing import CliRunner

    from divtune.cli import app

    config = tmp_path / "prepare.yaml"
    config.write_text(f"min_words: 5\nembedders: {{style: stylometric}}\ncache_dir: {tmp_path / 'cache'}\n")
    result = CliRunner().invoke(app, [
        "prepare", "--input", str(pools_file), "--output", str(tmp_path / "cli"), "--config", str(config),
        "--set", "test_fraction=0.5", "--gap", "10", "--seed", "3",
    ])
    assert result.exit_code == 0, result.output
    saved = (tmp_path / "cli" / "config.yaml").read_text()
    assert "test_fraction: 0.5" in saved and "gap: 10.0" in saved and "seed: 3" in saved


# --- integration on the shipped real data -------------------------------------------

_STICKY = ("**Off-Topic Discussion**", "**Welcome to the Prompt", "**Welcome to the Post")


def _recount(path, min_words=100):
    """Independent recount of what prepare should keep, written from the issue's rules."""
    dropped, prompts, kept_scores = Counter(), set(), {}
    responses_read = 0
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            post = json.loads(line)
            title = re.sub(r"^(\s*\[[^\]]+\])+\s*", "", post["post_title"]).strip()
            prompt = title + ("\n" + post["post_text"].strip() if post["post_text"].strip() else "")
            prompts.add(prompt)
            seen = {t.strip() for t, _ in kept_scores.get(prompt, [])}
            for text, score in zip(post["comment_texts"], post["comment_scores"]):
                responses_read += 1
                body = text.strip()
                if body.startswith(_STICKY):
                    dropped["moderator_sticky"] += 1
                elif body.startswith("I'm a bot"):
                    dropped["bot_comment"] += 1
                elif body in ("[removed]", "[deleted]"):
                    dropped["removed_or_deleted"] += 1
                elif len(body.split()) < min_words:
                    dropped["too_short"] += 1
                elif body in seen:
                    dropped["duplicate_in_prompt"] += 1
                else:
                    seen.add(body)
                    kept_scores.setdefault(prompt, []).append((body, score))
    no_pairs = Counter(
        "fewer than 2 responses" if len(v) < 2 else "fewer than 2 distinct scores"
        for v in kept_scores.values()
        if len({s for _, s in v}) < 2
    )
    return {"prompts_read": len(prompts), "responses_read": responses_read, "dropped": dropped,
            "kept": kept_scores, "no_pairs": no_pairs}


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory, wp_scored_path, minilm_path):
    out = tmp_path_factory.mktemp("wp_scored")
    cfg = PrepareConfig(inputs=["shipped:wp_scored"], output=str(out / "prep"), cache_dir=str(out / "cache"),
                        embedders={"semantic": str(minilm_path), "style": "stylometric"}, show_progress=False)
    return cfg, run_prepare(cfg)


@pytest.mark.slow
def test_wp_scored_counts_match_independent_recount(scored_run, wp_scored_path):
    cfg, summary = scored_run
    expected = _recount(wp_scored_path)
    out = cfg.output
    assert summary["prompts"]["read"] == expected["prompts_read"] == 100
    assert summary["responses"]["read"] == expected["responses_read"] == 3031
    assert summary["responses"]["dropped"] == dict(expected["dropped"])
    kept = sum(len(v) for v in expected["kept"].values())
    assert summary["responses"]["kept"] == kept
    assert summary["prompts"]["kept"] == len(expected["kept"])
    no_pairs = Counter()
    for split in ("train", "test"):
        no_pairs.update(summary["pools_without_pairs"][split])
    assert no_pairs == expected["no_pairs"]
    train, test = read_jsonl(f"{out}/train.jsonl"), read_jsonl(f"{out}/test.jsonl")
    responses = read_jsonl(f"{out}/responses.jsonl")
    assert summary["pairs"] == {"train": len(train), "test": len(test)} and len(responses) == kept
    assert summary["prompts"]["test"] == round(0.1 * len(expected["kept"]))
    # each pool with 2+ distinct scores gives floor(n/2)-ish disjoint pairs; at least one
    pairs_per_pool = Counter(p["pool_id"] for p in train + test)
    for pool_id, n in pairs_per_pool.items():
        size = sum(1 for r in responses if r["pool_id"] == pool_id)
        assert 1 <= n <= size // 2
    assert len(pairs_per_pool) == len(expected["kept"]) - sum(expected["no_pairs"].values())
    weights = [r["weight"] for r in responses if r["split"] == "train" and r["weight"] is not None]
    assert summary["response_weights"]["train"]["mean"] == pytest.approx(np.mean(weights))
    assert summary["response_weights"]["train"]["mean"] == pytest.approx(1.0)
    pw = [p["weight"] for p in train]
    assert summary["pair_weights"]["train"]["max"] == pytest.approx(max(pw))
    assert all(set(r["deviation"]) == {"semantic", "style"} for r in responses)


@pytest.mark.slow
def test_wp_scored_second_run_embeds_nothing(scored_run, tmp_path):
    cfg, _ = scored_run
    again = run_prepare(cfg.model_copy(update={"output": str(tmp_path / "again")}))
    assert {v["computed"] for v in again["embedders"].values()} == {0}
    assert (tmp_path / "again" / "train.jsonl").read_text() == (
        open(f"{cfg.output}/train.jsonl").read()
    )


def test_wp_fresh_gives_few_pairs_and_says_why(tmp_path, wp_fresh_path, minilm_path):
    summary = run_prepare(PrepareConfig(
        inputs=["shipped:wp_fresh"], output=str(tmp_path / "fresh"), cache_dir=str(tmp_path / "cache"),
        embedders={"semantic": str(minilm_path), "style": "stylometric"}, show_progress=False))
    expected = _recount(wp_fresh_path)
    assert summary["responses"]["dropped"] == dict(expected["dropped"])
    total_pairs = summary["pairs"]["train"] + summary["pairs"]["test"]
    assert total_pairs <= 10
    no_pairs = Counter()
    for split in ("train", "test"):
        no_pairs.update(summary["pools_without_pairs"][split])
    assert no_pairs == expected["no_pairs"]
    assert no_pairs["fewer than 2 distinct scores"] > 0
    assert any("fewer than 2 distinct scores" in note for note in summary["notes"])
