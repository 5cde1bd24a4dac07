"""Settings: read once from the environment, checked, and listed in the docs
(docs/configuration.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from stream_app.settings import OPTIONS, Settings, SettingsError
from tests.support import ROOT

BAR = "\\|"


def test_the_docs_list_every_setting_with_its_default_and_meaning() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    section = page.split("\n`scripts/services.sh` also reads", 1)[0]
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([A-Z_]+)` \|.*$", section, re.M)}
    described = Settings.describe().splitlines()
    for option in OPTIONS.values():
        # A | inside a table cell is written \| (on GitHub and in MkDocs alike).
        row = f"| `{option.env}` | `{option.default}` | {option.help.replace('|', BAR)} |"
        assert row in described, f"`python -m stream_app settings` misprints {option.env}"
        assert rows.get(option.env) == row, (
            f"docs/configuration.md's table is missing or differs for {option.env}: "
            "paste `python -m stream_app settings`"
        )


def test_the_drift_settings_are_the_monitor_s_configuration() -> None:
    drift = Settings.from_env(
        {
            "CHURN_DRIFT_SLICE_SECONDS": "1800",
            "CHURN_DRIFT_WINDOW_SLICES": "48",
            "CHURN_DRIFT_RAISE_ABOVE": "0.25",
            "CHURN_DRIFT_CLEAR_BELOW": "0.05",
            "CHURN_DRIFT_CONSECUTIVE_SLICES": "4",
            "CHURN_DRIFT_MIN_SCORES": "1000",
            "CHURN_DRIFT_SINCE": "2026-03-01",
        }
    ).drift()
    assert (drift.slice_seconds, drift.window_slices, drift.window_seconds) == (1800, 48, 86400)
    assert (drift.raise_above, drift.clear_below, drift.consecutive) == (0.25, 0.05, 4)
    assert drift.min_scores == 1000
    assert drift.since == datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    defaults = Settings.from_env({})
    assert defaults.drift_monitor and defaults.drift().since is None
    assert (defaults.drift().raise_above, defaults.drift().clear_below) == (0.2, 0.1)


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"CHURN_DRIFT_CLEAR_BELOW": "0.3"}, "clear threshold < raise threshold"),
        ({"CHURN_DRIFT_RAISE_ABOVE": "0"}, "CHURN_DRIFT_RAISE_ABOVE='0': must be a number above 0"),
        ({"CHURN_DRIFT_SINCE": "March"}, "CHURN_DRIFT_SINCE='March': must be an ISO-8601"),
        ({"CHURN_DRIFT_MONITOR": "yes"}, "CHURN_DRIFT_MONITOR='yes': must be on or off"),
        ({"CHURN_DRIFT_WINDOW_SLICES": "0"}, "must be a positive integer"),
    ],
)
def test_drift_settings_the_monitor_cannot_run_with_are_refused_by_name(
    environ: dict[str, str], problem: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(problem)):
        Settings.from_env(environ)


def test_an_unknown_engine_is_refused_naming_the_two() -> None:
    with pytest.raises(SettingsError, match=re.escape("CHURN_ENGINE='kafka-streams'")) as refused:
        Settings.from_env({"CHURN_ENGINE": "kafka-streams"})
    assert "faust, confluent" in str(refused.value)
    assert Settings.from_env({}).engine == "faust"


def test_the_confluent_engine_runs_without_importing_faust() -> None:
    # Faust's per-message cost is what the engine sheds; importing it would also pull
    # aiokafka and its threads into a process that never uses them.
    code = "import sys, stream_app.confluent_worker; print('faust' in sys.modules)"
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "False"
