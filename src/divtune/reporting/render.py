"""One document, two renderings: a report described once as blocks, written as Markdown and as HTML.

A report (``divtune report``, ``divtune diagnostics``) is a :class:`Document`: a title
and a list of blocks (headings, paragraphs of inline text, tables, figures, lists, a
quote, a caveat box). Each block renders itself both ways, side by side, so the
Markdown and the HTML of a report say the same things. The HTML is self-contained:
inline CSS, figures embedded as base64 PNG data URIs, nothing fetched from elsewhere.
Markdown has no colour, so a greyed-out table row is set in italics there.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1150px;
       color: #222; line-height: 1.45; padding: 0 16px; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: 6px; }
h2 { font-size: 1.25em; margin-top: 1.8em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 4px 6px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; font-weight: 600; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 16px 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; }
ul.notes { font-size: 13px; color: #444; }
tr.greyed td { color: #a0a0a0; } p.footnote { font-size: 13px; color: #777; }
div.caveat { border: 2px solid #d4a017; background: #fff8e1; padding: 10px 14px; margin: 12px 0; }
li.sample, blockquote.sample { white-space: pre-wrap; font-size: 13px; margin-bottom: 8px; }
"""


# ---------------------------------------------------------------- tables and images, as strings


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], greyed: Sequence[int] = ()) -> str:
    """A pipe table; the values of the ``greyed`` rows in italics, ``|`` in a value escaped."""
    rows = [[row[0], *[f"_{c}_" for c in row[1:]]] if i in greyed else row for i, row in enumerate(rows)]
    lines = [_markdown_row(header), "|" + "---|" * len(header)]
    lines += [_markdown_row([cell.replace("|", "\\|") for cell in row]) for row in rows]
    return "\n".join(lines)


def _markdown_row(cells: Sequence[str]) -> str:
    # An empty cell stays one space wide: "| a | | b |".
    return "|" + "".join(f" {cell} |" if cell else " |" for cell in cells)


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], greyed: Sequence[int] = ()) -> str:
    """A table in a horizontally scrolling box; the ``greyed`` rows get ``class="greyed"``."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(('<tr class="greyed">' if i in greyed else "<tr>")
                   + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for i, row in enumerate(rows))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def data_uri(path: Path) -> str:
    """A PNG file as a data URI, so the HTML needs no file beside it."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _class(css_class: str | None) -> str:
    return f' class="{css_class}"' if css_class else ""


# ---------------------------------------------------------------- inline text


@dataclass(frozen=True)
class Strong:
    text: str


@dataclass(frozen=True)
class Emphasis:
    text: str


@dataclass(frozen=True)
class Link:
    text: str
    href: str


Inline = Union[str, Strong, Emphasis, Link]


def inline_markdown(parts: Sequence[Inline]) -> str:
    out = []
    for part in parts:
        if isinstance(part, Strong):
            out.append(f"**{part.text}**")
        elif isinstance(part, Emphasis):
            out.append(f"_{part.text}_")
        elif isinstance(part, Link):
            out.append(f"[{part.text}]({part.href})")
        else:
            out.append(part)
    return "".join(out)


def inline_html(parts: Sequence[Inline]) -> str:
    out = []
    for part in parts:
        if isinstance(part, Strong):
            out.append(f"<strong>{html.escape(part.text)}</strong>")
        elif isinstance(part, Emphasis):
            out.append(f"<em>{html.escape(part.text)}</em>")
        elif isinstance(part, Link):
            out.append(f'<a href="{html.escape(part.href)}">{html.escape(part.text)}</a>')
        else:
            out.append(html.escape(part))
    return "".join(out)


# ---------------------------------------------------------------- blocks
# Each block gives its Markdown lines (ending with the blank line that separates it
# from the next block) and its HTML element.


@dataclass(frozen=True)
class Heading:
    level: int
    text: str

    def markdown(self) -> list[str]:
        return ["#" * self.level + " " + self.text, ""]

    def html(self, folder: Path) -> str:
        return f"<h{self.level}>{html.escape(self.text)}</h{self.level}>"


@dataclass(frozen=True)
class Paragraph:
    parts: tuple[Inline, ...]
    #: HTML only: e.g. ``footnote`` (smaller, grey).
    css_class: str | None = None

    def markdown(self) -> list[str]:
        return [inline_markdown(self.parts), ""]

    def html(self, folder: Path) -> str:
        return f"<p{_class(self.css_class)}>{inline_html(self.parts)}</p>"


def paragraph(*parts: Inline, css_class: str | None = None) -> Paragraph:
    return Paragraph(tuple(parts), css_class)


@dataclass(frozen=True)
class Caveat:
    """A warning set apart in a box (a quote in Markdown)."""

    parts: tuple[Inline, ...]

    def markdown(self) -> list[str]:
        return ["> " + inline_markdown(self.parts), ""]

    def html(self, folder: Path) -> str:
        return f'<div class="caveat">{inline_html(self.parts)}</div>'


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    #: Indices of the rows to set apart as greyed out.
    greyed: tuple[int, ...] = ()

    def markdown(self) -> list[str]:
        return [markdown_table(self.header, self.rows, self.greyed), ""]

    def html(self, folder: Path) -> str:
        return html_table(self.header, self.rows, self.greyed)


@dataclass(frozen=True)
class Figure:
    """A PNG in the report folder: linked from the Markdown, embedded in the HTML."""

    file: str
    alt: str
    caption: str | None = None

    def markdown(self) -> list[str]:
        return [f"![{self.alt}]({self.file})", "", *([self.caption, ""] if self.caption else [])]

    def html(self, folder: Path) -> str:
        caption = f"<figcaption>{html.escape(self.caption)}</figcaption>" if self.caption else ""
        return f'<figure><img alt="{html.escape(self.alt)}" src="{data_uri(folder / self.file)}">{caption}</figure>'


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]
    css_class: str | None = None

    def markdown(self) -> list[str]:
        return [*[f"- {item}" for item in self.items], ""]

    def html(self, folder: Path) -> str:
        return f"<ul{_class(self.css_class)}>{''.join(f'<li>{html.escape(item)}</li>' for item in self.items)}</ul>"


@dataclass(frozen=True)
class NumberedList:
    """Numbered texts, one paragraph each; in Markdown each text is joined onto one line."""

    items: tuple[str, ...]
    #: HTML only, on each item.
    css_class: str | None = None

    def markdown(self) -> list[str]:
        return [line for i, item in enumerate(self.items, start=1) for line in (f"{i}. " + " ".join(item.split()), "")]

    def html(self, folder: Path) -> str:
        return f"<ol>{''.join(f'<li{_class(self.css_class)}>{html.escape(item)}</li>' for item in self.items)}</ol>"


@dataclass(frozen=True)
class Quote:
    text: str
    css_class: str | None = None

    def markdown(self) -> list[str]:
        return [*[f"> {line}" for line in self.text.splitlines()], ""]

    def html(self, folder: Path) -> str:
        return f"<blockquote{_class(self.css_class)}>{html.escape(self.text)}</blockquote>"


Block = Union[Heading, Paragraph, Caveat, Table, Figure, Bullets, NumberedList, Quote]


@dataclass
class Document:
    #: The page title and its first heading.
    title: str
    blocks: list[Block]


def to_markdown(document: Document) -> str:
    lines = Heading(1, document.title).markdown()
    for block in document.blocks:
        lines += block.markdown()
    return "\n".join(lines)


def to_html(document: Document, folder: Path) -> str:
    """The page; ``folder`` holds the figures' PNG files, read to embed them."""
    title = html.escape(document.title)
    body = "\n".join([Heading(1, document.title).html(folder), *[block.html(folder) for block in document.blocks]])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>\n'
            f"<style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")
