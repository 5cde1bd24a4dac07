#!/usr/bin/env bash
# Entry point of the kafka service in docker-compose.yml (apache/kafka image).
#
# Starts the broker the image's own way (/etc/kafka/docker/run), then creates or updates
# the SCRAM-SHA-512 user the worker and the simulator log in as, from
# CHURN_KAFKA_SASL_USERNAME / CHURN_KAFKA_SASL_PASSWORD. It does so at every start, so a
# new password in .env takes effect on the next `docker compose up`.
#
# The user is created through the LOCAL listener, PLAINTEXT on 127.0.0.1:9094 inside
# this container only (not published, not reachable from the compose network): the
# broker has no user yet when it starts, so the first one cannot be created over SASL.
# The healthcheck reports healthy only once the user exists (the ready file).
set -euo pipefail

: "${CHURN_KAFKA_SASL_USERNAME:?set CHURN_KAFKA_SASL_USERNAME}"
: "${CHURN_KAFKA_SASL_PASSWORD:?set CHURN_KAFKA_SASL_PASSWORD}"
READY=/tmp/churn-kafka-ready
ADMIN=(--bootstrap-server 127.0.0.1:9094)
rm -f "$READY"

/etc/kafka/docker/run &
broker=$!
# This script is PID 1: pass a stop on to the broker, which then shuts down cleanly.
trap 'kill -TERM "$broker" 2>/dev/null || true' TERM INT

until /opt/kafka/bin/kafka-configs.sh "${ADMIN[@]}" --describe --entity-type users >/dev/null 2>&1; do
  kill -0 "$broker" 2>/dev/null || break # the broker exited: fall through to its status
  sleep 2
done

if kill -0 "$broker" 2>/dev/null; then
  # The password goes through a file readable by this user only, not the command line
  # (visible in `ps` on the host). A Java properties file, no brackets around the value
  # (only --add-config strips them); a backslash would be an escape: generate passwords
  # with `openssl rand -hex 32`.
  config=$(mktemp)
  chmod 600 "$config"
  printf 'SCRAM-SHA-512=iterations=8192,password=%s\n' "$CHURN_KAFKA_SASL_PASSWORD" >"$config"
  /opt/kafka/bin/kafka-configs.sh "${ADMIN[@]}" --alter --entity-type users \
    --entity-name "$CHURN_KAFKA_SASL_USERNAME" --add-config-file "$config"
  rm -f "$config"
  touch "$READY"
  echo "[compose-kafka] SCRAM-SHA-512 user '$CHURN_KAFKA_SASL_USERNAME' ready"
fi

# A trapped signal interrupts `wait` (status > 128) while the broker is still shutting
# down: wait again, and exit with the broker's own status.
while true; do
  status=0
  wait "$broker" || status=$?
  kill -0 "$broker" 2>/dev/null || break
done
exit "$status"
