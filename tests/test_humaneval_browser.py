"""The annotation page in a real browser (headless Chromium, Selenium), used as a person would:
open it from file://, answer by clicking, reload, change an answer, download; the
analysis of the download gives exactly the counts the clicks imply. Then the
layout at desktop and phone width, with screenshots.

Needs Debian's chromium and chromium-driver: fails without them, naming the install
command (scripts/test.sh installs them as root; see tests/_browser.py). Never skipped.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from _browser import set_viewport, start_chromium, wait_for_download
from _humaneval_support import SYSTEMS, write_generations
from divtune.humaneval.analyze import AnalyzeConfig, run_analyze
from divtune.humaneval.study import BuildConfig, run_build

QUESTIONS = ("diverse", "interesting")


@pytest.fixture()
def study(tmp_path):
    paths = write_generations(tmp_path / "gen", n_prompts=3)
    folder = tmp_path / "study"
    run_build(BuildConfig(generations=[str(p) for p in paths], pairs=[(SYSTEMS[0], SYSTEMS[1]), (SYSTEMS[2], SYSTEMS[1])],
                          output=str(folder), stories_per_set=3))
    return folder, json.loads((folder / "key.json").read_text())


@pytest.fixture()
def browser(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = start_chromium(downloads)
    driver.downloads = downloads
    yield driver
    driver.quit()


def by_id(driver, element_id: str):
    return driver.find_element("id", element_id)


def click(driver, element) -> None:
    # Centre it first, so the sticky header never covers what is clicked.
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def current_item(driver) -> str:
    return by_id(driver, "item").get_attribute("data-item-id")


def jump_to(driver, index: int) -> str:
    click(driver, driver.find_elements("css selector", "#jump button")[index])
    return current_item(driver)


def planned_answers(index: int) -> dict[str, str]:
    """What the test clicks on the index-th item shown; the last item's second question stays blank."""
    plan = {"diverse": ("A", "B", "tie")[index % 3], "interesting": ("B", "A")[index % 2]}
    return plan


def test_click_reload_change_download_and_analyze(study, browser, tmp_path):
    folder, key = study
    n_items = len(key["items"])
    browser.get((folder / "index.html").as_uri())
    assert by_id(browser, "start").is_displayed() and not by_id(browser, "item").is_displayed()
    by_id(browser, "annotator-input").send_keys("alice")
    click(browser, by_id(browser, "start-button"))

    shown, answered = [], {}
    for index in range(n_items):
        item = current_item(browser)
        assert by_id(browser, "item-position").text == f"Item {index + 1} of {n_items}"
        shown.append(item)
        plan = planned_answers(index)
        if index == n_items - 1:
            plan.pop("interesting")
        for question, choice in plan.items():
            click(browser, by_id(browser, f"q-{question}-{choice}"))
        answered[item] = plan
        if index == 1:
            by_id(browser, "comment").send_keys("Set B repeats itself.")
        if index < n_items - 1:
            click(browser, browser.find_elements("css selector", "button.next")[0])
    assert sorted(shown) == sorted(key["items"])  # every item once
    assert by_id(browser, "progress-text").text == f"{n_items - 1} of {n_items} items answered"

    # A reload (or a closed tab) keeps the annotator, the position and every answer.
    browser.refresh()
    assert by_id(browser, "annotator-name").text == "alice"
    assert current_item(browser) == shown[-1]
    assert by_id(browser, "progress-text").text == f"{n_items - 1} of {n_items} items answered"
    for index, item in enumerate(shown):
        assert jump_to(browser, index) == item
        for question in QUESTIONS:
            selected = [c for c in ("A", "B", "tie") if by_id(browser, f"q-{question}-{c}").is_selected()]
            assert selected == ([answered[item][question]] if question in answered[item] else [])
    jump_to(browser, 1)
    assert by_id(browser, "comment").get_attribute("value") == "Set B repeats itself."

    # Move back with "Previous" and change one answer.
    jump_to(browser, 3)
    click(browser, browser.find_elements("css selector", "button.prev")[0])
    click(browser, browser.find_elements("css selector", "button.prev")[0])
    changed = current_item(browser)
    assert changed == shown[1]
    new_choice = "tie" if answered[changed]["diverse"] != "tie" else "A"
    click(browser, by_id(browser, f"q-diverse-{new_choice}"))
    answered[changed]["diverse"] = new_choice

    click(browser, by_id(browser, "download"))
    downloaded = wait_for_download(browser.downloads)
    doc = json.loads(downloaded.read_text())
    assert (doc["annotator"], doc["build_id"]) == ("alice", key["build_id"])
    assert {r["item_id"]: r["answers"] for r in doc["answers"]} == answered
    assert all(r["timestamp"].endswith("Z") for r in doc["answers"])

    # Unblinded with the key, the analysis counts exactly what was clicked.
    expected = Counter()
    for item, plan in answered.items():
        entry = key["items"][item]
        for question, choice in plan.items():
            outcome = "tie" if choice == "tie" else ("win" if entry[choice] == entry["system"] else "loss")
            expected[(question, entry["system"], outcome)] += 1
    run_analyze(AnalyzeConfig(study=str(folder), answers=[str(downloaded)], output=str(tmp_path / "analysis")))
    result = json.loads((tmp_path / "analysis" / "results.json").read_text())
    for row in result["results"]:
        got = (row["wins"], row["ties"], row["losses"])
        want = tuple(expected[(row["question"], row["system"], o)] for o in ("win", "tie", "loss"))
        assert got == want, (row["question"], row["system"])
    assert sum(r["n"] for r in result["results"]) == 2 * n_items - 1
    assert result["counts"]["unanswered_questions"] == {"diverse": 0, "interesting": 1}
    comments = (tmp_path / "analysis" / "comments.jsonl").read_text()
    assert "Set B repeats itself." in comments


def _rect(driver, selector: str) -> dict:
    return driver.execute_script(f"return document.querySelector('{selector}').getBoundingClientRect().toJSON();")


def _save_screenshot(driver, path: Path) -> None:
    assert driver.save_screenshot(str(path)), path
    docs_dir = os.environ.get("DIVTUNE_HUMANEVAL_SCREENSHOTS")
    if docs_dir:
        # Refresh the screenshots shown in docs/humaneval.md; a 64-colour palette keeps them small.
        from PIL import Image

        Image.open(path).convert("RGB").quantize(colors=64).save(Path(docs_dir) / path.name, optimize=True)


def test_layout_side_by_side_on_desktop_stacked_on_phone(study, browser, tmp_path):
    folder, _ = study
    browser.get((folder / "index.html").as_uri() + "?annotator=demo")

    set_viewport(browser, 1280, 900)
    a, b = _rect(browser, "#set-A"), _rect(browser, "#set-B")
    assert a["right"] <= b["left"] and abs(a["top"] - b["top"]) < 1, (a, b)
    assert a["width"] > 450 and abs(a["width"] - b["width"]) < 1
    assert b["top"] < 900  # both sets start on the first screen
    _save_screenshot(browser, tmp_path / "humaneval_desktop.png")

    set_viewport(browser, 390, 844)
    a, b = _rect(browser, "#set-A"), _rect(browser, "#set-B")
    assert b["top"] >= a["bottom"] and abs(a["left"] - b["left"]) < 1, (a, b)
    assert a["width"] <= 390 and a["width"] > 300
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    font = browser.execute_script("return parseFloat(getComputedStyle(document.querySelector('ol.stories li')).fontSize)")
    assert font >= 14
    _save_screenshot(browser, tmp_path / "humaneval_phone.png")
    for name in ("humaneval_desktop.png", "humaneval_phone.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
