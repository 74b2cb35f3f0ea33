"""Sample texts for the report: what the numbers are numbers of.

A diversity figure says little until one reads what the system wrote (a 135M model
after 8 steps mostly writes chat replies, not stories). The report shows, per
system, its first few samples for one prompt, the same prompt for every system
when they share one. The texts come from the generation files the evaluation
read (its ``config.yaml``); a file that is gone is left out and said so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from divtune.evaluation.systems import read_generations
from divtune.reporting.render import Block, Heading, NumberedList, Quote, paragraph

#: Samples shown per system, and the longest text shown in full.
SAMPLES_PER_SYSTEM = 3
MAX_CHARS = 1200


@dataclass
class Samples:
    prompt: str | None
    #: system name -> its first samples for ``prompt`` (or for its own first prompt).
    texts: dict[str, list[str]]
    #: generation files the evaluation names that are no longer there.
    missing: list[str]


def generation_files(eval_dir: str | Path) -> list[Path | str]:
    """The generation files an evaluation read: a Path when found, the recorded string when not."""
    config_path = Path(eval_dir) / "config.yaml"
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    except yaml.YAMLError:
        return []
    found: list[Path | str] = []
    for recorded in (config or {}).get("generations") or []:
        # Recorded relative to where evaluate ran; also try it beside the evaluation folder.
        candidates = [Path(recorded), Path(eval_dir) / recorded]
        found.append(next((c for c in candidates if c.is_file()), str(recorded)))
    return found


def shorten(text: str, limit: int = MAX_CHARS) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + " […]"


def read_samples(eval_dirs: list[str | Path], n: int = SAMPLES_PER_SYSTEM) -> Samples:
    """The first ``n`` samples of every system, for the first prompt (sorted by key) that all share."""
    systems, missing = [], []
    for eval_dir in eval_dirs:
        for path in generation_files(eval_dir):
            if isinstance(path, str):
                missing.append(path)
            else:
                systems.append(read_generations(path))
    if not systems:
        return Samples(None, {}, missing)
    shared = sorted(set.intersection(*(set(s.texts) for s in systems)))
    texts, prompt = {}, None
    for system in systems:
        key = shared[0] if shared else sorted(system.texts)[0]
        texts[system.name] = [shorten(t) for t in system.texts[key][:n]]
        if shared and prompt is None:
            prompt = system.prompts.get(key)
    return Samples(prompt, texts, missing)


def samples_blocks(samples: Samples) -> list[Block]:
    """The report's Samples section: the shared prompt, then each system's texts; nothing without samples."""
    if not samples.texts:
        return []
    blocks: list[Block] = [Heading(2, "Samples")]
    if samples.prompt is not None:
        blocks += [paragraph("Prompt:"), Quote(samples.prompt, css_class="sample")]
    for name, texts in samples.texts.items():
        blocks += [Heading(3, name), NumberedList(tuple(texts), css_class="sample")]
    if samples.missing:
        blocks.append(paragraph(f"Not shown (file no longer there): {', '.join(samples.missing)}.", css_class="footnote"))
    return blocks
