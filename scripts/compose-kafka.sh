#!/usr/bin/env bash
# Entry point of the kafka service in docker-compose.yml (apache/kafka image).
#
# Starts the broker the image's own way (/etc/kafka/docker/run), then creates or updates
# the SCRAM-SHA-512 users: the admin (CHURN_KAFKA_SASL_USERNAME / _PASSWORD, a super
# user that grants the ACLs), churn-worker, churn-simulator, churn-reader and churn-sink
# (their passwords CHURN_KAFKA_{WORKER,SIMULATOR,READER,SINK}_PASSWORD). It does so at every start,
# so a new password in .env takes effect on the next `docker compose up`.
#
# The users are created through the LOCAL listener, PLAINTEXT on 127.0.0.1:9094 inside
# this container only (not published, not reachable from the compose network): the
# broker has no user yet when it starts, so the first one cannot be created over SASL.
# The healthcheck reports healthy only once the user exists (the ready file).
set -euo pipefail

: "${CHURN_KAFKA_SASL_USERNAME:?set CHURN_KAFKA_SASL_USERNAME}"
: "${CHURN_KAFKA_SASL_PASSWORD:?set CHURN_KAFKA_SASL_PASSWORD}"
: "${CHURN_KAFKA_WORKER_PASSWORD:?set CHURN_KAFKA_WORKER_PASSWORD}"
: "${CHURN_KAFKA_SIMULATOR_PASSWORD:?set CHURN_KAFKA_SIMULATOR_PASSWORD}"
: "${CHURN_KAFKA_READER_PASSWORD:?set CHURN_KAFKA_READER_PASSWORD}"
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
  for user in "$CHURN_KAFKA_SASL_USERNAME=$CHURN_KAFKA_SASL_PASSWORD" \
    "churn-worker=$CHURN_KAFKA_WORKER_PASSWORD" \
    "churn-simulator=$CHURN_KAFKA_SIMULATOR_PASSWORD" \
    "churn-reader=$CHURN_KAFKA_READER_PASSWORD" \
    "churn-sink=$CHURN_KAFKA_SINK_PASSWORD"; do
    printf 'SCRAM-SHA-512=iterations=8192,password=%s\n' "${user#*=}" >"$config"
    /opt/kafka/bin/kafka-configs.sh "${ADMIN[@]}" --alter --entity-type users \
      --entity-name "${user%%=*}" --add-config-file "$config"
    echo "[compose-kafka] SCRAM-SHA-512 user '${user%%=*}' ready"
  done
  rm -f "$config"
  touch "$READY"
fi

# A trapped signal interrupts `wait` (status > 128) while the broker is still shutting
# down: wait again, and exit with the broker's own status.
while true; do
  status=0
  wait "$broker" || status=$?
  kill -0 "$broker" 2>/dev/null || break
done
exit "$status"
