"""``divtune humaneval build``: generation files and system pairs → a blinded study folder.

For every pair (system, baseline) and every prompt both systems answered, one
*item*: the prompt and the two sets of stories. Which set is shown as "A"
(left, or on top on a phone) is decided per item from the seed, balanced
within each pair so position bias cancels. Items of all pairs are shuffled
together (seeded), so an annotator never works through one pair as a block.

The folder holds

- ``index.html``: the annotation page (:mod:`divtune.humaneval.page`), self-contained;
- ``items.csv``: the same items for crowdsourcing tools with their own templates;
- ``study.json``: the blind study (build id, questions, items); safe to share;
- ``key.json``: the unblinding key (which system is A and B per item) and what
  was skipped; never linked from the page, never to be shown to annotators;
- ``config.yaml``: the resolved config.

No system name is written to the page, the CSV or ``study.json``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from divtune.config import ConfigError, StageConfig
from divtune.evaluation.systems import System, read_generations
from divtune.humaneval.page import render_page
from divtune.io import InputError, atomic_write_text, write_json
from divtune.outputs import claim_output_dir, stamped

log = logging.getLogger(__name__)

STUDY_FORMAT = "divtune-humaneval-study"
KEY_FORMAT = "divtune-humaneval-key"
ANSWERS_FORMAT = "divtune-humaneval-answers"
FORMAT_VERSION = 1
#: Answer values: the set shown as A, the set shown as B, or no preference.
CHOICES = ("A", "B", "tie")


class Question(BaseModel):
    """One question asked of every item; answered with A, B or tie ("can't decide")."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="short identifier used in answer files, e.g. 'diverse'")
    text: str = Field(description="the question as the annotator reads it")

    @field_validator("id")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", value):
            raise ValueError(f"question id {value!r} must be lower-case letters, digits or _ (starting with a letter)")
        return value

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question text is empty")
        return value


DEFAULT_QUESTIONS = [
    Question(id="diverse", text="Which set of stories is more diverse?"),
    Question(id="interesting", text="Which set contains the most interesting story?"),
]
DEFAULT_CHOICE_LABELS = {"A": "Set A", "B": "Set B", "tie": "Can't decide"}
DEFAULT_INSTRUCTIONS = (
    "Each item shows a writing prompt and two sets of stories written for it, Set A and Set B. "
    "Read both sets, then answer the questions. Choose \"Can't decide\" only when you really have no preference. "
    "Your answers are saved in this browser as you go; when you are done, press \"Download answers\" "
    "and send the file to the person running the study."
)


class BuildConfig(StageConfig):
    generations: list[str] = Field(default_factory=list, description="generations JSONL files (divtune generate), one system each")
    pairs: list[tuple[str, str]] = Field(default_factory=list, description="[system, baseline] pairs to compare")
    output: str
    seed: int = 0
    max_items_per_pair: int | None = Field(None, ge=1, description="seeded choice of this many prompts per pair; default all")
    stories_per_set: int | None = Field(
        None, ge=1, description="stories shown per set (first in sample order); default: as many as both systems have"
    )
    title: str = "Comparing sets of stories"
    instructions: str = DEFAULT_INSTRUCTIONS
    questions: list[Question] = Field(default_factory=lambda: [q.model_copy() for q in DEFAULT_QUESTIONS])
    choice_labels: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_CHOICE_LABELS))
    comment: bool = Field(True, description="show an optional free-text comment box per item")

    @field_validator("questions")
    @classmethod
    def _distinct_questions(cls, value: list[Question]) -> list[Question]:
        if not value:
            raise ValueError("at least one question is needed")
        ids = [q.id for q in value]
        if len(set(ids)) != len(ids):
            raise ValueError(f"question ids must be distinct, got {ids}")
        return value

    @field_validator("choice_labels")
    @classmethod
    def _three_labels(cls, value: dict[str, str]) -> dict[str, str]:
        if set(value) != set(CHOICES) or not all(v.strip() for v in value.values()):
            raise ValueError(f"choice_labels needs exactly the keys {list(CHOICES)} with non-empty labels")
        return value

    @model_validator(mode="after")
    def _pairs_of_two_systems(self) -> "BuildConfig":
        for system, baseline in self.pairs:
            if system == baseline:
                raise ValueError(f"pair {system!r} vs {baseline!r} compares a system with itself")
        if len(set(self.pairs)) != len(self.pairs):
            raise ValueError("a pair is listed twice")
        return self


def parse_pairs(items: list[str]) -> list[tuple[str, str]]:
    """``["ddpo=dpo", ...]`` (SYSTEM=BASELINE) → ``[("ddpo", "dpo"), ...]``; a system may face several baselines."""
    pairs = []
    for item in items:
        system, sep, baseline = item.partition("=")
        if not sep or not system.strip() or not baseline.strip():
            raise ConfigError(f"--pair {item!r}: expected SYSTEM=BASELINE")
        pairs.append((system.strip(), baseline.strip()))
    return pairs


@dataclass
class Item:
    item_id: str
    system: str
    baseline: str
    prompt_id: Any
    prompt: str
    system_on: str  # "A" or "B": the side the (first) system is shown on
    system_stories: list[str]
    baseline_stories: list[str]

    def side(self, which: str) -> list[str]:
        return self.system_stories if which == self.system_on else self.baseline_stories

    def name_on(self, which: str) -> str:
        return self.system if which == self.system_on else self.baseline


def _stable_int(*parts: Any) -> int:
    """A seed from values, the same on every machine and independent of iteration order."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def load_systems(paths: list[str]) -> dict[str, System]:
    """Generation files by system name (the files' ``model`` field, else the file stem)."""
    systems: dict[str, System] = {}
    for path in paths:
        system = read_generations(path)
        if system.name in systems:
            raise ConfigError(
                f"{path} and {systems[system.name].source} are both system {system.name!r}; "
                "give each system its own name (`divtune generate --name`)"
            )
        systems[system.name] = system
    return systems


def pair_items(
    system: System, baseline: System, seed: int, max_items: int | None, stories_per_set: int | None
) -> tuple[list[Item], dict[str, int]]:
    """The items of one pair (ids not yet assigned) and counts of the prompts left out, by reason."""
    counts = {"prompts_only_in_system": 0, "prompts_only_in_baseline": 0, "too_few_stories": 0, "not_selected": 0}
    counts["prompts_only_in_system"] = len(set(system.texts) - set(baseline.texts))
    counts["prompts_only_in_baseline"] = len(set(baseline.texts) - set(system.texts))
    usable = []
    for key in system.texts:
        if key not in baseline.texts:
            continue
        if system.prompts[key] != baseline.prompts[key]:
            raise InputError(
                baseline.source, f"prompt {key!r} has a different text than in {system.source}: "
                "were the two systems sampled on the same prompts?", field="prompt",
            )
        a, b = system.texts[key], baseline.texts[key]
        k = stories_per_set or min(len(a), len(b))
        if len(a) < k or len(b) < k or k < 1:
            counts["too_few_stories"] += 1
            continue
        usable.append((key, a[:k], b[:k]))
    if max_items is not None and len(usable) > max_items:
        # Seeded, and independent of file order: rank prompts by a hash of (seed, pair, prompt).
        ranked = sorted(usable, key=lambda u: _stable_int(seed, "select", system.name, baseline.name, u[0]))
        counts["not_selected"] = len(usable) - max_items
        keep = {u[0] for u in ranked[:max_items]}
        usable = [u for u in usable if u[0] in keep]
    # Balanced sides: half the items show the system as A, then shuffled per pair.
    rng = np.random.default_rng(_stable_int(seed, "sides", system.name, baseline.name))
    sides = np.array(["A", "B"] * ((len(usable) + 1) // 2))[: len(usable)]
    rng.shuffle(sides)
    items = [
        Item("", system.name, baseline.name, system.original_ids[key], system.prompts[key], str(side), a, b)
        for (key, a, b), side in zip(usable, sides)
    ]
    return items, counts


def default_pairs(pairs: list[tuple[str, str]], systems: dict[str, System]) -> list[tuple[str, str]]:
    """The pairs to compare: as given; without any, the two systems of exactly two generation files
    (the first file's system against the second's), as a user who names two files means."""
    if pairs:
        return pairs
    if len(systems) == 2:
        system, baseline = systems
        log.info("no --pair given: comparing the two systems, %s (wins) against %s; --pair %s=%s to swap",
                 system, baseline, baseline, system)
        return [(system, baseline)]
    raise ConfigError(
        f"give the pairs to compare (--pair SYSTEM=BASELINE): the generation files hold {len(systems)} systems "
        f"{sorted(systems)}, and only two are compared without --pair"
    )


def build_items(cfg: BuildConfig, systems: dict[str, System]) -> tuple[list[Item], dict[str, dict[str, int]]]:
    """All items of all pairs, shuffled together and numbered; per pair the counts of what was left out."""
    if not cfg.pairs:
        raise ConfigError("give at least one pair to compare (--pair SYSTEM=BASELINE)")
    unknown = sorted({n for pair in cfg.pairs for n in pair} - set(systems))
    if unknown:
        raise ConfigError(f"pair names {unknown} are not among the systems of the generation files {sorted(systems)}")
    items: list[Item] = []
    summary: dict[str, dict[str, int]] = {}
    for name, base in cfg.pairs:
        pair, counts = pair_items(systems[name], systems[base], cfg.seed, cfg.max_items_per_pair, cfg.stories_per_set)
        if not pair:
            raise ConfigError(f"pair {name} vs {base}: no prompt has stories from both systems ({counts})")
        items += pair
        summary[f"{name} vs {base}"] = {"items": len(pair), **counts}
    order = np.random.default_rng(_stable_int(cfg.seed, "order")).permutation(len(items))
    items = [items[i] for i in order]
    width = max(3, len(str(len(items))))
    for number, item in enumerate(items, start=1):
        item.item_id = f"item-{number:0{width}d}"
    return items, summary


def blind_study(cfg: BuildConfig, items: list[Item]) -> dict[str, Any]:
    """What the annotator may see: the content of ``study.json`` and of the page (no system names)."""
    study = {
        "format": STUDY_FORMAT,
        "version": FORMAT_VERSION,
        "build_id": "",
        "title": cfg.title,
        "instructions": cfg.instructions,
        "questions": [q.model_dump() for q in cfg.questions],
        "choice_labels": cfg.choice_labels,
        "comment": cfg.comment,
        "items": [{"item_id": it.item_id, "prompt": it.prompt, "A": it.side("A"), "B": it.side("B")} for it in items],
    }
    # The id is a hash of everything shown, so the same inputs give the same build and
    # answers collected on an identical rebuild still match.
    study["build_id"] = hashlib.sha256(json.dumps(study, sort_keys=True).encode()).hexdigest()[:12]
    return study


def unblinding_key(cfg: BuildConfig, items: list[Item], build_id: str, systems: dict[str, System], summary) -> dict[str, Any]:
    return {
        "format": KEY_FORMAT,
        "version": FORMAT_VERSION,
        "build_id": build_id,
        "pairs": [list(p) for p in cfg.pairs],
        "items": {
            it.item_id: {"system": it.system, "baseline": it.baseline, "prompt_id": it.prompt_id,
                         "A": it.name_on("A"), "B": it.name_on("B")}
            for it in items
        },
        "sources": {name: systems[name].source for pair in cfg.pairs for name in pair},
        "summary": summary,
    }


def items_csv(study: dict[str, Any]) -> str:
    """One row per item: ``item_id, build_id, prompt, n_stories, a_1..a_K, b_1..b_K``."""
    k = max(max(len(it["A"]), len(it["B"])) for it in study["items"])
    header = ["item_id", "build_id", "prompt", "n_stories", *[f"a_{i}" for i in range(1, k + 1)], *[f"b_{i}" for i in range(1, k + 1)]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for it in study["items"]:
        pad_a = it["A"] + [""] * (k - len(it["A"]))
        pad_b = it["B"] + [""] * (k - len(it["B"]))
        writer.writerow([it["item_id"], study["build_id"], it["prompt"], len(it["A"]), *pad_a, *pad_b])
    return buffer.getvalue()


def run_build(cfg: BuildConfig, overwrite: bool = False) -> Path:
    """Write the study folder; returns the page path. Everything is checked before anything is written.

    The folder follows divtune.outputs' rule: the same settings and generation
    files reuse a finished study (its build id, and so the answers collected
    with it, stay valid); a study built with other settings is refused unless
    ``overwrite``, which replaces it (answers collected with it then no longer
    match); files divtune did not write are never touched.
    """

    systems = load_systems(cfg.generations)
    cfg = cfg.model_copy(update={"pairs": default_pairs(cfg.pairs, systems)})
    items, summary = build_items(cfg, systems)
    study = blind_study(cfg, items)
    key = unblinding_key(cfg, items, study["build_id"], systems, summary)
    page = render_page(study)
    leaked = [name for name in systems if name.lower() in page.lower()]
    if leaked:
        # The page is built from texts, ids and questions only, so a name found here
        # is a word of a prompt or story (e.g. a system called "base").
        log.warning("system name(s) %s occur in the page's prompt or story texts (not as labels)", leaked)
    output = Path(cfg.output)
    settings = {k: v for k, v in cfg.to_dict().items() if k != "output"}
    claim = claim_output_dir(output, "humaneval build", stamped(settings, cfg.generations), overwrite)
    if claim.state == "reuse":
        log.info("%s already holds a finished humaneval build with these settings and inputs; reusing it", output)
        return output / "index.html"
    claim.begin()
    atomic_write_text(output / "items.csv", items_csv(study))
    write_json(output / "study.json", study)
    write_json(output / "key.json", key)
    cfg.save(output / "config.yaml")
    path = atomic_write_text(output / "index.html", page)
    claim.finish({"build_id": study["build_id"]})
    return path
