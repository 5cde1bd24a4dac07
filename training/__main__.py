"""Train a churn model from the shop database and publish it as the current artifact.

python -m training --db data/shop.db --out artifacts/models [--as-of 2026-05-31]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from training.database import DatabaseError, load_history
from training.dataset import TrainingDataError
from training.train import StepTimer, TrainingConfig, save, train

# metric key -> column header of the printed table
TABLE_METRICS = {
    "auc_roc": "AUC-ROC",
    "pr_auc": "PR-AUC",
    "brier": "Brier",
    "log_loss": "log loss",
    "precision_at_80_recall": "P@80%R",
    "positive_rate": "churned",
}


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
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
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=2,
        help="LightGBM threads; keep at or below the idle cores (OpenMP spins when starved)",
    )
    args = parser.parse_args(argv)
    if args.cutoffs < 3:
        parser.error("--cutoffs must be at least 3 (training, validation and test)")
    return args


def print_step(name: str, seconds: float, note: str) -> None:
    print(f"  {name:<18} {seconds:8.2f}s  {note}", flush=True)


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    lines = [f"  {'':<12}" + "".join(f"{header:>10}" for header in TABLE_METRICS.values())]
    for split, values in metrics.items():
        lines.append(f"  {split:<12}" + "".join(f"{values[m]:>10.4f}" for m in TABLE_METRICS))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = TrainingConfig(
        horizon_days=args.horizon_days,
        n_cutoffs=args.cutoffs,
        step_days=args.step_days,
        seed=args.seed,
        last_cutoff=args.as_of,
        num_threads=args.threads,
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
        model = train(history, config, print_step)
    except (DatabaseError, TrainingDataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with timer.step("write artifact"):
        path = save(model, args.out)
    print(f"\n{metrics_table(model.metadata['metrics'])}\n")
    print(f"total {time.perf_counter() - start:.1f}s; model {path.name} written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
