"""The daily report (`python -m stream_app report --date YYYY-MM-DD`): a day's counters
(`scoring.daily`), kept by every worker with each commit, and the HIGH campaign's
uplift so far (`scoring.campaign`), as plain text and as one HTML page with its plots
inlined."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from schemas import topics
from scoring.campaign import Uplift, uplift_text
from scoring.daily import GAMMA, NEW, RELATIVE_ERROR, TTL_SECONDS, DailyCounts
from scoring.risk import LEVELS
from training import page

QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
PREVIOUS = (NEW, *LEVELS)  # a change's previous risk
RISK_COLOURS = {"LOW": "#2ca02c", "MEDIUM": "#ff7f0e", "HIGH": "#d62728"}
LATENCY_PLOT_BUCKETS = 5
NO_DRIFT_STATE = "drift monitor: no state recorded"

# The drift monitor's current alert state, by feature (or "score"). The report only
# shows what the monitor recorded; with nothing recorded it says so (NO_DRIFT_STATE).
DriftStates = Mapping[str, str]


def latency_text(seconds: float) -> str:
    """A latency in the unit that reads best, to the error the report has anyway."""
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _topic_order(names: Mapping[str, int]) -> list[str]:
    known = [t for t in topics.INPUT_TOPICS if t in names]
    return known + sorted(set(names) - set(known))


def _changes(counts: DailyCounts) -> list[tuple[str, str, int]]:
    rank = {name: i for i, name in enumerate(PREVIOUS)}
    return sorted(
        ((previous, risk, n) for (previous, risk), n in counts.changes.items()),
        key=lambda c: (rank.get(c[0], len(rank)), rank.get(c[1], len(rank)), c),
    )


def _risk_rows(counts: DailyCounts) -> list[tuple[str, int, str]]:
    """(risk, scores, share of the scores) per risk category."""
    rows = []
    for level in LEVELS:
        n = counts.risks.get(level, 0)
        rows.append((level, n, f"{n / counts.scores:.1%}" if counts.scores else ""))
    return rows


def _quantile_rows(counts: DailyCounts) -> list[tuple[str, str]]:
    """(name, latency) of each quantile the report shows (none without latencies)."""
    return [
        (name, latency_text(value))
        for name, q in QUANTILES
        if (value := counts.latency_quantile(q)) is not None
    ]


WIDTH = 44  # label and number columns of the text summary


def _line(label: str, value: object = "", note: str = "", indent: int = 2) -> str:
    number = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{' ' * indent}{label:<{WIDTH - 12 - indent}}{number:>12}{note}".rstrip()


NO_CAMPAIGN = (
    "no change into HIGH has had its horizon pass in event time yet (or CHURN_HOLDOUT_SHARE "
    "is 0: nobody is held out to compare with)"
)
CAMPAIGN_NOTE = (
    "Each week's changes into HIGH, decided once the model's horizon has passed: churned "
    "when no order came within it. Held out: customers the campaign leaves alone "
    "(CHURN_HOLDOUT_SHARE of them, by a hash of their id). Uplift: the held-out churn rate "
    "minus the treated one, churn prevented per customer acted on, with its 95% interval "
    "(Newcombe); churn prevented: 1 - treated rate / held-out rate."
)
CAMPAIGN_ROWS = 9  # the last 8 weekly cohorts, and all of them


def summary_text(
    counts: DailyCounts,
    partitions: int,
    drift: DriftStates | None,
    no_drift: str = NO_DRIFT_STATE,
    campaign: Sequence[Uplift] = (),
) -> str:
    """The report as plain text (what the command prints); `no_drift` says why there
    is no drift state to show; `campaign`: the HIGH campaign's uplift by cohort."""
    lines = [
        f"churn-risk daily report for {counts.day.isoformat()} (UTC), {partitions} partitions",
        "(each input counted once, on the day its batch's outputs became durable)",
        "",
        _line("events by topic", sum(counts.events.values()), indent=0),
        *(_line(t, counts.events[t]) for t in _topic_order(counts.events)),
        "events by outcome",
        *(_line(name, n) for name, n in counts.outcomes.items()),
        _line("dead letters", counts.outcomes.get("dead_letter", 0), indent=0),
        *(_line(f"from {t}", counts.dead_letters[t]) for t in _topic_order(counts.dead_letters)),
        "",
        _line("risk mix of scores", counts.scores, indent=0),
        *(_line(level, n, f"  {share:>6}") for level, n, share in _risk_rows(counts)),
        _line("risk changes published", sum(counts.changes.values()), indent=0),
        *(_line(f"{previous:>6} -> {risk}", n) for previous, risk, n in _changes(counts)),
        _line("HIGH (changes into HIGH)", counts.into_high, indent=0),
        _line("sent on churn-risk-high", counts.sent_high),
        _line("held out of the campaign", counts.held_out_high),
        "",
    ]
    rate = counts.churn_rate
    if rate is None:
        lines.append(_line("predicted churn rate", "n/a", "  no scores", 0))
    else:
        lines.append(_line("predicted churn rate", f"{rate:.2%}", "  mean probability", 0))
    lines.append(
        "end-to-end latency (broker append -> outputs durable; quantiles within "
        f"{RELATIVE_ERROR:.0%})"
    )
    inputs = sum(counts.latency.values())
    if not inputs:
        lines.append("  none recorded (no input had a broker timestamp)")
    else:
        lines.append(_line("inputs", inputs))
    lines += [_line(name, value) for name, value in _quantile_rows(counts)]
    lines += ["", _line("model versions served", counts.scores, "  scores", 0)]
    lines += [_line(v, n) for v, n in sorted(counts.models.items())]
    lines += ["", "drift status per feature"]
    if not drift:
        lines.append(f"  {no_drift}")
    else:
        lines += [_line(feature, state) for feature, state in sorted(drift.items())]
    lines += ["", "the HIGH campaign: treated against held-out HIGH customers"]
    if not campaign:
        lines.append(f"  {NO_CAMPAIGN}")
    else:
        lines += ["  " + line for line in uplift_text(campaign[-CAMPAIGN_ROWS:]).splitlines()]
    return "\n".join(lines)


# --- HTML -----------------------------------------------------------------------------


def _cell(value: object) -> str:
    text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"<td>{html.escape(text)}</td>"


def _rows(pairs: Sequence[tuple[object, ...]]) -> list[list[str]]:
    return [[_cell(v) for v in row] for row in pairs]


def volume_figure(counts: DailyCounts) -> str:
    names = _topic_order(counts.events)
    figure, (topics_ax, outcomes_ax) = plt.subplots(1, 2, figsize=(12, 3.2), layout="constrained")
    topics_ax.barh(names, [counts.events[t] for t in names], color="#1f77b4")
    topics_ax.invert_yaxis()
    topics_ax.set(title="Input events by topic", xlabel="events")
    outcome_names = list(counts.outcomes)
    outcomes_ax.barh(outcome_names, [counts.outcomes[o] for o in outcome_names], color="#7f7f7f")
    outcomes_ax.invert_yaxis()
    outcomes_ax.set(title="What became of them", xlabel="events")
    for ax in (topics_ax, outcomes_ax):
        ax.grid(axis="x", alpha=0.3)
    return page.png(figure)


def risk_figure(counts: DailyCounts) -> str:
    figure, (mix_ax, changes_ax) = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
    mix = [counts.risks.get(level, 0) for level in LEVELS]
    mix_ax.bar(LEVELS, mix, color=[RISK_COLOURS[level] for level in LEVELS])
    mix_ax.set(title=f"Risk mix of {counts.scores:,} scores", ylabel="scores")
    mix_ax.grid(axis="y", alpha=0.3)
    matrix = np.array(
        [[counts.changes.get((p, r), 0) for r in LEVELS] for p in PREVIOUS], dtype=float
    )
    changes_ax.imshow(matrix, cmap="Blues")
    changes_ax.set_xticks(range(len(LEVELS)), LEVELS)
    changes_ax.set_yticks(range(len(PREVIOUS)), PREVIOUS)
    changes_ax.set(title="Risk changes published", xlabel="to", ylabel="from")
    for (row, column), n in np.ndenumerate(matrix):
        if row - 1 != column:  # the diagonal (no change) is never published
            dark = n > matrix.max() / 2
            colour = "white" if dark else "black"
            changes_ax.text(column, row, f"{int(n):,}", ha="center", va="center", color=colour)
    return page.png(figure)


def latency_figure(counts: DailyCounts) -> str:
    # Drawn in bins of LATENCY_PLOT_BUCKETS buckets (~10% wide): the plot shows the
    # shape, the quantiles come from the buckets themselves.
    first = min(counts.latency) // LATENCY_PLOT_BUCKETS
    last = max(counts.latency) // LATENCY_PLOT_BUCKETS
    inputs = np.zeros(last - first + 1)
    for bucket, n in counts.latency.items():
        inputs[bucket // LATENCY_PLOT_BUCKETS - first] += n
    edges = GAMMA ** (LATENCY_PLOT_BUCKETS * np.arange(first, last + 2, dtype=float))
    figure, ax = plt.subplots(figsize=(12, 3.8))
    ax.stairs(inputs, edges, fill=True, color="#9467bd", alpha=0.8)
    ax.set_xscale("log")
    for (name, q), style in zip(QUANTILES, ("-", "--", ":"), strict=True):
        value = counts.latency_quantile(q)
        if value is not None:
            ax.axvline(value, color="#222", linestyle=style, label=f"{name} {latency_text(value)}")
    ax.set(
        title=f"{int(inputs.sum()):,} inputs, from broker append to outputs durable",
        xlabel="seconds (log scale)",
        ylabel=f"inputs per {GAMMA**LATENCY_PLOT_BUCKETS - 1:.0%} bin",
    )
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    return page.png(figure)


def models_figure(counts: DailyCounts) -> str:
    versions = sorted(counts.models)
    figure, ax = plt.subplots(figsize=(12, 0.5 * len(versions) + 1.4))
    ax.barh(versions, [counts.models[v] for v in versions], color="#17becf")
    ax.set(title="Scores by model version", xlabel="scores")
    ax.grid(axis="x", alpha=0.3)
    return page.png(figure)


def report_html(
    counts: DailyCounts,
    partitions: int,
    drift: DriftStates | None,
    no_drift: str = NO_DRIFT_STATE,
    campaign: Sequence[Uplift] = (),
) -> str:
    """The report as one HTML page, its plots inlined."""
    day = counts.day.isoformat()
    rate = counts.churn_rate
    p99 = counts.latency_quantile(0.99)
    dead = counts.outcomes.get("dead_letter", 0)
    parts = [
        f"<h1>Churn risk, {day} (UTC)</h1>",
        f'<p class="sub">Counters kept by every worker with each commit, over {partitions} '
        "partitions: each input counts once, on the day its batch's outputs became durable, "
        f"through redeliveries, crashes and restarts. They are kept {TTL_SECONDS // 86400} "
        "days.</p>",
        page.cards(
            [
                ("", f"{sum(counts.events.values()):,}", "input events"),
                ("", f"{counts.scores:,}", "scores"),
                ("bad" if counts.into_high else "", f"{counts.into_high:,}", "changes into HIGH"),
                ("", "n/a" if rate is None else f"{rate:.2%}", "predicted churn rate"),
                ("", "n/a" if p99 is None else latency_text(p99), "p99 end-to-end latency"),
                ("bad" if dead else "good", f"{dead:,}", "dead letters"),
            ]
        ),
        page.image("Volume", volume_figure(counts)),
        page.table(
            ["topic", "events"], _rows([(t, counts.events[t]) for t in _topic_order(counts.events)])
        ),
        page.table(["outcome", "events"], _rows(list(counts.outcomes.items()))),
        "<h2>Dead letters</h2>",
        page.table(
            ["input topic", "dead letters"],
            _rows([(t, counts.dead_letters[t]) for t in _topic_order(counts.dead_letters)]),
        ),
        page.image("Risk", risk_figure(counts)),
        page.table(["risk", "scores", "share"], _rows(_risk_rows(counts))),
        page.table(["from", "to", "changes"], _rows(_changes(counts))),
        f'<p class="note">HIGH: {counts.into_high:,} changes into HIGH, '
        f"{counts.sent_high:,} sent to marketing automation on churn-risk-high and "
        f"{counts.held_out_high:,} held out of the campaign to measure what it achieves. "
        "Predicted churn rate: the mean calibrated "
        "probability of the day's scores (every event's rescore and every inactivity "
        "rescore).</p>",
    ]
    if counts.latency:
        parts.append(page.image("End-to-end latency", latency_figure(counts)))
        parts.append(page.table(["quantile", "latency"], _rows(_quantile_rows(counts))))
        parts.append(
            f"<p class=\"note\">From each input's broker append time to its batch's outputs "
            f"being durable in Kafka. Counted in log-spaced buckets: each quantile is within "
            f"{RELATIVE_ERROR:.0%} of the exact one.</p>"
        )
    else:
        parts.append("<h2>End-to-end latency</h2>")
        parts.append('<p class="note">None recorded: no input had a broker timestamp.</p>')
    if counts.models:
        parts.append(page.image("Model versions served", models_figure(counts)))
    parts.append("<h2>Drift status per feature</h2>")
    if not drift:
        parts.append(f'<p class="note">{html.escape(no_drift)}</p>')
    else:
        parts.append(page.table(["feature", "state"], _rows(sorted(drift.items()))))
    parts += _campaign_html(campaign)
    return page.document(f"Churn risk {day}", parts)


def _campaign_html(campaign: Sequence[Uplift]) -> list[str]:
    parts = ["<h2>The HIGH campaign: treated against held-out HIGH customers</h2>"]
    if not campaign:
        return [*parts, f'<p class="note">{html.escape(NO_CAMPAIGN)}</p>']

    def share(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    def interval(low: float | None, high: float | None) -> str:
        return "n/a" if low is None or high is None else f"{low:+.1%} to {high:+.1%}"

    rows = [
        (
            u.cohort,
            u.treated.customers,
            share(u.treated.rate),
            u.held_out.customers,
            share(u.held_out.rate),
            "n/a" if u.uplift is None else f"{u.uplift:+.1%}",
            interval(u.low, u.high),
            share(u.relative),
        )
        for u in campaign[-CAMPAIGN_ROWS:]
    ]
    header = ["cohort", "treated", "churned", "held out", "churned", "uplift", "95% interval"]
    return [
        *parts,
        page.table([*header, "churn prevented"], _rows(rows)),
        f'<p class="note">{html.escape(CAMPAIGN_NOTE)}</p>',
    ]
