"""What the purchase-rhythm features buy: test AUC and precision at 80% recall with
and without them, each alone and each left out.

    python -m bench.rhythm_lift --db shop.db [--out bench/rhythm_lift.json]

The data sets are built the way `python -m training` builds them (same cutoffs,
the rhythm prior and engagement scale fitted on training data, the same sampled
training rows), once. Then each family is fitted on them with feature sets that
differ only in the rhythm features: a feature left out is blanked (all missing), which
every family ignores (LightGBM never splits on it; the others see a constant), so the
rows, seeds and every other column stay the same. Each fit is calibrated on
validation and scored on test by `training.train.assess`, as the pipeline does.

A lift is a difference of two models' test AUCs on the same rows, so its noise is
estimated by a paired bootstrap over the test rows (the standard deviation of the
difference over BOOTSTRAP resamples).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from bench.common import ROOT, write_results
from feature_store.definitions import FeatureParams
from training.database import load_history
from training.dataset import Fold, Splits, build_splits, cutoffs
from training.models import FAMILIES, FitSettings, features, labels
from training.rhythm import fit_gap_prior
from training.train import (
    TrainingConfig,
    assess,
    engagement_scale,
    rescale_engagement,
    training_sample,
)

RHYTHM = ("order_gap_days", "overdue_ratio")
COMPARED = ("linear", "lightgbm")
BOOTSTRAP = 100


def feature_sets() -> dict[str, tuple[str, ...]]:
    """Name -> the rhythm features kept (every other feature is always kept)."""
    sets: dict[str, tuple[str, ...]] = {"without rhythm": (), "with rhythm": RHYTHM}
    sets.update({f"all but {name}": tuple(n for n in RHYTHM if n != name) for name in RHYTHM})
    return sets


def blanked(frame: pd.DataFrame, kept: tuple[str, ...]) -> pd.DataFrame:
    return frame.assign(**{name: np.nan for name in RHYTHM if name not in kept})


def datasets(db: Path, config: TrainingConfig) -> tuple[Splits, pd.DataFrame, FeatureParams]:
    """The splits, the sampled training rows and the fitted constants, as `train` has them."""
    history = load_history(db)
    cutoff_list = cutoffs(history, config.horizon_days, config.n_cutoffs, config.step_days)
    params = fit_gap_prior(history, sorted(cutoff_list)[-3], FeatureParams(engagement_scale=1.0))
    splits = build_splits(history, cutoff_list, config.horizon_days, params)
    params = replace(params, engagement_scale=engagement_scale(splits.train))
    splits = rescale_engagement(splits, params.engagement_scale)
    sample = training_sample(splits.train, config.candidate_rows, config.seed)
    return splits, sample, params


def auc_deltas_sd(y: np.ndarray, base: np.ndarray, other: np.ndarray, seed: int) -> float:
    """Paired bootstrap standard deviation of AUC(other) - AUC(base) on these rows."""
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(BOOTSTRAP):
        rows = rng.integers(0, len(y), len(y))
        deltas.append(roc_auc_score(y[rows], other[rows]) - roc_auc_score(y[rows], base[rows]))
    return float(np.std(deltas))


def measure(db: Path, config: TrainingConfig) -> dict[str, Any]:
    start = time.perf_counter()
    splits, sample, params = datasets(db, config)
    y = labels(splits.test)
    families = {f.name: f for f in FAMILIES if f.name in COMPARED}
    results: dict[str, Any] = {}
    for family_name in COMPARED:
        family, scores = families[family_name], {}
        for set_name, kept in feature_sets().items():
            variant = replace(
                splits,
                validation=blanked(splits.validation, kept),
                test=blanked(splits.test, kept),
            )
            # The family's default configuration, on the training sample, stopped (boosting)
            # on validation.
            fold = Fold(splits.validation_cutoff, blanked(sample, kept), variant.validation)
            fit = FitSettings(config.seed, 1, config.max_rounds)
            model = family.trial(family.space[0], [fold], fit).model
            raw = model.probability(features(variant.test))
            _, metrics = assess(model.probability(features(variant.validation)), raw, variant)
            scores[set_name] = raw
            baseline = scores["without rhythm"]
            results.setdefault(family_name, {})[set_name] = {
                "test_auc_roc": metrics["test"]["auc_roc_raw"],
                "test_precision_at_80_recall": metrics["test"]["precision_at_80_recall"],
                "auc_lift_over_without": metrics["test"]["auc_roc_raw"]
                - roc_auc_score(y, baseline),
                "auc_lift_sd": auc_deltas_sd(y, baseline, raw, config.seed),
            }
            print(
                f"  {family_name:<20} {set_name:<30} test AUC {metrics['test']['auc_roc_raw']:.4f}"
            )
    return {
        "db": str(db),
        "feature_params": asdict(params),
        "rows": {name: len(frame) for name, frame in splits.items()},
        "candidate_rows": len(sample),
        "bootstrap": BOOTSTRAP,
        "results": results,
        "seconds": round(time.perf_counter() - start, 1),
    }


def summary(result: dict[str, Any]) -> str:
    lines = [
        "| family | features | test AUC | lift vs without (± paired bootstrap sd) | test P@80%R |",
        "|---|---|---|---|---|",
    ]
    for family, sets in result["results"].items():
        for name, row in sets.items():
            lines.append(
                f"| {family} | {name} | {row['test_auc_roc']:.4f} | "
                f"{row['auc_lift_over_without']:+.4f} ± {row['auc_lift_sd']:.4f} | "
                f"{row['test_precision_at_80_recall']:.4f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, required=True, help="SQLite shop database")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "rhythm_lift.json")
    args = parser.parse_args()
    result = measure(args.db, TrainingConfig())
    write_results(args.out, result, summary(result))


if __name__ == "__main__":
    main()
