"""The typicality-bias data builder: pure parts, the exact injection, and a pass through prepare."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest

from conftest import write_jsonl
from divtune.typicality import (
    TypicalityConfig,
    biased_scores,
    cut_to_words,
    order_flips,
    pair_flips,
    run_typicality,
    standardise,
    tfidf_vectors,
    word_tokens,
)

WORDS = "the a dragon ship night sea storm castle girl robot moon star river old ran sang wept laughed forest king".split()
OPENINGS = ['"Run," she said.', "I woke up.", "You are late.", "The sun rose.", "The sea was calm.", "A storm came."]


def test_cut_to_words_keeps_spacing_and_short_texts():
    assert cut_to_words("One  two\n\nthree four", 3) == "One  two\n\nthree"
    assert cut_to_words("  lead space", 1) == "  lead"
    assert cut_to_words("only two", 5) == "only two"
    assert cut_to_words("", 3) == ""


def test_standardise_per_pool():
    z = standardise(np.array([1.0, 2.0, 3.0, 6.0]))
    assert z.mean() == pytest.approx(0.0) and z.std() == pytest.approx(1.0)
    assert np.all(np.diff(z) > 0)
    assert np.array_equal(standardise(np.array([0.3, 0.3, 0.3])), np.zeros(3))


def test_order_flips_counts_reversed_pairs_among_pairs_with_different_votes():
    votes = np.array([1.0, 5.0, 5.0, 9.0])
    scores = np.array([0.5, 0.1, 0.2, 0.9])  # 0 above 1 and 2: two reversals; the votes tie (1, 2) is not counted
    assert order_flips(votes, scores) == (2, 5)
    assert order_flips(votes, votes) == (0, 5)


def test_pair_flips_by_votes_and_typicality():
    votes = np.array([3.0, 1.0, 2.0, 2.0])
    typicality = np.array([0.0, 1.0, 0.5, -1.0])
    counts = pair_flips([(0, 1), (1, 2), (2, 3)], votes, typicality)
    assert counts["more_votes"] == 1 and counts["fewer_votes"] == 1 and counts["equal_votes"] == 1
    assert counts["chosen_more_typical"] == 2


def _story(rng: random.Random, opening: str, n_words: int) -> str:
    return opening + " " + " ".join(rng.choice(WORDS) for _ in range(n_words))


@pytest.fixture(scope="module")
def pools_file(tmp_path_factory):
    rng = random.Random(3)
    rows = []
    for p in range(8):
        texts = [_story(rng, rng.choice(OPENINGS), rng.randint(12, 30)) for _ in range(7)]
        rows.append({"id": f"p{p}", "prompt": f"Prompt number {p}", "responses": texts,
                     "scores": [rng.randint(1, 500) for _ in texts]})
    rows.append({"id": "short", "prompt": "All too short", "responses": ["tiny one", "tiny two"], "scores": [1, 2]})
    path = tmp_path_factory.mktemp("typ") / "pools.jsonl"
    write_jsonl(path, rows)
    return path


def _cfg(pools_file, output, **kw):
    values = dict(inputs=[str(pools_file)], output=str(output), embedder="stylometric", min_words=10,
                  max_responses_per_prompt=6, opening_words=12, strength=0.7, show_progress=False)
    values.update(kw)
    return TypicalityConfig(**values)


def _rows(folder):
    return [json.loads(line) for line in (folder / "pools.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("term", ["semantic", "mode"])
def test_scores_change_by_exactly_b_times_the_typicality_term(pools_file, tmp_path, term):
    run_typicality(_cfg(pools_file, tmp_path / "b0", term=term, strength=0.0))
    run_typicality(_cfg(pools_file, tmp_path / "b07", term=term))
    control, biased = _rows(tmp_path / "b0"), _rows(tmp_path / "b07")
    assert [r["id"] for r in control] == [f"p{p}" for p in range(8)]  # the short pool is dropped
    for zero, row in zip(control, biased):
        assert zero["responses"] == row["responses"] and zero["typicality"] == row["typicality"]
        assert zero["scores"] == zero["quality"]  # b = 0: the compressed votes themselves
        assert row["scores"] == biased_scores(np.array(row["quality"]), np.array(row["typicality"]), 0.7).tolist()
        assert np.allclose(np.array(row["scores"]) - np.array(zero["scores"]), 0.7 * np.array(row["typicality"]))
        assert all(len(text.split()) <= 12 for text in row["responses"])
        if term == "mode":
            assert set(row["typicality"]) <= {0.0, 1.0}
            assert [t == 1.0 for t in row["typicality"]] == [m == "other" for m in row["modes"]]
        else:
            assert np.mean(row["typicality"]) == pytest.approx(0.0, abs=1e-9)


def test_same_seed_same_output_and_seed_only_moves_the_flip_report(pools_file, tmp_path):
    first = run_typicality(_cfg(pools_file, tmp_path / "a", seed=1))
    again = run_typicality(_cfg(pools_file, tmp_path / "b", seed=1))
    other = run_typicality(_cfg(pools_file, tmp_path / "c", seed=2))
    assert (tmp_path / "a" / "pools.jsonl").read_bytes() == (tmp_path / "b" / "pools.jsonl").read_bytes()
    assert (tmp_path / "a" / "pools.jsonl").read_bytes() == (tmp_path / "c" / "pools.jsonl").read_bytes()
    assert first == again
    assert first["predicted_prepare_pairs"]["seed"] == 1 and other["predicted_prepare_pairs"]["seed"] == 2


def test_prepare_reads_the_output_unchanged_and_the_flip_report_predicts_its_pairs(pools_file, tmp_path):
    from divtune.prepare import PrepareConfig, run_prepare

    summary = run_typicality(_cfg(pools_file, tmp_path / "biased", strength=2.0, seed=5, gap=0.1))
    prepared = run_prepare(PrepareConfig(
        inputs=[str(tmp_path / "biased" / "pools.jsonl")], output=str(tmp_path / "prep"), min_words=0, gap=0.1,
        seed=5, test_fraction=0.25, embedders={"style": "stylometric"}, show_progress=False,
    ))
    assert prepared["responses"]["dropped"] == {}  # nothing the builder kept is dropped again
    votes = {text: v for row in _rows(tmp_path / "biased") for text, v in zip(row["responses"], row["votes"])}
    pairs = [json.loads(line) for split in ("train", "test") for line in (tmp_path / "prep" / f"{split}.jsonl").read_text().splitlines()]
    assert all(p["score_chosen"] > p["score_rejected"] for p in pairs)
    flips = Counter(
        "fewer_votes" if votes[p["chosen"]] < votes[p["rejected"]] else
        "equal_votes" if votes[p["chosen"]] == votes[p["rejected"]] else "more_votes"
        for p in pairs
    )
    predicted = summary["predicted_prepare_pairs"]
    assert predicted["pairs"] == len(pairs)
    assert {k: predicted[k] for k in ("more_votes", "equal_votes", "fewer_votes")} == {
        k: flips.get(k, 0) for k in ("more_votes", "equal_votes", "fewer_votes")
    }
    assert predicted["fewer_votes"] > 0  # b = 2 does flip preferences


def test_cli_writes_the_folder_and_reports(pools_file, tmp_path):
    from typer.testing import CliRunner

    from divtune.cli import app

    result = CliRunner().invoke(app, [
        "typicality", "-i", str(pools_file), "-o", str(tmp_path / "out"), "--term", "mode", "-b", "0.5",
        "--set", "min_words=10", "--set", "embedder=stylometric",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["term"] == "mode" and summary["strength"] == 0.5
    assert sum(summary["modes"]["counts"].values()) == summary["responses"]
    assert (tmp_path / "out" / "config.yaml").is_file()


# ---------------------------------------------------------------- the bias in another space (round 2)


def _centrality_by_hand(vectors: np.ndarray) -> np.ndarray:
    """Each text's mean cosine similarity to the other texts of its pool, standardised (population std)."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    n = len(unit)
    sims = unit @ unit.T
    centrality = np.array([(sims[i].sum() - sims[i, i]) / (n - 1) for i in range(n)])
    return (centrality - centrality.mean()) / centrality.std()


class _KeyedEmbedder:
    """A stand-in embedder: a fixed pseudo-random 6-d vector per text (seeded by the text)."""

    name = "keyed"
    specs: list = []

    def embed(self, texts, batch_size=64, show_progress=True):
        import hashlib

        rows = [np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")).normal(size=6)
                for t in texts]
        return np.array(rows, dtype=np.float32)


def test_semantic_term_is_b_times_the_standardised_centrality_in_the_embedders_space(pools_file, tmp_path, monkeypatch):
    """Through the builder's own path (load_embedder(cfg.embedder)): t is the standardised centrality of
    whatever space the embedder defines, per pool, and the score moves by exactly b * t."""
    def fake(spec, cache_dir=None):
        _KeyedEmbedder.specs.append(spec)
        return _KeyedEmbedder()

    monkeypatch.setattr("divtune.embedders.load_embedder", fake)
    run_typicality(_cfg(pools_file, tmp_path / "b0", embedder="space-b", strength=0.0))
    run_typicality(_cfg(pools_file, tmp_path / "b", embedder="space-b", strength=0.8))
    assert set(_KeyedEmbedder.specs) == {"space-b"}
    embed = _KeyedEmbedder().embed
    for zero, row in zip(_rows(tmp_path / "b0"), _rows(tmp_path / "b")):
        expected = _centrality_by_hand(embed(row["responses"]).astype(np.float64))
        assert np.allclose(row["typicality"], expected, atol=1e-6)
        t = np.array(row["typicality"])
        assert t.mean() == pytest.approx(0.0, abs=1e-9) and t.std() == pytest.approx(1.0, abs=1e-9)
        assert np.allclose(np.array(row["scores"]) - np.array(zero["scores"]), 0.8 * t, atol=1e-12)


@pytest.mark.slow
def test_mpnet_as_the_bias_space(pools_file, tmp_path):
    """embedder: mpnet, the second round's space B: t equals the standardised centrality of a direct
    SentenceTransformer load of the assembled folder; same seed, same bytes; and B is not MiniLM's space."""
    from sentence_transformers import SentenceTransformer

    from divtune.mpnet import mpnet_dir

    cfg = dict(embedder="mpnet", strength=0.5, seed=3, cache_dir=str(tmp_path / "emb"))
    run_typicality(_cfg(pools_file, tmp_path / "a", **cfg))
    run_typicality(_cfg(pools_file, tmp_path / "again", **cfg))
    assert (tmp_path / "a" / "pools.jsonl").read_bytes() == (tmp_path / "again" / "pools.jsonl").read_bytes()
    run_typicality(_cfg(pools_file, tmp_path / "minilm", **{**cfg, "embedder": "minilm"}))
    direct = SentenceTransformer(str(mpnet_dir()), device="cpu")
    correlations = []
    for row, row_a in zip(_rows(tmp_path / "a"), _rows(tmp_path / "minilm")):
        vectors = direct.encode(row["responses"], normalize_embeddings=True).astype(np.float64)
        assert np.allclose(row["typicality"], _centrality_by_hand(vectors), atol=1e-4)
        assert np.allclose(row["scores"], np.array(row["quality"]) + 0.5 * np.array(row["typicality"]), atol=1e-12)
        correlations.append(np.corrcoef(row["typicality"], row_a["typicality"])[0, 1])
    assert max(correlations) < 0.9999  # another space: the two centralities are not the same numbers


def test_tfidf_vectors_by_hand():
    pools = [["The cat sat.", "the dog sat", "A dog's bone"], ["Cats!", ""]]
    first, second = tfidf_vectors(pools)
    # 5 texts; df: the 2, sat 2, dog 1, cat 1, a 1, dog's 1, bone 1, cats 1 ("dog's" is its own word)
    idf = lambda df: np.log(6 / (1 + df)) + 1  # noqa: E731
    vocabulary = ["a", "bone", "cat", "dog", "dog's", "sat", "the"]
    assert first.shape == (3, len(vocabulary))
    expected = np.zeros((3, 7))
    for i, words in enumerate([["the", "cat", "sat"], ["the", "dog", "sat"], ["a", "dog's", "bone"]]):
        for w in words:
            df = {"the": 2, "sat": 2, "dog": 1, "cat": 1, "a": 1, "dog's": 1, "bone": 1}[w]
            expected[i, vocabulary.index(w)] += idf(df)
    assert np.allclose(first, expected)
    assert second.shape == (2, 1) and second[1, 0] == 0.0  # a text without words is a zero row
    assert word_tokens("Don’t  STOP—now_ 42") == ["don't", "stop", "now", "42"]


def test_lexical_term_is_the_tfidf_centrality_and_moves_scores_by_b(pools_file, tmp_path):
    run_typicality(_cfg(pools_file, tmp_path / "b0", term="lexical", strength=0.0))
    summary = run_typicality(_cfg(pools_file, tmp_path / "b", term="lexical", strength=0.6))
    assert summary["term"] == "lexical"
    zero_rows, rows = _rows(tmp_path / "b0"), _rows(tmp_path / "b")
    matrices = tfidf_vectors([row["responses"] for row in rows])
    for zero, row, matrix in zip(zero_rows, rows, matrices):
        assert np.allclose(row["typicality"], _centrality_by_hand(matrix))
        assert np.allclose(np.array(row["scores"]) - np.array(zero["scores"]), 0.6 * np.array(row["typicality"]))
