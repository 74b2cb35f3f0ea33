"""Dropping non-stories and duplicates, each drop counted under a reason."""

from __future__ import annotations

from collections import Counter

# Exact openings of the r/WritingPrompts moderator stickies and bot replies seen
# in the real data (e.g. "**Off-Topic Discussion**: Reply here for non-story
# comments.", "**Welcome to the Prompt!** All top-level comments must be a story").
MODERATOR_STICKY_PREFIXES = ("**Off-Topic Discussion**", "**Welcome to the Prompt", "**Welcome to the Post")
BOT_PREFIXES = ("I'm a bot, *bleep*, *bloop*", "I am a bot")
REMOVED_BODIES = {"[removed]", "[deleted]"}

DROP_REASONS = {
    "moderator_sticky": "moderator sticky comment (Off-Topic Discussion / Welcome to the Prompt)",
    "bot_comment": "bot comment (\"I'm a bot, *bleep*, *bloop*\")",
    "removed_or_deleted": "body is [removed] or [deleted]",
    "empty_text": "empty text",
    "too_short": "fewer than --min-words words",
    "duplicate_in_prompt": "same text as an earlier response to the same prompt",
    "over_max_responses_per_prompt": "beyond the top --max-responses-per-prompt of its prompt",
    "over_max_prompts": "its prompt is beyond --max-prompts",
}


def drop_reason(text: str, layout: str, min_words: int) -> str | None:
    """Why a single response is not a usable story, or None."""
    body = text.strip()
    if layout == "reddit":
        if body.startswith(MODERATOR_STICKY_PREFIXES):
            return "moderator_sticky"
        if body.startswith(BOT_PREFIXES):
            return "bot_comment"
    if body in REMOVED_BODIES:
        return "removed_or_deleted"
    if not body:
        return "empty_text"
    if len(body.split()) < min_words:
        return "too_short"
    return None


def clean_responses(
    texts: list[str], layout: str, min_words: int, dropped: Counter
) -> list[int]:
    """Indices of the responses kept (first occurrence of each text); ``dropped`` is updated."""
    seen: set[str] = set()
    kept = []
    for index, text in enumerate(texts):
        reason = drop_reason(text, layout, min_words)
        if reason is None and text.strip() in seen:
            reason = "duplicate_in_prompt"
        if reason is not None:
            dropped[reason] += 1
            continue
        seen.add(text.strip())
        kept.append(index)
    return kept
