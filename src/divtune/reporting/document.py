"""What the evaluation report says, as a document of blocks (divtune.reporting.render).

In order: the caveat box (when given), which folders and baseline, the metrics,
the paired differences, the seed-level intervals and interactions (when seeds
are pooled or interactions asked for), the surface modes, samples of each
system, the plots, and the notes that say how to read all of it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from divtune.quality_status import QualityStatus
from divtune.reporting.comparisons import Comparison
from divtune.reporting.render import (
    Block,
    Bullets,
    Caveat,
    Document,
    Emphasis,
    Figure,
    Heading,
    Inline,
    Link,
    Strong,
    Table,
    paragraph,
)
from divtune.reporting.samples import Samples, samples_blocks
from divtune.reporting.tables import diff_table, metrics_table, modes_table, seed_interval_table

TITLE = "divtune evaluation report"
#: Where the recorded results and their caveats are, in a source checkout of divtune.
RESULTS_INDEX = Path(__file__).resolve().parents[3] / "docs" / "results" / "README.md"
#: A difference that quality from a reward model at chance does not allow.
NOT_CLAIMED = "not claimed"

NOTES = (
    "Values are means over prompts with 95% percentile-bootstrap intervals over prompts, shown as value [low, high].",
    "↑ higher is more diverse, ↓ lower is more diverse. Higher is more diverse for semantic/style diversity, Vendi and distinct-n; lower is more diverse for self-BLEU and the gzip compression ratio (original/compressed bytes).",
    "gold = human responses to the same test prompts, with the same number of responses per prompt as the samples.",
    "gold-matched (when shown) = the same human responses cut to the samples' length in tokens (per prompt, the median token count of the samples, same tokenizer): compare samples with gold-matched; the full gold row mixes length with diversity.",
    "effective_semantic_diversity keeps only samples whose quality passes the threshold (prompts with fewer than 2 passing samples count as 0).",
    "Paired differences are system minus baseline over the prompts both share; * marks intervals that exclude 0.",
    "Seed-paired (pooled) differences: the main table's interval is the crossed bootstrap (seeds, then prompts, one prompt draw for all drawn seeds). The seed-level tables treat the training run as the unit: a Student-t interval over the per-seed means (each seed's mean over prompts of its paired difference; undefined with one seed), and a nested bootstrap that draws seeds, then prompts within each drawn seed. With few seeds they are wider, as they should be.",
    "Interactions (when shown): (system − baseline) − (control system − control baseline), seeds paired by index and prompts by id, e.g. the b × method interaction (DDPO − DPO at b > 0) − (DDPO − DPO at b = 0); in interactions.json.",
    "centrality (when shown): each sample's mean cosine similarity (semantic embedder) to its prompt's human responses, standardised by those responses' own centralities (0 = as typical as the average human response; higher = more typical, less diverse).",
    "typical_mode_share, mode_entropy (bits, 0 to 2) and modes_seen (when shown): the surface modes of the openings (dialogue, first person, second person, other), per prompt.",
    "distinct_k (when shown): per prompt, the number of meaning classes among its k samples (NoveltyBench), by DARLING's partition: two samples are one class when their semantic cosine reaches the threshold (default 0.9), classes are connected components; 1 = all alike, k = all distinct. Compare rows with the same k (the gold rows may have fewer texts).",
    "chatbot_share (when shown): the share of samples whose opening reads like a chatbot reply rather than a story (divtune.chatbot's rule: acknowledgements, 'Here is a story', 'Let's', titles and headings, talk about 'your text', emoji, other scripts, lists); lower is more story-like.",
    "KEY_NAME metrics (e.g. semantic_diversity_minilm, when shown): the same metric in a further semantic space (evaluate's extra_semantic).",
)


def results_link(output: Path) -> str | None:
    """The results index relative to the report folder, when this divtune is a source checkout."""
    if not RESULTS_INDEX.is_file():
        return None
    return Path(os.path.relpath(RESULTS_INDEX, output.resolve())).as_posix()


def caveat_block(caveat: str, link: str | None) -> Caveat:
    where: Inline = Link("docs/results/README.md", link) if link else "docs/results/README.md in the divtune repository"
    return Caveat((Strong("Caveat."), f" {caveat} The recorded results, with their own caveats: ", where, "."))


def report_document(
    comparison: Comparison,
    eval_dirs: list[str | Path],
    seed_groups: dict[str, list[str]] | None,
    quality: QualityStatus,
    figures: list[Figure],
    mode_counts: tuple[str, dict[str, dict[str, int]]] | None,
    samples: Samples,
    caveat: str | None = None,
    link: str | None = None,
) -> Document:
    """The whole report; ``link`` is :func:`results_link`'s, for the caveat."""
    blocks: list[Block] = [caveat_block(caveat, link)] if caveat else []
    blocks.append(_introduction(comparison, eval_dirs, seed_groups))
    blocks += _metrics(comparison, quality)
    blocks += _differences(comparison, quality)
    blocks += _seed_level(comparison, quality)
    if mode_counts is not None:
        header, rows = modes_table(mode_counts[1])
        blocks += [Heading(2, "Surface modes of the samples"), Table(header, rows)]
    blocks += samples_blocks(samples)
    blocks.append(Heading(2, "Plots"))
    for figure in figures:
        blocks += [Heading(3, figure.alt), figure]
    blocks += [Heading(2, "Notes"), Bullets(NOTES, css_class="notes")]
    return Document(TITLE, blocks)


def _introduction(
    comparison: Comparison, eval_dirs: list[str | Path], seed_groups: dict[str, list[str]] | None
) -> Block:
    sources = ", ".join(str(Path(d)) for d in eval_dirs)
    pooling_note = (
        " Seeds pooled: " + "; ".join(f"{n} = mean of {' + '.join(m)}" for n, m in seed_groups.items()) + ";"
        " the plots show the pooled systems. A pooled system's own interval resamples prompts; a difference"
        " between two pooled systems pairs their runs seed by seed and resamples seeds, then prompts."
        if seed_groups
        else ""
    )
    return paragraph(
        f"Evaluation folders: {sources}. Baseline for paired differences: ",
        Strong(comparison.baseline.name),
        " unless a column names another." if comparison.mixed_baselines else ".",
        pooling_note,
    )


def _footnotes(quality: QualityStatus) -> list[Block]:
    return [paragraph(quality.footnote, css_class="footnote")] if quality.footnote else []


def _table(header: list[str], rows: list[list[str]], quality: QualityStatus, replace_cells_with: str | None) -> Table:
    """A table with its quality rows marked (and their cells replaced) when quality is not measurable."""
    rows, greyed = quality.mark_rows(rows, replace_cells_with=replace_cells_with)
    return Table(header, rows, tuple(greyed))


def _metrics(comparison: Comparison, quality: QualityStatus) -> list[Block]:
    header, rows = metrics_table(comparison.systems)
    return [Heading(2, "Metrics"), _table(header, rows, quality, None), *_footnotes(quality)]


def _differences(comparison: Comparison, quality: QualityStatus) -> list[Block]:
    mixed = comparison.mixed_baselines
    title = "Paired differences" if mixed else f"Paired difference against {comparison.baseline.name}"
    header, rows = diff_table(comparison.differences, comparison.comparisons if mixed else None)
    table = (_table(header, rows, quality, NOT_CLAIMED) if rows
             else paragraph(Emphasis("Only one system: nothing to compare.")))
    return [Heading(2, title), table, *_footnotes(quality)]


def _seed_level(comparison: Comparison, quality: QualityStatus) -> list[Block]:
    """The seed-unit intervals of the pooled differences and of the interactions, each kind its own table."""
    diffs, comparisons = comparison.differences, comparison.comparisons
    heads = {n: f"{n} − {comparisons[n]}" for n in diffs} if comparison.mixed_baselines else None
    blocks: list[Block] = []
    for kind, title in (("seed_t", "Seed-level intervals: Student t over the seed means"),
                        ("seed_nested_bootstrap", "Seed-level intervals: nested bootstrap (seeds, then prompts within each seed)")):
        header, rows = seed_interval_table(diffs, kind, heads)
        if rows:
            blocks += [Heading(2, title), _table(header, rows, quality, NOT_CLAIMED)]
    if comparison.interactions:
        blocks += _interactions(comparison.interactions, quality)
    return blocks


def _interactions(contrasts: dict[str, dict[str, Any]], quality: QualityStatus) -> list[Block]:
    inter = {n: c["metrics"] for n, c in contrasts.items()}
    heads = {n: f"{n}: " + "({system} − {baseline}) − ({system_control} − {baseline_control})".format(**c["terms"])
             for n, c in contrasts.items()}
    _, rows = diff_table(inter, None)
    header = ["metric", *[heads[n] for n in inter]]
    blocks: list[Block] = [Heading(2, "Interactions: crossed bootstrap (seeds, then prompts)"),
                           _table(header, rows, quality, NOT_CLAIMED)]
    for kind, label in (("seed_t", "Student t over the seed means"), ("seed_nested_bootstrap", "nested bootstrap")):
        header, rows = seed_interval_table(inter, kind, heads)
        if rows:
            blocks += [Heading(2, f"Interactions: {label}"), _table(header, rows, quality, NOT_CLAIMED)]
    return blocks
