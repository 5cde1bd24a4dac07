#!/usr/bin/env bash
# A private CA and the TLS certificates the local secured services and their clients use.
#
#   scripts/certs.sh DIR     create (once) in DIR:
#     ca.pem ca.key              the CA (clients trust ca.pem)
#     server.pem server.key      server certificate for localhost / 127.0.0.1 (Kafka, Redis)
#     server-bundle.pem          server.key + server.pem in one file (Kafka's PEM keystore)
#     client.pem client.key      a client certificate signed by the same CA (mutual TLS)
#
# Keys are unencrypted PKCS#8 (what Kafka's PEM keystore and Redis read), readable by
# the owner only. Certificates last 825 days; an existing set is kept unless it
# expires within a day. Only openssl is needed.
set -euo pipefail

DIR=${1:?usage: scripts/certs.sh DIR}
DAYS=825
mkdir -p "$DIR"
cd "$DIR"

if [[ -f server-bundle.pem && -f client.pem ]] &&
  openssl x509 -checkend 86400 -noout -in server.pem >/dev/null 2>&1; then
  exit 0
fi

umask 077
new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

new_key ca.key
openssl req -x509 -new -key ca.key -sha256 -days "$DAYS" -subj "/CN=churn-risk local CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.pem

sign() { # name subject extensions
  new_key "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 \
    -days "$DAYS" -extfile <(printf '%s\n' "$3") -out "$1.pem" 2>/dev/null
  rm -f "$1.csr"
}
sign server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth,clientAuth"
sign client "/CN=churn-risk client" "extendedKeyUsage=clientAuth"
cat server.key server.pem >server-bundle.pem
chmod 644 ca.pem server.pem client.pem
echo "[certs] CA and certificates written to $DIR"
