"""Every setting of the worker and the demo, read once from the environment.

The table in README.md lists the same variables; `Settings.describe()` prints it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class SettingsError(ValueError):
    """A setting has a value the program cannot run with; the message says which."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be a whole number, 0 or more")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError("must be a number in [0, 1)")
    return value


def _bootstrap(text: str) -> str:
    for server in text.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("must be host:port[,host:port...]")
    return text


def _redis_url(text: str) -> str:
    if urlparse(text).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis:// URL, e.g. redis://127.0.0.1:6379/0")
    return text


def _log_level(text: str) -> str:
    if text.lower() not in ("debug", "info", "warn", "error", "crit"):
        raise ValueError("must be one of debug, info, warn, error, crit")
    return text.lower()


def _optional_path(text: str) -> Path | None:
    if not text:
        return None
    path = Path(text)
    if not path.is_file():
        raise ValueError("no such file")
    return path


def load_actions(path: Path | None) -> dict[str, tuple[str, ...]] | None:
    """Recommended actions per risk level from a JSON file (None: the defaults)."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
        actions = {level: tuple(str(a) for a in items) for level, items in data.items()}
    except (OSError, ValueError, AttributeError, TypeError) as err:
        raise SettingsError(
            f"CHURN_ACTIONS_FILE={path}: not a JSON object of lists ({err})"
        ) from err
    if set(actions) != {"LOW", "MEDIUM", "HIGH"}:
        raise SettingsError(f"CHURN_ACTIONS_FILE={path}: needs exactly LOW, MEDIUM and HIGH")
    return actions


@dataclass(frozen=True)
class Option:
    env: str
    default: str
    parse: Callable[[str], Any]
    help: str


OPTIONS: dict[str, Option] = {
    "kafka_bootstrap_servers": Option(
        "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092", _bootstrap, "Kafka brokers"
    ),
    "redis_url": Option("REDIS_URL", "redis://127.0.0.1:6379/0", _redis_url, "Redis server"),
    "app_id": Option(
        "CHURN_APP_ID", "churn-risk-scorer", str, "Faust app id (= Kafka consumer group)"
    ),
    "models_dir": Option(
        "CHURN_MODELS_DIR", "artifacts/models", Path, "model artifacts (CURRENT pointer)"
    ),
    "batch_size": Option(
        "CHURN_BATCH_SIZE", "500", _positive_int, "most events processed per batch"
    ),
    "batch_wait_ms": Option(
        "CHURN_BATCH_WAIT_MS", "10", _positive_int, "longest wait to fill a batch"
    ),
    "max_idle_ms": Option(
        "CHURN_MAX_IDLE_MS",
        "50",
        _non_negative_int,
        "longest a caught-up input holds the others back (event-time order at the live edge)",
    ),
    "session_timeout_seconds": Option(
        "CHURN_SESSION_TIMEOUT_SECONDS",
        "30",
        _positive_int,
        "a worker silent this long loses its partitions to the others",
    ),
    "hysteresis": Option(
        "CHURN_HYSTERESIS", "0.05", _fraction, "margin below a cut-off before a risk drops"
    ),
    "partitions": Option(
        "CHURN_TOPIC_PARTITIONS", "4", _positive_int, "partitions of topics the app creates"
    ),
    "topic_prefix": Option(
        "CHURN_TOPIC_PREFIX", "", str, "prefix of every topic name (shared clusters, tests)"
    ),
    "redis_namespace": Option("CHURN_REDIS_NAMESPACE", "churn", str, "prefix of every Redis key"),
    "model_poll_seconds": Option(
        "CHURN_MODEL_POLL_SECONDS",
        "10",
        _positive_int,
        "how often CURRENT is checked for a new model",
    ),
    "actions_file": Option(
        "CHURN_ACTIONS_FILE", "", _optional_path, "JSON {LOW|MEDIUM|HIGH: [actions]} to override"
    ),
    "web_port": Option("CHURN_WEB_PORT", "6066", _positive_int, "health, metrics and lookup"),
    "log_level": Option("CHURN_LOG_LEVEL", "info", _log_level, "worker log level"),
    "data_dir": Option("CHURN_DATA_DIR", "data", Path, "demo's simulated shop database"),
}


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap_servers: str
    redis_url: str
    app_id: str
    models_dir: Path
    batch_size: int
    batch_wait_ms: int
    max_idle_ms: int
    session_timeout_seconds: int
    hysteresis: float
    partitions: int
    topic_prefix: str
    redis_namespace: str
    model_poll_seconds: int
    actions_file: Path | None
    web_port: int
    log_level: str
    data_dir: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check every setting; raise SettingsError naming the bad one."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, option in OPTIONS.items():
            text = environ.get(option.env, option.default)
            try:
                values[name] = option.parse(text)
            except ValueError as err:
                raise SettingsError(f"{option.env}={text!r}: {err}") from err
        return cls(**values)

    @staticmethod
    def describe() -> str:
        """The configuration table, as Markdown."""
        rows = ["| variable | default | meaning |", "|---|---|---|"]
        rows += [f"| `{o.env}` | `{o.default}` | {o.help} |" for o in OPTIONS.values()]
        return "\n".join(rows)


assert [f.name for f in fields(Settings)] == list(OPTIONS), "Settings and OPTIONS differ"
