"""The models directory as a registry: promote verifies before it moves CURRENT,
rollback walks back the versions served, list says what each version is and why, and
`python -m training` serves only the first version it trains."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scoring.artifact import CURRENT_POINTER, MODEL_FILE, ArtifactError, point_current
from tests.support import train_recency_model
from training.__main__ import main
from training.gate import Criteria, Decision, Scores, Split
from training.registry import (
    PROMOTIONS_FILE,
    RegistryError,
    moves,
    promote,
    record_decision,
    rollback,
    versions,
)

NAMES = ("v1", "v2", "v3", "v4")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real artifacts, each a version directory."""
    staging = tmp_path_factory.mktemp("staging")
    for name in NAMES:
        train_recency_model(staging, name)
    return staging


@pytest.fixture
def models(written: Path, tmp_path: Path) -> Path:
    """A models directory holding the four versions as candidates: no CURRENT."""
    for name in NAMES:
        shutil.copytree(written / name, tmp_path / "models" / name)
    return tmp_path / "models"


def current(models: Path) -> str:
    return (models / CURRENT_POINTER).read_text().strip()


def test_promote_serves_a_verified_version_and_records_where_from_and_why(models: Path) -> None:
    assert promote(models, "v1", "first") is None
    assert promote(models, "v2", "better") == "v1"
    assert current(models) == "v2"
    recorded = [(m.action, m.version, m.previous, m.reason) for m in moves(models)]
    assert recorded == [("promote", "v1", None, "first"), ("promote", "v2", "v1", "better")]


def test_a_damaged_version_is_not_promoted_and_current_stays(
    models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    promote(models, "v1", "first")
    history = (models / PROMOTIONS_FILE).read_bytes()
    model_file = models / "v2" / MODEL_FILE
    model_file.write_bytes(model_file.read_bytes()[:-100])

    assert main(["models", "promote", "v2", "--models-dir", str(models)]) == 2
    assert "v2/model.txt does not match its checksum" in capsys.readouterr().err
    assert current(models) == "v1"
    assert (models / PROMOTIONS_FILE).read_bytes() == history


def test_promoting_a_missing_version_or_the_current_one_is_refused(models: Path) -> None:
    promote(models, "v1", "first")
    with pytest.raises(RegistryError, match="there is no version v9 in"):
        promote(models, "v9", "typo")
    with pytest.raises(RegistryError, match="v1 is already the current version"):
        promote(models, "v1", "again")
    assert len(moves(models)) == 1


def test_rollback_walks_back_through_the_versions_served_before(models: Path) -> None:
    for name in ("v1", "v2", "v3"):
        promote(models, name, "retrain")
    assert rollback(models) == ("v3", "v2")
    promote(models, "v4", "retrain")
    assert rollback(models) == ("v4", "v2")
    assert rollback(models) == ("v2", "v1")
    with pytest.raises(RegistryError, match="no version was served before v1"):
        rollback(models)
    assert current(models) == "v1"


def test_rollback_after_current_was_moved_by_hand_returns_to_the_last_promoted(
    models: Path,
) -> None:
    promote(models, "v1", "first")
    promote(models, "v2", "retrain")
    point_current(models, "v4")  # an operator, without the registry
    assert rollback(models) == ("v4", "v2")


def test_rollback_to_a_damaged_version_is_refused_and_current_stays(models: Path) -> None:
    promote(models, "v1", "first")
    promote(models, "v2", "retrain")
    (models / "v1" / MODEL_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"v1/model\.txt is missing"):
        rollback(models)
    assert current(models) == "v2"


def test_rollback_with_nothing_served_before_exits_2_saying_so(
    models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "rollback", "--models-dir", str(models)]) == 2
    assert "nothing to roll back to" in capsys.readouterr().err


def refusal(version: str) -> Decision:
    return Decision(
        challenger=version,
        champion="v2",
        promoted=False,
        reasons=("AUC 0.6000 is 0.2000 below the champion's 0.8000, more than the tolerance 0.01",),
        split=Split("2026-05-30", 30, 1809, 0.59),
        challenger_scores=Scores(0.6, 0.03, 0.24),
        champion_scores=Scores(0.8, 0.02, 0.18),
        criteria=Criteria(),
    )


def test_list_shows_each_versions_status_metrics_and_the_gates_reason(
    models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    promote(models, "v1", "first")
    promote(models, "v2", "retrain")
    record_decision(models, refusal("v3"))

    status = {version.name: version.status for version in versions(models)}
    assert status == {"v1": "previous", "v2": "current", "v3": "refused", "v4": "candidate"}
    assert main(["models", "list", "--models-dir", str(models)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["v3"].split()[1:5] == ["refused", "-", "-", "0.6000"]
    assert lines["v3"].split()[5:7] == ["0.8000", "0.0300"]
    assert lines["v3"].endswith(
        "refused by the gate: AUC 0.6000 is 0.2000 below the champion's 0.8000, more than "
        "the tolerance 0.01"
    )
    assert lines["v2"].split()[1] == "current"


def test_a_version_served_and_rolled_back_from_is_listed_as_served(models: Path) -> None:
    promote(models, "v1", "first")
    promote(models, "v2", "retrain")
    rollback(models)
    status = {version.name: version.status for version in versions(models)}
    assert status == {"v1": "current", "v2": "served", "v3": "candidate", "v4": "candidate"}
    assert json.loads((models / PROMOTIONS_FILE).read_text())[-1]["action"] == "rollback"


def test_training_serves_the_first_version_and_keeps_later_ones_as_candidates(
    tmp_path: Path, shop_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "models"
    # One family: which model is trained is beside the point here.
    command = ["--db", str(shop_db), "--out", str(out), "--cutoffs", "4", "--families", "linear"]
    assert main(command) == 0
    first = current(out)
    assert f"{first} is served: the models directory had no model" in capsys.readouterr().out

    assert main(command) == 0
    printed = capsys.readouterr().out
    assert current(out) == first
    second = next(v.name for v in versions(out) if v.status == "candidate")
    assert f"{second} is a candidate: {first} is still served" in printed
