"""The models directory as a registry: its versions, which one is served, how it came
to be served, and the way back.

<models dir>/
    CURRENT             the served version (scoring/artifact.py; the worker follows it)
    PROMOTIONS.json     every move of CURRENT: promote or rollback, when, from, to, why
    .lock               held while CURRENT and PROMOTIONS.json change
    <version>/          an artifact (scoring/artifact.py), and
        gate.json       the retraining gate's decision on it (training/gate.py), if any

Training writes a version as a candidate. Only `promote` (by the gate or by hand) and
`rollback` move CURRENT, and each first verifies the version with load_model, the way
the worker will. Every file here is replaced atomically (written beside, renamed), so a
reader never sees half of one.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from scoring.artifact import (
    CURRENT_POINTER,
    METADATA_FILE,
    VERSION_NAME,
    ArtifactError,
    current_version,
    load_model,
    point_current,
)
from training.gate import Decision

PROMOTIONS_FILE = "PROMOTIONS.json"
GATE_FILE = "gate.json"
LOCK_FILE = ".lock"

Status = Literal["current", "previous", "served", "refused", "candidate"]


class RegistryError(Exception):
    """A promotion or rollback that cannot be done; the message says why."""


@dataclass(frozen=True)
class Move:
    """One move of CURRENT."""

    at: str
    action: Literal["promote", "rollback"]
    version: str  # what CURRENT names after the move
    previous: str | None  # what it named before
    reason: str


@dataclass(frozen=True)
class Version:
    """A version in the models directory, for `models list`."""

    name: str
    status: Status
    metadata: dict[str, Any] | None  # None: metadata.json unreadable
    decision: Decision | None  # the gate's, if it judged this version


def write_json(path: Path, data: Any) -> None:
    """Replace `path` with `data` as JSON, atomically and durably."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as file:
        json.dump(data, file, indent=2, sort_keys=True)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def served(models_dir: Path) -> str | None:
    """The version CURRENT names; None when there is none (or it names nothing valid)."""
    if not (models_dir / CURRENT_POINTER).exists():
        return None
    try:
        return current_version(models_dir)
    except ArtifactError:
        return None


def moves(models_dir: Path) -> list[Move]:
    """The promotion history, oldest first."""
    path = models_dir / PROMOTIONS_FILE
    if not path.exists():
        return []
    try:
        return [Move(**entry) for entry in json.loads(path.read_text())]
    except (ValueError, TypeError) as err:
        raise RegistryError(f"{path} is damaged ({err}): fix or remove it") from err


def served_stack(history: list[Move], current: str | None) -> list[str]:
    """The versions served one after the other, CURRENT last: what rollback walks back.

    A promotion pushes, a rollback pops. A CURRENT moved by hand (outside this module)
    counts as served after what the history last recorded."""
    stack: list[str] = []
    for move in history:
        if move.previous is not None and stack[-1:] != [move.previous]:
            stack.append(move.previous)
        if move.action == "rollback" and stack:
            stack.pop()
        if stack[-1:] != [move.version]:
            stack.append(move.version)
    if current is not None and stack[-1:] != [current]:
        stack.append(current)
    return stack


@contextmanager
def _locked(models_dir: Path) -> Iterator[None]:
    # One writer at a time (a scheduled retrain and a person promoting): the history is
    # read, extended and replaced as a whole.
    if not models_dir.is_dir():
        raise RegistryError(f"{models_dir} is not a directory: name the models directory")
    with (models_dir / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _move(
    models_dir: Path,
    action: Literal["promote", "rollback"],
    version: str,
    previous: str | None,
    reason: str,
) -> None:
    """Verify `version`, point CURRENT at it and record the move from `previous` (the
    version CURRENT names, read by the caller under the same lock)."""
    if not (models_dir / version).is_dir():
        raise RegistryError(f"there is no version {version} in {models_dir} (see `models list`)")
    load_model(models_dir, version)  # ArtifactError: CURRENT never names a broken version
    move = Move(
        at=datetime.now(UTC).isoformat(timespec="seconds"),
        action=action,
        version=version,
        previous=previous,
        reason=reason,
    )
    history = moves(models_dir)
    point_current(models_dir, version)
    # CURRENT first: a crash in between leaves a move unrecorded, which served_stack
    # reads as a move by hand, never a recorded move that did not happen.
    write_json(models_dir / PROMOTIONS_FILE, [asdict(m) for m in [*history, move]])


def promote(models_dir: Path, version: str, reason: str) -> str | None:
    """Serve `version` once load_model has verified it; returns the version it replaced.

    Raises ArtifactError (the version is damaged or missing) or RegistryError."""
    with _locked(models_dir):
        previous = served(models_dir)
        if previous == version:
            raise RegistryError(f"{version} is already the current version")
        _move(models_dir, "promote", version, previous, reason)
        return previous


def rollback(models_dir: Path, reason: str = "rolled back") -> tuple[str, str]:
    """Serve again the version served before the current one; returns (from, to)."""
    with _locked(models_dir):
        current = served(models_dir)
        stack = served_stack(moves(models_dir), current)
        if current is None or len(stack) < 2:
            raise RegistryError(
                f"nothing to roll back to in {models_dir}: no version was served before "
                f"{current or 'CURRENT (there is none)'}; promote one by name instead"
            )
        _move(models_dir, "rollback", stack[-2], current, reason)
        return current, stack[-2]


def record_decision(models_dir: Path, decision: Decision) -> Path:
    """Write the gate's decision beside the version it judged."""
    path = models_dir / decision.challenger / GATE_FILE
    write_json(path, decision.to_json())
    return path


def versions(models_dir: Path) -> list[Version]:
    """Every version directory, oldest first, with its status."""
    current = served(models_dir)
    history = moves(models_dir)
    stack = served_stack(history, current)
    ever_served = {current, *(m.version for m in history), *(m.previous for m in history)}
    found = []
    for directory in sorted(models_dir.iterdir()) if models_dir.is_dir() else []:
        if not directory.is_dir() or not VERSION_NAME.fullmatch(directory.name):
            continue
        metadata = _read_json(directory / METADATA_FILE)
        gate = _read_json(directory / GATE_FILE)
        decision = None
        if gate is not None:
            try:
                decision = Decision.from_json(gate)
            except (KeyError, TypeError, ValueError):
                decision = None
        name = directory.name
        status: Status
        if name == current:
            status = "current"
        elif stack[-2:-1] == [name]:
            status = "previous"
        elif name in ever_served:
            status = "served"
        elif decision is not None and not decision.promoted:
            status = "refused"
        else:
            status = "candidate"
        found.append(Version(name, status, metadata, decision))
    return sorted(found, key=lambda v: (str((v.metadata or {}).get("trained_at", "")), v.name))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
