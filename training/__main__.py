"""Train churn models, retrain them behind a gate, and choose the served version.

python -m training --db data/shop.db --out artifacts/models [training options]
    Train a version. In a models directory with no CURRENT it is served; otherwise it
    is a candidate (serve it with `models promote`, or train through the gate instead).
python -m training retrain --db data/shop.db --models-dir artifacts/models
                   [--auc-tolerance 0.01] [--max-calibration-error 0.05] [training options]
    Train a challenger and serve it only if the gate passes it (training/gate.py).
    Exit 0: promoted; 1: refused, kept as a candidate with the reason (<version>/gate.json).
python -m training models list | promote VERSION | rollback --models-dir artifacts/models
    The versions and their status; serve a version (verified first); serve again the
    version served before the current one.

Training options: [--as-of 2026-05-31] [--horizon-days 30] [--medium-recall 0.8]
[--high-precision 0.8] [--folds 3] [--families linear,lightgbm] and more (--help).
Training prints each step as it finishes and the model comparison, and writes the
artifact (the served family's model file, metadata.json, SHA256SUMS) with report.html
beside it. Exit 2: an error, with a message saying what is wrong.

Training takes the worker's bound on event times from the same setting,
CHURN_MIN_EVENT_TIME (2000-01-01 when unset): a history with an earlier event is
refused at the start, naming the setting to move for training and the worker alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from feature_store.offline import History
from scoring.artifact import ArtifactError
from scoring.decoding import MIN_EVENT_TIME_SETTING, Limits
from scoring.model import Thresholds
from scoring.risk import ACTION_COST_SETTING, VALUE_PER_SPEND_SETTING, ValueTargeting
from training.database import DatabaseError, load_history, load_truth
from training.dataset import TrainingDataError
from training.gate import (
    AUC_TOLERANCE,
    MAX_CALIBRATION_ERROR,
    Criteria,
    Decision,
    Scores,
    judge,
)
from training.models import available_families
from training.registry import (
    RegistryError,
    Version,
    promote,
    record_decision,
    rollback,
    served,
    versions,
)
from training.report import (
    comparison_table_text,
    criterion_text,
    stability_text,
    targeting_text,
    write_report,
)
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


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments of `python -m training` (train a version)."""
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train a model version.",
        epilog="other commands: retrain, models (each with --help)",
    )
    parser.add_argument("--db", type=Path, required=True, help="SQLite shop database")
    parser.add_argument("--out", type=Path, required=True, help="models directory")
    return parsed(parser, argv)


def parse_retrain_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments of `python -m training retrain`."""
    parser = argparse.ArgumentParser(
        prog="python -m training retrain",
        description="Train a challenger and serve it only if the gate passes it.",
    )
    parser.add_argument("--db", type=Path, required=True, help="SQLite shop database")
    parser.add_argument("--models-dir", type=Path, required=True, help="models directory")
    parser.add_argument(
        "--auc-tolerance",
        type=fraction,
        default=AUC_TOLERANCE,
        help="how far the challenger's AUC may fall below the champion's (default: "
        "%(default)s, above the noise between models of equal quality)",
    )
    parser.add_argument(
        "--max-calibration-error",
        type=fraction,
        default=MAX_CALIBRATION_ERROR,
        help="the challenger's highest expected calibration error (default: %(default)s)",
    )
    return parsed(parser, argv)


def parsed(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """`argv` parsed by `parser` with the training options added and checked."""
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
        "--folds",
        type=positive_int,
        default=TrainingConfig.folds,
        help="validation cutoffs tuning is judged on (the validation cutoff and earlier "
        "ones, --step-days apart); at most --cutoffs - 2 are used (each fold needs a "
        "training cutoff)",
    )
    parser.add_argument(
        "--families",
        type=lambda text: tuple(name.strip() for name in text.split(",") if name.strip()),
        default=None,
        help="comma-separated families to compare (default: all available; "
        f"{', '.join(f.name for f in available_families())} here)",
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


def limits_from_env() -> Limits:
    """The worker's bound on event times, read from the same setting (the worker's
    default when unset), so that training and serving agree on what a valid event is."""
    text = os.environ.get(MIN_EVENT_TIME_SETTING, "").strip()
    if not text:
        return Limits()
    try:
        earliest = datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        raise SystemExit(
            f"error: {MIN_EVENT_TIME_SETTING} must be a date, YYYY-MM-DD (got {text!r})"
        ) from None
    return Limits(min_event_time=earliest.timestamp())


def targeting_from_env() -> ValueTargeting:
    """The worker's value targeting, from the same settings, for the report."""
    defaults = ValueTargeting()
    try:
        return ValueTargeting(
            float(os.environ.get(VALUE_PER_SPEND_SETTING, defaults.value_per_spend)),
            float(os.environ.get(ACTION_COST_SETTING, defaults.action_cost)),
        )
    except ValueError as err:
        raise SystemExit(
            f"error: {VALUE_PER_SPEND_SETTING} and {ACTION_COST_SETTING} must be numbers "
            f"above 0 ({err})"
        ) from None


def training_config(args: argparse.Namespace) -> TrainingConfig:
    return TrainingConfig(
        limits=limits_from_env(),
        targeting=targeting_from_env(),
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
        folds=args.folds,
        families=args.families,
    )


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
    lines.append(f"  {metadata['metrics']['selection']['why']}")
    lines.append("  the guide's success criteria (test split):")
    lines += [f"    {criterion_text(c)}" for c in metadata.get("success_criteria", [])]
    lines.append("  HIGH by each targeting policy (test split):")
    lines += [f"    {line}" for line in targeting_text(metadata)]
    family = metadata["model_family"]
    lines.append(f"  {stability_text(family, metadata)}")
    return "\n".join(lines)


def train_version(args: argparse.Namespace, models_dir: Path) -> tuple[Path, History] | None:
    """Train on args.db and write the version (a candidate) with its report; its
    directory and the history it learned from, or None once an error is printed."""
    timer = StepTimer(print_step)
    print(f"training from {args.db}", flush=True)
    try:
        with timer.step("load history") as notes:
            history = load_history(args.db)
            notes.append(
                f"{len(history.customers):,} customers, {len(history.orders):,} orders, "
                f"{len(history.tickets):,} tickets"
            )
            truth = load_truth(args.db)
        model = train(history, training_config(args), print_step, truth)
    except (DatabaseError, TrainingDataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return None
    try:
        with timer.step("write artifact"):
            path = save(model, models_dir)
    except ArtifactError as err:
        print(
            f"error: the artifact written does not load, so it was removed: {err}", file=sys.stderr
        )
        return None
    with timer.step("write report"):
        report = write_report(model, path)
    print(f"\n{comparison_table_text(model.metadata)}\n")
    print(f"{diagnostics_text(model.metadata)}\n")
    print(f"model {path.name} written to {path}")
    print(f"report: {report}")
    return path, history


def train_main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    trained = train_version(args, args.out)
    if trained is None:
        return 2
    version = trained[0].name
    current = served(args.out)
    if current is None:
        try:
            promote(args.out, version, "the first model in the models directory")
        except (ArtifactError, RegistryError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"{version} is served: the models directory had no model")
    else:
        print(
            f"{version} is a candidate: {current} is still served. Serve it with "
            f"`python -m training models promote {version} --models-dir {args.out}`, or "
            "train through the gate with `python -m training retrain`"
        )
    print(f"total {time.perf_counter() - start:.1f}s")
    return 0


def retrain_main(argv: Sequence[str]) -> int:
    args = parse_retrain_args(argv)
    start = time.perf_counter()
    trained = train_version(args, args.models_dir)
    if trained is None:
        return 2
    path, history = trained
    champion = served(args.models_dir)
    criteria = Criteria(args.auc_tolerance, args.max_calibration_error)
    try:
        with StepTimer(print_step).step("gate") as notes:
            decision = judge(args.models_dir, path.name, champion, history, criteria)
            notes.append("promote" if decision.promoted else "refuse")
    except ArtifactError as err:
        print(f"error: the challenger cannot be loaded: {err}", file=sys.stderr)
        return 2
    record = record_decision(args.models_dir, decision)
    print(f"\n{gate_text(decision)}\n")
    because = "; ".join(decision.reasons)
    if not decision.promoted:
        print(
            f"refused: {path.name} is kept as a candidate and {champion} is still served: "
            f"{because} (details in {record}). To serve it anyway: "
            f"`python -m training models promote {path.name} --models-dir {args.models_dir}`",
            file=sys.stderr,
        )
        return 1
    try:
        promote(args.models_dir, path.name, f"retrain gate: {because}")
    except (ArtifactError, RegistryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"promoted {path.name} (was {champion or 'none'}): {because}")
    print(f"total {time.perf_counter() - start:.1f}s")
    return 0


def gate_text(decision: Decision) -> str:
    split = decision.split
    lines = [
        f"gate: {split.rows:,} test rows as of {split.test_cutoff} "
        f"({split.positive_rate:.1%} churned within {split.horizon_days} days)",
        f"  {'':<40} {'AUC':>7} {'cal. error':>10} {'Brier':>7}",
    ]
    judged: list[tuple[str, str, Scores | None]] = [
        ("challenger", decision.challenger, decision.challenger_scores)
    ]
    if decision.champion is not None:
        judged.append(("champion", decision.champion, decision.champion_scores))
    for role, version, scores in judged:
        label = f"{role} {version}"
        if scores is None:
            lines.append(f"  {label:<40} {'cannot be loaded':>27}")
        else:
            lines.append(
                f"  {label:<40} {scores.auc_roc:>7.4f} {scores.calibration_error:>10.4f} "
                f"{scores.brier:>7.4f}"
            )
    return "\n".join(lines)


def parse_models_args(argv: Sequence[str]) -> argparse.Namespace:
    """The arguments of `python -m training models list | promote VERSION | rollback`."""
    parser = argparse.ArgumentParser(
        prog="python -m training models", description="The model versions and the served one."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every version, its status and key metrics")
    promote_parser = commands.add_parser("promote", help="serve VERSION, once verified")
    promote_parser.add_argument("version")
    commands.add_parser("rollback", help="serve again the version served before the current one")
    for command in commands.choices.values():
        command.add_argument("--models-dir", type=Path, required=True, help="models directory")
    return parser.parse_args(argv)


def models_main(argv: Sequence[str]) -> int:
    args = parse_models_args(argv)
    try:
        if args.command == "list":
            print(versions_text(versions(args.models_dir)))
        elif args.command == "promote":
            previous = promote(args.models_dir, args.version, "promoted by hand")
            print(f"promoted {args.version} (was {previous or 'none'})")
        else:
            before, after = rollback(args.models_dir)
            print(f"rolled back to {after} (was {before})")
    except (ArtifactError, RegistryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def versions_text(found: list[Version]) -> str:
    """`models list`: one line per version, oldest first."""
    if not found:
        return "no versions"
    lines = [
        f"{'VERSION':<32} {'STATUS':<9} {'TRAINED':<20} {'TEST AUC':>8} "
        f"{'GATE AUC':>8} {'CHAMPION':>8} {'CAL.ERR':>7}  REASON"
    ]
    for version in found:
        metadata = version.metadata or {}
        test_auc = metadata.get("metrics", {}).get("test", {}).get("auc_roc")
        decision = version.decision
        gate = ["-", "-", "-"]
        reason = "" if version.metadata is not None else "metadata.json unreadable"
        if decision is not None:
            champion = decision.champion_scores
            gate = [
                f"{decision.challenger_scores.auc_roc:.4f}",
                "-" if champion is None else f"{champion.auc_roc:.4f}",
                f"{decision.challenger_scores.calibration_error:.4f}",
            ]
            verdict = "promoted" if decision.promoted else "refused"
            reason = f"{verdict} by the gate: {'; '.join(decision.reasons)}"
        lines.append(
            f"{version.name:<32} {version.status:<9} {metadata.get('trained_at', '-')!s:<20} "
            f"{'-' if test_auc is None else format(test_auc, '.4f'):>8} "
            f"{gate[0]:>8} {gate[1]:>8} {gate[2]:>7}  {reason}"
        )
    return "\n".join(lines)


COMMANDS = {"retrain": retrain_main, "models": models_main}


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in COMMANDS:
        return COMMANDS[arguments[0]](arguments[1:])
    return train_main(arguments)


if __name__ == "__main__":
    sys.exit(main())
