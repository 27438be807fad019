"""The one renderer of both reports (the comparison report and the nightly one): a document of
sections of text, tables and figures, and its two renderings, Markdown for GitHub (figures as relative
links) and one self-contained HTML file (figures inline as base64 PNG, CSS inline, no external requests).
All escaping of outside text (run names, tags, descriptions) happens here."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame  # already formatted for display (strings)


@dataclass(frozen=True)
class Image:
    name: str  # file name under figures/
    png: bytes
    alt: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Strong:
    text: str  # a paragraph in bold: a verdict


Block = Table | Image | Bullets | Strong | str  # a str is a paragraph


@dataclass
class Section:
    anchor: str
    title: str
    guide: str = ""  # the one-line reading guide under the heading, if any
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    intro: list[Block]
    sections: list[Section]


def formatted(frame: pd.DataFrame, formats: dict[str, Callable[[object], str]], empty: str = "missing") -> pd.DataFrame:
    """A copy with each listed column turned into display strings; NaN/None become `empty`."""
    out = frame.copy().astype(object)
    for column, fmt in formats.items():
        if column in out:
            out[column] = [empty if _blank(v) else fmt(v) for v in frame[column]]
    return out.where(out.notna(), empty)


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


# Text from runs and params.yaml (run names, tags, ablation descriptions) must stay text in Markdown:
# no raw HTML (<script>), no code spans (`), no math ($), no table cell breaks (|), no new blocks (newlines;
# in a paragraph or bullet also a leading #, =, +, -, * or "1."). `*`, `_` and `[]` inside text are left
# alone: the report's own cells use them ("[lo, hi]*"), and emphasis or a bracket in a name runs nothing.
_MD_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "`": "\\`", "$": "\\$", "|": "\\|", "\\": "\\\\"}
_MD_SPECIAL = re.compile(r"[&<>`$|\\]")
_MD_BLOCK_START = re.compile(r"^([#=+*-])|^(\d+)([.)])")


def md_inline(value) -> str:
    """`value` as inert Markdown text on one line (a table cell, a heading)."""
    return _MD_SPECIAL.sub(lambda m: _MD_ESCAPES[m.group()], " ".join(str(value).split()))


def md_block(value) -> str:
    """`value` as an inert Markdown paragraph or bullet item: also no leading block marker."""
    return _MD_BLOCK_START.sub(lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\{m[3]}", md_inline(value))


def to_markdown(doc: Document, images: str = "figures/") -> str:
    """`images`: where the PNGs are, relative to the Markdown file (a prefix of each image's name)."""
    e = md_inline
    lines = [f"# {e(doc.title)}", "", *(line for block in doc.intro for line in _md_block(block, images)),
             "## Contents", ""]
    lines += [f"- [{e(s.title)}](#{s.anchor})" for s in doc.sections] + [""]
    for section in doc.sections:
        lines += [f'<a id="{section.anchor}"></a>', "", f"## {e(section.title)}", ""]
        lines += [f"*{e(section.guide)}*", ""] if section.guide else []
        lines += [line for block in section.blocks for line in _md_block(block, images)]
    return "\n".join(lines)


def _md_block(block: Block, images: str) -> list[str]:
    """The block's lines, then a blank one."""
    if isinstance(block, Table):
        return [*_markdown_table(block.frame), ""]
    if isinstance(block, Image):
        return [f"![{md_inline(block.alt)}]({images}{block.name})", ""]
    if isinstance(block, Bullets):
        return [f"- {md_block(item)}" for item in block.items] + [""]
    if isinstance(block, Strong):
        return [f"**{md_inline(block.text)}**", ""]
    return [md_block(block), ""]


def _markdown_table(frame: pd.DataFrame) -> list[str]:
    """A pipe table, index first; cells as written (no re-parsing of "+1.50" into 1.5), numeric-looking
    columns right-aligned."""
    rule = [":---"] + ["---:" if frame[c].map(_numeric).all() else ":---" for c in frame.columns]
    header = [frame.index.name or "", *frame.columns]
    rows = [[label, *row] for label, row in zip(frame.index, frame.itertuples(index=False))]
    return [_pipe_row(map(md_inline, header)), _pipe_row(rule), *(_pipe_row(map(md_inline, r)) for r in rows)]


def _pipe_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _numeric(value) -> bool:
    text = str(value).lstrip("+-−")
    return text[:1].isdigit() or text in ("missing", "n/a", "–", "")


STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; margin: 0;
       background: #f6f8fa; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 28px; margin: 8px 0 4px; }
h2 { font-size: 21px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; margin-top: 40px; }
p.guide { color: #57606a; font-style: italic; margin-top: -4px; }
nav ul { columns: 2; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 12px 0; font-size: 13.5px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: right; white-space: nowrap; }
th { background: #f0f3f6; }
tbody th { text-align: left; }
tr:nth-child(even) td { background: #fafbfc; }
td.missing { color: #cf222e; }
td.na { color: #8c959f; }
td.text { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: 12px 0; }
table.sortable thead th { cursor: pointer; user-select: none; }
table.sortable thead th:hover { background: #e4e8ec; }
th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 10px; }
th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 10px; }
"""

# Sets <body data-images-loaded="true"> once every image has decoded, for tests and anyone curious.
IMAGES_LOADED_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-images-loaded", ok ? "true" : "false");
});
"""


# Sorts a table.sortable by the header clicked (or Enter on it); a second click reverses. Whole rows move, so
# a cell's marks (*, °, bold) stay with it. A cell that starts with a number ("93.01 ± 0.10", "+1.50 [...]*",
# "1,234", "−0.5", "12%", "< 0.001") sorts by that number, the rest ("missing", "n/a", names) as text after
# the numbers in either direction.
SORT_SCRIPT = """
function cifarbenchSortKey(text) {
  var m = /^(<\\s*)?([+\\-\\u2212]?\\d[\\d,]*(\\.\\d+)?(e[+\\-]?\\d+)?)/i.exec(text.trim());
  if (!m) { return null; }
  var value = parseFloat(m[2].replace(/,/g, "").replace("\\u2212", "-"));
  return m[1] ? value - Math.abs(value) * 1e-9 : value;  // "< 0.001" just below 0.001
}
function cifarbenchSort(table, column, header) {
  var ascending = header.getAttribute("aria-sort") !== "ascending";
  Array.prototype.forEach.call(header.parentNode.cells, function (h) { h.removeAttribute("aria-sort"); });
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    var x = a.cells[column].textContent, y = b.cells[column].textContent;
    var p = cifarbenchSortKey(x), q = cifarbenchSortKey(y);
    if ((p === null) !== (q === null)) { return p === null ? 1 : -1; }
    var order = p === null ? x.localeCompare(y) : p - q;
    return ascending ? order : -order;
  });
  rows.forEach(function (row) { body.appendChild(row); });
}
document.addEventListener("DOMContentLoaded", function () {
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      header.tabIndex = 0;
      header.title = "sort by this column";
      header.addEventListener("click", function () { cifarbenchSort(table, column, header); });
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter") { cifarbenchSort(table, column, header); }
      });
    });
  });
});
"""


def to_html(doc: Document) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(doc.title)}</title><style>{STYLE}</style><script>{IMAGES_LOADED_SCRIPT}{SORT_SCRIPT}</script></head>",
        "<body><main>", f"<h1>{e(doc.title)}</h1>", *map(_html_block, doc.intro),
        "<nav><h2>Contents</h2><ul>",
        *(f'<li><a href="#{s.anchor}">{e(s.title)}</a></li>' for s in doc.sections), "</ul></nav>",
    ]  # fmt: skip
    for section in doc.sections:
        parts += [f'<section id="{section.anchor}">', f"<h2>{e(section.title)}</h2>"]
        parts += [f'<p class="guide">{e(section.guide)}</p>'] if section.guide else []
        parts += [*map(_html_block, section.blocks), "</section>"]
    parts += ["</main></body></html>", ""]
    return "\n".join(parts)


def _html_block(block: Block) -> str:
    e = html.escape
    if isinstance(block, Table):
        return f'<div class="scroll">{_html_table(block.frame)}</div>'
    if isinstance(block, Image):
        data = base64.b64encode(block.png).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{e(block.alt)}">'
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{e(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Strong):
        return f"<p><strong>{e(block.text)}</strong></p>"
    return f"<p>{e(block)}</p>"


def _html_table(frame: pd.DataFrame) -> str:
    e = html.escape
    index_name = frame.index.name or ""
    head = "".join(f"<th>{e(str(c))}</th>" for c in [index_name, *frame.columns])
    numeric = [frame[c].map(_numeric).all() for c in frame.columns]  # a column aligns as a whole, as in Markdown
    body = []
    for label, row in frame.iterrows():
        cells = "".join(f"<td{_css(v, n)}>{e(str(v))}</td>" for v, n in zip(row, numeric))
        body.append(f"<tr><th>{e(str(label))}</th>{cells}</tr>")
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _css(value, numeric_column: bool) -> str:
    if value in ("missing", "n/a"):
        return ' class="missing"' if value == "missing" else ' class="na"'
    return "" if numeric_column else ' class="text"'  # numbers right-aligned, words left
