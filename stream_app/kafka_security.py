"""How every Kafka client of the product connects, from one place: the settings
CHURN_KAFKA_SECURITY_PROTOCOL, CHURN_KAFKA_SASL_* and CHURN_KAFKA_SSL_* turned into
the confluent-kafka configuration (publisher, log reader, admin, demo, simulator) and
into Faust's broker credentials (the worker's aiokafka consumer and producer).

Both are checked at start (`check`): a combination that cannot work is a
SettingsError saying what to set. The password is never part of a message.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from stream_app.settings import Settings, SettingsError

if TYPE_CHECKING:  # only the Faust engine needs Faust: the other never imports it
    from faust.types.auth import CredentialsT

# confluent-kafka's configuration dict (its stubs want str | int | float | bool values,
# callbacks included in practice).
KafkaConfig = dict[str, Any]

TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


def check(settings: Settings) -> None:
    """Raise SettingsError when the Kafka security settings cannot work together, or
    a certificate or key file cannot be read."""
    protocol = settings.kafka_security_protocol
    where = f"CHURN_KAFKA_SECURITY_PROTOCOL={protocol}"
    if protocol in SASL_PROTOCOLS:
        missing = [
            name
            for name, value in (
                ("CHURN_KAFKA_SASL_USERNAME", settings.kafka_sasl_username),
                ("CHURN_KAFKA_SASL_PASSWORD", settings.kafka_sasl_password),
            )
            if not value
        ]
        if missing:
            raise SettingsError(f"{where} logs in with SASL: set {' and '.join(missing)}")
    elif settings.kafka_sasl_username or settings.kafka_sasl_password:
        # Credentials that would be silently ignored are a mistake somewhere.
        raise SettingsError(
            f"CHURN_KAFKA_SASL_USERNAME/PASSWORD are set but {where} does not use them: "
            "set CHURN_KAFKA_SECURITY_PROTOCOL to SASL_SSL or SASL_PLAINTEXT, or unset them"
        )
    files = _ssl_files(settings)
    if protocol not in TLS_PROTOCOLS and files:
        raise SettingsError(
            f"{' and '.join(files)} {'is' if len(files) == 1 else 'are'} set but {where} "
            "does not use TLS: "
            "set CHURN_KAFKA_SECURITY_PROTOCOL to SSL or SASL_SSL, or unset them"
        )
    if (settings.kafka_ssl_cert_file is None) != (settings.kafka_ssl_key_file is None):
        raise SettingsError(
            "mutual TLS needs both CHURN_KAFKA_SSL_CERT_FILE and CHURN_KAFKA_SSL_KEY_FILE"
        )
    if protocol in TLS_PROTOCOLS:
        ssl_context(settings)  # reads every file now, not at the first connection


def confluent_config(settings: Settings) -> KafkaConfig:
    """The confluent-kafka (librdkafka) configuration: brokers and security."""
    protocol = settings.kafka_security_protocol
    config: KafkaConfig = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": protocol.lower(),
    }
    if protocol in SASL_PROTOCOLS:
        config["sasl.mechanisms"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password
    if protocol in TLS_PROTOCOLS:
        for key, path in (
            ("ssl.ca.location", settings.kafka_ssl_ca_file),
            ("ssl.certificate.location", settings.kafka_ssl_cert_file),
            ("ssl.key.location", settings.kafka_ssl_key_file),
        ):
            if path is not None:
                config[key] = str(path)
    return config


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's `broker_credentials` (None for PLAINTEXT). SASLCredentials with an SSL
    context is SASL_SSL; aiokafka does SCRAM-SHA-256/512 and PLAIN itself."""
    import faust  # here: the confluent engine imports this module and not Faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=ssl_context(settings) if protocol == "SASL_SSL" else None,
    )


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """Verifies the brokers against the CA file (else the system's CAs), host names
    included; presents the client certificate when one is set."""
    ca = settings.kafka_ssl_ca_file
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if ca is None else str(ca)
        )
    except OSError as err:
        raise SettingsError(f"CHURN_KAFKA_SSL_CA_FILE={ca}: {_reason(err)}") from None
    cert, key = settings.kafka_ssl_cert_file, settings.kafka_ssl_key_file
    if cert is not None and key is not None:
        try:
            context.load_cert_chain(str(cert), str(key))
        except OSError as err:
            raise SettingsError(
                f"CHURN_KAFKA_SSL_CERT_FILE={cert} / CHURN_KAFKA_SSL_KEY_FILE={key}: "
                f"{_reason(err)} (PEM certificate and its unencrypted private key)"
            ) from None
    return context


def _ssl_files(settings: Settings) -> list[str]:
    return [
        env
        for env, path in (
            ("CHURN_KAFKA_SSL_CA_FILE", settings.kafka_ssl_ca_file),
            ("CHURN_KAFKA_SSL_CERT_FILE", settings.kafka_ssl_cert_file),
            ("CHURN_KAFKA_SSL_KEY_FILE", settings.kafka_ssl_key_file),
        )
        if path is not None
    ]


def _reason(err: OSError) -> str:
    if isinstance(err, PermissionError):
        return "not readable by this user"
    return err.strerror or str(err)  # ssl.SSLError is an OSError too


def describe(settings: Settings) -> str:
    """One line for logs: how the clients connect, never the password."""
    parts = [settings.kafka_security_protocol]
    if settings.kafka_security_protocol in SASL_PROTOCOLS:
        parts.append(f"{settings.kafka_sasl_mechanism} as {settings.kafka_sasl_username}")
    if settings.kafka_ssl_ca_file is not None:
        parts.append(f"CA {settings.kafka_ssl_ca_file}")
    if settings.kafka_ssl_cert_file is not None:
        parts.append(f"client certificate {settings.kafka_ssl_cert_file}")
    return ", ".join(parts)
