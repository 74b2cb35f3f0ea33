"""The surface-mode rule on fixtures: quotes of every kind, markdown, whitespace, pronouns."""

from __future__ import annotations

import math

import pytest

from divtune.modes import MODES, mode_counts, mode_entropy, most_common_mode, opening_mode, strip_opening


@pytest.mark.parametrize(
    "text",
    [
        '"Where are you going?" she asked.',
        "“Run,” he said.",
        "”Backwards curly close quote, as some keyboards type it.",
        "‘Single curly,’ she whispered.",
        "'Straight single,' he said.",
        "„Low German quote“, said Oma.",
        "‚Low single‘ quote.",
        "«Bonjour», dit-il.",
        "»Reversed guillemets« in German.",
        "‹Single guillemet›.",
        "「こんにちは」と彼女は言った。",
        "『二重』",
        "— Où vas-tu ? demanda-t-elle.",
        "   \n\n  \"After blank lines,\" he said.",
        '**"Bold dialogue,"** he said.',
        '*"Italic dialogue"*',
        '> "Quoted block dialogue"',
        '# "A heading that is a line of dialogue"',
        '\u200b"After a zero-width space"',
        '&nbsp;"After a Reddit non-breaking-space entity"',
        '&#x200B;\n\n"After a Reddit zero-width entity"',
        '\ufeff"After a byte-order mark"',
        '- "A bullet of dialogue"',
        '---\n\n"After a horizontal rule"',
    ],
)
def test_dialogue_openings(text):
    assert opening_mode(text) == "dialogue"


@pytest.mark.parametrize(
    "text, mode",
    [
        ("I woke up late.", "first_person"),
        ("i woke up late, lowercase as on reddit.", "first_person"),
        ("I'm not sure.", "first_person"),
        ("I’m not sure, curly apostrophe.", "first_person"),
        ("I'd never seen it.", "first_person"),
        ("My mother said so.", "first_person"),
        ("MY MOTHER SHOUTED.", "first_person"),
        ("We were seven.", "first_person"),
        ("We’ll see.", "first_person"),
        ("Our ship sank.", "first_person"),
        ("Me? Never.", "first_person"),
        ("  **I** was there.", "first_person"),
        ("_My_ turn.", "first_person"),
        ("You wake up.", "second_person"),
        ("you wake up.", "second_person"),
        ("You're late.", "second_person"),
        ("You’ve been here before.", "second_person"),
        ("Your hands shake.", "second_person"),
        ("Yourself, of all people.", "second_person"),
        ("The sun rose.", "other"),
        ("When I woke, it was dark.", "other"),
        ("Iris was late.", "other"),  # a name starting with I is not the pronoun
        ("Myriad stars.", "other"),
        ("Young men ran.", "other"),
        ("Yours truly, the narrator.", "second_person"),
        ("50 years earlier...", "other"),
        ("...and then it ended.", "other"),
        ("", "other"),
        ("   \n\t ", "other"),
        ("***", "other"),
        ("- a list item about the moon", "other"),
        ("-I- was written with dashes", "other"),  # a dash glued to a word is not a bullet
    ],
)
def test_pronoun_and_other_openings(text, mode):
    assert opening_mode(text) == mode


def test_strip_opening_removes_only_leading_decoration():
    assert strip_opening("  > **_Hello_** world") == "Hello_** world"
    assert strip_opening("plain *text*") == "plain *text*"


def test_counts_list_every_mode_and_entropy_in_bits():
    counts = mode_counts(['"Hi."', "I am.", "The end.", "The start."])
    assert counts == {"dialogue": 1, "first_person": 1, "second_person": 0, "other": 2}
    assert list(counts) == list(MODES)
    assert mode_entropy(counts) == pytest.approx(1.5)
    assert mode_entropy({m: 5 if m == "other" else 0 for m in MODES}) == 0.0
    assert mode_entropy({m: 1 for m in MODES}) == pytest.approx(2.0)
    assert math.isnan(mode_entropy({m: 0 for m in MODES}))


def test_most_common_mode_breaks_ties_by_mode_order():
    assert most_common_mode(["The a.", "The b.", "I c."]) == "other"
    assert most_common_mode(["I a.", "The b."]) == "first_person"  # tie: first_person is listed before other
