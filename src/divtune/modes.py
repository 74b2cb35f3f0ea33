"""Surface modes of a story opening: a deterministic rule anyone can read.

Every text falls in exactly one mode, decided by how it *opens*:

1. Leading decoration is skipped first: whitespace, invisible characters
   (zero-width spaces, byte-order marks, soft hyphens, ``&nbsp;``/``&#x200B;``
   entities as Reddit's markdown writes them) and markdown markup
   (``*``, ``_``, ``~``, `````, ``#``, ``>``, list bullets ``- `` / ``+ ``, and
   rules ``---``/``***``), repeatedly, so ``"  > **"Hi," she said**"`` opens with a quote.
2. ``dialogue``: the first remaining character is a quotation mark of any kind
   (straight ``"`` and ``'``, curly “ ” ‘ ’, low „ ‚, guillemets « » ‹ ›, CJK
   「 」 『 』) or a dialogue dash (— ―), as in French or Russian typesetting.
3. ``first_person``: the first word is a first-person pronoun
   (I, I'm, I've, I'd, I'll, me, my, mine, myself, we, we're, we've, we'd,
   we'll, us, our, ours, ourselves), in any letter case, with straight or curly
   apostrophes.
4. ``second_person``: the first word is a second-person pronoun
   (you, you're, you've, you'd, you'll, your, yours, yourself, yourselves).
5. ``other``: everything else, the empty text included.

Known limits, kept for determinism: a story opening with an elided word such as
``'Twas`` counts as dialogue; "When I woke" is ``other`` (only the first word counts).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable

MODES = ("dialogue", "first_person", "second_person", "other")

QUOTE_CHARACTERS = frozenset("\"'“”‘’„‚«»‹›「」『』") | frozenset("—―")
FIRST_PERSON = frozenset(
    "i i'm i've i'd i'll me my mine myself we we're we've we'd we'll us our ours ourselves".split()
)
SECOND_PERSON = frozenset("you you're you've you'd you'll your yours yourself yourselves".split())

# Invisible characters and the HTML entities Reddit's markdown uses for them.
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
_LEADING_DECORATION = re.compile(
    r"^(?:\s+|[" + _INVISIBLE + r"]+|&(?:nbsp|#x200B|#8203|#160);"
    r"|[*_~`#>]+|[-+](?=\s)|-{3,})",
    re.IGNORECASE,
)
_FIRST_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")


def strip_opening(text: str) -> str:
    """``text`` without its leading whitespace, invisible characters and markdown markup."""
    previous = None
    while previous != text:
        previous = text
        text = _LEADING_DECORATION.sub("", text, count=1)
    return text


def opening_mode(text: str) -> str:
    """The mode of one text (see the module docstring for the rule)."""
    opening = strip_opening(text)
    if not opening:
        return "other"
    if opening[0] in QUOTE_CHARACTERS:
        return "dialogue"
    match = _FIRST_WORD.match(opening)
    if match is None:
        return "other"
    word = match.group(0).replace("’", "'").lower()
    if word in FIRST_PERSON:
        return "first_person"
    if word in SECOND_PERSON:
        return "second_person"
    return "other"


def mode_counts(texts: Iterable[str]) -> dict[str, int]:
    """How many texts fall in each mode, every mode listed (zeros included)."""
    counts = Counter(opening_mode(text) for text in texts)
    return {mode: counts.get(mode, 0) for mode in MODES}


def mode_entropy(counts: dict[str, int]) -> float:
    """Shannon entropy of a mode distribution in bits: 0 (one mode) to log2(4) = 2."""
    total = sum(counts.values())
    if total == 0:
        return math.nan
    return -sum((n / total) * math.log2(n / total) for n in counts.values() if n > 0)


def most_common_mode(texts: Iterable[str]) -> str:
    """The data's typical mode; ties go to the mode listed first in ``MODES``."""
    counts = mode_counts(texts)
    return max(MODES, key=lambda mode: (counts[mode], -MODES.index(mode)))
