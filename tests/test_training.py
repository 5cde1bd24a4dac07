"""The training pipeline: SQLite -> point-in-time data sets -> a calibrated, loadable artifact."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_store.definitions import FEATURE_NAMES, SECONDS_PER_DAY, FeatureParams
from feature_store.offline import (
    CUSTOMER_COLUMNS,
    TICKET_COLUMNS,
    History,
    features_as_of,
)
from scoring.artifact import CURRENT_POINTER, ArtifactError, load_model
from scoring.families import LIGHTGBM, LINEAR, MODEL_FILES
from simulator import generate_history, write_sqlite
from tests.support import model_name
from training import (
    DatabaseError,
    TrainingConfig,
    TrainingDataError,
    build_dataset,
    build_splits,
    cutoffs,
    load_history,
    save,
    train,
)
from training.__main__ import main
from training.database import REQUIRED_COLUMNS, to_epoch_seconds
from training.dataset import day_end
from training.train import fit_calibration, rescale_engagement

HORIZON = 30
# One thread: LightGBM is deterministic either way, and a starved OpenMP team spins.
# Two families (the simplest and the default tree model) where which ones is beside
# the point (the CLI runs cover every family), and at most 150 trees: these shops of
# 300 customers peak well before.
FAST = TrainingConfig(num_threads=1, families=(LINEAR, LIGHTGBM), max_rounds=150)
UNIT = FeatureParams(engagement_scale=1.0)


# shop_db and history: tests/conftest.py (shared with the other training tests).


def copy_db(source: Path, target: Path, *statements: str) -> Path:
    shutil.copy(source, target)
    with sqlite3.connect(target) as conn:
        for statement in statements:
            conn.execute(statement)
    return target


def tiny_db(path: Path, skip: Iterable[str] = ()) -> Path:
    """The four seed tables with one customer, one order and one ticket; `skip` names
    tables ("orders") or columns ("orders.total_amount") to leave out."""
    schema = {
        **{table: list(columns) for table, columns in REQUIRED_COLUMNS.items()},
        "order_items": ["order_id", "product_category", "quantity", "price"],
    }
    rows = {
        "customers": ("C1", 30, "2025-01-01T00:00:00+00:00", 1, 0),
        "orders": ("O1", "C1", "2025-02-01T10:00:00+00:00", 12.5, "delivered"),
        "support_tickets": ("T1", "C1", "2025-02-02T10:00:00+00:00", 3.0, 4),
        "order_items": ("O1", "books", 1, 12.5),
    }
    with sqlite3.connect(path) as conn:
        for table, columns in schema.items():
            if table in skip:
                continue
            keep = [i for i, c in enumerate(columns) if f"{table}.{c}" not in skip]
            conn.execute(f"CREATE TABLE {table} ({', '.join(columns[i] for i in keep)})")
            marks = ", ".join("?" for _ in keep)
            conn.execute(f"INSERT INTO {table} VALUES ({marks})", [rows[table][i] for i in keep])
    return path


def truncated(history: History, at: float) -> History:
    """The history as it stood at `at`: later orders and tickets removed."""
    return History(
        orders=history.orders[history.orders["ts"] <= at],
        tickets=history.tickets[history.tickets["ts"] <= at],
        customers=history.customers,
    )


# --- database -----------------------------------------------------------------------


def test_timestamps_equal_the_online_paths_datetime_timestamp_exactly() -> None:
    texts = [
        "2025-07-01T10:00:00+00:00",
        "2025-07-01 10:00:00",  # no offset: UTC
        "2025-07-01T12:00:00+02:00",
        "2025-07-01T10:00:00Z",
        "2025-07-01T10:00:00.123456+00:00",
        "2031-12-31T23:59:59+00:00",
    ]

    def online(text: str) -> float:
        # What a decoded event's UtcTime gives the online path.
        moment = datetime.fromisoformat(text)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()

    expected = [online(t) for t in texts]
    assert to_epoch_seconds(pd.Series(texts), "x").tolist() == expected


def test_database_gives_the_same_features_as_the_events_the_online_path_decodes(
    tmp_path: Path,
) -> None:
    simulated = generate_history(120, seed=3)
    write_sqlite(simulated, tmp_path / "shop.db")
    from_db = load_history(tmp_path / "shop.db")
    from_events = History.from_events(simulated.events_in_time_order())

    assert from_db.orders["ts"].tolist() == [o.order_ts.timestamp() for o in simulated.orders]
    as_of = pd.Series(simulated.end.timestamp(), index=from_db.customers["customer_id"])
    pd.testing.assert_frame_equal(
        features_as_of(from_db, as_of, UNIT), features_as_of(from_events, as_of, UNIT)
    )


def test_missing_table_raises_database_error_naming_it(tmp_path: Path) -> None:
    db = tiny_db(tmp_path / "shop.db", skip=["support_tickets"])
    with pytest.raises(DatabaseError, match="table support_tickets"):
        load_history(db)


def test_missing_column_raises_database_error_naming_table_and_column(tmp_path: Path) -> None:
    db = tiny_db(tmp_path / "shop.db", skip=["orders.total_amount", "customers.age"])
    with pytest.raises(DatabaseError, match=r"column customers\.age.*column orders\.total_amount"):
        load_history(db)


def test_order_items_and_unused_columns_are_not_required(tmp_path: Path) -> None:
    history = load_history(tiny_db(tmp_path / "shop.db", skip=["order_items"]))
    assert history.orders["order_id"].tolist() == ["O1"]


def test_missing_database_file_raises_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="does not exist"):
        load_history(tmp_path / "nope.db")
    assert not (tmp_path / "nope.db").exists()


def test_null_event_time_raises_database_error(tmp_path: Path, shop_db: Path) -> None:
    db = copy_db(
        shop_db, tmp_path / "shop.db", "UPDATE orders SET order_date = NULL WHERE rowid = 1"
    )
    with pytest.raises(DatabaseError, match=r"orders\.order_date has 1 NULL"):
        load_history(db)


# --- point-in-time data sets ------------------------------------------------------


def test_labels_look_only_after_the_cutoff_and_eligibility_only_before() -> None:
    cutoff = day_end(date(2025, 3, 1))
    horizon_end = cutoff + HORIZON * SECONDS_PER_DAY
    orders = [  # customer, order time
        ("at_cutoff", cutoff),  # eligible; nothing after: churned
        ("back_at_horizon_end", cutoff - 5),
        ("back_at_horizon_end", horizon_end),  # last second of the horizon: retained
        ("back_too_late", cutoff - 5),
        ("back_too_late", horizon_end + 1),  # after the horizon: churned
        ("new_after_cutoff", cutoff + 1),  # no order at or before T: not eligible
    ]
    history = History(
        orders=pd.DataFrame(
            {
                "customer_id": [c for c, _ in orders],
                "order_id": [f"O{i}" for i in range(len(orders))],
                "ts": [ts for _, ts in orders],
                "total_amount": 10.0,
                "delivery_status": "delivered",
            }
        ),
        tickets=pd.DataFrame(columns=list(TICKET_COLUMNS)),
        customers=pd.DataFrame(columns=list(CUSTOMER_COLUMNS)),
    )
    rows = build_dataset(history, cutoff, HORIZON, UNIT).set_index("customer_id")
    assert rows["label"].to_dict() == {
        "at_cutoff": 1,
        "back_at_horizon_end": 0,
        "back_too_late": 1,
    }
    assert rows.loc["back_too_late", "orders_lifetime"] == 1  # the later order is unseen


def test_features_as_of_the_cutoff_do_not_see_a_signal_planted_after_it(
    history: History,
) -> None:
    cutoff = cutoffs(history, HORIZON, 3, 14)[-1]
    before = build_dataset(history, cutoff, HORIZON, UNIT)
    churners = before.loc[before["label"] == 1, "customer_id"]
    # Every future churner files an angry ticket one second after the cutoff: a perfect
    # predictor, if any feature could see it.
    planted = pd.DataFrame(
        {
            "customer_id": churners.to_numpy(),
            "ticket_id": [f"PLANTED{i}" for i in range(len(churners))],
            "ts": cutoff + 1,
            "resolution_time_hours": 999.0,
            "satisfaction_score": 1.0,
        }
    )
    leaky = History(
        orders=history.orders,
        tickets=pd.concat([history.tickets, planted], ignore_index=True),
        customers=history.customers,
    )

    after = build_dataset(leaky, cutoff, HORIZON, UNIT)
    pd.testing.assert_frame_equal(after, before)
    # The same rows built from the history cut off at T: the future plays no part.
    features = list(FEATURE_NAMES)
    pd.testing.assert_frame_equal(
        build_dataset(truncated(leaky, cutoff), cutoff, HORIZON, UNIT)[features],
        after[features],
    )
    # The plant is a real signal: one day later the features do show it.
    later = build_dataset(leaky, cutoff + SECONDS_PER_DAY, HORIZON, UNIT).set_index("customer_id")
    assert (later.loc[churners, "negative_experiences_90d"] >= 1).all()


def test_split_is_time_ordered_with_a_horizon_gap_before_validation_and_test(
    history: History,
) -> None:
    cutoff_list = cutoffs(history, HORIZON, 6, 14)
    splits = build_splits(history, cutoff_list, HORIZON, UNIT)

    train_max = splits.train["cutoff_ts"].max()
    assert set(splits.validation["cutoff_ts"]) == {splits.validation_cutoff}
    assert set(splits.test["cutoff_ts"]) == {splits.test_cutoff}
    assert train_max < splits.validation_cutoff < splits.test_cutoff
    assert splits.train["cutoff_ts"].nunique() == 4
    # Every training label is decided before validation starts, every validation
    # label before test starts.
    assert train_max + HORIZON * SECONDS_PER_DAY <= splits.validation_cutoff
    assert splits.validation_cutoff + HORIZON * SECONDS_PER_DAY <= splits.test_cutoff


def test_last_cutoff_defaults_to_the_latest_day_end_leaving_a_full_horizon(
    history: History,
) -> None:
    last_event = max(history.orders["ts"].max(), history.tickets["ts"].max())
    test_cutoff = cutoffs(history, HORIZON, 3, 14)[-1]
    assert test_cutoff + HORIZON * SECONDS_PER_DAY <= last_event
    assert test_cutoff + (HORIZON + 1) * SECONDS_PER_DAY > last_event
    assert datetime.fromtimestamp(test_cutoff, UTC).time().isoformat() == "23:59:59"


def test_a_cutoff_without_a_full_horizon_after_it_is_refused(history: History) -> None:
    last_event = datetime.fromtimestamp(history.orders["ts"].max(), UTC).date()
    with pytest.raises(TrainingDataError, match="less than 30 days"):
        cutoffs(history, HORIZON, 3, 14, last_cutoff=last_event)


def test_rescaled_engagement_equals_features_built_with_that_scale(history: History) -> None:
    cutoff_list = cutoffs(history, HORIZON, 3, 14)
    rescaled = rescale_engagement(build_splits(history, cutoff_list, HORIZON, UNIT), 37.5)
    direct = build_splits(history, cutoff_list, HORIZON, FeatureParams(engagement_scale=37.5))
    pd.testing.assert_frame_equal(rescaled.test, direct.test, check_exact=True)


# --- training -----------------------------------------------------------------------


def test_test_period_events_do_not_change_the_model(history: History) -> None:
    test_cutoff = cutoffs(history, HORIZON, FAST.n_cutoffs, FAST.step_days)[-1]
    # Pinned: thinning the last month must not move the cutoffs themselves.
    config = replace(FAST, last_cutoff=date_of(test_cutoff))
    # Drop every other order after the test cutoff: only test labels may change.
    orders = history.orders
    late = orders.index[orders["ts"] > test_cutoff]
    thinned = History(orders.drop(late[::2]), history.tickets, history.customers)

    original, changed = train(history, config), train(thinned, config)
    assert original.estimator.serialise() == changed.estimator.serialise()
    assert original.calibration.raw.tolist() == changed.calibration.raw.tolist()
    assert original.feature_params == changed.feature_params
    assert original.metadata["metrics"]["validation"] == changed.metadata["metrics"]["validation"]
    assert original.metadata["metrics"]["test"] != changed.metadata["metrics"]["test"]


def date_of(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def test_calibration_breakpoints_are_strictly_increasing_and_bounded() -> None:
    rng = np.random.default_rng(1)
    raw = np.round(rng.random(500), 2)  # many ties
    outcome = (rng.random(500) < raw).astype(int)
    calibration = fit_calibration(raw, outcome)
    assert np.all(np.diff(calibration.raw) > 0)
    assert 0 < calibration.calibrated.min() <= calibration.calibrated.max() < 1

    flat = fit_calibration(np.full(10, 0.3), np.array([0, 1] * 5))
    assert flat.raw.tolist() == [0.0, 1.0]
    assert flat(np.array([0.0, 0.3, 1.0])).tolist() == [0.5, 0.5, 0.5]


def test_empty_support_tickets_and_null_ages_train_fine(tmp_path: Path, shop_db: Path) -> None:
    db = copy_db(
        shop_db,
        tmp_path / "shop.db",
        "DELETE FROM support_tickets",
        "UPDATE customers SET age = NULL",
    )
    model = train(load_history(db), FAST)

    assert 0.5 < model.metadata["metrics"]["test"]["auc_roc"] <= 1.0
    reference = model.metadata["reference"]["features"]
    assert reference["age"] == {"quantiles": [None] * 11, "missing_rate": 1.0}
    assert reference["tickets_90d"]["quantiles"] == [0.0] * 11
    assert save(model, tmp_path / "models").is_dir()


def test_end_to_end_cli_writes_an_artifact_load_model_serves(
    tmp_path: Path, shop_db: Path, history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "models"
    options = ["--threads", "1", "--cutoffs", "5", "--families", "linear,lightgbm"]
    code = main(["--db", str(shop_db), "--out", str(out), *options])
    printed = capsys.readouterr().out
    assert code == 0

    model = load_model(out)
    assert str(out / model.version) in printed
    assert "AUC-ROC" in printed and "tune and compare" in printed
    metadata = model.metadata
    assert metadata["model_family"] in MODEL_FILES
    assert model.family == metadata["model_family"]
    assert 0.5 < metadata["metrics"]["test"]["auc_roc"] <= 1.0
    assert metadata["rows"]["test"] > 0 and len(metadata["cutoffs"]["train"]) == 3
    assert model.feature_params == FeatureParams(**metadata["feature_params"])
    # The rhythm prior is fitted on the training data, not left at its default.
    assert model.feature_params.prior_gap_days != FeatureParams().prior_gap_days
    assert len(metadata["reference"]["score"]["quantiles"]) == 11

    test_cutoff = datetime.fromisoformat(metadata["cutoffs"]["test"]).date()
    rows = build_dataset(history, day_end(test_cutoff), HORIZON, model.feature_params)
    probabilities = model.predict(rows[list(FEATURE_NAMES)].to_numpy())
    assert probabilities.shape == (len(rows),)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert probabilities.std() > 0


def test_two_runs_on_the_same_data_write_distinct_candidate_versions(
    tmp_path: Path, history: History
) -> None:
    model = train(history, FAST)
    first, second = save(model, tmp_path), save(model, tmp_path)
    assert first != second
    assert [load_model(tmp_path, path.name).version for path in (first, second)] == [
        first.name,
        second.name,
    ]
    assert not (tmp_path / CURRENT_POINTER).exists()  # written, not served


def test_tampered_model_file_makes_load_model_raise(tmp_path: Path, history: History) -> None:
    directory = save(train(history, FAST), tmp_path)
    model_file = directory / model_name(directory)
    model_file.write_bytes(model_file.read_bytes() + b"\n")
    with pytest.raises(ArtifactError, match="does not match its checksum"):
        load_model(tmp_path, directory.name)


def test_cli_exits_2_with_one_line_error_on_a_bad_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tiny_db(tmp_path / "shop.db", skip=["orders"])
    assert main(["--db", str(db), "--out", str(tmp_path / "models")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "table orders" in error


def test_cli_exits_2_when_there_is_too_little_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tiny_db(tmp_path / "shop.db")
    assert main(["--db", str(db), "--out", str(tmp_path / "models")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "models").exists()
