"""One-file HTML pages with their figures inlined (the training report and the
daily report): no other file to copy along, nothing fetched when opened."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin-top: 0; }
.cards { display: flex; gap: 1em; flex-wrap: wrap; margin: 1.2em 0; }
.card { border: 1px solid #ddd; border-radius: 8px; padding: 0.8em 1.2em; min-width: 200px; }
.card .value { font-size: 1.9em; font-weight: 600; }
.card .label { color: #666; font-size: 0.9em; }
.card.bad .value { color: #b00; } .card.good .value { color: #2a7; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.93em; }
th, td { padding: 0.35em 0.8em; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f6f6f6; }
tr.served td { font-weight: 600; background: #fff4f4; }
td.best { color: #2a7; font-weight: 600; }
img { max-width: 100%; display: block; margin: 0.6em 0; }
.note { color: #555; font-size: 0.92em; max-width: 60em; }
"""


def png(figure: Figure) -> str:
    """The figure as base64 PNG (for `image`), and closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image(title: str, encoded: str) -> str:
    """A figure section: its title and the inlined PNG."""
    return f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" ' + (
        f'src="data:image/png;base64,{encoded}">'
    )


def table(headers: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    """A table of `rows` of ready-made cells (`<td>...</td>`), a CSS class per row."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        css = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{css}>" + "".join(row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def cards(items: list[tuple[str, str, str]]) -> str:
    """Headline numbers: (CSS class "", "good" or "bad"; value; label) each."""
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card {css}"><div class="value">{html.escape(value)}</div>'
            f'<div class="label">{html.escape(label)}</div></div>'
            for css, value, label in items
        )
        + "</div>"
    )


def document(title: str, parts: list[str]) -> str:
    """The whole page."""
    body = "\n".join(parts)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )
