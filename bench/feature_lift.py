"""What candidate features buy: validation and test AUC of each model family with all
of them, with none, and with each one left out (the drop-one table).

    python -m bench.feature_lift --db shop.db [--features a,b,...] [--out FILE]

The default candidates are the regularity and guide features of issue 21; the
purchase-rhythm pair was measured the same way (`--features
order_gap_days,overdue_ratio`, bench/rhythm_lift.json).

The data sets are built the way `python -m training` builds them (same cutoffs,
the rhythm prior and engagement scale fitted on training data, the same sampled
training rows), once. Then each family is fitted on them with feature sets that
differ only in the candidates: a feature left out is blanked (all missing), which
every family ignores (LightGBM never splits on it; the others see a constant), so the
rows, seeds and every other column stay the same. Each fit is calibrated on
validation and scored on test by `training.train.assess`, as the pipeline does.

A feature is worth keeping when leaving it out lowers validation AUC (the split the
pipeline chooses models on). A lift is a difference of two models' AUCs on the same
rows, so its noise is estimated by a paired bootstrap over the rows (the standard
deviation of the difference over BOOTSTRAP resamples).
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
from feature_store.definitions import FEATURE_NAMES, FeatureParams
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

CANDIDATES = (
    "gap_spread",
    "gap_lateness",
    "order_value_spread",
    "tickets_lifetime",
    "deferred_payment_share",
    "categories_per_order",
)
COMPARED = ("linear", "lightgbm")
BOOTSTRAP = 100
NONE, ALL = "none of them", "all"


def feature_sets(candidates: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Name -> the candidates kept (every other feature is always kept)."""
    sets: dict[str, tuple[str, ...]] = {ALL: candidates, NONE: ()}
    sets.update(
        {f"all but {name}": tuple(n for n in candidates if n != name) for name in candidates}
    )
    # Alone too: two candidates that say the same thing each look useless left out.
    sets.update({f"only {name}": (name,) for name in candidates})
    return sets


def blanked(
    frame: pd.DataFrame, candidates: tuple[str, ...], kept: tuple[str, ...]
) -> pd.DataFrame:
    return frame.assign(**{name: np.nan for name in candidates if name not in kept})


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


def measure(db: Path, config: TrainingConfig, candidates: tuple[str, ...]) -> dict[str, Any]:
    start = time.perf_counter()
    splits, sample, params = datasets(db, config)
    y = {"validation": labels(splits.validation), "test": labels(splits.test)}
    families = {f.name: f for f in FAMILIES if f.name in COMPARED}
    results: dict[str, Any] = {}
    for family_name in COMPARED:
        family, scores = families[family_name], {}
        for set_name, kept in feature_sets(candidates).items():
            variant = replace(
                splits,
                validation=blanked(splits.validation, candidates, kept),
                test=blanked(splits.test, candidates, kept),
            )
            # The family's default configuration, on the training sample, stopped (boosting)
            # on validation.
            fold = Fold(
                splits.validation_cutoff, blanked(sample, candidates, kept), variant.validation
            )
            fit = FitSettings(config.seed, 1, config.max_rounds)
            model = family.trial(family.space[0], [fold], fit).model
            raw = {split: model.probability(features(getattr(variant, split))) for split in y}
            _, metrics = assess(raw["validation"], raw["test"], variant)
            scores[set_name] = raw
            row: dict[str, float] = {
                "test_precision_at_80_recall": metrics["test"]["precision_at_80_recall"]
            }
            for split, truth in y.items():
                row[f"{split}_auc"] = float(roc_auc_score(truth, raw[split]))
                # What this set loses against all candidates (positive: worse without).
                row[f"{split}_auc_loss"] = (
                    float(roc_auc_score(truth, scores[ALL][split]) - row[f"{split}_auc"])
                    if ALL in scores
                    else 0.0
                )
                row[f"{split}_auc_loss_sd"] = (
                    auc_deltas_sd(truth, raw[split], scores[ALL][split], config.seed)
                    if ALL in scores and set_name != ALL
                    else 0.0
                )
            results.setdefault(family_name, {})[set_name] = row
            print(
                f"  {family_name:<10} {set_name:<32} validation AUC {row['validation_auc']:.4f}"
                f" test AUC {row['test_auc']:.4f}",
                flush=True,
            )
    return {
        "db": str(db),
        "candidates": list(candidates),
        "feature_params": asdict(params),
        "rows": {name: len(frame) for name, frame in splits.items()},
        "candidate_rows": len(sample),
        "bootstrap": BOOTSTRAP,
        "results": results,
        "seconds": round(time.perf_counter() - start, 1),
    }


def summary(result: dict[str, Any]) -> str:
    lines = [
        "| family | features | validation AUC | lost vs all (± sd) | test AUC | lost vs all (± sd)"
        " | test P@80%R |",
        "|---|---|---|---|---|---|---|",
    ]
    for family, sets in result["results"].items():
        for name, row in sets.items():
            lost = {
                split: f"{row[f'{split}_auc_loss']:+.4f} ± {row[f'{split}_auc_loss_sd']:.4f}"
                for split in ("validation", "test")
            }
            lines.append(
                f"| {family} | {name} | {row['validation_auc']:.4f} | {lost['validation']} | "
                f"{row['test_auc']:.4f} | {lost['test']} | "
                f"{row['test_precision_at_80_recall']:.4f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, required=True, help="SQLite shop database")
    parser.add_argument(
        "--features", default=",".join(CANDIDATES), help="the candidates, comma-separated"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "feature_lift.json")
    args = parser.parse_args()
    candidates = tuple(args.features.split(","))
    unknown = set(candidates) - set(FEATURE_NAMES)
    if unknown:
        parser.error(f"not features: {sorted(unknown)}")
    result = measure(args.db, TrainingConfig(), candidates)
    write_results(args.out, result, summary(result))


if __name__ == "__main__":
    main()
