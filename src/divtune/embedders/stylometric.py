"""A topic-insensitive style embedding built from hand-chosen surface features.

Every feature is a rate or a length statistic that does not depend on *what* a
text is about: function-word and pronoun rates, punctuation rates, word- and
sentence-length statistics, dialogue ratio, paragraphing, contractions,
capitalisation and lexical variety. Content words never enter the vector.

Standardisation uses fixed constants (``stylometric_constants.py``), measured
once on the shipped r/WritingPrompts stories and frozen, so the same text
always gets the same vector whatever else is embedded with it. Centred
z-scores make cosine distance meaningful (raw rates are all positive and would
all point the same way). Each feature group is scaled by 1/sqrt(group size) so
that the 60-odd function words do not outvote the handful of length and
dialogue features; z-scores are clipped to +-5 so one freak feature (a text
with no full stop) cannot dominate. The vector is L2-normalised.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from divtune.embedders.base import Embedder
from divtune.embedders.stylometric_constants import FEATURE_STATS
from divtune.io import iter_jsonl

FUNCTION_WORDS = (
    "the a an and but or nor so yet of to in on at for with from by as into onto upon about over under "
    "after before through between against without within that this these those there here it its "
    "is was were be been being am are had have has do did does not no never then than if because while "
    "though although just very too also only even still all some any each every what which who whom whose "
    "when where why how would could should will can may might must shall"
).split()
PRONOUNS = "i me my mine myself we us our ours you your yours he him his she her hers they them their theirs".split()
# Punctuation counted per word; "..." and dashes are matched before single dots/hyphens.
PUNCTUATION = {
    "comma": r",",
    "period": r"(?<!\.)\.(?!\.)",
    "ellipsis": r"\.\.\.|…",
    "question": r"\?",
    "exclamation": r"!",
    "semicolon": r";",
    "colon": r":",
    "double_quote": r'"',
    "dash": r"—|–|(?<=\s)-(?=\s)|--",
    "hyphen": r"(?<=\w)-(?=\w)",
    "parenthesis": r"[()]",
    "asterisk": r"\*",
}
_PUNCT_RE = {name: re.compile(pattern) for name, pattern in PUNCTUATION.items()}
_WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?…])[\"')\]]*\s+")
_PARAGRAPH_RE = re.compile(r"\n\s*\n|\n")
_QUOTED_RE = re.compile(r'"[^"\n]*"')
_CONTRACTION_RE = re.compile(r"[A-Za-z]'(?:t|s|ll|re|ve|m|d)\b", re.IGNORECASE)
_MATTR_WINDOW = 50


def _normalise_quotes(text: str) -> str:
    return text.replace("“", '"').replace("”", '"').replace("‘", "'").replace("’", "'").replace("&amp;", "&")


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


def _mattr(words: list[str], window: int = _MATTR_WINDOW) -> float:
    """Moving-average type-token ratio: lexical variety that does not fall with text length."""
    if not words:
        return 0.0
    if len(words) <= window:
        return len(set(words)) / len(words)
    counts: dict[str, int] = {}
    for word in words[:window]:
        counts[word] = counts.get(word, 0) + 1
    total = len(counts)
    for i in range(window, len(words)):
        new, old = words[i], words[i - window]
        counts[new] = counts.get(new, 0) + 1
        counts[old] -= 1
        if counts[old] == 0:
            del counts[old]
        total += len(counts)
    return total / (len(words) - window + 1)


def style_features(text: str) -> dict[str, dict[str, float]]:
    """Raw (unstandardised) features of one text, grouped; every group has a fixed set of keys."""
    text = _normalise_quotes(text).strip()
    words = _WORD_RE.findall(text)
    lower = [w.lower() for w in words]
    n_words = max(len(words), 1)
    n_chars = max(len(text), 1)

    counts: dict[str, int] = {}
    for word in lower:
        counts[word] = counts.get(word, 0) + 1
    function_words = {f"fw_{w}": counts.get(w, 0) / n_words for w in FUNCTION_WORDS}
    pronouns = {f"pron_{w}": counts.get(w, 0) / n_words for w in PRONOUNS}
    punctuation = {f"punct_{name}": len(rx.findall(text)) / n_words for name, rx in _PUNCT_RE.items()}

    word_lengths = [len(w) for w in words]
    sentences = [s for s in _SENTENCE_END_RE.split(text) if _WORD_RE.search(s)]
    sentence_lengths = [len(_WORD_RE.findall(s)) for s in sentences]
    wl_mean, wl_std = _mean_std(word_lengths)
    sl_mean, sl_std = _mean_std(sentence_lengths)
    n_sentences = max(len(sentence_lengths), 1)
    lengths = {
        "word_len_mean": wl_mean,
        "word_len_std": wl_std,
        "long_word_rate": sum(l >= 7 for l in word_lengths) / n_words,
        "short_word_rate": sum(l <= 3 for l in word_lengths) / n_words,
        "sent_len_log_mean": math.log1p(sl_mean),
        "sent_len_cv": sl_std / sl_mean if sl_mean else 0.0,
        "short_sent_rate": sum(l <= 5 for l in sentence_lengths) / n_sentences,
        "long_sent_rate": sum(l >= 25 for l in sentence_lengths) / n_sentences,
    }

    paragraphs = [p for p in _PARAGRAPH_RE.split(text) if p.strip()]
    n_paragraphs = max(len(paragraphs), 1)
    quoted_chars = sum(len(m) for m in _QUOTED_RE.findall(text))
    dialogue = {
        "dialogue_char_ratio": quoted_chars / n_chars,
        "quote_paragraph_rate": sum(p.lstrip().startswith('"') for p in paragraphs) / n_paragraphs,
        "quotes_per_sentence": text.count('"') / n_sentences,
    }
    paragraph_sentence_counts = [
        max(len([s for s in _SENTENCE_END_RE.split(p) if _WORD_RE.search(s)]), 1) for p in paragraphs
    ]
    paragraphing = {
        "para_len_log_mean": math.log1p(len(words) / n_paragraphs),
        "one_sentence_para_rate": sum(c == 1 for c in paragraph_sentence_counts) / n_paragraphs,
        "paras_per_100_words": 100.0 * len(paragraphs) / n_words,
    }
    # map() over str methods keeps these character counts in C (a Python loop per character is slow).
    n_letters = max(sum(map(str.isalpha, text)), 1)
    lexical = {
        "mattr": _mattr(lower),
        "contraction_rate": len(_CONTRACTION_RE.findall(text)) / n_words,
        "uppercase_letter_rate": sum(map(str.isupper, text)) / n_letters,
        "all_caps_word_rate": sum(len(w) > 1 and w.isupper() for w in words) / n_words,
        "digit_rate": sum(map(str.isdigit, text)) / n_chars,
    }
    return {
        "function_words": function_words,
        "pronouns": pronouns,
        "punctuation": punctuation,
        "lengths": lengths,
        "dialogue": dialogue,
        "paragraphing": paragraphing,
        "lexical": lexical,
    }


def feature_names() -> list[str]:
    return [name for group in style_features("").values() for name in group]


def _group_sizes() -> list[tuple[str, int]]:
    return [(group, len(features)) for group, features in style_features("").items()]


def raw_feature_vector(text: str) -> np.ndarray:
    return np.array([v for group in style_features(text).values() for v in group.values()], dtype=np.float64)


def fit_standardisation(texts: list[str]) -> dict[str, tuple[float, float]]:
    """Mean and std of every feature over a corpus: how ``stylometric_constants`` was made
    (``python -m divtune.embedders.stylometric FILE.jsonl.gz`` prints a new table)."""
    matrix = np.stack([raw_feature_vector(t) for t in texts])
    means, stds = matrix.mean(axis=0), matrix.std(axis=0)
    return {name: (float(m), float(s)) for name, m, s in zip(feature_names(), means, stds)}


class StylometricEmbedder(Embedder):
    """Built-in ``stylometric`` embedder (no model, pure Python + numpy)."""

    #: bump the version whenever features or constants change: it is the cache key
    name = "stylometric-v1"
    clip = 5.0

    def __init__(self, cache_dir: str | Path | None = None):
        super().__init__(cache_dir)
        names = feature_names()
        missing = [n for n in names if n not in FEATURE_STATS]
        if missing:
            raise RuntimeError(f"stylometric constants lack features {missing[:5]}...")
        self.center = np.array([FEATURE_STATS[n][0] for n in names])
        # A feature that never varied in the reference corpus keeps unit scale.
        self.scale = np.array([FEATURE_STATS[n][1] or 1.0 for n in names])
        self.group_weight = np.concatenate([np.full(size, 1.0 / math.sqrt(size)) for _, size in _group_sizes()])

    def vector(self, text: str) -> np.ndarray:
        z = np.clip((raw_feature_vector(text) - self.center) / self.scale, -self.clip, self.clip)
        return (z * self.group_weight).astype(np.float32)

    def _embed_batch(self, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        rows = [self.vector(t) for t in tqdm(texts, desc="stylometric", disable=not show_progress, unit="text")]
        return np.stack(rows)


def _print_constants(path: str) -> None:
    texts = [
        t
        for _, row in iter_jsonl(path)
        for t in row.get("comment_texts", [])
        if len(t.split()) >= 100 and not t.lstrip().startswith(("**", "I'm a bot"))
    ]
    stats = fit_standardisation(texts)
    print(f"# fitted on {len(texts)} texts of {Path(path).name}")
    print("FEATURE_STATS = {")
    for name, (mean, std) in stats.items():
        print(f"    {name!r}: ({mean:.6g}, {std:.6g}),")
    print("}")


if __name__ == "__main__":
    import sys

    _print_constants(sys.argv[1])
