"""Reading the responses out of one verbalized-sampling reply (pure functions).

A verbalized call asks the model for k responses, each with the probability
the model gives it. Models follow the requested format loosely, so the reply
is read in this order, and the first form that yields anything is used:

1. JSON, anywhere in the reply (code fences and text around it are ignored):
   an object whose ``responses`` (or its only list-valued key) is a list, or a
   bare list. An item is an object with a text field (``text``, ``response``,
   ``story``, ``content``) and a probability field (``probability``, ``prob``,
   ``p``, ``confidence``), or a bare string (no probability).
2. The complete ``{...}`` items of a reply whose JSON is cut off (typically by
   the token budget): every flat object that decodes on its own is an item.
3. Tags: ``<response>`` blocks holding ``<text>...</text>`` and
   ``<probability>...</probability>``.

Probabilities may be numbers, numeric strings or percentages (``"30%"``); one
outside [0, 1] or not a number is kept as ``None`` and counted. An item
without usable text is dropped and counted. Every count has a fixed key (see
``PROBLEMS``) so the generation summary can add them up.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

TEXT_KEYS = ("text", "response", "story", "content")
PROBABILITY_KEYS = ("probability", "prob", "p", "confidence")

#: What can go wrong in a reply, with the sentence the summary uses for it.
PROBLEMS = {
    "no_responses": "reply held no JSON or tagged responses",
    "empty_reply": "reply was empty",
    "item_without_text": "item had no usable text",
    "bad_probability": "probability missing, not a number or outside [0, 1] (kept as null)",
    "cut_off": "JSON was cut off; only its complete items were used",
}

_FENCE_RE = re.compile(r"```(?:json|JSON)?")
_FLAT_OBJECT_RE = re.compile(r"\{[^{}]*\}", re.DOTALL)
_TAG_BLOCK_RE = re.compile(r"<response>(.*?)(?:</response>|(?=<response>)|\Z)", re.DOTALL | re.IGNORECASE)
_TAG_TEXT_RE = re.compile(r"<text>(.*?)(?:</text>|\Z)", re.DOTALL | re.IGNORECASE)
_TAG_PROB_RE = re.compile(r"<probability>(.*?)</probability>", re.DOTALL | re.IGNORECASE)


@dataclass
class ParsedReply:
    """The usable responses of one reply, in reply order, and what was wrong with it."""

    texts: list[str] = field(default_factory=list)
    probabilities: list[float | None] = field(default_factory=list)
    problems: Counter = field(default_factory=Counter)
    form: str = "none"  # json | json_items | tags | none | unstructured


def parse_verbalized(reply: str) -> ParsedReply:
    """The responses of a verbalized reply (see the module doc for the accepted forms)."""
    result = ParsedReply()
    body = _FENCE_RE.sub("", reply or "").strip()
    if not body:
        result.problems["empty_reply"] += 1
        return result
    items = _whole_json_items(body)
    if items is not None:
        result.form = "json"
    else:
        items = _flat_json_items(body)
        if items:
            result.form = "json_items"
            if _starts_unterminated_json(body):
                result.problems["cut_off"] += 1
        else:
            items = _tagged_items(body)
            result.form = "tags" if items else "none"
    if not items:
        result.problems["no_responses"] += 1
        return result
    for item in items:
        text, probability = _read_item(item, result.problems)
        if text is None:
            result.problems["item_without_text"] += 1
            continue
        result.texts.append(text)
        result.probabilities.append(probability)
    return result


def _whole_json_items(body: str) -> list | None:
    """Items of the first JSON object/list in ``body`` that holds a list of responses."""
    decoder = json.JSONDecoder()
    for start, char in enumerate(body):
        if char not in "{[":
            continue
        try:
            value, _ = decoder.raw_decode(body, start)
        except json.JSONDecodeError:
            continue
        items = _response_list(value)
        if items is not None:
            return items
    return None


def _response_list(value) -> list | None:
    if isinstance(value, list):
        return value if value and all(isinstance(v, (dict, str)) for v in value) else None
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("responses"), list):
        return value["responses"]
    lists = [v for v in value.values() if isinstance(v, list)]
    if len(lists) == 1:
        return _response_list(lists[0])
    return None


def _starts_unterminated_json(body: str) -> bool:
    """Whether the reply's first ``{``/``[`` opens JSON that never closes (the reply was cut)."""
    starts = [i for i in (body.find("{"), body.find("[")) if i >= 0]
    if not starts:
        return False
    try:
        json.JSONDecoder().raw_decode(body, min(starts))
    except json.JSONDecodeError as err:
        return err.pos >= len(body.rstrip()) or err.msg.startswith("Unterminated string")
    return False


def _flat_json_items(body: str) -> list[dict]:
    """Every brace-free ``{...}`` that decodes on its own and has a text key (salvages cut-off replies)."""
    items = []
    for match in _FLAT_OBJECT_RE.finditer(body):
        try:
            value = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and any(key in value for key in TEXT_KEYS):
            items.append(value)
    return items


def _tagged_items(body: str) -> list[dict]:
    items = []
    for block in _TAG_BLOCK_RE.findall(body):
        text = _TAG_TEXT_RE.search(block)
        probability = _TAG_PROB_RE.search(block)
        items.append({
            "text": text.group(1) if text else None,
            "probability": probability.group(1).strip() if probability else None,
        })
    return items


def _read_item(item, problems: Counter) -> tuple[str | None, float | None]:
    if isinstance(item, str):
        text, raw_probability = item, None
    elif isinstance(item, dict):
        text = next((item[k] for k in TEXT_KEYS if isinstance(item.get(k), str)), None)
        raw_probability = next((item[k] for k in PROBABILITY_KEYS if k in item), None)
    else:
        return None, None
    if text is None or not text.strip():
        return None, None
    probability = parse_probability(raw_probability)
    if probability is None:
        problems["bad_probability"] += 1
    return text.strip(), probability


def parse_probability(value) -> float | None:
    """A probability in [0, 1] from a number, a numeric string or a percentage; else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        scale = 100.0 if text.endswith("%") else 1.0
        try:
            value = float(text.rstrip("%").strip()) / scale
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if 0.0 <= value <= 1.0 else None
