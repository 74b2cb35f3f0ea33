"""``divtune humaneval analyze``: a study folder and answer files → counts, intervals, tests, agreement.

Each kept answer (one per annotator and item, see :mod:`divtune.humaneval.answers`)
is unblinded with ``key.json``: choosing the set of the pair's first system is a
*win*, the baseline's set a *loss*, "can't decide" a *tie*. Per question and
pair the output gives the counts, the three rates over all judgments with
Wilson intervals, and the exact two-sided sign test of wins against losses
(ties left out). Writes, in the output folder,

- ``results.json``: every number below, the files read and every dropped answer;
- ``humaneval.md`` and a self-contained ``humaneval.html`` (``divtune report``'s style);
- ``humaneval.png``: stacked win / tie / loss bars per question and pair;
- ``comments.jsonl`` (when annotators left comments): unblinded, one per answer;
- ``config.yaml``.
"""

from __future__ import annotations

import html
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import Field

from divtune.config import ConfigError, StageConfig
from divtune.humaneval.answers import AnswerSet, StudyView, read_answers
from divtune.humaneval.stats import OUTCOMES, krippendorff_alpha, outcome_summary
from divtune.humaneval.study import KEY_FORMAT, STUDY_FORMAT
from divtune.io import InputError, atomic_write_text, read_json, write_json, write_jsonl
from divtune.outputs import claim_output_dir, stamped
from divtune.reporting.plots import pyplot
from divtune.reporting.render import CSS, data_uri, html_table, markdown_table

log = logging.getLogger(__name__)

PLOT = "humaneval.png"
WIN_COLOUR, TIE_COLOUR, LOSS_COLOUR = "#1f77b4", "#bbbbbb", "#d62728"


class AnalyzeConfig(StageConfig):
    study: str = Field(description="study folder written by `divtune humaneval build`")
    answers: list[str] = Field(default_factory=list, description="answer files (page downloads .json, or .csv)")
    output: str
    confidence: float = Field(0.95, gt=0, lt=1, description="level of the Wilson intervals")


def _load_json(path: Path, expected_format: str) -> dict[str, Any]:
    doc = read_json(path, "not found (is this a folder written by `divtune humaneval build`?)")
    if not isinstance(doc, dict) or doc.get("format") != expected_format:
        raise InputError(path, f"expected {expected_format!r}", field="format")
    return doc


def load_study(study_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``study.json`` and ``key.json`` of a study folder, checked against each other."""
    study_dir = Path(study_dir)
    study = _load_json(study_dir / "study.json", STUDY_FORMAT)
    key = _load_json(study_dir / "key.json", KEY_FORMAT)
    if key.get("build_id") != study.get("build_id"):
        raise InputError(study_dir / "key.json", f"build {key.get('build_id')!r} is not the study's {study.get('build_id')!r}", field="build_id")
    item_ids = [it.get("item_id") for it in study.get("items", [])]
    missing = [i for i in item_ids if i not in key.get("items", {})]
    if missing or not item_ids:
        raise InputError(study_dir / "key.json", f"no unblinding entry for items {missing[:5]}", field="items")
    return study, key


def unblind(answers: AnswerSet, key: dict[str, Any], question_ids: list[str]):
    """``{(question, system, baseline): {item: {annotator: outcome}}}`` and the unanswered-question counts."""
    ratings: dict[tuple[str, str, str], dict[str, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
    unanswered = {q: 0 for q in question_ids}
    for answer in answers.kept:
        entry = key["items"][answer.item_id]
        for question in question_ids:
            choice = answer.choices.get(question)
            if choice is None:
                unanswered[question] += 1
                continue
            outcome = "tie" if choice == "tie" else ("win" if entry[choice] == entry["system"] else "loss")
            ratings[(question, entry["system"], entry["baseline"])][answer.item_id][answer.annotator] = outcome
    return ratings, unanswered


def _count(by_item: dict[str, dict[str, str]], annotator: str | None = None) -> dict[str, int]:
    counts = {o: 0 for o in OUTCOMES}
    for by in by_item.values():
        for who, outcome in by.items():
            if annotator is None or who == annotator:
                counts[outcome] += 1
    return counts


def analyze(study: dict[str, Any], key: dict[str, Any], answers: AnswerSet, level: float = 0.95) -> dict[str, Any]:
    """Every number of the analysis as one JSON-ready dict."""
    question_ids = [q["id"] for q in study["questions"]]
    ratings, unanswered = unblind(answers, key, question_ids)
    pairs = [tuple(p) for p in key["pairs"]]
    annotators = sorted({a.annotator for a in answers.kept})
    results, per_annotator, agreement = [], [], {}
    for question in question_ids:
        for system, baseline in pairs:
            by_item = ratings.get((question, system, baseline), {})
            c = _count(by_item)
            results.append({"question": question, "system": system, "baseline": baseline,
                            **outcome_summary(c["win"], c["tie"], c["loss"], level)})
            for who in annotators:
                a = _count(by_item, who)
                if sum(a.values()):
                    per_annotator.append({"annotator": who, "question": question, "system": system, "baseline": baseline,
                                          "wins": a["win"], "ties": a["tie"], "losses": a["loss"]})
        # Items are the units: each item belongs to one pair, so one alpha per question covers all pairs.
        merged = {item: by for (q, _, _), items in ratings.items() if q == question for item, by in items.items()}
        agreement[question] = krippendorff_alpha(merged)
    answered_items = {a.item_id for a in answers.kept}
    return {
        "build_id": study["build_id"],
        "confidence": level,
        "questions": study["questions"],
        "pairs": [list(p) for p in pairs],
        "results": results,
        "per_annotator": per_annotator,
        "agreement": agreement,
        "counts": {
            "answers_read": len(answers.kept) + len(answers.dropped),
            "answers_kept": len(answers.kept),
            "duplicates_dropped": len(answers.dropped),
            "annotators": len(annotators),
            "items": len(study["items"]),
            "items_never_answered": len(study["items"]) - len(answered_items),
            "unanswered_questions": unanswered,
            "comments": sum(1 for a in answers.kept if a.comment.strip()),
        },
        "files": answers.files,
        "dropped": answers.dropped,
    }


# ---------------------------------------------------------------- tables and plot


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _pct_ci(row: dict[str, Any], name: str) -> str:
    ci = row.get(f"{name}_ci")
    return _pct(row.get(name)) + ("" if ci is None else f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]")


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def results_table(report: dict[str, Any], question: str) -> tuple[list[str], list[list[str]]]:
    level = f"{100 * report['confidence']:.0f}%"
    header = ["system vs baseline", "judgments", "wins / ties / losses", f"win rate [{level}]",
              f"tie rate [{level}]", f"loss rate [{level}]", f"wins of decided [{level}]", "sign test p (ties excluded)"]
    rows = [
        [f"{r['system']} vs {r['baseline']}", str(r["n"]), f"{r['wins']} / {r['ties']} / {r['losses']}",
         _pct_ci(r, "win_rate"), _pct_ci(r, "tie_rate"), _pct_ci(r, "loss_rate"), _pct_ci(r, "win_share"), _p(r["sign_test_p"])]
        for r in report["results"] if r["question"] == question
    ]
    return header, rows


def annotator_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["annotator", "question", "system vs baseline", "wins", "ties", "losses"]
    rows = [[r["annotator"], r["question"], f"{r['system']} vs {r['baseline']}", str(r["wins"]), str(r["ties"]), str(r["losses"])]
            for r in report["per_annotator"]]
    return header, rows


def agreement_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["question", "items with ≥ 2 annotators", "annotators", "Krippendorff's α (nominal)", "raw pairwise agreement"]
    rows = []
    for question, a in report["agreement"].items():
        alpha = "n/a" if a["alpha"] is None else f"{a['alpha']:.3f}"
        if a.get("note"):
            alpha += f" ({a['note']})"
        rows.append([question, str(a["items_with_2plus"]), str(a["annotators"]), alpha, _pct(a["pairwise_agreement"])])
    return header, rows


def plot_outcomes(report: dict[str, Any], path: Path) -> str:
    """Stacked horizontal bars: win / tie / loss share per question and pair."""
    plt = pyplot()
    rows = [r for r in report["results"] if r["n"]]
    texts = {q["id"]: q["text"] for q in report["questions"]}
    fig, ax = plt.subplots(figsize=(9, 0.65 * max(len(rows), 1) + 1.6))
    for y, r in enumerate(rows):
        left = 0.0
        for name, colour in (("win", WIN_COLOUR), ("tie", TIE_COLOUR), ("loss", LOSS_COLOUR)):
            share = r[f"{name}_rate"]
            ax.barh(y, share, left=left, color=colour, edgecolor="white")
            if share >= 0.06:
                ax.text(left + share / 2, y, f"{100 * share:.0f}%", ha="center", va="center", fontsize=9,
                        color="white" if name != "tie" else "#222")
            left += share
        ci = r["win_rate_ci"]
        ax.errorbar(r["win_rate"], y + 0.3, xerr=[[r["win_rate"] - ci[0]], [ci[1] - r["win_rate"]]], fmt="none",
                    ecolor="#111", capsize=3, linewidth=1)
    ax.set_yticks(range(len(rows)), [f"{r['system']} vs {r['baseline']}\n{texts.get(r['question'], r['question'])}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of judgments")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in (WIN_COLOUR, TIE_COLOUR, LOSS_COLOUR)]
    ax.legend(handles, ["system chosen", "can't decide", "baseline chosen"], loc="lower center",
              bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return (f"Share of judgments per question and pair: the system's set chosen, can't decide, the baseline's set chosen. "
            f"The whisker is the {100 * report['confidence']:.0f}% Wilson interval of the win rate.")


def _headline(r: dict[str, Any], text: str) -> str:
    if not r["n"]:
        return f"{r['system']} vs {r['baseline']}, “{text}”: no judgments."
    return (f"{r['system']} vs {r['baseline']}, “{text}”: {r['system']} chosen in {_pct(r['win_rate'])}, "
            f"{r['baseline']} in {_pct(r['loss_rate'])}, can't decide {_pct(r['tie_rate'])} of {r['n']} judgments; "
            f"sign test over the {r['decided']} decided ones p = {_p(r['sign_test_p'])}.")


def _notes(report: dict[str, Any]) -> list[str]:
    c = report["counts"]
    unanswered = ", ".join(f"{q}: {n}" for q, n in c["unanswered_questions"].items())
    level = f"{100 * report['confidence']:.0f}%"
    notes = [
        "A win is a judgment that chose the set of the pair's first system, a loss one that chose the baseline's set, a tie “can't decide”.",
        f"Rates are over all judgments, ties included, with {level} Wilson score intervals; “wins of decided” is wins / (wins + losses).",
        "The sign test is scipy's exact two-sided binomial test of wins against losses with p = 1/2; ties are excluded from it.",
        "Judgments of one item by several annotators are not independent: with much overlap, read the intervals and p-values as optimistic.",
        f"Read {c['answers_read']} answers from {len(report['files'])} file(s); kept {c['answers_kept']} "
        f"from {c['annotators']} annotator(s); dropped {c['duplicates_dropped']} earlier answer(s) of an annotator to an item answered again.",
        f"Items never answered: {c['items_never_answered']} of {c['items']}. Answers leaving a question blank: {unanswered}.",
    ]
    ignored = sorted({col for f in report["files"] for col in f["ignored_columns"]})
    if ignored:
        notes.append(f"CSV columns ignored: {', '.join(ignored)}.")
    return notes


def render(report: dict[str, Any], output: Path) -> Path:
    """Write humaneval.md, humaneval.html and the plot; returns the HTML path."""
    caption = plot_outcomes(report, output / PLOT)
    texts = {q["id"]: q["text"] for q in report["questions"]}
    headlines = [_headline(r, texts[r["question"]]) for r in report["results"]]
    a_header, a_rows = annotator_table(report)
    g_header, g_rows = agreement_table(report)
    notes = _notes(report)
    intro = f"Study build {report['build_id']}: {report['counts']['items']} items, {report['counts']['annotators']} annotator(s)."
    md = ["# divtune human evaluation", "", intro, "", *[f"- {h}" for h in headlines], ""]
    html_parts = [f"<p>{html.escape(intro)}</p><ul>{''.join(f'<li>{html.escape(h)}</li>' for h in headlines)}</ul>"]
    for q in report["questions"]:
        header, rows = results_table(report, q["id"])
        md += [f"## {q['text']} (`{q['id']}`)", "", markdown_table(header, rows), ""]
        html_parts.append(f"<h2>{html.escape(q['text'])} <code>{html.escape(q['id'])}</code></h2>{html_table(header, rows)}")
    md += ["## Plot", "", f"![win / tie / loss]({PLOT})", "", caption, ""]
    html_parts.append(f'<h2>Plot</h2><figure><img alt="win / tie / loss" src="{data_uri(output / PLOT)}">'
                      f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    md += ["## Agreement between annotators", "", markdown_table(g_header, g_rows), ""]
    html_parts.append(f"<h2>Agreement between annotators</h2>{html_table(g_header, g_rows)}")
    md += ["## Per annotator", "", markdown_table(a_header, a_rows) if a_rows else "_No answers._", ""]
    html_parts.append(f"<h2>Per annotator</h2>{html_table(a_header, a_rows)}")
    if report["dropped"]:
        d_header = ["annotator", "item", "dropped answer", "kept answer"]
        d_rows = [[d["annotator"], d["item_id"], f"{d['file']} {d['where']}", d["kept"]] for d in report["dropped"]]
        md += ["## Dropped answers (answered again later)", "", markdown_table(d_header, d_rows), ""]
        html_parts.append(f"<h2>Dropped answers (answered again later)</h2>{html_table(d_header, d_rows)}")
    md += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    html_parts.append(f"<h2>Notes</h2><ul class=\"notes\">{''.join(f'<li>{html.escape(n)}</li>' for n in notes)}</ul>")
    atomic_write_text(output / "humaneval.md", "\n".join(md))
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>divtune human evaluation</title>'
            f"<style>{CSS}</style></head>\n<body>\n<h1>divtune human evaluation</h1>\n{''.join(html_parts)}\n</body></html>\n")
    return atomic_write_text(output / "humaneval.html", page)


def run_analyze(cfg: AnalyzeConfig, overwrite: bool = False) -> Path:
    """Check everything, then write the output folder; returns the HTML path.

    The output folder follows divtune.outputs' rule. "Same settings" means the
    same study folder, the same answer files in the same order (on equal
    timestamps the answer read last wins) and the same confidence, and the
    inputs unchanged: the study's done marker (its build id) and each answer
    file's size and modification time. That is outputs.py's model, as for
    ``divtune report``: the analysis is a deterministic function of these, so a
    finished one is reused rather than recomputed. A new or re-downloaded answer
    file counts as a changed input: refused unless ``overwrite``, which removes
    the earlier analysis's files (a ``comments.jsonl`` among them) and nothing else.
    """
    if not cfg.answers:
        raise ConfigError("give at least one answer file")
    study, key = load_study(cfg.study)
    view = StudyView(study["build_id"], {it["item_id"] for it in study["items"]}, [q["id"] for q in study["questions"]])
    answers = read_answers(cfg.answers, view)
    report = analyze(study, key, answers, cfg.confidence)
    output = Path(cfg.output)
    settings = {k: v for k, v in cfg.to_dict().items() if k != "output"}
    claim = claim_output_dir(output, "humaneval analyze", stamped(settings, [cfg.study, *cfg.answers]), overwrite)
    if claim.state == "reuse":
        log.info("%s already holds a finished humaneval analysis of these answers; reusing it", output)
        return output / "humaneval.html"
    claim.begin()
    write_json(output / "results.json", report)
    comments = [
        {"annotator": a.annotator, "item_id": a.item_id, "system_on_A": key["items"][a.item_id]["A"],
         "system_on_B": key["items"][a.item_id]["B"], "comment": a.comment}
        for a in answers.kept if a.comment.strip()
    ]
    if comments:
        write_jsonl(output / "comments.jsonl", comments)
    # No comments: no comments.jsonl. A replaced run's was removed by claim.begin(); a
    # "new" folder is empty, and an unfinished run with these settings had the same (no) comments.
    cfg.save(output / "config.yaml")
    page = render(report, output)
    claim.finish({"build_id": report["build_id"], "answers_kept": report["counts"]["answers_kept"]})
    return page
