"""One notion of a valid event: training bounds event times as the worker does, from
the same setting (CHURN_MIN_EVENT_TIME). A shop dated before 2000 is refused at the
start, naming the setting; with the bound moved it trains, and the artifact loads
with a drift reference taken through the worker's own decoder."""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scoring.artifact import load_model
from simulator.history import generate_history
from simulator.sqlite_sink import write_sqlite
from training.__main__ import main

START = datetime(1997, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def old_shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("old-shop") / "shop.db"
    write_sqlite(generate_history(300, seed=11, start=START), path)
    return path


def train(db: Path, out: Path) -> tuple[int, str, str]:
    printed, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        code = main(["--db", str(db), "--out", str(out), "--families", "linear"])
    return code, printed.getvalue(), errors.getvalue()


def test_a_history_older_than_the_workers_bound_is_refused_at_the_start_naming_the_setting(
    old_shop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHURN_MIN_EVENT_TIME", raising=False)
    code, printed, errors = train(old_shop, tmp_path / "models")
    assert code == 2
    assert "before CHURN_MIN_EVENT_TIME (2000-01-01)" in errors
    assert "Set CHURN_MIN_EVENT_TIME=199" in errors
    assert "build datasets" not in printed  # refused before any work
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_with_the_bound_moved_a_history_before_2000_trains_and_its_artifact_loads(
    old_shop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_MIN_EVENT_TIME", "1990-01-01")
    code, printed, errors = train(old_shop, tmp_path / "models")
    assert code == 0, errors
    model = load_model(tmp_path / "models")  # the worker's loader
    reference = model.metadata["reference"]["serving"]
    assert reference["rows"] > 500, reference["rows"]  # 0 before: every event refused
    print(printed.splitlines()[-3:])


def test_a_malformed_bound_stops_training_with_the_setting_named(
    old_shop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_MIN_EVENT_TIME", "the nineties")
    with pytest.raises(SystemExit, match="CHURN_MIN_EVENT_TIME must be a date"):
        train(old_shop, tmp_path / "models")
