"""Every setting of the worker and the demo, read once from the environment.

The table in docs/configuration.md lists the same variables; `Settings.describe()`
prints it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit, urlunsplit

from feature_store.definitions import LARGEST_WINDOW_DAYS
from scoring.decoding import MIN_EVENT_TIME_SETTING, Limits
from scoring.drift import DriftConfig
from scoring.inactivity import RESCORE_AFTER_DAYS
from scoring.risk import (
    ACTION_COST_SETTING,
    HOLDOUT_SALT_SETTING,
    HOLDOUT_SHARE_SETTING,
    VALUE_PER_SPEND_SETTING,
    Holdout,
    ValueTargeting,
)

# A `password=` argument of a URL's query, which redis-py reads too.
QUERY_PASSWORD = re.compile(r"(?i)((?:^|&)password=)[^&]*")


def redacted(url: str) -> str:
    """The URL without its password (in the user part or a `password=` query
    argument, which redis-py also reads), for messages and logs. Never raises: a
    URL too broken to parse hides everything after the scheme."""
    try:
        parts = urlsplit(url)
        # rpartition, as urlsplit does: a password may hold a raw '@'.
        userinfo, at, hostport = parts.netloc.rpartition("@")
        if at and ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
        else:
            netloc = parts.netloc
        query = QUERY_PASSWORD.sub(r"\1***", parts.query)
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return url.split("://", 1)[0] + "://***"


# The shortest retention: past the last rescore and the longest feature window.
FORGET_AFTER_AT_LEAST = max(LARGEST_WINDOW_DAYS, RESCORE_AFTER_DAYS[-1])


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


def _optional_count(text: str) -> int | None:
    return _positive_int(text) if text else None


def _retention(text: str) -> int:
    days = _non_negative_int(text)
    if 0 < days <= FORGET_AFTER_AT_LEAST:
        raise ValueError(
            f"must be 0 (kept for good) or more than {FORGET_AFTER_AT_LEAST} days: past "
            "every rescore and every feature window, so only lifetime features are lost"
        )
    return days


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError("must be a number in [0, 1)")
    return value


def _nonblank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError("must be a number in [0, 1]")
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


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse


def _date(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError("must be a date, YYYY-MM-DD") from None


def _positive_number(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise ValueError("must be a number above 0")
    return value


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise ValueError("must be on or off")
    return text == "on"


GUARANTEES = ("exactly_once", "at_least_once")
ENGINES = ("faust", "confluent")
TARGETINGS = ("cutoff", "value")


def _targeting(text: str) -> str:
    if text not in TARGETINGS:
        raise ValueError(f"must be one of {', '.join(TARGETINGS)}")
    return text


def _engine(text: str) -> str:
    if text not in ENGINES:
        raise ValueError(f"must be one of {', '.join(ENGINES)}")
    return text


def _guarantee(text: str) -> str:
    if text not in GUARANTEES:
        raise ValueError(f"must be one of {', '.join(GUARANTEES)}")
    return text


def _optional_time(text: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("must be an ISO-8601 date or time, e.g. 2026-03-01") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
        "CHURN_BATCH_SIZE", "1000", _positive_int, "most events processed per batch"
    ),
    "batch_wait_ms": Option(
        "CHURN_BATCH_WAIT_MS", "10", _positive_int, "longest wait to fill a batch"
    ),
    "engine": Option(
        "CHURN_ENGINE",
        "faust",
        _engine,
        "what consumes the input topics: faust (the default), or confluent, a plain "
        "confluent-kafka consumer without Faust's per-message cost; the same outputs",
    ),
    "processing_guarantee": Option(
        "CHURN_PROCESSING_GUARANTEE",
        "exactly_once",
        _guarantee,
        "exactly_once: each batch's outputs in one Kafka transaction, fenced (a read_committed "
        "reader sees each change once); at_least_once: no transactions (a batch processed "
        "again after a crash is published again, with the same ids)",
    ),
    "max_idle_ms": Option(
        "CHURN_MAX_IDLE_MS",
        "50",
        _non_negative_int,
        "how long an event waits for a caught-up input that could still deliver an earlier one "
        "(event-time order at the live edge)",
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
    "high_targeting": Option(
        "CHURN_HIGH_TARGETING",
        "cutoff",
        _targeting,
        "what makes HIGH: cutoff (the model's HIGH cut-off) or value (probability x value > "
        "cost: CHURN_VALUE_PER_SPEND, CHURN_ACTION_COST)",
    ),
    "value_per_spend": Option(
        VALUE_PER_SPEND_SETTING,
        "4",
        _positive_number,
        "value targeting: a customer's value is this times their spend over 90 days",
    ),
    "action_cost": Option(
        ACTION_COST_SETTING,
        "20",
        _positive_number,
        "value targeting: what the HIGH actions cost per customer (the orders' currency)",
    ),
    "holdout_share": Option(
        HOLDOUT_SHARE_SETTING,
        str(Holdout.share),
        _fraction,
        "share of customers (by a hash of the id and CHURN_HOLDOUT_SALT) held out of the HIGH "
        "campaign to measure its uplift: flagged held_out, not sent on churn-risk-high (0: none)",
    ),
    "holdout_salt": Option(
        HOLDOUT_SALT_SETTING,
        Holdout.salt,
        _nonblank,
        "draws the holdout: a new salt holds out other customers (a new measurement period)",
    ),
    "performance_sample": Option(
        "CHURN_PERFORMANCE_SAMPLE",
        "0.1",
        _share,
        "share of customers (by a hash of the id) whose scores are kept for realised performance",
    ),
    "performance_refresh_seconds": Option(
        "CHURN_PERFORMANCE_REFRESH_SECONDS",
        "60",
        _positive_number,
        "how often the realised performance and campaign gauges are read back from Redis",
    ),
    "retention_days": Option(
        "CHURN_RETENTION_DAYS",
        "0",
        _retention,
        "days of silence after which a customer's state is deleted (0: kept for good)",
    ),
    "partitions": Option(
        "CHURN_TOPIC_PARTITIONS", "4", _positive_int, "partitions of topics the app creates"
    ),
    "replication_factor": Option(
        "CHURN_REPLICATION_FACTOR",
        "",
        _optional_count,
        "replicas of each topic the app creates; empty: the broker's default (warned below 3)",
    ),
    "min_insync_replicas": Option(
        "CHURN_MIN_INSYNC_REPLICAS",
        "",
        _optional_count,
        "min.insync.replicas of each topic the app creates; empty: the broker's (warned below 2)",
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
    "min_event_time": Option(
        MIN_EVENT_TIME_SETTING,
        "2000-01-01",
        _date,
        "events dated earlier are dead-lettered; training refuses a history that has any",
    ),
    "max_clock_skew_seconds": Option(
        "CHURN_MAX_CLOCK_SKEW_SECONDS",
        "3600",
        _non_negative_int,
        "events dated further ahead of the message's broker timestamp are dead-lettered",
    ),
    "max_message_bytes": Option(
        "CHURN_MAX_MESSAGE_BYTES",
        "262144",
        _positive_int,
        "larger input messages (key + value) are dead-lettered without being parsed",
    ),
    "dead_letter_value_bytes": Option(
        "CHURN_DEAD_LETTER_VALUE_BYTES",
        "16384",
        _positive_int,
        "how much of a dead-lettered value is kept (its full length and sha256 always are)",
    ),
    "kafka_security_protocol": Option(
        "CHURN_KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        _one_of("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
        "how every Kafka client connects",
    ),
    "kafka_sasl_mechanism": Option(
        "CHURN_KAFKA_SASL_MECHANISM",
        "SCRAM-SHA-512",
        _one_of("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"),
        "SASL mechanism (SASL_* protocols)",
    ),
    "kafka_sasl_username": Option("CHURN_KAFKA_SASL_USERNAME", "", str, "SASL user"),
    "kafka_sasl_password": Option(
        "CHURN_KAFKA_SASL_PASSWORD", "", str, "SASL password (never logged)"
    ),
    "kafka_ssl_ca_file": Option(
        "CHURN_KAFKA_SSL_CA_FILE",
        "",
        _optional_path,
        "CA certificate (PEM) the brokers' certificates are checked against",
    ),
    "kafka_ssl_cert_file": Option(
        "CHURN_KAFKA_SSL_CERT_FILE", "", _optional_path, "client certificate (PEM), for mutual TLS"
    ),
    "kafka_ssl_key_file": Option(
        "CHURN_KAFKA_SSL_KEY_FILE", "", _optional_path, "client private key (PEM), for mutual TLS"
    ),
    "redis_ssl_ca_file": Option(
        "CHURN_REDIS_SSL_CA_FILE", "", _optional_path, "CA certificate (PEM) for a rediss:// URL"
    ),
    "redis_ssl_cert_file": Option(
        "CHURN_REDIS_SSL_CERT_FILE", "", _optional_path, "client certificate (PEM), for mutual TLS"
    ),
    "redis_ssl_key_file": Option(
        "CHURN_REDIS_SSL_KEY_FILE", "", _optional_path, "client private key (PEM), for mutual TLS"
    ),
    "web_bind": Option("CHURN_WEB_BIND", "127.0.0.1", str, "address the web server listens on"),
    "web_port": Option("CHURN_WEB_PORT", "6066", _positive_int, "health, metrics, lookup, predict"),
    "web_token": Option(
        "CHURN_WEB_TOKEN",
        "",
        str,
        "bearer token the lookup, /predict and the work-list require (unset: all are off; "
        "never logged)",
    ),
    "worklist_size": Option(
        "CHURN_WORKLIST_SIZE",
        "1000",
        _non_negative_int,
        "customers each partition's work-list index keeps, the most likely to churn "
        "(0: no index, the /worklist page is empty)",
    ),
    "drift_monitor": Option(
        "CHURN_DRIFT_MONITOR",
        "on",
        _on_off,
        "the drift monitor (off, or a model without a drift reference: nothing counted or judged)",
    ),
    "drift_slice_seconds": Option(
        "CHURN_DRIFT_SLICE_SECONDS",
        "3600",
        _positive_int,
        "event-time slice the drift monitor counts and judges by",
    ),
    "drift_window_slices": Option(
        "CHURN_DRIFT_WINDOW_SLICES",
        "24",
        _positive_int,
        "slices in the sliding window compared with the training reference",
    ),
    "drift_raise_above": Option(
        "CHURN_DRIFT_RAISE_ABOVE",
        "0.2",
        _positive_number,
        "a feature's drift alert is raised once its PSI stays above this ...",
    ),
    "drift_clear_below": Option(
        "CHURN_DRIFT_CLEAR_BELOW",
        "0.1",
        _positive_number,
        "... and cleared once it stays below this (lower: hysteresis) ...",
    ),
    "drift_mean_shift_raise_above": Option(
        "CHURN_DRIFT_MEAN_SHIFT_RAISE_ABOVE",
        "0.2",
        _positive_number,
        "the order amount's alert is also raised once its relative mean shift stays "
        "above this in magnitude ...",
    ),
    "drift_mean_shift_clear_below": Option(
        "CHURN_DRIFT_MEAN_SHIFT_CLEAR_BELOW",
        "0.1",
        _positive_number,
        "... and cleared once that and PSI both stay below their clear thresholds ...",
    ),
    "drift_consecutive_slices": Option(
        "CHURN_DRIFT_CONSECUTIVE_SLICES",
        "3",
        _positive_int,
        "... for this many judged slices in a row",
    ),
    "drift_min_scores": Option(
        "CHURN_DRIFT_MIN_SCORES",
        "200",
        _non_negative_int,
        "a window with fewer scores is not judged (alerts stay as they are)",
    ),
    "drift_since": Option(
        "CHURN_DRIFT_SINCE",
        "",
        _optional_time,
        "event time the drift monitor starts counting at (unset: at once); for a stream "
        "the group starts on without its history, whose first features are incomplete",
    ),
    "drift_interval_seconds": Option(
        "CHURN_DRIFT_INTERVAL_SECONDS",
        "10",
        _positive_number,
        "how often the worker owning partition 0 judges the slices the watermark passed",
    ),
    "tick_seconds": Option(
        "CHURN_TICK_SECONDS",
        "60",
        _non_negative_int,
        "how often the worker looks for quiet partitions to tick (`scoring.ticks`); 0: never",
    ),
    "tick_gap_seconds": Option(
        "CHURN_TICK_GAP_SECONDS",
        "3600",
        _positive_int,
        "event time a quiet partition may lag the group's latest before a tick moves it on",
    ),
    "log_level": Option("CHURN_LOG_LEVEL", "info", _log_level, "worker log level"),
    "data_dir": Option("CHURN_DATA_DIR", "data", Path, "demo's simulated shop database"),
}


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap_servers: str
    redis_url: str = field(repr=False)  # may hold a password
    app_id: str
    models_dir: Path
    batch_size: int
    batch_wait_ms: int
    engine: str
    processing_guarantee: str
    max_idle_ms: int
    session_timeout_seconds: int
    hysteresis: float
    high_targeting: str
    value_per_spend: float
    action_cost: float
    holdout_share: float
    holdout_salt: str
    performance_sample: float
    performance_refresh_seconds: float
    retention_days: int
    partitions: int
    replication_factor: int | None
    min_insync_replicas: int | None
    topic_prefix: str
    redis_namespace: str
    model_poll_seconds: int
    actions_file: Path | None
    min_event_time: datetime
    max_clock_skew_seconds: int
    max_message_bytes: int
    dead_letter_value_bytes: int
    kafka_security_protocol: str
    kafka_sasl_mechanism: str
    kafka_sasl_username: str
    kafka_sasl_password: str = field(repr=False)
    kafka_ssl_ca_file: Path | None
    kafka_ssl_cert_file: Path | None
    kafka_ssl_key_file: Path | None
    redis_ssl_ca_file: Path | None
    redis_ssl_cert_file: Path | None
    redis_ssl_key_file: Path | None
    web_bind: str
    web_port: int
    web_token: str = field(repr=False)
    worklist_size: int
    drift_monitor: bool
    drift_slice_seconds: int
    drift_window_slices: int
    drift_raise_above: float
    drift_clear_below: float
    drift_mean_shift_raise_above: float
    drift_mean_shift_clear_below: float
    drift_consecutive_slices: int
    drift_min_scores: int
    drift_since: datetime | None
    drift_interval_seconds: float
    tick_seconds: int
    tick_gap_seconds: int
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
                # A URL may carry a password: never echo it.
                shown = redacted(text) if option.parse is _redis_url else text
                raise SettingsError(f"{option.env}={shown!r}: {err}") from err
        settings = cls(**values)
        settings._check_redis_tls()
        try:
            settings.drift()
        except ValueError as err:
            raise SettingsError(f"CHURN_DRIFT_*: {err}") from err
        return settings

    def _check_redis_tls(self) -> None:
        files = {
            "CHURN_REDIS_SSL_CA_FILE": self.redis_ssl_ca_file,
            "CHURN_REDIS_SSL_CERT_FILE": self.redis_ssl_cert_file,
            "CHURN_REDIS_SSL_KEY_FILE": self.redis_ssl_key_file,
        }
        given = [env for env, path in files.items() if path]
        if given and urlparse(self.redis_url).scheme != "rediss":
            # Unused certificates would leave the traffic in clear without a word.
            raise SettingsError(
                f"{', '.join(given)} set, but REDIS_URL={redacted(self.redis_url)!r} is not "
                "rediss://: use rediss:// for TLS, or unset them"
            )
        if bool(self.redis_ssl_cert_file) != bool(self.redis_ssl_key_file):
            raise SettingsError(
                "CHURN_REDIS_SSL_CERT_FILE and CHURN_REDIS_SSL_KEY_FILE go together "
                "(a client certificate and its key)"
            )

    def targeting(self) -> ValueTargeting | None:
        """How HIGH is decided (`scoring.risk`): None for the model's cut-off."""
        if self.high_targeting == "cutoff":
            return None
        return ValueTargeting(self.value_per_spend, self.action_cost)

    def holdout(self) -> Holdout | None:
        """Who is left out of the HIGH campaign (`scoring.risk`): None for nobody."""
        return Holdout(self.holdout_share, self.holdout_salt) if self.holdout_share else None

    def limits(self) -> Limits:
        """The bounds on input messages (`scoring.decoding`)."""
        return Limits(
            min_event_time=self.min_event_time.timestamp(),
            max_clock_skew=float(self.max_clock_skew_seconds),
            max_message_bytes=self.max_message_bytes,
            dead_letter_value_bytes=self.dead_letter_value_bytes,
        )

    def drift(self) -> DriftConfig:
        """The drift monitor's configuration (`scoring.drift`)."""
        return DriftConfig(
            slice_seconds=self.drift_slice_seconds,
            window_slices=self.drift_window_slices,
            raise_above=self.drift_raise_above,
            clear_below=self.drift_clear_below,
            mean_shift_raise_above=self.drift_mean_shift_raise_above,
            mean_shift_clear_below=self.drift_mean_shift_clear_below,
            consecutive=self.drift_consecutive_slices,
            min_scores=self.drift_min_scores,
            since=None if self.drift_since is None else self.drift_since.timestamp(),
        )

    @staticmethod
    def describe() -> str:
        """The configuration table, as Markdown."""
        bar = "\\|"  # a | inside a table cell (GitHub and MkDocs alike)
        rows = ["| variable | default | meaning |", "|---|---|---|"]
        rows += [
            f"| `{o.env}` | `{o.default}` | {o.help.replace('|', bar)} |" for o in OPTIONS.values()
        ]
        return "\n".join(rows)


assert [f.name for f in fields(Settings)] == list(OPTIONS), "Settings and OPTIONS differ"
