"""The daily report's text and HTML (`stream_app.report`) and its command line; the
numbers themselves are proven in tests/test_daily.py and, on real workers,
tests/integration/test_daily_report.py."""

from __future__ import annotations

import re
import sys
from datetime import date

import pytest

from scoring.campaign import uplifts
from scoring.daily import DailyCounts, histogram
from stream_app.__main__ import main
from stream_app.report import NO_CAMPAIGN, NO_DRIFT_STATE, report_html, summary_text

LATENCIES = [0.010] * 50 + [0.100] * 45 + [1.0] * 4 + [30.0]


def a_day(latencies: list[float] = LATENCIES) -> DailyCounts:
    return DailyCounts(
        date(2026, 3, 1),
        events={"orders": 1234, "customers": 100, "support-tickets": 66},
        outcomes={"applied": 1390, "duplicate": 7, "dead_letter": 3},
        dead_letters={"orders": 2, "support-tickets": 1},
        risks={"LOW": 800, "MEDIUM": 150, "HIGH": 50},
        changes={("new", "MEDIUM"): 40, ("new", "HIGH"): 9, ("MEDIUM", "HIGH"): 6},
        models={"v1": 600, "v2": 400},
        probability_sum=125.0,
        latency=histogram(latencies),
        held_out_high=2,
    )


def number(text: str, label: str) -> str:
    """The value on the summary's line of `label`."""
    found = re.search(rf"^ *{re.escape(label)} +(\S+(?: ms| s)?)", text, re.MULTILINE)
    assert found, f"no line {label!r} in\n{text}"
    return found.group(1)


def test_the_summary_shows_every_number_of_the_day() -> None:
    text = summary_text(a_day(), 4, None)

    assert text.startswith("churn-risk daily report for 2026-03-01 (UTC), 4 partitions")
    assert number(text, "events by topic") == "1,400"
    assert number(text, "orders") == "1,234" and number(text, "customers") == "100"
    assert number(text, "duplicate") == "7" and number(text, "dead letters") == "3"
    assert number(text, "from support-tickets") == "1"
    assert re.search(r"LOW +800 +80.0%\n  MEDIUM +150 +15.0%\n  HIGH +50 +5.0%\n", text)
    assert number(text, "risk changes published") == "55"
    assert number(text, "new -> MEDIUM") == "40" and number(text, "MEDIUM -> HIGH") == "6"
    assert number(text, "HIGH (changes into HIGH)") == "15"
    assert number(text, "sent on churn-risk-high") == "13"
    assert number(text, "held out of the campaign") == "2"
    assert number(text, "predicted churn rate") == "12.50%"
    assert number(text, "inputs") == "100"
    # 100 latencies: p50 is the 50th smallest (10 ms), p95 the 95th (100 ms), p99 1 s.
    assert number(text, "p50").endswith(" ms") and number(text, "p99").endswith(" ms")
    for label, exact in (("p50", 10.0), ("p95", 100.0), ("p99", 1000.0)):
        assert float(number(text, label).removesuffix(" ms")) == pytest.approx(exact, rel=0.01)
    assert number(text, "v1") == "600" and number(text, "v2") == "400"
    assert f"drift status per feature\n  {NO_DRIFT_STATE}\n" in text
    assert text.endswith(f"treated against held-out HIGH customers\n  {NO_CAMPAIGN}")


def test_the_campaigns_uplift_is_shown_by_cohort_and_for_all() -> None:
    campaign = uplifts(
        {
            "2026-02-02|treated|churned": 30,
            "2026-02-02|treated|retained": 70,
            "2026-02-02|held_out|churned": 12,
            "2026-02-02|held_out|retained": 8,
        }
    )
    text = summary_text(a_day(), 4, None, campaign=campaign)
    page = report_html(a_day(), 4, None, campaign=campaign)

    rows = re.findall(r"^  (2026-02-02|all) +100 +30 +0.300 +20 +12 +0.600 +0.300 ", text, re.M)
    assert rows == ["2026-02-02", "all"]
    assert NO_CAMPAIGN not in text
    assert "<td>2026-02-02</td><td>100</td><td>30.0%</td><td>20</td><td>60.0%</td>" in page
    assert "<td>+30.0%</td>" in page and "<td>50.0%</td>" in page  # uplift, churn prevented


def test_the_drift_monitors_states_are_shown_as_given() -> None:
    text = summary_text(a_day(), 4, {"recency_days": "raised", "score": "clear"})

    assert number(text, "recency_days") == "raised" and number(text, "score") == "clear"
    assert NO_DRIFT_STATE not in text


def test_a_day_without_broker_timestamps_says_it_has_no_latency() -> None:
    day = a_day(latencies=[])

    assert "none recorded (no input had a broker timestamp)" in summary_text(day, 4, None)
    assert "None recorded: no input had a broker timestamp" in report_html(day, 4, None)


def test_the_html_report_is_one_page_with_its_plots_inlined() -> None:
    page = report_html(a_day(), 4, None)

    assert page.startswith("<!doctype html>")
    assert re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page) == [
        "Volume",
        "Risk",
        "End-to-end latency",
        "Model versions served",
    ]
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<td>orders</td><td>1,234</td>" in page
    assert re.search(r"<td>p99</td><td>99\d ms</td>", page)
    assert NO_DRIFT_STATE in page and NO_CAMPAIGN in page


@pytest.mark.parametrize("text", ["2026-02-30", "20260301", "yesterday"])
def test_a_date_that_is_not_yyyy_mm_dd_is_refused(
    text: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["stream_app", "report", "--date", text])

    with pytest.raises(SystemExit) as stopped:
        main()

    assert stopped.value.code == 2
    assert f"argument --date: {text!r} is not a date YYYY-MM-DD" in capsys.readouterr().err
