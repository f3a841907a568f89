"""The pieces of a self-contained HTML page: escaped text, tables, embedded PNG images, collapsible JSON.

Nothing here refers to anything outside the page: styles are inline and images are ``data:`` URLs, so the file
can be mailed, archived or opened offline. Each image also names the PNG it was made from (``data-file``).
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Sequence

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1250px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em;
margin-top: 2em; } h3 { margin-bottom: 0.3em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child, table.text td, table.text th { text-align: left; }
tr.best td { font-weight: bold; background: #fff6d5; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
.meta { color: #555; font-size: 0.9em; } .note { color: #8a5300; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
code { background: #f2f2f2; padding: 0 0.2em; }
"""


def text(value: Any) -> str:
    return html.escape(str(value))


def table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], highlight: Sequence[bool] | None = None,
          numbers: bool = True) -> str:
    """An HTML table of already formatted cells; ``highlight`` marks rows (the best model). Cells after the first
    column are right-aligned for ``numbers``, left-aligned for text."""
    head = "".join(f"<th>{text(h)}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        marked = highlight is not None and highlight[index]
        cells = "".join(f"<td>{text(cell)}</td>" for cell in row)
        body.append(f'<tr class="best">{cells}</tr>' if marked else f"<tr>{cells}</tr>")
    css = "" if numbers else ' class="text"'
    return f"<table{css}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def image(path: Path, caption: str, relative_to: Path) -> str:
    """The PNG at ``path`` embedded as base64, with the file it came from named beside it."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    name = Path(path).resolve().relative_to(relative_to.resolve()).as_posix()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{text(caption)}" data-file="{text(name)}">'
            f"<figcaption>{text(caption)} <code>{text(name)}</code></figcaption></figure>")


def details(summary: str, payload: Any) -> str:
    """A collapsed block holding JSON, for the parts of manifests a reader rarely needs."""
    body = json.dumps(payload, indent=2, default=str)
    return f"<details><summary>{text(summary)}</summary><pre>{text(body)}</pre></details>"


def paragraph(content: str, css: str = "") -> str:
    return f'<p class="{css}">{text(content)}</p>' if css else f"<p>{text(content)}</p>"


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str]]) -> str:
    """The whole document: title, a table of contents and the (heading, html) sections."""
    anchors = [f"s{i}" for i in range(len(sections))]
    contents = " · ".join(f'<a href="#{a}">{text(h)}</a>' for a, (h, _) in zip(anchors, sections))
    body = "\n".join(f'<section id="{a}"><h2>{text(h)}</h2>\n{content}</section>'
                     for a, (h, content) in zip(anchors, sections))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{text(title)}</title><style>{STYLE}</style></head>\n<body><h1>{text(title)}</h1>"
            f'<p class="meta">{text(subtitle)}</p><p class="meta">{contents}</p>\n{body}\n</body></html>\n')
