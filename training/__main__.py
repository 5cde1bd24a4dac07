"""Train a churn model from the shop database and publish it as the current artifact.

python -m training --db data/shop.db --out artifacts/models [--as-of 2026-05-31]
                   [--horizon-days 30] [--medium-recall 0.8] [--high-precision 0.8]

Prints each step as it finishes and the model comparison, and writes the artifact
(model.txt, metadata.json, SHA256SUMS) with report.html beside it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from scoring.artifact import Thresholds
from training.database import DatabaseError, load_history, load_truth
from training.dataset import TrainingDataError
from training.report import comparison_table_text, write_report
from training.train import StepTimer, TrainingConfig, save, train


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, required=True, help="SQLite shop database")
    parser.add_argument("--out", type=Path, required=True, help="models directory")
    parser.add_argument(
        "--as-of",
        type=date.fromisoformat,
        default=None,
        metavar="YYYY-MM-DD",
        help="test cutoff day (default: the latest day leaving a full horizon of data)",
    )
    parser.add_argument("--horizon-days", type=positive_int, default=30, help="churn horizon")
    parser.add_argument("--cutoffs", type=positive_int, default=6, help="number of cutoffs (>= 3)")
    parser.add_argument("--step-days", type=positive_int, default=14, help="days between cutoffs")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--medium", type=probability, default=0.4, help="MEDIUM cut-off")
    parser.add_argument("--high", type=probability, default=0.7, help="HIGH cut-off")
    parser.add_argument(
        "--medium-recall",
        type=probability,
        default=None,
        help="instead of --medium: the highest cut-off flagging this share of churners",
    )
    parser.add_argument(
        "--high-precision",
        type=probability,
        default=None,
        help="instead of --high: the lowest cut-off at which this share of flagged churn",
    )
    parser.add_argument(
        "--candidate-rows",
        type=positive_int,
        default=TrainingConfig.candidate_rows,
        help="training rows the families are compared and tuned on (served model: all)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="threads per model fit (1 or 2): a second thread only helps on an idle "
        "machine; on a busy one OpenMP waits for it at every step (5x slower measured)",
    )
    args = parser.parse_args(argv)
    if args.cutoffs < 3:
        parser.error("--cutoffs must be at least 3 (training, validation and test)")
    if args.medium >= args.high:
        parser.error("--medium must be below --high")
    return args


def print_step(name: str, seconds: float, note: str) -> None:
    if seconds < 0:  # progress inside a long step
        print(f"  {'':<18}   {note}", flush=True)
    else:
        print(f"  {name:<18} {seconds:8.2f}s  {note}", flush=True)


def diagnostics_text(metadata: dict[str, Any]) -> str:
    diagnostics = metadata["metrics"]["diagnostics"]
    test_auc = metadata["metrics"]["test"]["auc_roc"]
    lines = [f"  served model ({metadata['model_family']}), test AUC-ROC      {test_auc:.4f}"]
    oracle = diagnostics.get("oracle")
    if oracle and oracle.get("auc_roc") is not None:
        lines.append(f"  oracle: simulator's true churn propensity     {oracle['auc_roc']:.4f}")
    leaky = diagnostics.get("leaky_label")
    if leaky and leaky.get("inflated_auc_roc") is not None:
        lines.append(
            f"  leaky seed label (recency > 30, random split) {leaky['inflated_auc_roc']:.4f}"
            "  <- inflated"
        )
        honest = leaky.get("auc_roc_against_point_in_time_label")
        if honest is not None:
            lines.append(f"    the same model vs what customers did next   {honest:.4f}")
    selection = metadata["metrics"]["selection"]
    gap = selection["served_minus_best_validation_auc"]
    if gap < 0:
        lines.append(
            f"  best on validation: {selection['best_on_validation']}; the served LightGBM "
            f"trails it by {-gap:.4f} validation AUC (see report: why LightGBM is served)"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = TrainingConfig(
        horizon_days=args.horizon_days,
        n_cutoffs=args.cutoffs,
        step_days=args.step_days,
        seed=args.seed,
        last_cutoff=args.as_of,
        thresholds=Thresholds(medium=args.medium, high=args.high),
        medium_recall=args.medium_recall,
        high_precision=args.high_precision,
        num_threads=args.threads,
        candidate_rows=args.candidate_rows,
    )
    timer = StepTimer(print_step)
    start = time.perf_counter()
    print(f"training from {args.db}", flush=True)
    try:
        with timer.step("load history") as notes:
            history = load_history(args.db)
            notes.append(
                f"{len(history.customers):,} customers, {len(history.orders):,} orders, "
                f"{len(history.tickets):,} tickets"
            )
            truth = load_truth(args.db)
        model = train(history, config, print_step, truth)
    except (DatabaseError, TrainingDataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with timer.step("write artifact"):
        path = save(model, args.out)
    with timer.step("write report"):
        report = write_report(model, path)
    print(f"\n{comparison_table_text(model.metadata)}\n")
    print(f"{diagnostics_text(model.metadata)}\n")
    print(f"total {time.perf_counter() - start:.1f}s; model {path.name} written to {path}")
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
