"""Does a sample open like a chatbot reply rather than a story? A deterministic rule anyone can read.

Why: an instruct model asked for a story often answers the *request* instead of
writing the story ("Sure! Here's a story about...", "I'd be happy to help",
"Let's take a look at the edited version of your text"). Such samples can be
diverse by every embedding metric and still not be stories, so the evaluation
reports the share of them per system (``chatbot_share``).

The rule reads the **opening**: the first 40 words (``OPENING_WORDS``), after
the leading decoration that :mod:`divtune.modes` skips (whitespace, invisible
characters, markdown emphasis). A text is a chatbot opening when any clause
below matches; :func:`chatbot_clause` names the first that does. Each clause is
a family of replies that a story opening does not produce, and each is kept
narrow where stories overlap with it:

1. ``acknowledgement``: the first word is an assistant's acknowledgement
   (Sure, Certainly, Absolutely, Of course, Okay/OK, Alright, Great, Thanks/Thank
   you, Hello/Hi, Gladly) **followed by punctuation** (``,`` ``!`` ``.`` ``:``). So
   "Sure enough, the ship sank" is a story, and so is ``"Sure," he said``:
   an opening in quotation marks is dialogue, and clauses 1 to 4 do not apply to it.
2. ``here_is``: "Here is / Here's / Here are" + an article, possessive or small number
   + within four words a noun (or its plural) for a piece of writing (story, version, draft, rewrite, tale,
   take, response, continuation, poem, scene, narrative, text, piece, example,
   summary, attempt, edit, revision). "Here is the thing about dragons" is a story.
3. ``lets``: "Let's / Let us / Let me" + a verb of working on a text (take, look,
   dive, break, explore, start, begin, write, craft, create, rewrite, revise, edit,
   consider, analyze/analyse, reimagine, imagine, try, see, help, get, delve,
   continue, expand). "Let me tell you about the day I died" is a story
   (narrators speak like that), so *tell* is not in the list.
4. ``title_or_heading``: the opening starts with scaffolding, not prose: a markdown
   heading (``#``), a line that is bold as a whole (``**The Last Door**``), or a label
   line (``Title:``, ``Story:``, ``Prompt:``, ``Response:``, ``Answer:``).
5. ``assistant_talk``: anywhere in the opening, **outside quotation marks**
   (what characters say is dialogue, not the narrator): an assistant speaking of
   itself or of helping ("As an AI", "language model", "happy/glad/delighted/
   thrilled/here to help/assist", "I'd be happy to", "I apologize for", "I hope this
   helps", "feel free to"), praise of the request ("Great/What a great/fascinating/
   wonderful prompt/question/idea/request", "That's a great"), or talk about the
   user's text ("your text/story/prompt/request/question/writing/passage/sentence/
   paragraph/draft/narrative/message/essay/concerns", "revised/rewritten/edited/
   improved/updated/corrected version", "this sentence/passage/paragraph can").
6. ``emoji``: an emoji or pictograph (Unicode's Miscellaneous Symbols and
   Pictographs, Emoticons, Transport, Supplemental Symbols, Dingbats, Miscellaneous
   Symbols, arrows block 2B00-2BFF, regional indicators). Stories on r/WritingPrompts
   practically never carry them; small chat models often do.
7. ``non_latin_script``: a letter of a script other than Latin (CJK, Cyrillic,
   Arabic, Hebrew, Devanagari, Hangul, Thai, Greek, ...): the prompts and stories are
   English, so such a fragment is a small model's drift, not a story's text. A story
   that quotes a foreign word in its own script is the known false positive.
8. ``list``: a line of the opening that starts a numbered or bulleted list
   (``1.``, ``2)``, ``-``, ``*``, ``•`` + a space): replies enumerate, story openings do not.

Known limits, kept for determinism: a clause-1 word without quotes
("Hi. I'm Kayuto", "OK. Apparently...") counts as a reply; a story with a bold title
line counts as scaffolding; a story written as a letter to "you" may mention "your
story"; a reply that talks about the topic without any of these markers ("The story of
the Soviets ... is indeed a fascinating one") is missed, so the share is a lower bound.
Measured on the shipped human text (the first 32 words of the 2,134 ``wp_scored``
stories of at least 100 words): 31 flagged, 1.5% (a bold title or heading 18, a
greeting such as "Hello." or "OK." 7, a list 5, of which 3 are bot comments, talk
about "your story" 1). On 32 samples of base SmolLM2-135M-Instruct for 4 of its prompts:
16 flagged (12 by ``assistant_talk``).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable

from divtune.modes import QUOTE_CHARACTERS, strip_opening

OPENING_WORDS = 40
CLAUSES = (
    "acknowledgement",
    "here_is",
    "lets",
    "title_or_heading",
    "assistant_talk",
    "emoji",
    "non_latin_script",
    "list",
)

_APOSTROPHE = "['’]"
_ACKNOWLEDGEMENT = re.compile(
    r"^(?:sure|certainly|absolutely|of course|okay|ok|alright|all right|great|thanks|thank you|hello|hi|hey|gladly"
    r"|sure thing|no problem|understood|got it)(?:\s+there)?\s*[,!.:]",
    re.IGNORECASE,
)
_WRITING_NOUNS = (
    r"(?:story|stories|version|draft|rewrite|tale|take|response|continuation|poem|scene|narrative|text|piece|example"
    r"|summary|attempt|edit|revision|opening)s?"
)
_HERE_IS = re.compile(
    rf"^here(?:{_APOSTROPHE}s| is| are)\s+(?:a|an|the|your|my|one|some|another|two|three|several)\b(?:\s+[\w'’-]+){{0,3}}?\s+{_WRITING_NOUNS}\b",
    re.IGNORECASE,
)
_LETS = re.compile(
    rf"^(?:let{_APOSTROPHE}s|let us|let me)\s+(?:take|look|dive|break|explore|start|begin|write|craft|create|rewrite"
    r"|revise|edit|consider|analy[sz]e|reimagine|imagine|try|see|help|get|delve|continue|expand)\b",
    re.IGNORECASE,
)
_LABEL = re.compile(
    r"^\(?(?:title|story|prompt|response|answer|original(?: text)?|revised(?: version)?|rewritten(?: version)?)\s*:",
    re.IGNORECASE,
)
_BOLD_LINE = re.compile(r"^\s*(\*\*|__)[^\n*_]{1,80}\1\s*:?\s*(?:\n|$)")
_HEADING = re.compile(r"^\s*#{1,6}\s")
_ASSISTANT_TALK = re.compile(
    r"\bas an ai\b|\blanguage model\b"
    r"|\b(?:happy|glad|delighted|thrilled|here|pleased) to (?:help|assist)(?= you\b| with\b|\s*[,.!]|$)"
    rf"|\bi{_APOSTROPHE}d (?:be )?(?:happy|glad|delighted|love) to\b|\bi would be (?:happy|glad|delighted) to\b"
    r"|\bi apologi[sz]e for\b|\bi hope this helps\b|\bfeel free to\b"
    r"|\bwhat an? (?:great|fascinating|wonderful|interesting|intriguing|creative) (?:prompt|question|idea|request|concept)\b"
    r"|\b(?:great|fascinating|wonderful|intriguing) (?:prompt|question|request)\b"
    rf"|\bthat{_APOSTROPHE}s a (?:great|fascinating|wonderful|interesting) (?:prompt|question|idea|request|concept|story)\b"
    r"|\byour (?:text|story|prompt|request|question|writing|passage|sentence|paragraph|draft|narrative|message|essay"
    r"|concerns?)\b"
    r"|\b(?:revised|rewritten|edited|improved|updated|corrected|polished) version\b"
    r"|\bthis (?:sentence|passage|paragraph|text) (?:can|could)\b"
    rf"|\blet(?:{_APOSTROPHE}s| us) (?:reimagine|rewrite|revise|edit|break down|dive into|delve into)\b"
    rf"|\bhere{_APOSTROPHE}s how you can\b|\bhere is how you can\b",
    re.IGNORECASE,
)
_LIST_LINE = re.compile(r"(?:^|\n)[ \t]*(?:\d{1,2}[.)]|[-*•])[ \t]+\S")
_EMOJI_RANGES = (
    (0x1F000, 0x1FAFF),  # mahjong .. symbols and pictographs extended-A (emoticons, transport, flags...)
    (0x2600, 0x27BF),  # miscellaneous symbols, dingbats
    (0x2B00, 0x2BFF),  # miscellaneous symbols and arrows
    (0x1F1E6, 0x1F1FF),  # regional indicators
    (0xFE0F, 0xFE0F),  # emoji presentation selector
)
# Quoted spans (straight or curly double quotes, guillemets), or an unclosed quote to the end.
_QUOTED = re.compile(r"\"[^\"]*(?:\"|$)|“[^”]*(?:”|$)|«[^»]*(?:»|$)")
_WORD = re.compile(r"\S+")


def opening(text: str, words: int = OPENING_WORDS) -> str:
    """The first ``words`` whitespace-separated words of ``text`` (line breaks kept)."""
    end = None
    for count, match in enumerate(_WORD.finditer(text), start=1):
        end = match.end()
        if count == words:
            break
    return text if end is None else text[:end]


def _is_emoji(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _EMOJI_RANGES)


def _is_non_latin_letter(char: str) -> bool:
    # Lu/Ll/Lt/Lo: letters proper; modifier letters (Lm, e.g. the ʻokina used as an apostrophe) are left out.
    if unicodedata.category(char) not in ("Lu", "Ll", "Lt", "Lo"):
        return False
    name = unicodedata.name(char, "")
    return not name.startswith("LATIN") and name != ""


def _outside_quotes(text: str) -> str:
    return _QUOTED.sub(" ", text)


def chatbot_clause(text: str) -> str | None:
    """The first clause (``CLAUSES``) by which ``text`` opens like a chatbot reply, or None for a story-like opening."""
    head = opening(text)
    start = strip_opening(head)
    # 4 reads the raw opening (the markup that strip_opening removes is the evidence).
    raw = head.lstrip()
    is_dialogue = bool(start) and start[0] in QUOTE_CHARACTERS
    if not is_dialogue:
        if _ACKNOWLEDGEMENT.match(start):
            return "acknowledgement"
        if _HERE_IS.match(start):
            return "here_is"
        if _LETS.match(start):
            return "lets"
        if _HEADING.match(raw) or _BOLD_LINE.match(raw) or _LABEL.match(start):
            return "title_or_heading"
    if _ASSISTANT_TALK.search(_outside_quotes(head)):
        return "assistant_talk"
    if any(_is_emoji(char) for char in head):
        return "emoji"
    if any(_is_non_latin_letter(char) for char in head):
        return "non_latin_script"
    if _LIST_LINE.search(head):
        return "list"
    return None


def is_chatbot_opening(text: str) -> bool:
    """Whether ``text`` opens like a chatbot reply (any clause of the module docstring)."""
    return chatbot_clause(text) is not None


def chatbot_share(texts: Iterable[str]) -> float:
    """Share of ``texts`` that open like a chatbot reply; nan for no text."""
    flags = [is_chatbot_opening(text) for text in texts]
    return sum(flags) / len(flags) if flags else float("nan")
