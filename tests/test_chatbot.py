"""The chatbot-opening rule (divtune.chatbot): each clause on replies it must catch and story openings it must not."""

from __future__ import annotations

import math

import pytest

from divtune.chatbot import CLAUSES, chatbot_clause, chatbot_share, is_chatbot_opening, opening

REPLIES = [
    ("Sure! Here's a story about a dragon who learns to read.", "acknowledgement"),
    ("Certainly, here is a short tale for you.", "acknowledgement"),
    ("Of course! Once upon a time...", "acknowledgement"),
    ("Absolutely. The rain had not stopped for days.", "acknowledgement"),
    ("Alright there! It's great to be here with you on this special day!", "acknowledgement"),
    ("**Okay!** So the knight rode out.", "acknowledgement"),  # markdown emphasis is skipped first
    ("Here's a revised version with improved clarity and grammar:\n\nIn the canine world...", "here_is"),
    ("Here is a short story based on your prompt:", "here_is"),
    ("Here are two versions of the opening.", "here_is"),
    ("Let's take a look at the edited version of your text.", "lets"),
    ("Let me rewrite it with more suspense.", "lets"),
    ("Let us dive into this world.", "lets"),
    ("# The Last Door\n\nShe knocked twice.", "title_or_heading"),
    ("**The Flag of Mars**\n\nThe astronauts stepped out.", "title_or_heading"),
    ("Title: The Red Planet\nIt was cold.", "title_or_heading"),
    ("(Original text: We finally get men on Mars)", "title_or_heading"),
    ("As an AI language model, I cannot write that.", "assistant_talk"),
    ("I'd be delighted to help clarify this story further and create a more immersive narrative.", "assistant_talk"),
    ("I'm here to help you navigate that mess of your life.", "assistant_talk"),
    ("To address your concerns, I'll just rewrite the ending.", "assistant_talk"),
    ("What a fascinating prompt! The Soviets planted it in 1961.", "assistant_talk"),
    ("It seems you've added some amazing depth and context to your story.", "assistant_talk"),
    ("This sentence can be edited for clarity and grammar.", "assistant_talk"),
    ("The origin story speaks volumes... I apologize for any confusion earlier.", "assistant_talk"),
    ("To add a personal dimension to the scene, let's reimagine the myth.", "assistant_talk"),
    ("There's a spell for it. Here's how you can help: use the correct words.", "assistant_talk"),
    ("The Flag of Independence 🌐 stood there.", "emoji"),
    ("Mars was red ⬍ and cold.", "emoji"),
    ("Tetsu-tettei, 你好! The ship landed.", "non_latin_script"),
    ("The colonel said привет and left.", "non_latin_script"),
    ("A classic example of how worlds can exist:\n\n1. Lyla's Earth - The first.", "list"),
    ("Three things happened:\n- the moon fell\n- the sea rose", "list"),
]

STORIES = [
    '"Sure," he said, and closed the door behind him.',  # dialogue: clause 1 does not apply
    "“Certainly not!” the queen cried.",
    "Sure enough, the ship sank before dawn.",  # no punctuation after the word
    "Great swathes of forest burned that summer.",
    "Here is the thing about dragons: they never forget a debt.",  # no piece-of-writing noun
    "Here lies the last king of Mars.",
    "Let me tell you about the day I died.",  # a narrator's voice: tell is not a working verb
    "Let's go, I thought, before the guards wake up.",
    "The giant loved the villagers, happy to help them with the harvest.",
    "Well, traditional morality would say it's not a great idea.",
    '"Your story is a lie," the detective said.',  # talk inside quotation marks is dialogue
    "I woke up on Mars with a Soviet flag in my hand.",
    "You are late, the letter began. The Soviets had been waiting.",
    "The day I arrived I felt so much more alive, like in my twentyʻs.",  # a modifier letter, not a script
    "In 1961, three men planted a flag on Mars. Nobody told anyone.",
    "The sun rose over the red dunes - slowly, as if it were tired.",  # a dash inside a line is no list
    "",
    "   \n\n",
]


@pytest.mark.parametrize("text, clause", REPLIES)
def test_each_clause_catches_its_replies(text, clause):
    assert chatbot_clause(text) == clause
    assert is_chatbot_opening(text)


@pytest.mark.parametrize("text", STORIES)
def test_story_openings_are_not_replies(text):
    assert chatbot_clause(text) is None, chatbot_clause(text)


def test_every_clause_has_a_fixture_and_the_opening_is_40_words():
    assert {clause for _, clause in REPLIES} == set(CLAUSES)
    late = " ".join(["word"] * 40) + " As an AI language model I refuse."
    assert chatbot_clause(late) is None  # past the opening: a story that turns meta later is judged by its start
    assert chatbot_clause(" ".join(["word"] * 30) + " As an AI") == "assistant_talk"
    assert opening("a  b\nc d", 3) == "a  b\nc"


def test_share():
    texts = [REPLIES[0][0], STORIES[0], STORIES[1], REPLIES[10][0]]
    assert chatbot_share(texts) == 0.5
    assert math.isnan(chatbot_share([]))


def test_human_openings_are_rarely_flagged(wp_scored_path):
    """Calibration on real human text: the first 32 words of the shipped stories of >= 100 words."""
    import gzip
    import json

    from divtune.typicality import cut_to_words

    with gzip.open(wp_scored_path, "rt", encoding="utf-8") as handle:
        texts = [t for line in handle for t in json.loads(line)["comment_texts"] if len(t.split()) >= 100]
    assert len(texts) > 2000
    share = chatbot_share(cut_to_words(t, 32) for t in texts)
    assert share < 0.025, share
