"""Embedders: parsing specs, the on-disk cache, and the stylometric embedder's
topic-insensitivity on hand-written texts."""

from __future__ import annotations

import numpy as np
import pytest

from divtune.embedders import DEFAULT_EMBEDDERS, Embedder, load_embedder, parse_embedder_specs
from divtune.embedders.stylometric import style_features


def test_parse_embedder_specs():
    assert parse_embedder_specs(["semantic=minilm", "style = stylometric"]) == DEFAULT_EMBEDDERS
    for bad in (["semantic"], ["=minilm"], ["a=x", "a=y"], ["se mantic=x"]):
        with pytest.raises(ValueError):
            parse_embedder_specs(bad)


class CountingEmbedder(Embedder):
    name = "counting"

    def __init__(self, cache_dir=None):
        super().__init__(cache_dir)
        self.seen: list[str] = []

    def _embed_batch(self, texts, batch_size, show_progress):
        self.seen.extend(texts)
        return np.array([[len(t), 1.0, 0.0] for t in texts])


def test_cache_second_run_embeds_nothing(tmp_path):
    texts = ["one", "three", "one", "fifteen"]
    first = CountingEmbedder(tmp_path)
    out1 = first.embed(texts, show_progress=False)
    assert first.seen == ["one", "three", "fifteen"]  # duplicates embedded once
    assert np.allclose(np.linalg.norm(out1, axis=1), 1.0)
    assert np.allclose(out1[0], out1[2])
    second = CountingEmbedder(tmp_path)  # a new process-like instance on the same folder
    out2 = second.embed(texts + ["new"], show_progress=False)
    assert second.seen == ["new"]
    assert second.last_computed == 1
    assert np.allclose(out2[:4], out1)
    assert out2.dtype == np.float32



TERSE_DRAGON = (
    '"Run!" I yelled. She didn\'t move. "Now!"\n\n"Why?" she asked.\n\nI grabbed her arm. We ran. The dragon '
    'roared behind us. "Don\'t look back," I said. "Just don\'t."\n\n"I won\'t," she said. I didn\'t believe her. '
    'Fire hit the trees. "Left!" I said. We went left.'
)
TERSE_TAXES = (
    '"Sign it!" I said. He didn\'t move. "Now!"\n\n"Why?" he asked.\n\nI pushed the form over. He sighed. The '
    'auditor waited behind us. "Don\'t read it," I said. "Just sign."\n\n"I can\'t," he said. I didn\'t blame him. '
    'Receipts fell off the desk. "Here!" I said. He signed.'
)
ORNATE_DRAGON = (
    "In the long twilight of the northern valleys, where the rivers wound slowly beneath ancient and "
    "indifferent mountains, there dwelt a dragon of considerable age, whose scales, once brilliant as "
    "polished copper, had dimmed with the accumulated dust of many centuries; and the villagers, who "
    "had learned through generations of careful observation the rhythms of its slumber and its waking, "
    "spoke of it only in hushed and reverent tones, as one might speak of weather or of fate. It was "
    "said, moreover, that the creature remembered every name ever spoken within the reach of its hearing."
)

ORNATE_TAXES = (
    "In the long grey season of the fiscal year, when the ledgers of the provincial office lay open beneath "
    "tall and indifferent windows, there worked an auditor of considerable experience, whose patience, once "
    "as boundless as the columns he examined, had thinned with the accumulated receipts of many decades; and "
    "the clerks, who had learned through years of careful observation the rhythms of his scrutiny and his "
    "approval, spoke of him only in hushed and reverent tones, as one might speak of weather or of fate. It "
    "was said, moreover, that the man remembered every figure ever entered within the reach of his pen."
)


def test_stylometric_is_topic_insensitive():
    emb = load_embedder("stylometric")
    vecs = emb.embed([TERSE_DRAGON, TERSE_TAXES, ORNATE_DRAGON, ORNATE_TAXES], show_progress=False)
    assert vecs.shape[0] == 4 and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    dist = 1 - vecs @ vecs.T
    # same style, different topic is closer than same topic, different style -- for both styles
    assert dist[0, 1] < 0.5 * dist[0, 2]
    assert dist[2, 3] < 0.5 * dist[2, 0]
    assert dist[1, 0] < 0.5 * dist[1, 3]


def test_stylometric_is_deterministic_and_context_free():
    emb = load_embedder("stylometric")
    alone = emb.embed([TERSE_DRAGON], show_progress=False)
    with_others = emb.embed([ORNATE_DRAGON, TERSE_DRAGON, TERSE_TAXES], show_progress=False)
    assert np.allclose(alone[0], with_others[1])


def test_style_features_hand_counted():
    feats = style_features('"Hi," he said. The cat sat.\n\nIt ran!')
    # words: Hi he said The cat sat It ran -> 8 words; 3 sentences; 2 paragraphs
    assert feats["function_words"]["fw_the"] == pytest.approx(1 / 8)
    assert feats["pronouns"]["pron_he"] == pytest.approx(1 / 8)
    assert feats["punctuation"]["punct_comma"] == pytest.approx(1 / 8)
    assert feats["punctuation"]["punct_exclamation"] == pytest.approx(1 / 8)
    assert feats["paragraphing"]["paras_per_100_words"] == pytest.approx(100 * 2 / 8)
    assert feats["dialogue"]["dialogue_char_ratio"] == pytest.approx(len('"Hi,"') / len('"Hi," he said. The cat sat.\n\nIt ran!'))
    assert feats["lengths"]["short_sent_rate"] == pytest.approx(1.0)


def test_load_embedder_specs_and_names(minilm_path):
    assert load_embedder("stylometric").name == "stylometric-v1"
    assert load_embedder("minilm").name == "st:minilm"  # model loads lazily: nothing embedded here
    assert load_embedder(str(minilm_path)).name == f"st:{minilm_path}"
    with pytest.raises(FileNotFoundError):
        load_embedder("./no/such/model/folder")


def test_minilm_embeds_unit_rows(minilm_path, tmp_path):
    emb = load_embedder(str(minilm_path), cache_dir=tmp_path)
    vecs = emb.embed(["A dragon sleeps.", "A dragon is sleeping.", "Quarterly tax forms are due."], show_progress=False)
    assert vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]
