"""The training pipeline end to end: model comparison on rolling validation cutoffs, the
served family (the validation winner) and its metadata, no learning from the future,
artifact verification, messy shops, the report, and determinism."""

from __future__ import annotations

import html
import json
import re
import shutil
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from feature_store.definitions import SECONDS_PER_DAY, FeatureParams
from feature_store.offline import History
from scoring.artifact import CHECKSUM_FILE, METADATA_FILE, ArtifactError, load_model
from scoring.families import LIGHTGBM, LINEAR, MODEL_FILES, SIMPLICITY
from scoring.serving import served_scores
from simulator import generate_history
from training import (
    TrainingConfig,
    build_dataset,
    build_splits,
    cutoffs,
    load_history,
    save,
    train,
)
from training.database import load_truth
from training.metrics import Criterion, cutoff_for_precision, cutoff_for_recall
from training.models import available_families
from training.report import REPORT_FILE, stability_text
from training.train import SERVED, TIE_AUC

HORIZON = 30
# Two families where which ones is beside the point (cli_run compares them all), and at
# most 150 trees: a shop of 300 customers peaks well before.
FAST = TrainingConfig(num_threads=1, families=(LINEAR, LIGHTGBM), max_rounds=150)
METRIC_KEYS = {"auc_roc", "pr_auc", "precision_at_80_recall", "brier", "log_loss", "auc_roc_raw"}
FAMILIES = {family.name for family in available_families()}


# shop_db, history and cli_run: tests/conftest.py (shared with the other training tests).


def copy_db(source: Path, target: Path, *statements: str) -> Path:
    shutil.copy(source, target)
    with sqlite3.connect(target) as conn:
        for statement in statements:
            conn.execute(statement)
    return target


# --- comparison and the served model --------------------------------------------------


def test_comparison_has_validation_and_test_metrics_for_every_candidate(
    cli_run: dict[str, Any],
) -> None:
    candidates = cli_run["metadata"]["metrics"]["candidates"]
    assert set(candidates) == FAMILIES
    assert {"linear", "random_forest", "hist_gradient_boosting", "lightgbm"} <= set(candidates)
    for name, values in candidates.items():
        for split in ("validation", "test"):
            assert set(values[split]) >= METRIC_KEYS, (name, split)
            assert all(np.isfinite(values[split][key]) for key in METRIC_KEYS), (name, split)
            assert 0.5 < values[split]["auc_roc"] <= 1.0, (name, split)


def test_the_served_family_is_the_best_servable_one_on_the_rolling_validation_cutoffs(
    cli_run: dict[str, Any],
) -> None:
    metadata = cli_run["metadata"]
    metrics = metadata["metrics"]
    selection = metrics["selection"]
    served = metadata["model_family"]
    assert selection["served"] == served == metadata["served_model"]["family"]
    assert (cli_run["directory"] / MODEL_FILES[served]).is_file()
    assert 0.5 < metrics["test"]["auc_roc"] <= 1.0
    assert set(metrics["validation"]) >= METRIC_KEYS and set(metrics["test"]) >= METRIC_KEYS
    # The rule: the best mean validation AUC of the servable families, unless a simpler
    # one is within the tie tolerance of it.
    scores = {name: selection["validation_auc"][name] for name in selection["servable"]}
    assert set(scores) == FAMILIES & set(SIMPLICITY)
    best = max(scores.values())
    tied = [name for name in SIMPLICITY if name in scores and scores[name] >= best - TIE_AUC]
    assert served == tied[0]
    assert served in selection["why"] and f"{scores[served]:.4f}" in selection["why"]


def test_every_configuration_is_judged_on_every_rolling_cutoff_and_the_chosen_one_served(
    cli_run: dict[str, Any],
) -> None:
    metadata = cli_run["metadata"]
    tuning = metadata["metrics"]["tuning"]
    folds = tuning["folds"]
    assert [fold["validation_cutoff"] for fold in folds] == metadata["cutoffs"][
        "rolling_validation"
    ]
    assert len(folds) == 3 and folds[0]["validation_cutoff"] == metadata["cutoffs"]["validation"]
    for family, trials in tuning["families"].items():
        assert all(len(trial["fold_auc"]) == 3 for trial in trials), family
        for trial in trials:
            assert trial["validation_auc"] == pytest.approx(np.mean(trial["fold_auc"]))
        (chosen,) = [trial for trial in trials if trial["chosen"]]
        assert chosen["validation_auc"] == max(trial["validation_auc"] for trial in trials)
        assert (
            chosen["validation_auc"] == metadata["metrics"]["selection"]["validation_auc"][family]
        )
        stability = tuning["stability"][family]
        assert stability["params"] == chosen["params"]
        assert stability["fold_auc"] == chosen["fold_auc"]
        assert len(stability["rank_by_fold"]) == 3
    # The search spaces include the learning rate and regularisation.
    lightgbm = [trial["params"] for trial in tuning["families"]["lightgbm"]]
    assert {params.get("learning_rate", 0.1) for params in lightgbm} >= {0.1, 0.05}
    assert any("lambda_l2" in params or "lambda_l1" in params for params in lightgbm)
    served = metadata["model_family"]
    (chosen,) = [t for t in tuning["families"][served] if t["chosen"]]
    assert metadata["served_model"]["params"] == chosen["params"]


def test_metadata_describes_window_cutoffs_horizon_thresholds_and_references(
    cli_run: dict[str, Any],
) -> None:
    metadata = cli_run["metadata"]
    assert metadata["horizon_days"] == HORIZON
    assert len(metadata["cutoffs"]["train"]) == 4
    rolling = metadata["cutoffs"]["rolling_validation"]
    assert (
        rolling == sorted(rolling, reverse=True) and rolling[-1] > metadata["cutoffs"]["train"][-1]
    )
    window = metadata["training_window"]
    assert window["data_from"] < metadata["cutoffs"]["train"][0]
    assert metadata["cutoffs"]["validation"] < window["labels_to"] <= metadata["cutoffs"]["test"]
    assert metadata["thresholds"] == {"medium": 0.4, "high": 0.7}
    assert metadata["calibration"]["method"] == "isotonic"
    assert set(metadata["reference"]["features"]) == set(metadata["feature_names"])
    assert len(metadata["reference"]["score"]["quantiles"]) == 11


def test_the_drift_reference_is_what_the_worker_scores_in_the_training_period(
    cli_run: dict[str, Any],
) -> None:
    model = load_model(cli_run["models_dir"])
    assert model.drift is not None
    serving = model.metadata["reference"]["serving"]
    since = datetime.fromisoformat(model.metadata["cutoffs"]["train"][0]).replace(tzinfo=UTC)
    until = datetime.fromisoformat(model.metadata["cutoffs"]["validation"]).replace(tzinfo=UTC)
    start, end = (t.timestamp() + SECONDS_PER_DAY - 1 for t in (since, until))
    assert start <= model.drift.since < model.drift.until < end
    # The shop's 300 customers are fewer than the sample: the reference is all of them,
    # scored by the worker's code over the simulator's own events.
    events = generate_history(300, seed=7).events_in_time_order()
    scores = served_scores(events, model, start, end)
    expected = scores.profile()
    assert serving["rows"] == expected["rows"] > 500
    assert serving["risk_mix"] == pytest.approx(expected["risk_mix"])
    for name, subject in expected["subjects"].items():
        assert serving["subjects"][name]["cuts"] == pytest.approx(subject["cuts"]), name
        assert serving["subjects"][name]["shares"] == pytest.approx(subject["shares"]), name


def test_cli_prints_the_comparison_table_oracle_and_leaky_auc(cli_run: dict[str, Any]) -> None:
    printed = cli_run["printed"]
    served = f"{SERVED} ({cli_run['metadata']['model_family']})"
    for name in (*FAMILIES, served):
        assert re.search(rf"^\s+{re.escape(name)}\s+0\.\d{{4}}", printed, re.MULTILINE), name
    assert cli_run["metadata"]["metrics"]["selection"]["why"] in printed
    assert "oracle: simulator's true churn propensity" in printed
    assert "leaky seed label" in printed
    assert f"report: {cli_run['directory'] / REPORT_FILE}" in printed


def test_diagnostics_show_the_leaky_label_inflated_and_the_oracle(
    cli_run: dict[str, Any],
) -> None:
    metrics = cli_run["metadata"]["metrics"]
    diagnostics = metrics["diagnostics"]
    leaky = diagnostics["leaky_label"]
    # The seed's label is computed from recency, which the model sees: near perfect.
    assert leaky["inflated_auc_roc"] > 0.97
    assert leaky["inflated_auc_roc"] > metrics["test"]["auc_roc"]
    assert leaky["auc_roc_against_point_in_time_label"] < leaky["inflated_auc_roc"]
    assert 0.5 < diagnostics["oracle"]["auc_roc"] < 1.0
    assert diagnostics["oracle"]["rows"] == cli_run["metadata"]["rows"]["test"]


def test_a_real_shop_without_the_simulator_truth_has_no_oracle(
    tmp_path: Path, shop_db: Path
) -> None:
    db = copy_db(shop_db, tmp_path / "shop.db", "DROP TABLE simulator_truth")
    assert load_truth(db) is None
    assert load_truth(shop_db) is not None


def test_report_is_one_self_contained_html_page_with_every_figure(
    cli_run: dict[str, Any],
) -> None:
    page = (cli_run["directory"] / REPORT_FILE).read_text()
    assert page.startswith("<!doctype html>")
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    assert images == [
        "ROC and precision-recall",
        "Calibration",
        "Confusion at the risk cut-offs",
        "Feature importance",
        "Contributions summary",
    ]
    # Nothing is fetched from elsewhere: no external scripts, styles or images.
    assert not re.search(r'(src|href)="(?!data:)', page)
    metadata = cli_run["metadata"]
    for name in (*FAMILIES, f"{SERVED} ({metadata['model_family']})"):
        assert f"<td>{html.escape(name)}</td>" in page
    # Which family was served and why, and the chosen configurations' stability.
    assert html.escape(metadata["metrics"]["selection"]["why"]) in page
    for family in FAMILIES:
        assert html.escape(stability_text(family, metadata)) in page


# --- point-in-time data sets ---------------------------------------------------------


def test_splits_built_on_integer_ids_equal_datasets_built_on_the_original_ids(
    history: History,
) -> None:
    cutoff_list = cutoffs(history, HORIZON, FAST.n_cutoffs, FAST.step_days)
    unit = FeatureParams(engagement_scale=1.0)
    splits = build_splits(history, cutoff_list, HORIZON, unit)
    direct = [build_dataset(history, t, HORIZON, unit) for t in cutoff_list]
    pd.testing.assert_frame_equal(
        splits.train, pd.concat(direct[:-2], ignore_index=True), check_exact=True
    )
    pd.testing.assert_frame_equal(splits.validation, direct[-2], check_exact=True)
    pd.testing.assert_frame_equal(splits.test, direct[-1], check_exact=True)


# --- no learning from the future -----------------------------------------------------


def planted_tickets(rows: pd.DataFrame, at: float, tag: str) -> pd.DataFrame:
    """An angry ticket one second after `at` for every churner among `rows`."""
    churners = rows.loc[rows["label"] == 1, "customer_id"].to_numpy()
    return pd.DataFrame(
        {
            "customer_id": churners,
            "ticket_id": [f"{tag}{i}" for i in range(len(churners))],
            "ts": at + 1,
            "resolution_time_hours": 999.0,
            "satisfaction_score": 1.0,
        }
    )


def test_a_churn_signal_planted_after_the_validation_cutoff_is_not_learned(
    history: History,
) -> None:
    *_, validation_cutoff, test_cutoff = cutoffs(history, HORIZON, FAST.n_cutoffs, 14)
    unit = FeatureParams(engagement_scale=1.0)
    validation = build_dataset(history, validation_cutoff, HORIZON, unit)
    test = build_dataset(history, test_cutoff, HORIZON, unit)
    # Every customer about to churn files an angry ticket a second after the cutoff:
    # a near-perfect predictor of the label, but only from the future.
    plant = pd.concat(
        [
            planted_tickets(validation, validation_cutoff, "PV"),
            planted_tickets(test, test_cutoff, "PT"),
        ]
    )
    planted = History(
        history.orders, pd.concat([history.tickets, plant], ignore_index=True), history.customers
    )

    original, with_plant = train(history, FAST), train(planted, FAST)
    assert with_plant.estimator.serialise() == original.estimator.serialise()
    assert with_plant.calibration.raw.tolist() == original.calibration.raw.tolist()
    assert with_plant.metadata["thresholds"] == original.metadata["thresholds"]
    assert (
        with_plant.metadata["metrics"]["validation"] == original.metadata["metrics"]["validation"]
    )
    for name, values in original.metadata["metrics"]["candidates"].items():
        candidate = with_plant.metadata["metrics"]["candidates"][name]
        assert candidate["validation"] == values["validation"], name

    # The plant is a real signal: a feature that peeked one day past the cutoff would
    # separate churners far better than the model does.
    peek = build_dataset(planted, validation_cutoff + SECONDS_PER_DAY, HORIZON, unit)
    peek = peek.set_index("customer_id").loc[validation["customer_id"]]
    signal = peek["negative_experiences_90d"].to_numpy()
    from sklearn.metrics import roc_auc_score

    peek_auc = roc_auc_score(validation["label"], signal)
    assert peek_auc > original.metadata["metrics"]["validation"]["auc_roc"]


# --- artifact verification -----------------------------------------------------------


@pytest.fixture
def artifact_copy(cli_run: dict[str, Any], tmp_path: Path) -> Path:
    shutil.copytree(cli_run["models_dir"], tmp_path / "models")
    return tmp_path / "models"


def test_load_model_verifies_the_written_artifact(artifact_copy: Path) -> None:
    model = load_model(artifact_copy)
    sums = (artifact_copy / model.version / CHECKSUM_FILE).read_text()
    assert MODEL_FILES[model.family] in sums and METADATA_FILE in sums
    assert (artifact_copy / model.version / MODEL_FILES[model.family]).stat().st_size > 0


def test_tampered_thresholds_in_metadata_are_refused(artifact_copy: Path) -> None:
    version = load_model(artifact_copy).version
    path = artifact_copy / version / METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata["thresholds"]["high"] = 0.99
    path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    with pytest.raises(ArtifactError, match=r"metadata\.json does not match its checksum"):
        load_model(artifact_copy)


@pytest.mark.parametrize("missing", ["the model file", CHECKSUM_FILE])
def test_an_incomplete_artifact_is_refused(artifact_copy: Path, missing: str) -> None:
    model = load_model(artifact_copy)
    name = missing.replace("the model file", MODEL_FILES[model.family])
    (artifact_copy / model.version / name).unlink()
    with pytest.raises(ArtifactError, match="incomplete"):
        load_model(artifact_copy)


# --- messy data ----------------------------------------------------------------------

MESSY = {
    "no support tickets at all": ["DELETE FROM support_tickets"],
    "NULL ages and cities": ["UPDATE customers SET age = NULL, city = NULL"],
    "half the customers with a single order": [
        "DELETE FROM orders WHERE CAST(substr(customer_id, 2) AS INTEGER) % 2 = 0 "
        "AND rowid NOT IN (SELECT MIN(rowid) FROM orders GROUP BY customer_id)"
    ],
    "zero-amount orders": ["UPDATE orders SET total_amount = 0 WHERE rowid % 3 = 0"],
    "a week without any order every month": [
        "DELETE FROM orders WHERE CAST(strftime('%d', order_date) AS INTEGER) BETWEEN 10 AND 16"
    ],
}


@pytest.mark.parametrize("case", list(MESSY))
def test_a_messy_shop_still_trains_and_writes_a_loadable_artifact(
    case: str, tmp_path: Path, shop_db: Path
) -> None:
    db = copy_db(shop_db, tmp_path / "shop.db", *MESSY[case])
    model = train(load_history(db), FAST)

    metrics = model.metadata["metrics"]
    assert 0.5 < metrics["test"]["auc_roc"] <= 1.0
    for values in metrics["candidates"].values():
        assert np.isfinite(values["test"]["log_loss"])
    written = save(model, tmp_path / "models")
    assert load_model(written.parent, written.name).version == written.name


def test_cutoffs_on_days_without_any_order_are_fine(
    tmp_path: Path, shop_db: Path, history: History
) -> None:
    cutoff_list = cutoffs(history, HORIZON, FAST.n_cutoffs, FAST.step_days)
    days = [datetime.fromtimestamp(t, UTC).date().isoformat() for t in cutoff_list]
    quiet = ", ".join(f"'{day}'" for day in days)
    db = copy_db(
        shop_db, tmp_path / "shop.db", f"DELETE FROM orders WHERE date(order_date) IN ({quiet})"
    )
    gapped = load_history(db)
    order_days = {datetime.fromtimestamp(ts, UTC).date().isoformat() for ts in gapped.orders["ts"]}
    assert not order_days & set(days)
    assert cutoffs(gapped, HORIZON, FAST.n_cutoffs, FAST.step_days) == cutoff_list

    model = train(gapped, FAST)
    assert model.metadata["rows"]["test"] > 0
    assert 0.5 < model.metadata["metrics"]["test"]["auc_roc"] <= 1.0


def test_all_null_ages_are_kept_as_missing_for_every_family(tmp_path: Path, shop_db: Path) -> None:
    db = copy_db(shop_db, tmp_path / "shop.db", "UPDATE customers SET age = NULL")
    model = train(load_history(db), replace(FAST, families=None))
    assert model.metadata["reference"]["features"]["age"]["missing_rate"] == 1.0
    assert set(model.metadata["metrics"]["candidates"]) == FAMILIES


# --- sampling, cut-offs and determinism ----------------------------------------------


def test_families_compare_on_a_sample_and_the_served_model_refits_on_all_rows(
    history: History,
) -> None:
    config = replace(FAST, candidate_rows=500)
    model = train(history, config)
    metadata = model.metadata
    assert metadata["metrics"]["selection"]["candidate_training_rows"] == 500
    assert metadata["rows"]["train"] > 500
    assert "fit served model" in metadata["timings_seconds"]
    assert model.evidence is not None and model.evidence.candidate_rows == 500
    assert metadata["metrics"]["selection"]["refitted_on_all_training_rows"]


def test_a_boosted_model_refitted_on_all_rows_keeps_at_least_its_tuned_trees(
    history: History,
) -> None:
    model = train(history, replace(FAST, candidate_rows=500, families=(LIGHTGBM,)))
    served = model.metadata["served_model"]
    assert served["family"] == LIGHTGBM and served["tuned_trees"] >= 1
    assert served["trees"] >= served["tuned_trees"]
    assert served["trees"] == model.estimator.booster.num_trees()  # type: ignore[attr-defined]


def test_cut_offs_can_come_from_precision_and_recall_targets(history: History) -> None:
    config = replace(FAST, medium_recall=0.9, high_precision=0.85)
    model = train(history, config)
    thresholds = model.metadata["thresholds"]
    assert 0 < thresholds["medium"] < thresholds["high"] < 1
    assert model.metadata["threshold_source"]["high"].startswith("precision >= 0.85")


def test_precision_and_recall_cut_offs_meet_their_targets() -> None:
    rng = np.random.default_rng(3)
    p = np.round(rng.random(2000), 2)
    y = (rng.random(2000) < p).astype(int)
    high = cutoff_for_precision(y, p, 0.8)
    assert y[p >= high].mean() >= 0.8
    below = p[p < high]
    if len(below):  # the next lower cut-off misses the target
        assert y[p >= below.max()].mean() < 0.8
    medium = cutoff_for_recall(y, p, 0.9)
    assert y[p >= medium].sum() / y.sum() >= 0.9
    assert y[p > medium].sum() / y.sum() < 0.9
    with pytest.raises(ValueError, match="no cut-off reaches precision"):
        cutoff_for_precision(y, p, 1.01)


def test_the_same_seed_gives_the_same_model_and_metrics(history: History) -> None:
    first, second = train(history, FAST), train(history, FAST)
    assert first.estimator.serialise() == second.estimator.serialise()
    assert first.metadata["metrics"] == second.metadata["metrics"]
    assert first.metadata["reference"] == second.metadata["reference"]


def test_the_guides_success_criteria_are_judged_on_the_test_split_and_printed(
    cli_run: dict[str, Any],
) -> None:
    metadata = cli_run["metadata"]
    test = metadata["metrics"]["test"]
    judged = {c["metric"]: c for c in metadata["success_criteria"]}
    assert set(judged) == {"auc_roc", "precision_at_80_recall", "calibration_error"}
    for metric, criterion in judged.items():
        assert criterion["value"] == test[metric]
        value, bound = criterion["value"], criterion["bound"]
        assert criterion["passed"] == (value >= bound if criterion["at_least"] else value <= bound)
    assert judged["precision_at_80_recall"]["bound"] == 0.75
    printed = cli_run["printed"]
    assert "the guide's success criteria (test split):" in printed
    assert len(re.findall(r"^\s+(PASS|FAIL) ", printed, re.MULTILINE)) == 3
    report = (cli_run["directory"] / REPORT_FILE).read_text()
    assert "<h2>Success criteria</h2>" in report


def test_a_criterion_passes_at_its_bound_and_fails_past_it() -> None:
    at_least = Criterion("precision", "p", 0.75, True, "")
    at_most = Criterion("calibration", "c", 0.05, False, "")
    assert at_least.passes(0.75) and not at_least.passes(0.7499)
    assert at_most.passes(0.05) and not at_most.passes(0.0501)


# --- targeting ---------------------------------------------------------------------------


def test_the_report_shows_high_by_cutoff_value_and_capacity_on_the_test_split(
    cli_run: dict[str, Any],
) -> None:
    table = cli_run["metadata"]["targeting"]
    assert [row["policy"].split(":")[0] for row in table] == [
        "cut-off",
        "value",
        "capacity",
        "capacity",
        "capacity",
    ]
    rows = cli_run["metadata"]["rows"]["test"]
    capacity = [row["flagged"] for row in table[2:]]
    assert capacity == [round(share * rows) for share in (0.05, 0.10, 0.20)]
    recalls = [row["recall"] for row in table[2:]]
    assert recalls == sorted(recalls)  # working more customers catches more churners
    for row in table:
        for figure in ("precision", "recall"):
            assert row[figure] is None or 0.0 <= row[figure] <= 1.0, row
    assert "HIGH by each targeting policy" in cli_run["printed"]
    assert "Who HIGH flags" in (cli_run["directory"] / "report.html").read_text()
