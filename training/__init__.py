"""Training pipeline: SQLite history -> point-in-time data sets -> model comparison ->
tuned, calibrated LightGBM artifact (+ report.html). Measurements: MEASUREMENTS.md."""

from training.database import DatabaseError, load_history
from training.dataset import Splits, TrainingDataError, build_dataset, build_splits, cutoffs
from training.metrics import evaluate
from training.train import TrainedModel, TrainingConfig, save, train

__all__ = [
    "DatabaseError",
    "Splits",
    "TrainedModel",
    "TrainingConfig",
    "TrainingDataError",
    "build_dataset",
    "build_splits",
    "cutoffs",
    "evaluate",
    "load_history",
    "save",
    "train",
]
