"""The model artifact as the worker meets it: every defect is an ArtifactError that
names the file and the problem, CURRENT cannot lead outside the models directory, and
ServedModel keeps the old model on a refusal and retries once the files change."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring import artifact
from scoring.artifact import (
    CHECKSUM_FILE,
    CURRENT_POINTER,
    METADATA_FILE,
    MODEL_FILE,
    ArtifactError,
    ServedModel,
    load_model,
    point_current,
)
from tests.support import train_recency_model

VERSION = "recency-v1"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real artifact, written by write_artifact; tests change copies of it."""
    return train_recency_model(tmp_path_factory.mktemp("trained"), VERSION)


@pytest.fixture
def models(trained: Path, tmp_path: Path) -> Path:
    shutil.copytree(trained, tmp_path / "models")
    return tmp_path / "models"


def resign(directory: Path) -> None:
    """Checksums that match the files again, so a change reaches the checks after them."""
    sums = "".join(
        f"{hashlib.sha256((directory / name).read_bytes()).hexdigest()}  {name}\n"
        for name in (MODEL_FILE, METADATA_FILE)
    )
    (directory / CHECKSUM_FILE).write_text(sums)


def metadata_edit(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        path = directory / METADATA_FILE
        metadata = json.loads(path.read_text())
        change(metadata)  # in place
        path.write_text(json.dumps(metadata))
        resign(directory)

    return apply


def model_edit(change: Callable[[str], str]) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        path = directory / MODEL_FILE
        path.write_text(change(path.read_text()))
        resign(directory)

    return apply


def write(name: str, content: bytes, sign: bool = False) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        (directory / name).write_bytes(content)
        if sign:
            resign(directory)

    return apply


def into_directory(name: str) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        (directory / name).unlink()
        (directory / name).mkdir()

    return apply


def pointer(content: bytes) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        (directory.parent / CURRENT_POINTER).write_bytes(content)

    return apply


def five_feature_model(directory: Path) -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, 5))
    booster = lgb.train(
        {"verbose": -1, "num_threads": 1},
        lgb.Dataset(features, (features[:, 0] > 0).astype(int)),
        num_boost_round=3,
    )
    booster.save_model(str(directory / MODEL_FILE))
    resign(directory)


def split_on_feature_99(directory: Path) -> None:
    # Same length, so the tree sizes LightGBM checks still hold: only the index is wrong.
    path = directory / MODEL_FILE
    text = path.read_text()
    line = next(x for x in text.splitlines() if re.fullmatch(r"split_feature=.*\b\d\d\b.*", x))
    path.write_text(text.replace(line, re.sub(r"\b\d\d\b", "99", line, count=1), 1))
    resign(directory)


def symlink_outside(directory: Path) -> None:
    outside = directory.parent.parent / "outside.txt"
    shutil.copy(directory / MODEL_FILE, outside)
    (directory / MODEL_FILE).unlink()
    (directory / MODEL_FILE).symlink_to(outside)


CORRUPTIONS: dict[str, tuple[Callable[[Path], object], str]] = {
    "CURRENT missing": (lambda d: (d.parent / CURRENT_POINTER).unlink(), "CURRENT is missing"),
    "CURRENT a directory": (
        lambda d: into_directory(CURRENT_POINTER)(d.parent),
        "CURRENT is not a regular file",
    ),
    "CURRENT not UTF-8": (pointer(b"\xff\xfe\n"), "CURRENT is not UTF-8"),
    "CURRENT empty": (pointer(b"\n"), "not a plain directory name"),
    "CURRENT two lines": (pointer(b"recency-v1\nother\n"), "not a plain directory name"),
    "CURRENT names no directory": (pointer(b"nope\n"), "nope does not exist"),
    "CURRENT names a file": (
        lambda d: [(d.parent / "afile").write_text("x"), pointer(b"afile")(d)],
        "afile is not a directory",
    ),
    "SHA256SUMS missing": (lambda d: (d / CHECKSUM_FILE).unlink(), "incomplete"),
    "SHA256SUMS a directory": (into_directory(CHECKSUM_FILE), "SHA256SUMS is not a regular file"),
    "SHA256SUMS one token": (write(CHECKSUM_FILE, b"abc\n"), "line 1 is not"),
    "SHA256SUMS not UTF-8": (write(CHECKSUM_FILE, b"\xff\n"), "SHA256SUMS is not UTF-8"),
    "SHA256SUMS lists no model": (
        lambda d: (d / CHECKSUM_FILE).write_text(
            (d / CHECKSUM_FILE).read_text().splitlines()[1] + "\n"
        ),
        "has no checksum for model.txt",
    ),
    "model.txt missing": (lambda d: (d / MODEL_FILE).unlink(), "model.txt is missing"),
    "model.txt a directory": (into_directory(MODEL_FILE), "model.txt is not a regular file"),
    "model.txt changed": (
        lambda d: (d / MODEL_FILE).write_text((d / MODEL_FILE).read_text() + "\n"),
        "model.txt does not match its checksum",
    ),
    "model.txt a symlink out": (symlink_outside, "outside its version directory"),
    "model.txt not UTF-8": (write(MODEL_FILE, b"tree\n\xff\n", sign=True), "not a LightGBM"),
    "model.txt with NUL": (write(MODEL_FILE, b"tree\n\x00\n", sign=True), "NUL byte"),
    "model.txt not a model": (write(MODEL_FILE, b"hello\n", sign=True), "not a usable model"),
    # Each of these killed the whole process before: LightGBM aborts or segfaults.
    "model.txt truncated": (model_edit(lambda t: t[: len(t) // 2]), "LightGBM crashed"),
    "model.txt bad number": (
        model_edit(lambda t: re.sub(r"leaf_value=\S+", "leaf_value=w2", t, count=1)),
        r"LightGBM crashed \(SIGABRT\).*no conversion to double",
    ),
    "model.txt bad parameter line": (
        model_edit(lambda t: t.replace("[num_leaves: 31]", "[num_leaves 31]")),
        "parameters section",
    ),
    "model.txt splits on feature 99": (split_on_feature_99, "splits on feature 99"),
    "model.txt has 5 features": (five_feature_model, "expects 5 features"),
    "metadata.json changed": (
        lambda d: (d / METADATA_FILE).write_text("{}"),
        "metadata.json does not match its checksum",
    ),
    "metadata.json not UTF-8": (write(METADATA_FILE, b'{"a": "\xff"}', sign=True), "UTF-8 JSON"),
    "metadata.json not JSON": (write(METADATA_FILE, b"{", sign=True), "not valid UTF-8 JSON"),
    "metadata.json nested deep": (
        write(METADATA_FILE, b"[" * 100_000, sign=True),
        "not valid UTF-8 JSON",
    ),
    "metadata.json a list": (write(METADATA_FILE, b"[]", sign=True), "JSON object, not list"),
    "feature list differs": (
        metadata_edit(lambda m: m.update(feature_names=m["feature_names"][::-1])),
        "trained on features",
    ),
    "feature list missing": (
        metadata_edit(lambda m: m.pop("feature_names")),
        "trained on features None",
    ),
    "calibration missing": (
        metadata_edit(lambda m: m.pop("calibration")),
        "'calibration' must be a JSON object",
    ),
    "calibration strings": (
        metadata_edit(lambda m: m["calibration"].update(raw=["a", "b"])),
        r"calibration.raw\[\] must be a finite number",
    ),
    "calibration NaN": (
        metadata_edit(lambda m: m["calibration"].update(raw=[0.0, float("nan")])),
        "finite number",
    ),
    "calibration nested": (
        metadata_edit(lambda m: m["calibration"].update(raw=[[0, 1], [0, 1]])),
        "finite number",
    ),
    "calibration decreasing": (
        metadata_edit(lambda m: m["calibration"].update(raw=[1.0, 0.0])),
        "increasing raw",
    ),
    "calibration above 1": (
        metadata_edit(lambda m: m["calibration"].update(calibrated=[0.0, 2.0])),
        r"outside \[0, 1\]",
    ),
    "thresholds a list": (
        metadata_edit(lambda m: m.update(thresholds=[0.4, 0.7])),
        "'thresholds' must be a JSON object",
    ),
    "thresholds without high": (
        metadata_edit(lambda m: m["thresholds"].pop("high")),
        "exactly 'medium' and 'high'",
    ),
    "threshold a string": (
        metadata_edit(lambda m: m["thresholds"].update(medium="0.4")),
        "thresholds.medium must be a finite number",
    ),
    "threshold a boolean": (
        metadata_edit(lambda m: m["thresholds"].update(high=True)),
        "thresholds.high must be a finite number",
    ),
    "threshold a huge integer": (
        metadata_edit(lambda m: m["thresholds"].update(high=10**400)),
        "thresholds.high must be a finite number",
    ),
    "thresholds out of order": (
        metadata_edit(lambda m: m["thresholds"].update(medium=0.8)),
        "need 0 < medium < high < 1",
    ),
    "feature_params a string": (
        metadata_edit(lambda m: m.update(feature_params="x")),
        "'feature_params' must be a JSON object",
    ),
    "feature_params unknown key": (
        metadata_edit(lambda m: m["feature_params"].update(colour=1)),
        r"unknown keys \['colour'\]",
    ),
    "engagement_scale zero": (
        metadata_edit(lambda m: m["feature_params"].update(engagement_scale=0)),
        "engagement_scale must be positive",
    ),
    "prior_gaps negative": (
        metadata_edit(lambda m: m["feature_params"].update(prior_gaps=-1.0)),
        "prior_gaps must be positive",
    ),
    "prior_gap_days zero": (
        metadata_edit(lambda m: m["feature_params"].update(prior_gap_days=0)),
        "prior_gap_days must be positive",
    ),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_each_corruption_is_an_artifact_error_that_names_the_problem(
    models: Path, corruption: str
) -> None:
    corrupt, problem = CORRUPTIONS[corruption]
    corrupt(models / VERSION)
    with pytest.raises(ArtifactError, match=problem):
        load_model(models)


def test_an_unreadable_file_is_an_artifact_error_that_says_fix_permissions(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may run as root, whom chmod does not stop: the refusal is simulated.
    real_open = Path.open

    def deny(path: Path, *args: Any, **kwargs: Any) -> Any:
        if path.name == METADATA_FILE:
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(ArtifactError, match=r"metadata\.json cannot be read.*permissions"):
        load_model(models)


@pytest.mark.parametrize(
    "name", ["../elsewhere", "ELSEWHERE_ABSOLUTE", "sub/recency-v1", "..", ".", ".hidden"]
)
def test_current_naming_anything_but_a_plain_version_name_is_refused(
    models: Path, trained: Path, tmp_path: Path, name: str
) -> None:
    # A valid artifact waits outside: following the name would load it.
    shutil.copytree(trained / VERSION, tmp_path / "elsewhere")
    (models / "sub").mkdir()
    shutil.copytree(trained / VERSION, models / "sub" / VERSION)
    name = str(tmp_path / "elsewhere") if name == "ELSEWHERE_ABSOLUTE" else name
    (models / CURRENT_POINTER).write_text(name + "\n")
    with pytest.raises(ArtifactError, match="not a plain directory name"):
        load_model(models)


def test_a_version_directory_symlinked_outside_the_models_dir_is_refused(
    models: Path, trained: Path, tmp_path: Path
) -> None:
    shutil.copytree(trained / VERSION, tmp_path / "elsewhere")
    (models / "linked").symlink_to(tmp_path / "elsewhere")
    point_current(models, "linked")
    with pytest.raises(ArtifactError, match="outside"):
        load_model(models)


def test_a_version_directory_symlinked_inside_the_models_dir_loads(models: Path) -> None:
    (models / "alias").symlink_to(models / VERSION)
    point_current(models, "alias")
    assert load_model(models).version == "alias"


def test_served_model_refuses_keeps_serving_then_loads_the_same_version_once_fixed(
    models: Path,
) -> None:
    served = ServedModel(models, load_model(models))
    train_recency_model(models, "v2")
    model_file = models / "v2" / MODEL_FILE
    good = model_file.read_bytes()
    model_file.write_bytes(good + b"\n# changed after training\n")

    outcome, message = served.refresh() or ("", "")
    assert outcome == "refused"
    assert f"kept model {VERSION}; refused v2" in message
    assert "model.txt does not match its checksum" in message
    assert served().version == VERSION
    assert served.refresh() is None, "refused again although nothing changed"

    model_file.write_bytes(good)
    assert served.refresh() == ("loaded", f"now serving model v2 (was {VERSION})")
    assert served().version == "v2"
    assert served.refresh() is None


def test_served_model_refuses_current_leading_outside(models: Path) -> None:
    served = ServedModel(models, load_model(models))
    (models / CURRENT_POINTER).write_text("../elsewhere\n")
    outcome, message = served.refresh() or ("", "")
    assert (outcome, served().version) == ("refused", VERSION)
    assert "not a plain directory name" in message


def test_served_model_turns_an_unexpected_exception_into_a_refusal(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = ServedModel(models, load_model(models))
    train_recency_model(models, "v2")

    def broken(*_: Any) -> None:
        raise RuntimeError("a defect nobody foresaw")

    monkeypatch.setattr(artifact, "load_model", broken)
    assert served.refresh() == (
        "refused",
        f"kept model {VERSION}; refused v2: unexpected RuntimeError: a defect nobody foresaw",
    )
    assert served().version == VERSION
    assert served.refresh() is None


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["replace", "delete", "insert"]),
        st.floats(0, 1, exclude_max=True),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, mutations: list[tuple[str, float, bytes]]) -> bytes:
    result = bytearray(data)
    for kind, where, chunk in mutations:
        at = int(where * len(result)) if result else 0
        if kind == "replace":
            result[at : at + len(chunk)] = chunk
        elif kind == "delete":
            del result[at : at + len(chunk)]
        else:
            result[at:at] = chunk
    return bytes(result)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.sampled_from([METADATA_FILE, CHECKSUM_FILE, MODEL_FILE]),
    mutations=MUTATIONS,
    sign=st.booleans(),
)
def test_load_model_only_ever_raises_artifact_error_on_mutated_bytes(
    trained: Path, name: str, mutations: list[tuple[str, float, bytes]], sign: bool
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        models = Path(scratch) / "models"
        shutil.copytree(trained, models)
        path = models / VERSION / name
        path.write_bytes(mutate(path.read_bytes(), mutations))
        if sign and name != CHECKSUM_FILE:  # signed: the change reaches the parsers
            resign(models / VERSION)
        with contextlib.suppress(ArtifactError):
            load_model(models)


def test_refusal_is_retried_when_current_is_rewritten(models: Path) -> None:
    served = ServedModel(models, load_model(models))
    point_current(models, "missing-v2")
    assert (served.refresh() or ("",))[0] == "refused"
    os.replace(models / VERSION, models / "missing-v2")  # the version appears
    point_current(models, "missing-v2")
    assert (served.refresh() or ("",))[0] == "loaded"
