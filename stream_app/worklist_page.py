"""Marketing's work-list as HTML pages, rendered on the server (no JavaScript): who is
HIGH (or MEDIUM) now, since when, why in words, and what to do; and one customer's
page, their features and the changes since they were listed.

Every value shown is escaped: customer ids are checked, but reasons and actions come
from the model's metadata and a configured file.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote, urlencode

from scoring.predict_contract import Lookup
from scoring.worklist import LISTED, Step, WorkItem, in_words

TOP_REASONS = 3
HELD_OUT_NOTE = (
    "Held out of the campaign: no action. Leaving a share of HIGH customers alone is what "
    "measures what the campaign achieves (CHURN_HOLDOUT_SHARE)."
)
STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222 }
h1 { font-size: 1.4rem } nav a { margin-right: 1rem } nav a.on { font-weight: 700 }
table { border-collapse: collapse; width: 100% } th, td { text-align: left;
  padding: .35rem .6rem; border-bottom: 1px solid #ddd; vertical-align: top }
th { background: #f4f4f4 } .HIGH { color: #b00020; font-weight: 700 }
.MEDIUM { color: #a15c00; font-weight: 700 } .LOW { color: #2e7d32 }
ul { margin: 0; padding-left: 1.1rem } .muted { color: #666 } form { margin: 1rem 0 }
"""


def page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def work_list(
    rows: Sequence[tuple[str, WorkItem]], risk: str, query: str, counts: dict[str, int]
) -> str:
    """The list of one category, highest probability first, `rows` already filtered."""
    tabs = " ".join(
        f'<a href="/worklist?{urlencode({"risk": level})}" class="{"on" if level == risk else ""}">'
        f"{level} ({counts[level]})</a>"
        for level in LISTED
    )
    lines = "".join(_row(customer, item) for customer, item in rows)
    shown = f"{len(rows)} shown" + (f", filtered by “{escape(query)}”" if query else "")
    body = (
        f"<h1>Customers at risk: {risk}</h1><nav>{tabs}</nav>"
        f'<form method="get" action="/worklist"><input type="hidden" name="risk" value="{risk}">'
        f'<input name="q" value="{escape(query, quote=True)}" aria-label="filter"'
        ' placeholder="customer, reason or action"> <button>Filter</button></form>'
        f'<p class="muted" id="shown">{shown}</p>'
        "<table><thead><tr><th>customer</th><th>probability</th><th>since</th>"
        "<th>why</th><th>what to do</th></tr></thead>"
        f"<tbody>{lines}</tbody></table>"
    )
    return page(f"Work-list: {risk}", body)


def _row(customer: str, item: WorkItem) -> str:
    link = f'<a href="/worklist/customers/{quote(customer, safe="")}">{escape(customer)}</a>'
    return (
        f'<tr data-customer="{escape(customer, quote=True)}"><td>{link}</td>'
        f'<td class="{item.risk}">{item.probability:.0%}</td><td>{when(item.since)}</td>'
        f"<td>{_items(reasons(item))}</td><td>{_to_do(item)}</td></tr>"
    )


def _to_do(item: WorkItem) -> str:
    if item.to_do or not item.actions:
        return _items(item.to_do)
    return f'<p class="held-out">{HELD_OUT_NOTE}</p>'


def reasons(item: WorkItem, top: int = TOP_REASONS) -> list[str]:
    """The item's strongest reasons, in words."""
    return [in_words(reason) for reason in item.reasons[:top]]


def matches(customer: str, item: WorkItem, query: str) -> bool:
    """Whether the filter `query` is in the customer's id, a reason or an action."""
    needle = query.casefold()
    haystack = [customer, *reasons(item, len(item.reasons)), *item.to_do]
    return any(needle in text.casefold() for text in haystack)


def customer_page(
    customer: str, item: WorkItem | None, path: Sequence[Step], found: Lookup | None
) -> str:
    """One customer: their listing, their path since listed, and their features."""
    parts = [f'<p><a href="/worklist">back to the list</a></p><h1>{escape(customer)}</h1>']
    if item is None:
        parts.append("<p>Not on the work-list: not HIGH or MEDIUM now, or below its cut.</p>")
    else:
        parts.append(
            f'<p><span class="{item.risk}">{item.risk}</span> since {when(item.since)}, '
            f"probability {item.probability:.1%} (model {escape(item.model_version)})</p>"
            f"<h2>Why</h2>{_items(reasons(item, len(item.reasons)))}"
            f"<h2>What to do</h2>{_to_do(item)}"
        )
    if path:
        steps = "".join(
            f"<tr><td>{when(s.at)}</td><td>{s.previous or 'none'} → "
            f'<span class="{s.risk}">{s.risk}</span></td><td>{s.probability:.1%}</td>'
            f"<td>{s.trigger}</td></tr>"
            for s in reversed(path)
        )
        parts.append(
            '<h2>Recent changes</h2><table id="changes"><thead><tr><th>when</th>'
            "<th>change</th><th>probability</th><th>trigger</th></tr></thead>"
            f"<tbody>{steps}</tbody></table>"
        )
    if found is not None:
        features = "".join(
            f"<tr><td>{escape(name)}</td><td>{_number(value)}</td></tr>"
            for name, value in found.current.features.items()
        )
        parts.append(
            f"<h2>Features now</h2><p class='muted'>as of {found.current.as_of_ts:%Y-%m-%d %H:%M} "
            f"UTC (the partition's event time): probability {found.current.probability:.1%}, "
            f'<span class="{found.current.risk}">{found.current.risk}</span></p>'
            f'<table id="features"><tbody>{features}</tbody></table>'
        )
    return page(f"Work-list: {customer}", "".join(parts))


def login(message: str = "") -> str:
    """The form that asks for the token (kept in an HttpOnly cookie once checked)."""
    note = f'<p class="HIGH">{escape(message)}</p>' if message else ""
    return page(
        "Work-list: sign in",
        "<h1>Work-list</h1>"
        f"{note}<form method='post' action='/worklist/login'>"
        "<label>Token (CHURN_WEB_TOKEN) <input type='password' name='token' "
        "autocomplete='current-password'></label> <button>Sign in</button></form>",
    )


def _number(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4g}"


def _items(texts: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{escape(t)}</li>" for t in texts) + "</ul>"
