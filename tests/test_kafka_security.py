"""The Kafka security settings: what each protocol turns into for confluent-kafka and
for Faust, and the combinations refused at start (without the password in the message)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import faust
import pytest

from stream_app import kafka_security
from stream_app.settings import Settings, SettingsError
from tests.support import ROOT

PASSWORD = "s3cret-pa55"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    subprocess.run([ROOT / "scripts" / "certs.sh", directory], check=True, capture_output=True)
    return directory


def settings(**env: str) -> Settings:
    return Settings.from_env(env)


def sasl_ssl(certs: Path, **env: str) -> Settings:
    base = {
        "CHURN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CHURN_KAFKA_SASL_USERNAME": "churn",
        "CHURN_KAFKA_SASL_PASSWORD": PASSWORD,
        "CHURN_KAFKA_SSL_CA_FILE": str(certs / "ca.pem"),
    }
    return settings(**{**base, **env})


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    plain = settings(KAFKA_BOOTSTRAP_SERVERS="k1:9092,k2:9092")
    kafka_security.check(plain)
    assert kafka_security.confluent_config(plain) == {
        "bootstrap.servers": "k1:9092,k2:9092",
        "security.protocol": "plaintext",
    }
    assert kafka_security.faust_credentials(plain) is None


def test_sasl_ssl_reaches_confluent_and_faust_alike(certs: Path) -> None:
    secured = sasl_ssl(
        certs,
        CHURN_KAFKA_SSL_CERT_FILE=str(certs / "client.pem"),
        CHURN_KAFKA_SSL_KEY_FILE=str(certs / "client.key"),
    )
    kafka_security.check(secured)
    assert kafka_security.confluent_config(secured) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "sasl_ssl",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "churn",
        "sasl.password": PASSWORD,
        "ssl.ca.location": str(certs / "ca.pem"),
        "ssl.certificate.location": str(certs / "client.pem"),
        "ssl.key.location": str(certs / "client.key"),
    }
    credentials = kafka_security.faust_credentials(secured)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("churn", PASSWORD)
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    assert credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert credentials.ssl_context.check_hostname
    assert PASSWORD not in repr(credentials) and PASSWORD not in repr(secured)
    assert PASSWORD not in kafka_security.describe(secured)


def test_ssl_alone_gives_faust_an_ssl_context(certs: Path) -> None:
    tls = settings(
        CHURN_KAFKA_SECURITY_PROTOCOL="SSL", CHURN_KAFKA_SSL_CA_FILE=str(certs / "ca.pem")
    )
    kafka_security.check(tls)
    assert isinstance(kafka_security.faust_credentials(tls), faust.SSLCredentials)
    assert "sasl.username" not in kafka_security.confluent_config(tls)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"CHURN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "CHURN_KAFKA_SASL_USERNAME": "churn"},
            "set CHURN_KAFKA_SASL_PASSWORD",
        ),
        (
            {"CHURN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
            "set CHURN_KAFKA_SASL_USERNAME and CHURN_KAFKA_SASL_PASSWORD",
        ),
        ({"CHURN_KAFKA_SASL_PASSWORD": PASSWORD}, "does not use them"),
    ],
)
def test_sasl_without_credentials_or_credentials_without_sasl_are_refused(
    env: dict[str, str], says: str
) -> None:
    with pytest.raises(SettingsError, match=says) as refused:
        kafka_security.check(settings(**env))
    assert PASSWORD not in str(refused.value)


def test_tls_files_without_tls_are_refused(certs: Path) -> None:
    with pytest.raises(SettingsError, match="does not use TLS"):
        kafka_security.check(settings(CHURN_KAFKA_SSL_CA_FILE=str(certs / "ca.pem")))


def test_a_certificate_without_its_key_is_refused(certs: Path) -> None:
    with pytest.raises(SettingsError, match="needs both"):
        kafka_security.check(sasl_ssl(certs, CHURN_KAFKA_SSL_CERT_FILE=str(certs / "client.pem")))


def test_files_that_are_not_a_ca_or_not_a_key_are_refused_naming_the_setting(
    certs: Path, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(SettingsError, match="CHURN_KAFKA_SSL_CA_FILE="):
        kafka_security.check(sasl_ssl(certs, CHURN_KAFKA_SSL_CA_FILE=str(garbage)))
    with pytest.raises(SettingsError, match="CHURN_KAFKA_SSL_KEY_FILE="):
        kafka_security.check(
            sasl_ssl(
                certs,
                CHURN_KAFKA_SSL_CERT_FILE=str(certs / "client.pem"),
                CHURN_KAFKA_SSL_KEY_FILE=str(garbage),
            )
        )


def test_a_missing_file_is_refused_when_the_settings_are_read() -> None:
    with pytest.raises(SettingsError, match=r"CHURN_KAFKA_SSL_CA_FILE=.*no such file"):
        settings(CHURN_KAFKA_SECURITY_PROTOCOL="SSL", CHURN_KAFKA_SSL_CA_FILE="/nowhere/ca.pem")
