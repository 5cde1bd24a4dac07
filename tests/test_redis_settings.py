"""Redis URLs and TLS settings: passwords never reach a message, TLS files are never
silently unused. No services needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_app.redis_client import connect, scrubbed
from stream_app.settings import Settings, SettingsError, redacted


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://churn:s3cret@127.0.0.1:6379/0", "redis://churn:***@127.0.0.1:6379/0"),
        ("rediss://:s3cret@localhost/0", "rediss://:***@localhost/0"),
        ("redis://churn:p@ss:w@rd@host:1/0", "redis://churn:***@host:1/0"),
        ("redis://churn:s3cret@host:notaport/0", "redis://churn:***@host:notaport/0"),
        ("redis://host/0?password=s3cret&db=1", "redis://host/0?password=***&db=1"),
        ("redis://u:s3cret@[::1/0", "redis://***"),
    ],
)
def test_redacted_url_keeps_everything_but_the_password(url: str, shown: str) -> None:
    assert redacted(url) == shown


def test_scrubbed_removes_the_password_in_any_encoding() -> None:
    url = "redis://churn:p%40ss%2Fword@host/0"
    text = "auth p@ss/word failed; url had p%40ss%2Fword"
    assert scrubbed(text, url) == "auth *** failed; url had ***"


def test_a_bad_redis_url_is_reported_without_its_password() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"REDIS_URL": "http://churn:s3cret@127.0.0.1:6379/0"})
    assert "s3cret" not in str(raised.value)
    assert "http://churn:***@127.0.0.1:6379/0" in str(raised.value)


def test_tls_files_with_a_plain_redis_url_are_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read")
    with pytest.raises(SettingsError, match="not rediss://") as raised:
        Settings.from_env(
            {"REDIS_URL": "redis://u:s3cret@host:6379/0", "CHURN_REDIS_SSL_CA_FILE": str(ca)}
        )
    assert "s3cret" not in str(raised.value)
    with pytest.raises(ValueError, match="not rediss://"):
        connect("redis://host:6379/0", ca_file=ca)


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("not read")
    with pytest.raises(SettingsError, match="go together"):
        Settings.from_env(
            {"REDIS_URL": "rediss://host:6379/0", "CHURN_REDIS_SSL_CERT_FILE": str(cert)}
        )
