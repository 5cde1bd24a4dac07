"""The model artifact as the worker meets it, for each family it can hold (LightGBM's
text model, the linear model's JSON): every defect is an ArtifactError that names the
file and the problem, CURRENT cannot lead outside the models directory, and
ServedModel keeps the old model on a refusal and retries once the files change."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_store.definitions import FEATURE_NAMES
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
from scoring.families import LIGHTGBM, LINEAR, MODEL_FILES
from scoring.linear import LINEAR_FIELDS, LinearModel
from tests.support import model_name, resign, train_recency_model, write_model
from training.models import fit_linear

VERSION = "recency-v1"
FAMILIES = (LIGHTGBM, LINEAR)
LINEAR_FILE = MODEL_FILES[LINEAR]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One real artifact per family, written by write_artifact; tests change copies."""
    return {
        family: train_recency_model(tmp_path_factory.mktemp(family), VERSION, family)
        for family in FAMILIES
    }


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def models(trained: dict[str, Path], family: str, tmp_path: Path) -> Path:
    shutil.copytree(trained[family], tmp_path / "models")
    return tmp_path / "models"


def json_edit(name: str, change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        path = directory / name
        content = json.loads(path.read_text())
        change(content)  # in place
        path.write_text(json.dumps(content))
        resign(directory)

    return apply


def metadata_edit(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return json_edit(METADATA_FILE, change)


def linear_edit(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return json_edit(LINEAR_FILE, change)


def model_edit(change: Callable[[str], str]) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        path = directory / MODEL_FILE
        path.write_text(change(path.read_text()))
        resign(directory)

    return apply


def first_feature(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda model: model["features"][0].update(values)


def the_model_file(change: Callable[[Path], object]) -> Callable[[Path], object]:
    """`change` applied to whichever model file the version has."""
    return lambda directory: change(directory / model_name(directory))


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


def symlink_outside(path: Path) -> None:
    outside = path.parent.parent.parent / "outside.txt"
    shutil.copy(path, outside)
    path.unlink()
    path.symlink_to(outside)


# What is wrong -> (how to do it to a version directory, what the error says). "{model}"
# stands for the version's model file.
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
        "has no checksum for {model}",
    ),
    "model file missing": (the_model_file(Path.unlink), "{model} is missing"),
    "model file a directory": (
        lambda d: into_directory(model_name(d))(d),
        "{model} is not a regular file",
    ),
    "model file changed": (
        the_model_file(lambda path: path.write_text(path.read_text() + "\n")),
        "{model} does not match its checksum",
    ),
    "model file a symlink out": (the_model_file(symlink_outside), "outside its version directory"),
    "model_family unknown": (
        metadata_edit(lambda m: m.update(model_family="catboost")),
        "model_family must be one of",
    ),
    "model_family missing": (
        metadata_edit(lambda m: m.pop("model_family")),
        "model_family must be one of .* found None",
    ),
}
LIGHTGBM_CORRUPTIONS: dict[str, tuple[Callable[[Path], object], str]] = {
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
    "model_family names another family": (
        metadata_edit(lambda m: m.update(model_family=LINEAR)),
        "linear.json is missing",
    ),
}
LINEAR_CORRUPTIONS: dict[str, tuple[Callable[[Path], object], str]] = {
    "linear.json not JSON": (write(LINEAR_FILE, b"{", sign=True), "not valid UTF-8 JSON"),
    "linear.json not UTF-8": (write(LINEAR_FILE, b'{"a": "\xff"}', sign=True), "UTF-8 JSON"),
    "linear.json nested deep": (write(LINEAR_FILE, b"[" * 100_000, sign=True), "UTF-8 JSON"),
    "linear.json a list": (write(LINEAR_FILE, b"[]", sign=True), "JSON object, not list"),
    "linear.json another format": (
        linear_edit(lambda m: m.update(format="sklearn pickle")),
        "format must be 'churn-risk linear model v1'",
    ),
    "linear features reordered": (
        linear_edit(lambda m: m["features"].reverse()),
        "one object per feature, named",
    ),
    "linear feature dropped": (linear_edit(lambda m: m["features"].pop()), "named"),
    "linear features an object": (linear_edit(lambda m: m.update(features={})), "named"),
    "linear feature a bare name": (
        linear_edit(lambda m: m["features"].__setitem__(0, "recency_days")),
        "one object per feature",
    ),
    "linear coefficient a string": (
        linear_edit(first_feature(coefficient="0.5")),
        r"features\[0\]\.coefficient must be a finite number",
    ),
    "linear coefficient a boolean": (
        linear_edit(first_feature(coefficient=True)),
        "coefficient must be a finite number",
    ),
    "linear coefficient NaN": (
        linear_edit(first_feature(coefficient=float("nan"))),
        "coefficient must be a finite number",
    ),
    "linear coefficient a huge integer": (
        linear_edit(first_feature(missing_coefficient=10**400)),
        "missing_coefficient must be a finite number",
    ),
    "linear impute missing": (
        linear_edit(lambda m: m["features"][0].pop("impute")),
        r"features\[0\]\.impute must be a finite number, found None",
    ),
    "linear intercept missing": (
        linear_edit(lambda m: m.pop("intercept")),
        "intercept must be a finite number",
    ),
    "linear scale zero": (linear_edit(first_feature(scale=0)), "scale must be positive"),
    "linear missing_rate above 1": (
        linear_edit(first_feature(missing_rate=2)),
        r"missing_rate must be within \[0, 1\]",
    ),
    "linear scores overflow": (
        linear_edit(first_feature(impute=1e300, mean=-1e300, scale=1e-300)),
        "gives no finite score",
    ),
}
COMMON_CORRUPTIONS: dict[str, tuple[Callable[[Path], object], str]] = {
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
    "drift reference incomplete": (
        metadata_edit(lambda m: m.update(reference={"serving": {"format": 2}})),
        "reference.serving is malformed: KeyError",
    ),
    "drift reference of an older format": (
        metadata_edit(lambda m: m.update(reference={"serving": {"format": 1}})),
        "format 1, this worker reads 2",
    ),
    "drift reference a string": (
        metadata_edit(lambda m: m.update(reference="x")),
        "reference.serving is malformed",
    ),
}


CORRUPTIONS.update(COMMON_CORRUPTIONS)
CASES = [
    *((family, name) for name in CORRUPTIONS for family in FAMILIES),
    *((LIGHTGBM, name) for name in LIGHTGBM_CORRUPTIONS),
    *((LINEAR, name) for name in LINEAR_CORRUPTIONS),
]


@pytest.mark.parametrize(("family", "corruption"), CASES)
def test_each_corruption_is_an_artifact_error_that_names_the_problem(
    models: Path, family: str, corruption: str
) -> None:
    corrupt, problem = {**CORRUPTIONS, **LIGHTGBM_CORRUPTIONS, **LINEAR_CORRUPTIONS}[corruption]
    corrupt(models / VERSION)
    with pytest.raises(ArtifactError, match=problem.format(model=re.escape(MODEL_FILES[family]))):
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
    models: Path, tmp_path: Path, name: str
) -> None:
    # A valid artifact waits outside: following the name would load it.
    shutil.copytree(models / VERSION, tmp_path / "elsewhere")
    (models / "sub").mkdir()
    shutil.copytree(models / VERSION, models / "sub" / VERSION)
    name = str(tmp_path / "elsewhere") if name == "ELSEWHERE_ABSOLUTE" else name
    (models / CURRENT_POINTER).write_text(name + "\n")
    with pytest.raises(ArtifactError, match="not a plain directory name"):
        load_model(models)


def test_a_version_directory_symlinked_outside_the_models_dir_is_refused(
    models: Path, tmp_path: Path
) -> None:
    shutil.copytree(models / VERSION, tmp_path / "elsewhere")
    (models / "linked").symlink_to(tmp_path / "elsewhere")
    point_current(models, "linked")
    with pytest.raises(ArtifactError, match="outside"):
        load_model(models)


def test_a_version_directory_symlinked_inside_the_models_dir_loads(models: Path) -> None:
    (models / "alias").symlink_to(models / VERSION)
    point_current(models, "alias")
    assert load_model(models).version == "alias"


def test_served_model_refuses_keeps_serving_then_loads_the_same_version_once_fixed(
    models: Path, family: str
) -> None:
    served = ServedModel(models, load_model(models))
    train_recency_model(models, "v2", family)
    model_file = models / "v2" / MODEL_FILES[family]
    good = model_file.read_bytes()
    model_file.write_bytes(good + b"\n# changed after training\n")

    outcome, message = served.refresh() or ("", "")
    assert outcome == "refused"
    assert f"kept model {VERSION}; refused v2" in message
    assert f"{MODEL_FILES[family]} does not match its checksum" in message
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
    name=st.sampled_from([METADATA_FILE, CHECKSUM_FILE, "the model file"]),
    mutations=MUTATIONS,
    sign=st.booleans(),
)
@pytest.mark.parametrize("family", FAMILIES)
def test_load_model_only_ever_raises_artifact_error_on_mutated_bytes(
    trained: dict[str, Path],
    family: str,
    name: str,
    mutations: list[tuple[str, float, bytes]],
    sign: bool,
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        models = Path(scratch) / "models"
        shutil.copytree(trained[family], models)
        path = models / VERSION / name.replace("the model file", MODEL_FILES[family])
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


# --- the linear family ----------------------------------------------------------------


@pytest.fixture(scope="module")
def linear_rows() -> pd.DataFrame:
    """Customers whose churn log-odds are linear in three features, some values missing."""
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(rng.normal(size=(3000, len(FEATURE_NAMES))), columns=list(FEATURE_NAMES))
    frame["recency_days"] = rng.exponential(30, size=3000)
    frame.loc[rng.random(3000) < 0.3, "days_since_last_ticket"] = np.nan
    frame["age"] = np.nan  # missing everywhere, as a shop without ages has it
    log_odds = 0.05 * (frame["recency_days"] - 30) - 0.8 * frame["orders_90d"]
    frame["label"] = (rng.random(3000) < 1 / (1 + np.exp(-log_odds))).astype(int)
    return frame


def test_a_linear_model_round_trips_through_write_load_and_verify(
    linear_rows: pd.DataFrame, tmp_path: Path
) -> None:
    fitted = fit_linear(linear_rows, seed=7)
    write_model(tmp_path, "linear-v1", fitted)
    loaded = load_model(tmp_path)
    assert (loaded.version, loaded.family) == ("linear-v1", LINEAR)
    assert sorted(p.name for p in (tmp_path / "linear-v1").iterdir()) == sorted(
        [CHECKSUM_FILE, METADATA_FILE, LINEAR_FILE]
    )
    assert isinstance(loaded.estimator, LinearModel)
    assert loaded.estimator.intercept == fitted.intercept
    for name in LINEAR_FIELDS:
        np.testing.assert_array_equal(getattr(loaded.estimator, name), getattr(fitted, name))

    # The file alone defines the score: recomputed here from its numbers, row by row.
    stored = json.loads((tmp_path / "linear-v1" / LINEAR_FILE).read_text())
    x = linear_rows[list(FEATURE_NAMES)].to_numpy()[:50]
    for row, probability in zip(x, loaded.predict(x), strict=True):
        log_odds = stored["intercept"]
        for value, f in zip(row, stored["features"], strict=True):
            missing = math.isnan(value)
            z = ((f["impute"] if missing else value) - f["mean"]) / f["scale"]
            log_odds += f["coefficient"] * z + f["missing_coefficient"] * (
                missing - f["missing_rate"]
            )
        assert probability == pytest.approx(1 / (1 + math.exp(-log_odds)), rel=1e-12)


def test_linear_contributions_sum_to_the_log_odds_minus_the_base_value(
    linear_rows: pd.DataFrame, tmp_path: Path
) -> None:
    model = load_model(write_model(tmp_path, "linear-v1", fit_linear(linear_rows, seed=7)))
    x = linear_rows[list(FEATURE_NAMES)].to_numpy()
    contributions = model.contributions(x)
    assert isinstance(model.estimator, LinearModel)
    raw, base = model.estimator.probability(x), model.estimator.intercept
    assert contributions.shape == x.shape
    np.testing.assert_allclose(
        contributions.sum(axis=1), np.log(raw) - np.log1p(-raw) - base, rtol=0, atol=1e-9
    )
    # Relative to the training rows' mean: each feature's contributions average zero.
    np.testing.assert_allclose(contributions.mean(axis=0), 0.0, rtol=0, atol=1e-9)
    # And they say why: the features the labels came from lead, in their direction.
    strongest = np.argsort(-np.abs(contributions).mean(axis=0))[:2]
    assert {FEATURE_NAMES[j] for j in strongest} == {"recency_days", "orders_90d"}
    recency = FEATURE_NAMES.index("recency_days")
    assert np.corrcoef(x[:, recency], contributions[:, recency])[0, 1] > 0.99


def test_the_model_check_child_is_given_no_secret_of_the_worker_environment() -> None:
    worker_environment = {
        "PATH": "/usr/bin",
        "PYTHONPATH": "/app",
        "REDIS_URL": "redis://worker:s3cret@redis:6379/0",
        "KAFKA_SASL_PASSWORD_FILE": "/run/secrets/kafka",
        "CHURN_WEB_TOKEN": "token",
        "AWS_SECRET_ACCESS_KEY": "key",
    }
    assert artifact.probe_environment(worker_environment) == {
        "PATH": "/usr/bin",
        "PYTHONPATH": "/app",
        "OMP_NUM_THREADS": "1",
    }
