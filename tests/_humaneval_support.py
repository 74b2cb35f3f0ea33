"""Generation files and answer documents for the humaneval tests."""

from __future__ import annotations

import json
from pathlib import Path

# Distinctive names, so a grep of the page for them cannot hit an ordinary word.
SYSTEMS = ("zorblax-ddpo", "quimby-dpo", "vantor-sft")

PROMPTS = [
    "A lighthouse keeper finds a letter addressed to someone who will be born in a hundred years.",
    "Every night the city forgets one street. Tonight it is yours.",
    "The last dragon applies for a job at the fire department.",
    "You wake up with the ability to hear what plants are thinking.",
    "A time traveller keeps arriving one minute too late.",
]

_OPENINGS = [
    "The wind had teeth that morning",
    "Nobody in the village remembered the old road",
    "She counted the steps twice before she believed them",
    "It began, as most disasters do, with a small kindness",
    "The letter smelled of salt and pencil shavings",
    "He had rehearsed the speech for eleven years",
    "The clocks in the house disagreed about everything",
    "There was a knock, then a second, softer one",
]
_MIDDLES = [
    "and the gulls circled as if they already knew the ending.",
    "so the neighbours pretended not to notice the glow under the door.",
    "while the radio kept repeating a weather report from another decade.",
    "because nothing in the manual covered a situation quite like this.",
    "until the kettle screamed and broke the spell.",
]


def story(system_index: int, prompt_index: int, sample_index: int) -> str:
    """A short readable story, different per system, prompt and sample."""
    a = _OPENINGS[(system_index * 3 + prompt_index + sample_index) % len(_OPENINGS)]
    b = _MIDDLES[(system_index + 2 * sample_index + prompt_index) % len(_MIDDLES)]
    c = _OPENINGS[(system_index + prompt_index * 5 + sample_index * 7 + 1) % len(_OPENINGS)].lower()
    return f"{a}, {b} Later, {c}; that was story {sample_index + 1}."


def write_generations(folder: Path, systems=SYSTEMS, n_prompts: int = 3, n_samples: int = 3) -> list[Path]:
    """One `divtune generate`-style JSONL per system over the same prompts."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s, name in enumerate(systems):
        path = folder / f"gen_{s}.jsonl"
        with open(path, "w") as handle:
            for p in range(n_prompts):
                for i in range(n_samples):
                    row = {"prompt_id": f"p{p}", "prompt": PROMPTS[p], "sample_index": i,
                           "text": story(s, p, i), "model": name, "seed": 0}
                    handle.write(json.dumps(row) + "\n")
        paths.append(path)
    return paths


def answers_doc(build_id: str, annotator: str, records: list[dict]) -> dict:
    return {"format": "divtune-humaneval-answers", "version": 1, "build_id": build_id,
            "annotator": annotator, "saved_at": "2026-01-01T00:00:00Z", "answers": records}


def write_answers(path: Path, build_id: str, annotator: str, records: list[dict]) -> Path:
    path.write_text(json.dumps(answers_doc(build_id, annotator, records)))
    return path
