"""The annotation page: one HTML file with its CSS, script and data inline.

It works from ``file://`` with no network. The study (``study.json``'s content)
is embedded as a JSON ``<script>`` block that the page's script reads; story
texts are inserted with ``textContent``, never as HTML. The page template,
style and script are package files in ``assets/`` so they can be edited as
what they are.
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from typing import Any


def _asset(name: str) -> str:
    return resources.files("divtune.humaneval").joinpath("assets", name).read_text(encoding="utf-8")


def embed_json(obj: Any) -> str:
    """JSON that cannot end its ``<script>`` block early (``</script>``, ``<!--`` in a story)."""
    text = json.dumps(obj, ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render_page(study: dict[str, Any]) -> str:
    """The full page for a blind study (the dict written to ``study.json``)."""
    values = {
        "TITLE": html.escape(study["title"]),
        "CSS": _asset("page.css"),
        "JS": _asset("page.js"),
        "STUDY_JSON": embed_json(study),
    }
    # One pass, so a story or title that contains "{{JS}}" is left as it is.
    return re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: values[m.group(1)], _asset("page.html"))
