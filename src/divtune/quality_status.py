"""Is the quality column worth reading? The rule, and what the report does with it.

Quality in an evaluation is the mean reward-model score. A reward model that
cannot rank held-out responses better than a coin gives numbers that look
meaningful and are not, so the report greys out the quality rows (quality and
the quality-filtered effective diversity) and claims no paired difference of
them unless the reward model is shown to beat chance:

    measurable  <=>  lower end of the 95% interval of held-out pairwise accuracy > 0.5,
                     on whole responses and, when measured, on their first 100 words

The second condition is there because the samples an evaluation scores are openings
of a fixed number of tokens: Reddit votes grow with length (on the shipped data,
"more words wins" ranks 61% of held-out pairs right), so a model can beat chance on
whole stories by reading their length, and still rank equally long openings no
better than a coin.

The reward model is found through the evaluation folder: ``config.yaml``'s
``reward:`` path, then that folder's ``metrics.json`` (``divtune reward train``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

#: Report rows (metric keys) that rest on the reward model's scores.
QUALITY_KEYS = ("quality", "effective_semantic_diversity")
MARK = "†"
CHANCE = 0.5


def _lower_bound_above_chance(metrics: Mapping[str, Any]) -> bool:
    interval = metrics.get("pairwise_accuracy_ci")
    if not isinstance(interval, (list, tuple)) or len(interval) != 2 or interval[0] is None:
        return False
    return float(interval[0]) > CHANCE


def quality_measurable(reward_metrics: Mapping[str, Any]) -> bool:
    """True when the held-out pairwise accuracy's interval lies above chance, on whole
    responses and on their openings (``openings``, when the metrics have them).

    Metrics without that interval cannot show the model beats chance: False.
    """
    if not _lower_bound_above_chance(reward_metrics):
        return False
    openings = reward_metrics.get("openings")
    return openings is None or (isinstance(openings, Mapping) and _lower_bound_above_chance(openings))


@dataclass(frozen=True)
class QualityStatus:
    """``measurable`` is None when no evaluation used a reward model (nothing to judge)."""

    measurable: bool | None
    footnote: str | None = None

    @property
    def greyed(self) -> bool:
        return self.measurable is False

    def mark_rows(self, rows: list[list[str]], replace_cells_with: str | None = None
                  ) -> tuple[list[list[str]], list[int]]:
        """``rows`` (label first) with the quality rows' labels marked † (and their cells
        replaced, for tables of claimed differences), plus those rows' indices to grey out.
        Unchanged when quality is measurable or not judged."""
        if not self.greyed:
            return rows, []
        out, greyed = [], []
        for i, row in enumerate(rows):
            if row and row[0].split(" ")[0] in QUALITY_KEYS:
                cells = row[1:] if replace_cells_with is None else [replace_cells_with] * (len(row) - 1)
                row = [f"{row[0]} {MARK}", *cells]
                greyed.append(i)
            out.append(row)
        return out, greyed


def _format_accuracy(metrics: Mapping[str, Any]) -> str:
    accuracy, interval = metrics.get("pairwise_accuracy"), metrics.get("pairwise_accuracy_ci")
    if not isinstance(accuracy, (int, float)):
        return "unknown"
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and None not in interval:
        return f"{accuracy:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"
    return f"{accuracy:.3f} (no interval)"


def reward_dir_of(eval_dir: str | Path) -> Path | str | None:
    """The reward-model folder an evaluation scored quality with (``config.yaml``'s ``reward``):
    a Path when found, the recorded string when it no longer resolves, None when unused."""
    config_path = Path(eval_dir) / "config.yaml"
    if not config_path.is_file():
        return None
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return None
    recorded = config.get("reward") if isinstance(config, dict) else None
    if not recorded:
        return None
    # Recorded relative to where evaluate ran; also try it beside the evaluation folder.
    for candidate in (Path(recorded), Path(eval_dir) / recorded):
        if (candidate / "metrics.json").is_file():
            return candidate
    return str(recorded)


def quality_status(eval_dirs: list[str | Path]) -> QualityStatus:
    """Judge the quality of every evaluation folder; one unmeasurable reward model greys all."""
    problems, seen = [], set()
    used_reward = False
    for eval_dir in eval_dirs:
        reward_dir = reward_dir_of(eval_dir)
        if reward_dir is None:
            continue
        used_reward = True
        if isinstance(reward_dir, str):
            problems.append(f"reward model metrics not found ({reward_dir}/metrics.json), so it is not shown to beat chance")
            continue
        if reward_dir.resolve() in seen:
            continue
        seen.add(reward_dir.resolve())
        try:
            metrics = json.loads((reward_dir / "metrics.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            metrics = None
        if not isinstance(metrics, dict):
            problems.append(f"reward model metrics unreadable ({reward_dir}/metrics.json)")
        elif not quality_measurable(metrics):
            figure = f"reward model held-out pairwise accuracy {_format_accuracy(metrics)}"
            if isinstance(metrics.get("openings"), Mapping):
                words = metrics["openings"].get("words", "N")
                figure += f", on first {words} words {_format_accuracy(metrics['openings'])}"
            problems.append(figure)
    if not used_reward:
        return QualityStatus(None)
    if not problems:
        return QualityStatus(True)
    return QualityStatus(False, f"{MARK} quality not measurable here: {'; '.join(problems)}. "
                                "Quality and the quality-filtered diversity are greyed out: no claim "
                                "rests on them and no paired difference of them is claimed.")
