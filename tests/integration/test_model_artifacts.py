"""Model versions published to a running worker (real process, Kafka and Redis): a
broken one is survived (the old model serves, one refusal is counted, and the version
loads once its files are fixed), and a model of another family is loaded like any."""

from __future__ import annotations

import functools
import hashlib
import shutil
import time
from pathlib import Path

import pytest

from scoring.artifact import CHECKSUM_FILE, METADATA_FILE, MODEL_FILE, point_current
from scoring.families import LINEAR, XGBOOST
from tests.support import Worker, optional_module, served_version, train_recency_model, wait_until

pytestmark = pytest.mark.integration

REFUSED = 'churn_model_reloads_total{outcome="refused"}'
LOADED = 'churn_model_reloads_total{outcome="loaded"}'


def polling_worker(env: dict[str, str], served: Path, models: Path, log: Path) -> Worker:
    """A started worker serving a copy of `served` in `models`, polling it every second."""
    shutil.copytree(served, models)
    worker = Worker({**env, "CHURN_MODELS_DIR": str(models), "CHURN_MODEL_POLL_SECONDS": "1"}, log)
    worker.start()
    return worker


def test_a_broken_version_is_refused_while_the_old_model_serves_then_loaded_once_fixed(
    worker_env: dict[str, str], recency_models_dir: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    worker = polling_worker(worker_env, recency_models_dir, models, tmp_path / "worker.log")
    try:
        assert served_version(worker) == "recency-v1"
        # A real artifact with its model file cut in half and checksums that match
        # (as a full disk could leave it): LightGBM's parser crashes on it, which
        # killed the worker before. Broken before CURRENT names it, as training would.
        staged = train_recency_model(tmp_path / "staging", "broken-v2") / "broken-v2"
        version = Path(shutil.copytree(staged, models / "broken-v2"))
        good = {name: (version / name).read_bytes() for name in (MODEL_FILE, CHECKSUM_FILE)}
        (version / MODEL_FILE).write_bytes(good[MODEL_FILE][: len(good[MODEL_FILE]) // 2])
        (version / CHECKSUM_FILE).write_text(
            "".join(
                f"{hashlib.sha256((version / n).read_bytes()).hexdigest()}  {n}\n"
                for n in (MODEL_FILE, METADATA_FILE)
            )
        )
        point_current(models, "broken-v2")
        wait_until(lambda: worker.metric(REFUSED) == 1, worker, "a refused reload")
        time.sleep(3)  # several polls: nothing changed, so no new attempt
        assert worker.process is not None and worker.process.poll() is None, worker.log()
        assert served_version(worker) == "recency-v1"
        assert worker.metric(REFUSED) == 1
        assert worker.log().count("refused broken-v2") == 1
        assert "LightGBM crashed" in worker.log()

        for name, content in good.items():  # fixed in place: same version name
            (version / name).write_bytes(content)
        wait_until(lambda: served_version(worker) == "broken-v2", worker, "loading broken-v2")
        assert worker.metric(LOADED) == 1
        assert worker.metric(REFUSED) == 1
        assert "now serving model broken-v2 (was recency-v1)" in worker.log()
    finally:
        worker.stop()


def test_a_running_worker_moves_to_a_model_of_another_family(
    worker_env: dict[str, str], recency_models_dir: Path, tmp_path: Path
) -> None:
    optional_module("xgboost", "xgboost")
    models = tmp_path / "models"
    worker = polling_worker(worker_env, recency_models_dir, models, tmp_path / "worker.log")
    try:
        assert served_version(worker) == "recency-v1"  # LightGBM
        for family in (LINEAR, XGBOOST):
            version = f"recency-{family}"
            staged = train_recency_model(tmp_path / f"staging-{family}", version, family)
            shutil.copytree(staged / version, models / version)
            point_current(models, version)
            serving = functools.partial(lambda v: served_version(worker) == v, version)
            wait_until(serving, worker, f"loading {version}")
        assert worker.metric(LOADED) == 2
        assert worker.metric(REFUSED) == 0
        assert "now serving model recency-xgboost (was recency-linear)" in worker.log()
    finally:
        worker.stop()
