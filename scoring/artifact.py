"""The versioned model artifact: what training writes and the worker trusts.

<models dir>/
    CURRENT                 the served version's name (moved atomically by promotion:
                            training writes a candidate, training/registry.py promotes)
    <version>/
        metadata.json       model_family, features, calibration, thresholds, metrics, the
                            drift monitor's reference (`scoring.drift.Reference`)...
        <the model file>    by family (never pickle: loading runs no code):
                            model.txt     LightGBM's text model
                            linear.json   a logistic regression (scoring/linear.py)
                            xgboost.json  XGBoost's JSON model (the optional extra)
        SHA256SUMS          checksums of the two files above, verified at load
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from feature_store.definitions import FEATURE_NAMES, FeatureParams
from scoring.drift import DriftReferenceError, Reference
from scoring.families import LIGHTGBM, LINEAR, MODEL_FILES, XGBOOST, FamilyModel, LightGBMModel
from scoring.linear import LINEAR_FIELDS, LINEAR_FORMAT, LinearModel
from scoring.model import Calibration, Model, Thresholds

MODEL_FILE = MODEL_FILES[LIGHTGBM]
METADATA_FILE = "metadata.json"
CHECKSUM_FILE = "SHA256SUMS"
CURRENT_POINTER = "CURRENT"

VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
CHECKSUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](\S+)")
# Beyond these sizes a file is not an artifact's: refuse rather than read it into memory.
MAX_POINTER_BYTES = 1024
MAX_CHECKSUM_BYTES = 64 * 1024
MAX_METADATA_BYTES = 64 * 1024 * 1024
MAX_MODEL_BYTES = 1024 * 1024 * 1024
PARAMETER_LINE = re.compile(r"\[[A-Za-z0-9_]+: .*\]")
PROBE_SCRIPT = Path(__file__).with_name("model_probe.py")
PROBE_TIMEOUT_SECONDS = 60.0
# What the model check's child process is given of the worker's environment: enough to
# start Python and find the project, and none of the worker's secrets (REDIS_URL,
# password files, tokens), which a parser of an untrusted file has no need of.
PROBE_ENVIRONMENT = ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "LD_LIBRARY_PATH")
XGBOOST_EXTRA = (
    "install the project's xgboost extra: pip install '.[xgboost]' "
    "(locked: requirements/requirements-xgboost.txt)"
)


class ArtifactError(Exception):
    """The artifact cannot be served; the message says what to fix."""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_artifact(
    models_dir: Path, version: str, estimator: FamilyModel, metadata: dict[str, Any]
) -> Path:
    """Write a new version, a candidate: CURRENT does not move (`point_current` does,
    once the version is promoted). Returns the version directory."""
    target = models_dir / version
    target.mkdir(parents=True, exist_ok=False)
    model_file = MODEL_FILES[estimator.family]
    (target / model_file).write_bytes(estimator.serialise())
    full = {
        **metadata,
        "version": version,
        "feature_names": list(FEATURE_NAMES),
        "model_family": estimator.family,
    }
    (target / METADATA_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    sums = "".join(f"{sha256_of(target / name)}  {name}\n" for name in (model_file, METADATA_FILE))
    (target / CHECKSUM_FILE).write_text(sums)
    return target


def point_current(models_dir: Path, version: str) -> None:
    # Rename is atomic, so a worker polling CURRENT never reads half a name.
    tmp = models_dir / f".{CURRENT_POINTER}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, models_dir / CURRENT_POINTER)


def current_version(models_dir: Path) -> str:
    """The version CURRENT names: a plain directory name, checked before any path use."""
    pointer = models_dir / CURRENT_POINTER
    if not pointer.exists():
        raise ArtifactError(
            f"no model in {models_dir}: {pointer} is missing. "
            "Train one with `python -m training --db data/shop.db --out artifacts/models`."
        )
    raw = _read(pointer, MAX_POINTER_BYTES)
    try:
        version = raw.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        raise ArtifactError(f"{pointer} is not UTF-8 text ({err}): write the version name") from err
    _check_version_name(version, pointer)
    return version


def _check_version_name(version: str, source: Path | str) -> None:
    # A plain name keeps CURRENT (or a caller) from pointing the worker at any
    # directory on the machine: no separators, no "..", no absolute paths.
    if not VERSION_NAME.fullmatch(version):
        raise ArtifactError(
            f"{source} names version {version[:80]!r}, which is not a plain directory name "
            "(letters, digits, '.', '_', '-', starting with a letter or digit, at most 128 "
            "characters): write the name of a version directory in the models directory"
        )


def version_directory(models_dir: Path, version: str) -> Path:
    """The version's directory, refused unless it resolves directly inside models_dir."""
    _check_version_name(version, "the version")
    directory = models_dir / version
    try:
        resolved, home = directory.resolve(strict=True), models_dir.resolve(strict=True)
    except (OSError, RuntimeError) as err:  # missing, or a symlink loop
        raise ArtifactError(
            f"{directory} does not exist or cannot be resolved ({type(err).__name__}): "
            f"CURRENT names version {version}; train it or point CURRENT at an existing version"
        ) from err
    if resolved.parent != home:
        # A symlinked version directory is fine, as long as it stays in models_dir.
        raise ArtifactError(
            f"{directory} resolves to {resolved}, outside {home}: a version directory "
            "must live directly in the models directory"
        )
    if not resolved.is_dir():
        raise ArtifactError(f"{directory} is not a directory: a version is a directory")
    return directory


def load_model(models_dir: Path, version: str | None = None) -> Model:
    """Load and verify a version (default: CURRENT). Raises ArtifactError on any defect."""
    version = current_version(models_dir) if version is None else version
    directory = version_directory(models_dir, version)
    sums_path = directory / CHECKSUM_FILE
    expected = _parse_checksums(_read(_inside(sums_path), MAX_CHECKSUM_BYTES), sums_path)
    # Each file is read once: the bytes checked against SHA256SUMS are the bytes parsed,
    # so a file swapped between check and use cannot slip in. The metadata names the
    # family, and so which model file to read.
    metadata_bytes = _verified(directory, METADATA_FILE, MAX_METADATA_BYTES, expected, sums_path)
    where = directory / METADATA_FILE
    metadata = _parse_metadata(metadata_bytes, where, version)
    family = _family(metadata, where)
    calibration = _calibration(metadata, where)
    thresholds = _thresholds(metadata, where)
    params = _feature_params(metadata, where)
    model_file = MODEL_FILES[family]
    model_bytes = _verified(directory, model_file, MAX_MODEL_BYTES, expected, sums_path)
    estimator = _estimator(family, model_bytes, directory / model_file, version)
    drift = _drift_reference(metadata, where)
    return Model(version, estimator, calibration, thresholds, params, metadata, drift)


def _read(path: Path, limit: int) -> bytes:
    """A regular file's bytes, at most `limit`; every failure says which file and why."""
    try:
        info = path.stat()
    except FileNotFoundError as err:
        raise ArtifactError(f"{path} is missing: the artifact is incomplete") from err
    except OSError as err:
        raise ArtifactError(
            f"{path} cannot be read ({type(err).__name__}: {err.strerror}): fix its permissions"
        ) from err
    if not stat.S_ISREG(info.st_mode):
        # A directory, FIFO or device: reading a FIFO or /dev/zero would hang the worker.
        raise ArtifactError(f"{path} is not a regular file: replace it with the artifact's file")
    if info.st_size > limit:
        raise ArtifactError(f"{path} is {info.st_size} bytes, more than the {limit} allowed")
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as err:
        raise ArtifactError(
            f"{path} cannot be read ({type(err).__name__}: {err.strerror}): fix its permissions"
        ) from err
    if len(data) > limit:  # grew after the stat
        raise ArtifactError(f"{path} is more than the {limit} bytes allowed")
    return data


def _inside(path: Path) -> Path:
    """`path`, refused when it is a symlink that leads out of its version directory."""
    try:
        resolved, directory = path.resolve(), path.parent.resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise ArtifactError(f"{path} cannot be resolved ({type(err).__name__})") from err
    if resolved.parent != directory:
        raise ArtifactError(
            f"{path} resolves to {resolved}, outside its version directory: an artifact's "
            "files must be in it"
        )
    return path


def _parse_checksums(data: bytes, path: Path) -> dict[str, str]:
    """`sha256sum` output: "<64 hex digits>  <name>" (or " *<name>") per line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ArtifactError(f"{path} is not UTF-8 text ({err}): regenerate it") from err
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = CHECKSUM_LINE.fullmatch(line.strip())
        if match is None:
            raise ArtifactError(
                f"{path} line {number} is not '<sha256 hex digest>  <file name>': "
                f"{line[:80]!r}; regenerate it with `sha256sum {MODEL_FILE} {METADATA_FILE}`"
            )
        digest, name = match.group(1).lower(), match.group(2)
        if sums.get(name, digest) != digest:
            raise ArtifactError(f"{path} lists {name} twice with different checksums")
        sums[name] = digest
    return sums


def _verified(
    directory: Path, name: str, limit: int, expected: dict[str, str], sums_path: Path
) -> bytes:
    path = directory / name
    data = _read(_inside(path), limit)
    if name not in expected:
        raise ArtifactError(f"{sums_path} has no checksum for {name}: the artifact is incomplete")
    if hashlib.sha256(data).hexdigest() != expected[name]:
        raise ArtifactError(
            f"{path} does not match its checksum in {sums_path}: the file was changed "
            "after training; restore it or retrain"
        )
    return data


def _json_object(data: bytes, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise ArtifactError(f"{path} is not valid UTF-8 JSON: {err}") from err
    if not isinstance(value, dict):
        raise ArtifactError(f"{path} must hold a JSON object, not {type(value).__name__}")
    return value


def _parse_metadata(data: bytes, path: Path, version: str) -> dict[str, Any]:
    metadata = _json_object(data, path)
    names = metadata.get("feature_names")
    if names != list(FEATURE_NAMES):
        raise ArtifactError(
            f"model {version} was trained on features {str(names)[:400]}, but this worker "
            f"computes {list(FEATURE_NAMES)} ({path}): retrain the model with this code version"
        )
    return metadata


def _family(metadata: dict[str, Any], path: Path) -> str:
    family = metadata.get("model_family")
    if not isinstance(family, str) or family not in MODEL_FILES:
        raise ArtifactError(
            f"{path}: model_family must be one of {sorted(MODEL_FILES)}, found "
            f"{family!r:.80}; retrain"
        )
    return family


def _field(metadata: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = metadata.get(key)
    if not isinstance(value, dict):
        raise ArtifactError(
            f"{path}: {key!r} must be a JSON object, found {type(value).__name__}; retrain"
        )
    return value


def _number(value: Any, name: str, path: Path) -> float:
    # bool is an int to Python, but `true` is no number here; a huge int overflows.
    number = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):
            number = float(value)
    if not math.isfinite(number):
        raise ArtifactError(f"{path}: {name} must be a finite number, found {value!r:.80}")
    return number


def _calibration(metadata: dict[str, Any], path: Path) -> Calibration:
    data = _field(metadata, "calibration", path)
    points: dict[str, np.ndarray] = {}
    for key in ("raw", "calibrated"):
        values = data.get(key)
        if not isinstance(values, list):
            raise ArtifactError(f"{path}: calibration.{key} must be a list of numbers")
        points[key] = np.array([_number(v, f"calibration.{key}[]", path) for v in values])
    if np.any((points["calibrated"] < 0) | (points["calibrated"] > 1)):
        raise ArtifactError(f"{path}: calibration.calibrated holds values outside [0, 1]")
    try:
        return Calibration.from_json({**data, **points})
    except ValueError as err:
        raise ArtifactError(f"{path}: {err}; retrain") from err


def _thresholds(metadata: dict[str, Any], path: Path) -> Thresholds:
    data = _field(metadata, "thresholds", path)
    if set(data) != {"medium", "high"}:
        raise ArtifactError(
            f"{path}: thresholds must have exactly 'medium' and 'high', found {sorted(data)}"
        )
    try:
        return Thresholds(
            medium=_number(data["medium"], "thresholds.medium", path),
            high=_number(data["high"], "thresholds.high", path),
        )
    except ValueError as err:
        raise ArtifactError(f"{path}: thresholds: {err}") from err


def _feature_params(metadata: dict[str, Any], path: Path) -> FeatureParams:
    data = _field(metadata, "feature_params", path)
    known = {f.name for f in dataclasses.fields(FeatureParams)}
    if not set(data) <= known:
        raise ArtifactError(
            f"{path}: feature_params has unknown keys {sorted(set(data) - known)}; "
            f"this worker knows {sorted(known)}"
        )
    values = {key: _number(value, f"feature_params.{key}", path) for key, value in data.items()}
    for key, value in values.items():
        if value <= 0:  # each is a divisor or a prior's weight
            raise ArtifactError(f"{path}: feature_params.{key} must be positive")
    return FeatureParams(**values)


def _drift_reference(metadata: dict[str, Any], path: Path) -> Reference | None:
    try:
        return Reference.from_metadata(metadata)
    except DriftReferenceError as err:
        raise ArtifactError(f"{path}: {err}; retrain") from err


def _estimator(family: str, data: bytes, path: Path, version: str) -> FamilyModel:
    if family == LINEAR:
        return _linear(data, path, version)
    if family == XGBOOST:
        return _xgboost(data, path, version)
    return LightGBMModel(_booster(data, path, version))


def _linear(data: bytes, path: Path, version: str) -> LinearModel:
    model = _json_object(data, path)
    if model.get("format") != LINEAR_FORMAT:
        raise ArtifactError(
            f"{path}: format must be {LINEAR_FORMAT!r}, found {model.get('format')!r:.80}; retrain"
        )
    found = model.get("features")
    rows: list[dict[str, Any]] = []
    if isinstance(found, list) and all(isinstance(row, dict) for row in found):
        rows = found
    if [row.get("name") for row in rows] != list(FEATURE_NAMES):
        raise ArtifactError(
            f"{path}: features must be one object per feature, named {list(FEATURE_NAMES)} "
            f"in this order; found {str(found)[:400]}; retrain"
        )
    columns = {
        key: np.array(
            [_number(row.get(key), f"features[{j}].{key}", path) for j, row in enumerate(rows)]
        )
        for key in LINEAR_FIELDS
    }
    if np.any(columns["scale"] <= 0):
        raise ArtifactError(f"{path}: every scale must be positive (a divisor); retrain")
    if np.any((columns["missing_rate"] < 0) | (columns["missing_rate"] > 1)):
        raise ArtifactError(f"{path}: every missing_rate must be within [0, 1]; retrain")
    linear = LinearModel.from_columns(_number(model.get("intercept"), "intercept", path), columns)
    # Finite numbers can still overflow together: score a typical and a missing row.
    rows_to_try = np.vstack([linear.mean, np.full(len(FEATURE_NAMES), np.nan)])
    with np.errstate(all="ignore"):
        finite = np.all(np.isfinite(linear.contributions(rows_to_try)))
    if not finite:
        raise ArtifactError(f"{path}: model {version} gives no finite score; retrain")
    return linear


def _xgboost(data: bytes, path: Path, version: str) -> FamilyModel:
    try:
        import xgboost
    except ImportError as err:
        raise ArtifactError(
            f"model {version} is an XGBoost model ({path}), and xgboost cannot be imported "
            f"here ({err}): {XGBOOST_EXTRA}; or serve another version"
        ) from err
    from scoring.xgboost_model import XGBoostModel

    _json_object(data, path)  # XGBoost's JSON model, not its binary (UBJSON) one
    command = [sys.executable, "-I", str(PROBE_SCRIPT), XGBOOST, str(len(FEATURE_NAMES))]
    _probe_in_child(command, data, path, version, "XGBoost")

    # The same bytes loaded in a child without crashing load here the same way.
    try:
        model = XGBoostModel.from_bytes(data)
        probability = model.probability(np.zeros((1, len(FEATURE_NAMES))))
    except (xgboost.core.XGBoostError, ValueError, TypeError) as err:
        raise ArtifactError(f"{path} is not a usable XGBoost model ({err}); retrain") from err
    if not np.all(np.isfinite(probability)):
        raise ArtifactError(f"{path}: model {version} gives no finite score; retrain")
    return model


def _booster(data: bytes, path: Path, version: str) -> lgb.Booster:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ArtifactError(f"{path} is not a LightGBM text model ({err}); retrain") from err
    if "\x00" in text:  # LightGBM reads a C string: it would stop at the NUL
        raise ArtifactError(f"{path} holds a NUL byte: not a LightGBM text model; retrain")
    _check_parameter_lines(text, path)
    library = lgb.basic._LIB._name
    command = [sys.executable, "-I", str(PROBE_SCRIPT), LIGHTGBM, library, str(len(FEATURE_NAMES))]
    _probe_in_child(command, data, path, version, "LightGBM")
    # The same bytes parsed in a child without crashing parse here the same way.
    try:
        booster = lgb.Booster(model_str=text)
        row = np.zeros((1, len(FEATURE_NAMES)))
        probability = np.asarray(booster.predict(row, num_threads=1))
    # ValueError: the wrapper's json.loads of a damaged "pandas_categorical:" line.
    except (lgb.basic.LightGBMError, ValueError) as err:
        raise ArtifactError(f"{path} is not a usable LightGBM model ({err}); retrain") from err
    if not np.all(np.isfinite(probability)):
        raise ArtifactError(f"{path}: model {version} gives no finite score; retrain")
    return booster


def _check_parameter_lines(text: str, path: Path) -> None:
    # LightGBM turns the "parameters:" section into JSON reading past the end of a line
    # without ": " (a crash that only sometimes shows), and the wrapper asks for that
    # JSON on every load: so every line of the section must be "[name: value]".
    _, found, rest = text.partition("\nparameters:\n")
    if not found:
        return
    section, ended, _ = rest.partition("end of parameters")
    lines = [line for line in section.splitlines() if line]
    bad = next((line for line in lines if not PARAMETER_LINE.fullmatch(line)), None)
    if not ended or bad is not None:
        raise ArtifactError(
            f"{path}: its parameters section has a line that is not '[name: value]' "
            f"({(bad or 'no end of parameters')[:80]!r}); the file is damaged, retrain"
        )


def probe_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The model check's environment: PROBE_ENVIRONMENT's variables, one thread."""
    kept = {name: environ[name] for name in PROBE_ENVIRONMENT if name in environ}
    return {**kept, "OMP_NUM_THREADS": "1"}


def _probe_in_child(
    command: list[str], data: bytes, path: Path, version: str, library: str
) -> None:
    """Parse the model in a throw-away process (scoring/model_probe.py): a library's
    parser may abort the process on a damaged model, and that must not be the worker."""
    try:
        result = subprocess.run(
            command,
            input=data,
            capture_output=True,
            timeout=PROBE_TIMEOUT_SECONDS,
            env=probe_environment(os.environ),
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise ArtifactError(
            f"{path}: {library} did not parse model {version} within "
            f"{PROBE_TIMEOUT_SECONDS:.0f}s; the file is damaged or far too large"
        ) from err
    except OSError as err:
        raise ArtifactError(f"cannot start the model check for {path}: {err}") from err
    if result.returncode == 0:
        return
    lines = result.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
    reason = next((line for line in lines if "[Fatal]" in line), lines[-1])[:300]
    if result.returncode < 0:
        signal_name = signal.Signals(-result.returncode).name
        raise ArtifactError(
            f"{path}: {library} crashed ({signal_name}) parsing model {version}: {reason}; "
            "the file is damaged, retrain"
        )
    raise ArtifactError(f"{path} is not a usable model {version}: {reason}; retrain")


def fingerprint(models_dir: Path) -> tuple[object, ...]:
    """What CURRENT and the version it names look like on disk: (name, size, mtime_ns,
    inode) of each file. A refused version is retried only once this changes."""

    def entry(path: Path) -> tuple[object, ...]:
        try:
            info = path.stat()
        except OSError as err:
            return (path.name, type(err).__name__)
        return (path.name, info.st_size, info.st_mtime_ns, info.st_ino)

    pointer = models_dir / CURRENT_POINTER
    parts: list[object] = [entry(pointer)]
    try:
        version = _read(pointer, MAX_POINTER_BYTES).decode("utf-8").strip()
        _check_version_name(version, pointer)
    except (ArtifactError, UnicodeDecodeError):
        return tuple(parts)
    directory = models_dir / version
    parts.append(entry(directory))
    try:
        parts.extend(entry(child) for child in sorted(directory.iterdir()))
    except OSError as err:
        parts.append(type(err).__name__)
    return tuple(parts)


class ServedModel:
    """The model in service, swapped for a newer version once it has been verified.

    `refresh()` follows the CURRENT pointer; a version that fails verification is
    refused and the model already in service keeps serving. The refusal is remembered
    with the files' fingerprint: not retried (nor logged again) every poll, but
    retried as soon as any of its files, or CURRENT, changes.
    """

    def __init__(self, models_dir: Path, model: Model) -> None:
        self.models_dir = models_dir
        self.model = model
        self._seen: tuple[object, ...] | None = None
        self._older: Model | None = None

    def __call__(self) -> Model:
        return self.model

    def version(self, version: str) -> Model:
        """A version by name: the served one, or one loaded (and verified) from the
        directory, kept while it is asked for (batches committed in Kafka and not in
        the store name the version that scored them). Raises ArtifactError."""
        if version == self.model.version:
            return self.model
        if self._older is None or self._older.version != version:
            self._older = load_model(self.models_dir, version)
        return self._older

    def refresh(self) -> tuple[str, str] | None:
        """Check CURRENT; returns ("loaded" | "refused", message) when something changed.

        Never raises: this runs on the worker's timer, where an exception would stop
        the worker, and a bad artifact must only cost the new version."""
        seen = fingerprint(self.models_dir)
        if seen == self._seen:
            return None
        self._seen = seen
        version = "CURRENT"
        try:
            version = current_version(self.models_dir)
            if version == self.model.version:
                return None
            model = load_model(self.models_dir, version)
        except ArtifactError as err:
            return self._refused(version, str(err))
        except Exception as err:  # a defect load_model does not know yet
            return self._refused(version, f"unexpected {type(err).__name__}: {err}")
        previous, self.model = self.model.version, model
        return "loaded", f"now serving model {version} (was {previous})"

    def _refused(self, version: str, reason: str) -> tuple[str, str]:
        return "refused", f"kept model {self.model.version}; refused {version}: {reason}"
