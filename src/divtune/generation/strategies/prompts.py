"""Settings and prompt templates of the ``iterative`` and ``verbalized`` strategies.

Templates are plain text with named placeholders in braces. Only the names
listed for a template are replaced, so any other brace (a JSON example, say)
is left as it is and needs no escaping. Each message is one user turn; the
chat template of the model is applied around it by the sampler.
"""

from __future__ import annotations

import re
from typing import Callable, Literal

from pydantic import Field, field_validator

from divtune.config import StageConfig

ITERATIVE_TEMPLATE = (
    "{prompt}\n\n"
    "Here are the responses you have already written for this request:\n\n"
    "{previous}\n\n"
    "Write one new response to the request that differs from all of them "
    "(in content, characters, setting and style). Reply with the new response only."
)
ITERATIVE_FIRST_TEMPLATE = "{prompt}"
ITERATIVE_PREVIOUS_TEMPLATE = "Response {number}:\n{text}"

VERBALIZED_TEMPLATE = (
    "{prompt}\n\n"
    "Write {k} different responses to the request above that together cover the range of "
    "responses you could give. For each one, estimate the probability (a number from 0.0 "
    "to 1.0) that you would give that response.\n"
    "Reply with JSON only, in this form:\n"
    '{"responses": [{"text": "<the response>", "probability": <number>}, ...]}'
)


def fill(template: str, **values: object) -> str:
    """``template`` with each ``{name}`` of ``values`` replaced; other braces stay as they are."""
    # One pass, so a value that itself contains "{previous}" (say) is not filled in again.
    pattern = re.compile("\\{(" + "|".join(re.escape(name) for name in values) + ")\\}")
    return pattern.sub(lambda match: str(values[match.group(1)]), template)


def _require_placeholders(template: str, names: tuple[str, ...]) -> str:
    missing = [name for name in names if "{" + name + "}" not in template]
    if missing:
        raise ValueError(f"template lacks the placeholder(s) {', '.join('{' + n + '}' for n in missing)}")
    return template


class IterativeSettings(StageConfig):
    """``strategy: iterative``: sample k is asked for with samples 1..k-1 shown in the prompt."""

    #: Message of samples 2..N: ``{prompt}`` and ``{previous}`` (the shown samples, joined by blank lines).
    template: str = ITERATIVE_TEMPLATE
    #: Message of sample 1, and of any sample for which no earlier sample fits: ``{prompt}``.
    first_template: str = ITERATIVE_FIRST_TEMPLATE
    #: One shown sample: ``{number}`` (1 = the oldest shown) and ``{text}``.
    previous_template: str = ITERATIVE_PREVIOUS_TEMPLATE
    #: Most tokens of the user message (prompt, instructions and shown samples,
    #: without the chat template's own tokens). Older samples are dropped first.
    max_context_tokens: int = Field(2048, ge=1)

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        return _require_placeholders(value, ("prompt", "previous"))

    @field_validator("first_template")
    @classmethod
    def _first(cls, value: str) -> str:
        return _require_placeholders(value, ("prompt",))

    @field_validator("previous_template")
    @classmethod
    def _previous(cls, value: str) -> str:
        return _require_placeholders(value, ("text",))


class VerbalizedSettings(StageConfig):
    """``strategy: verbalized``: one call asks for several responses with their probabilities."""

    #: The request: ``{prompt}`` and ``{k}`` (how many responses this call asks for).
    template: str = VERBALIZED_TEMPLATE
    #: Responses asked for by the first call (default: ``num_samples``). Top-up
    #: calls ask for the number still missing, at most this many.
    responses_per_call: int | None = Field(None, ge=1)
    #: Calls per prompt, the first one included, before a prompt is left short.
    max_calls: int = Field(4, ge=1)
    #: A call may produce ``k * (max_new_tokens + this)`` tokens: each response gets
    #: an independent sample's budget plus room for the JSON around it.
    overhead_tokens_per_response: int = Field(32, ge=0)
    #: A reply with no JSON or tagged response in it: ``drop`` it (counted, and
    #: topped up), or take the whole reply as ``one_response`` (counted too; for
    #: small models that cannot follow the format).
    unstructured: Literal["drop", "one_response"] = "drop"
    #: Cut each response to its first ``max_new_tokens`` tokens, the budget of an
    #: independent sample, so strategies are compared at the same length (counted).
    cut_to_max_new_tokens: bool = True

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        return _require_placeholders(value, ("prompt", "k"))


def iterative_message(
    prompt: str, previous: list[str], settings: IterativeSettings, count_tokens: Callable[[str], int]
) -> tuple[str, int]:
    """The user message for the next sample of ``prompt`` after ``previous``, and how many samples it shows.

    All earlier samples are shown when they fit in ``max_context_tokens``;
    otherwise the oldest are dropped, one at a time, until the message fits.
    When not even the newest fits, the message is ``first_template`` (0 shown).
    """
    for start in range(len(previous)):
        shown = previous[start:]
        listed = "\n\n".join(
            fill(settings.previous_template, number=i, text=text) for i, text in enumerate(shown, start=1)
        )
        message = fill(settings.template, prompt=prompt, previous=listed)
        if count_tokens(message) <= settings.max_context_tokens:
            return message, len(shown)
    return fill(settings.first_template, prompt=prompt), 0


def verbalized_message(prompt: str, k: int, settings: VerbalizedSettings) -> str:
    return fill(settings.template, prompt=prompt, k=k)
