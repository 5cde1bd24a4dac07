#!/usr/bin/env bash
# Local Kafka (single-node KRaft, jars from Maven Central), a single Redis and a
# three-master Redis Cluster for dev and CI. The cluster runs beside the single Redis
# so the integration tests can run the same store code against both.
# No Docker needed: Kafka runs from the jars listed in scripts/kafka/pom.xml, Redis
# is the distribution's redis-server (and redis-cli, which creates the cluster).
#
#   scripts/services.sh up            start all (no-op for what already runs), wait until ready;
#                                     make sure the broker's SCRAM user exists
#   scripts/services.sh down          stop what `up` started (by pid file)
#   scripts/services.sh status        running/stopped, pid, address
#   scripts/services.sh reset         down + delete all state under .services/
#   scripts/services.sh cluster-down  stop only the Redis Cluster nodes (Kafka and Redis keep running)
#   scripts/services.sh tools         make sure prometheus and promtool are installed (the alert
#                                     rule tests run them; Debian's prometheus package has both),
#                                     and chromium with chromedriver (the work-list page test)
#
# Env: CHURN_KAFKA_PORT (9092), CHURN_KAFKA_CONTROLLER_PORT (Kafka port + 1),
#      CHURN_KAFKA_SASL_PORT (Kafka port + 2: SASL_SSL, SCRAM-SHA-512 over TLS),
#      CHURN_REDIS_PORT (6379), CHURN_REDIS_CLUSTER_PORT (7001: the cluster uses it,
#      +1 and +2, and their cluster bus ports +10000), CHURN_CACHE_DIR (~/.cache/churn-risk),
#      CHURN_SERVICES_TIMEOUT (90 s), CHURN_KAFKA_HEAP_OPTS (-Xms256m -Xmx1g).
# If KAFKA_BOOTSTRAP_SERVERS and REDIS_URL are both set, `up` only checks that
# those external services answer (and REDIS_CLUSTER_URL's too, if set) and starts
# nothing. Otherwise REDIS_CLUSTER_URL is not read here: the local cluster is started.
#
# Kafka security (dev only): beside the PLAINTEXT listener the broker has a SASL_SSL
# listener. Its certificates come from scripts/certs.sh (.services/certs: clients trust
# ca.pem); its SCRAM-SHA-512 user is `churn`, with a password generated once into
# .services/kafka/sasl/password. `status` prints the address and these paths.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
POM=$ROOT/scripts/kafka/pom.xml
LOG4J=$ROOT/scripts/kafka/log4j2.yaml
STATE=$ROOT/.services
KDIR=$STATE/kafka
RDIR=$STATE/redis
CDIR=$STATE/redis-cluster # one directory per node, named by its port

HOST=127.0.0.1 # loopback only: these are unauthenticated dev services
KAFKA_PORT=${CHURN_KAFKA_PORT:-9092}
KAFKA_CTRL_PORT=${CHURN_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
KAFKA_SASL_PORT=${CHURN_KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}
CERTS=$STATE/certs
SASL_DIR=$KDIR/sasl # user, password (owner-only), address
SASL_USER=churn
REDIS_PORT=${CHURN_REDIS_PORT:-6379}
CLUSTER_PORT=${CHURN_REDIS_CLUSTER_PORT:-7001}
# Three masters, no replicas: the fewest nodes Redis Cluster accepts, and enough for
# keys of different hash tags to live on different nodes, which is what tests need.
CLUSTER_PORTS=("$CLUSTER_PORT" $((CLUSTER_PORT + 1)) $((CLUSTER_PORT + 2)))
CLUSTER_BUS_OFFSET=10000 # Redis's fixed offset from a node's port to its cluster bus port
TIMEOUT=${CHURN_SERVICES_TIMEOUT:-90}
read -r -a KAFKA_HEAP <<<"${CHURN_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"

# The pom is the one place the Kafka version is pinned.
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")
[[ -n $KAFKA_VERSION ]] || { echo "no <kafka.version> in $POM" >&2; exit 1; }
KAFKA_LIBS=${CHURN_CACHE_DIR:-$HOME/.cache/churn-risk}/kafka-$KAFKA_VERSION/libs

log() { printf '[services] %s\n' "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

# True if something accepts TCP connections on host:port (bash's /dev/tcp; no nc needed).
# shellcheck disable=SC2016 # $0/$1 are expanded by the inner bash, on purpose
port_open() { timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null; }

cmdline_of() {
  if [[ -r /proc/$1/cmdline ]]; then tr '\0' ' ' <"/proc/$1/cmdline"; else ps -o args= -p "$1" 2>/dev/null; fi
}

# Print the pid from pid file $1 if that process is alive AND its command line
# matches $2 (a stale pid file whose pid got reused must not count; zombies have
# an empty command line, so they count as dead too).
live_pid() {
  local pid
  [[ -f $1 ]] || return 1
  pid=$(<"$1")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  [[ $(cmdline_of "$pid") == *"$2"* ]] || return 1
  echo "$pid"
}

# Patterns that identify our processes in `ps`.
KAFKA_PAT="kafka.Kafka $KDIR/server.properties"
REDIS_PAT=redis-server

# Install a missing tool when we can (root + apt-get, as on CI); otherwise say what to install.
APT_UPDATED=
ensure_cmd() { # command debian-package
  command -v "$1" >/dev/null && return 0
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "$1 not found: installing Debian package $2"
    if [[ -z $APT_UPDATED ]]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  fi
  command -v "$1" >/dev/null || die "$1 is required but not installed. Install it, e.g. 'apt-get install $2' (Debian/Ubuntu) or 'brew install $2' (macOS)."
}

fail_with_log() { # message logfile
  printf '[services] ERROR: %s. Last lines of %s:\n' "$1" "$2" >&2
  tail -n 40 "$2" >&2 || true
  exit 1
}

# ---------------------------------------------------------------- Kafka

kjava() { java -cp "$KAFKA_LIBS/*" "$@"; }

fetch_kafka() {
  [[ -d $KAFKA_LIBS ]] && return 0
  ensure_cmd mvn maven
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS"
  # Download into a temp dir and rename, so an interrupted fetch is never mistaken for a cache hit.
  local tmp=$KAFKA_LIBS.tmp.$$
  mkdir -p "$(dirname "$KAFKA_LIBS")"
  rm -rf "$tmp"
  mvn -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies -DoutputDirectory="$tmp" \
    >"$tmp.log" 2>&1 || { rm -rf "$tmp"; fail_with_log "Maven could not fetch the Kafka jars" "$tmp.log"; }
  rm -f "$tmp.log"
  mv "$tmp" "$KAFKA_LIBS"
}

write_kafka_config() {
  cat >"$KDIR/server.properties" <<EOF
# Generated by scripts/services.sh; edits are overwritten on the next start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CTRL_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CTRL_PORT,SASL_SSL://$HOST:$KAFKA_SASL_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,SASL_SSL://$HOST:$KAFKA_SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
# The SASL_SSL listener: SCRAM-SHA-512 over TLS. Its users live in the KRaft metadata
# (created by ensure_scram_user). A client certificate is checked when one is sent
# (mutual TLS), not required.
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.client.auth=requested
# ACLs (stream_app/kafka_acls.py): the PLAINTEXT listeners (tests, the controller) and
# the SCRAM user $SASL_USER may do anything; any other principal only what its ACLs grant.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;User:$SASL_USER
ssl.truststore.type=PEM
ssl.truststore.location=$CERTS/ca.pem
# Kafka reads PEM directly: the unencrypted PKCS#8 key and its certificate in one file.
ssl.keystore.type=PEM
ssl.keystore.location=$CERTS/server-bundle.pem
log.dirs=$KDIR/data
num.partitions=4
auto.create.topics.enable=true
# Single broker: internal topics cannot have more than one replica.
offsets.topic.replication.factor=1
# One node: 4 offsets partitions load far faster than the default 50.
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests start consumer groups often; don't make each one wait 3 s.
group.initial.rebalance.delay.ms=0
EOF
}

start_kafka() {
  local pid
  if pid=$(live_pid "$KDIR/kafka.pid" "$KAFKA_PAT"); then
    log "Kafka already running (pid $pid)"
    return 0
  fi
  rm -f "$KDIR/kafka.pid"
  for p in "$KAFKA_PORT" "$KAFKA_CTRL_PORT" "$KAFKA_SASL_PORT"; do
    ! port_open "$HOST" "$p" ||
      die "$HOST:$p is already in use by a process this script did not start; stop it or set CHURN_KAFKA_PORT"
  done
  ensure_cmd java default-jre-headless
  ensure_cmd openssl openssl
  fetch_kafka
  "$ROOT/scripts/certs.sh" "$CERTS"
  mkdir -p "$KDIR/data"
  write_kafka_config
  # KRaft storage must be formatted exactly once, with a cluster id.
  if [[ ! -f $KDIR/data/meta.properties ]]; then
    log "formatting Kafka storage in $KDIR/data"
    local cluster_id
    cluster_id=$(kjava kafka.tools.StorageTool random-uuid)
    kjava kafka.tools.StorageTool format -t "$cluster_id" -c "$KDIR/server.properties" \
      >"$KDIR/format.log" 2>&1 || fail_with_log "formatting Kafka storage failed" "$KDIR/format.log"
  fi
  [[ -f $KDIR/kafka.log ]] && mv -f "$KDIR/kafka.log" "$KDIR/kafka.log.1"
  log "starting Kafka $KAFKA_VERSION on $HOST:$KAFKA_PORT (log: ${KDIR#"$ROOT"/}/kafka.log)"
  # setsid: its own session, so a terminal's Ctrl-C (sent to the whole foreground
  # process group, e.g. `make demo`) does not reach the broker.
  # 9>&- : don't let the broker inherit (and hold forever) our lock file descriptor.
  setsid nohup java "${KAFKA_HEAP[@]}" -Dlog4j2.configurationFile="$LOG4J" -cp "$KAFKA_LIBS/*" \
    kafka.Kafka "$KDIR/server.properties" </dev/null >"$KDIR/kafka.log" 2>&1 9>&- &
  echo $! >"$KDIR/kafka.pid"
  echo "$HOST:$KAFKA_PORT" >"$KDIR/address"
  mkdir -p "$SASL_DIR"
  echo "$HOST:$KAFKA_SASL_PORT" >"$SASL_DIR/address"
  rm -f "$SASL_DIR/created" # the user is (re)created once the broker is up
}

# The SCRAM user of the SASL_SSL listener, with a password generated once. It is
# upserted through the admin API on the PLAINTEXT listener (which needs no login), so
# it exists whether the storage was formatted before the SASL listener existed or not.
# Done once per broker start: the metadata log keeps it across restarts.
ensure_scram_user() {
  local addr
  [[ -f $SASL_DIR/created ]] && return 0
  [[ -f $SASL_DIR/address ]] || return 0 # a broker started before the SASL listener existed
  if [[ ! -s $SASL_DIR/password ]]; then
    (umask 077 && openssl rand -hex 24 >"$SASL_DIR/password")
  fi
  echo "$SASL_USER" >"$SASL_DIR/user"
  # Through a file, not the command line, which other users see in `ps`. (In a file the
  # value takes no brackets: `[iterations=...]` is the command line's syntax only.)
  (umask 077 && printf 'SCRAM-SHA-512=iterations=8192,password=%s\n' "$(<"$SASL_DIR/password")" >"$SASL_DIR/scram.properties")
  addr=$HOST:$(port_of kafka)
  kjava kafka.admin.ConfigCommand --bootstrap-server "$addr" --alter --entity-type users \
    --entity-name "$SASL_USER" --add-config-file "$SASL_DIR/scram.properties" \
    >"$SASL_DIR/create.log" 2>&1 || { rm -f "$SASL_DIR/scram.properties"; fail_with_log "creating the SCRAM user $SASL_USER failed" "$SASL_DIR/create.log"; }
  rm -f "$SASL_DIR/scram.properties"
  touch "$SASL_DIR/created"
  log "SCRAM-SHA-512 user $SASL_USER ready on SASL_SSL $(<"$SASL_DIR/address")"
}

wait_kafka() {
  local deadline=$((SECONDS + TIMEOUT))
  # The broker logs "Kafka Server started" once it is unfenced and serving clients.
  until grep -q 'Kafka Server started' "$KDIR/kafka.log" 2>/dev/null && port_open "$HOST" "$(port_of kafka)" &&
    { [[ ! -f $SASL_DIR/address ]] || port_open "$HOST" "$(sasl_port)"; }; do
    if ! live_pid "$KDIR/kafka.pid" "$KAFKA_PAT" >/dev/null; then
      rm -f "$KDIR/kafka.pid"
      fail_with_log "Kafka exited during startup" "$KDIR/kafka.log"
    fi
    if ((SECONDS >= deadline)); then
      stop_one Kafka "$KDIR/kafka.pid" "$KAFKA_PAT" >&2
      fail_with_log "Kafka was not ready after ${TIMEOUT}s (stopped it)" "$KDIR/kafka.log"
    fi
    sleep 0.5
  done
}

# ---------------------------------------------------------------- Redis

start_redis() {
  local pid
  if pid=$(live_pid "$RDIR/redis.pid" "$REDIS_PAT"); then
    log "Redis already running (pid $pid)"
    return 0
  fi
  rm -f "$RDIR/redis.pid"
  ! port_open "$HOST" "$REDIS_PORT" ||
    die "$HOST:$REDIS_PORT is already in use by a process this script did not start; stop it or set CHURN_REDIS_PORT"
  ensure_cmd redis-server redis-server
  mkdir -p "$RDIR/data"
  [[ -f $RDIR/redis.log ]] && mv -f "$RDIR/redis.log" "$RDIR/redis.log.1"
  log "starting $(redis_version) on $HOST:$REDIS_PORT (log: ${RDIR#"$ROOT"/}/redis.log)"
  # AOF (fsync every second) rather than RDB snapshots: the feature store is the
  # system of record for online state, so a restart must not lose minutes of writes.
  # setsid: its own session, out of reach of a terminal's Ctrl-C (see start_kafka).
  setsid nohup redis-server --bind "$HOST" --port "$REDIS_PORT" --daemonize no --dir "$RDIR/data" \
    --appendonly yes --appendfsync everysec --save '' </dev/null >"$RDIR/redis.log" 2>&1 9>&- &
  echo $! >"$RDIR/redis.pid"
  echo "$HOST:$REDIS_PORT" >"$RDIR/address"
}

wait_redis() {
  local deadline=$((SECONDS + TIMEOUT)) port
  port=$(port_of redis)
  until [[ $(redis-cli -h "$HOST" -p "$port" ping 2>/dev/null) == PONG ]]; do
    if ! live_pid "$RDIR/redis.pid" "$REDIS_PAT" >/dev/null; then
      rm -f "$RDIR/redis.pid"
      fail_with_log "Redis exited during startup" "$RDIR/redis.log"
    fi
    if ((SECONDS >= deadline)); then
      stop_one Redis "$RDIR/redis.pid" "$REDIS_PAT" >&2
      fail_with_log "Redis was not ready after ${TIMEOUT}s (stopped it)" "$RDIR/redis.log"
    fi
    sleep 0.2
  done
}

# ---------------------------------------------------------------- Redis Cluster

start_cluster_node() { # port
  local port=$1 dir=$CDIR/$1 pid
  if pid=$(live_pid "$dir/redis.pid" "$REDIS_PAT"); then
    log "Redis Cluster node $HOST:$port already running (pid $pid)"
    return 0
  fi
  rm -f "$dir/redis.pid"
  for p in "$port" $((port + CLUSTER_BUS_OFFSET)); do
    ! port_open "$HOST" "$p" ||
      die "$HOST:$p is already in use by a process this script did not start; stop it or set CHURN_REDIS_CLUSTER_PORT"
  done
  mkdir -p "$dir"
  [[ -f $dir/redis.log ]] && mv -f "$dir/redis.log" "$dir/redis.log.1"
  log "starting Redis Cluster node on $HOST:$port (log: ${dir#"$ROOT"/}/redis.log)"
  # Same durability and session handling as the single Redis (see start_redis).
  # nodes.conf is the node's own record of the cluster (id, peers, slots): keeping it
  # in the node's directory lets a restarted node rejoin without a new `--cluster create`.
  setsid nohup redis-server --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" \
    --bind "$HOST" --port "$port" --daemonize no --dir "$dir" \
    --appendonly yes --appendfsync everysec --save '' </dev/null >"$dir/redis.log" 2>&1 9>&- &
  echo $! >"$dir/redis.pid"
  echo "$HOST:$port" >"$dir/address"
}

start_cluster() {
  ensure_cmd redis-server redis-server
  ensure_cmd redis-cli redis-tools
  local port
  for port in "${CLUSTER_PORTS[@]}"; do start_cluster_node "$port"; done
}

# Value of one field of CLUSTER INFO on the node at port $1 (empty if it does not answer).
cluster_info() { # port field
  { timeout 5 redis-cli -h "$HOST" -p "$1" cluster info 2>/dev/null || true; } | tr -d '\r' | sed -n "s/^$2://p"
}

# Wait until every node answers, create the cluster if its nodes are still blank, then
# wait until every node reports cluster_state:ok (all 16384 slots served).
wait_cluster() {
  local deadline=$((SECONDS + TIMEOUT)) port dir fresh=0
  for port in "${CLUSTER_PORTS[@]}"; do
    dir=$CDIR/$port
    until [[ $(redis-cli -h "$HOST" -p "$port" ping 2>/dev/null) == PONG ]]; do
      if ! live_pid "$dir/redis.pid" "$REDIS_PAT" >/dev/null; then
        rm -f "$dir/redis.pid"
        fail_with_log "Redis Cluster node $HOST:$port exited during startup" "$dir/redis.log"
      fi
      if ((SECONDS >= deadline)); then
        stop_cluster >&2
        fail_with_log "Redis Cluster node $HOST:$port was not ready after ${TIMEOUT}s (stopped the cluster)" "$dir/redis.log"
      fi
      sleep 0.2
    done
  done
  [[ $(cluster_info "${CLUSTER_PORTS[0]}" cluster_state) == ok ]] && return 0
  # Not ok yet: either never created, or restarted nodes still rejoining each other
  # (nodes.conf already lists the peers and slots; `--cluster create` would refuse them).
  for port in "${CLUSTER_PORTS[@]}"; do
    [[ $(cluster_info "$port" cluster_known_nodes) == 1 && $(cluster_info "$port" cluster_slots_assigned) == 0 ]] &&
      fresh=$((fresh + 1))
  done
  if ((fresh == ${#CLUSTER_PORTS[@]})); then
    log "creating the Redis Cluster (3 masters, no replicas) on $HOST ports ${CLUSTER_PORTS[*]}"
    local addrs=()
    for port in "${CLUSTER_PORTS[@]}"; do addrs+=("$HOST:$port"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$CDIR/create.log" 2>&1 ||
      fail_with_log "redis-cli --cluster create failed" "$CDIR/create.log"
  elif ((fresh > 0)); then
    die "some Redis Cluster nodes are blank and some already belong to a cluster (a node directory under ${CDIR#"$ROOT"/} was lost?): run '$0 cluster-down' and delete ${CDIR#"$ROOT"/}"
  fi
  for port in "${CLUSTER_PORTS[@]}"; do
    until [[ $(cluster_info "$port" cluster_state) == ok ]]; do
      if ((SECONDS >= deadline)); then
        timeout 5 redis-cli -h "$HOST" -p "$port" cluster nodes >&2 || true
        die "Redis Cluster node $HOST:$port did not reach cluster_state:ok after ${TIMEOUT}s (cluster nodes above; logs in ${CDIR#"$ROOT"/}/*/redis.log)"
      fi
      sleep 0.2
    done
  done
}

# Ports of the cluster nodes this script knows of: the requested ones, and those of any
# node directory left from a run with another CHURN_REDIS_CLUSTER_PORT (so `down` stops them).
cluster_node_ports() {
  local d
  {
    printf '%s\n' "${CLUSTER_PORTS[@]}"
    for d in "$CDIR"/*/; do
      d=${d%/}
      d=${d##*/}
      if [[ $d =~ ^[0-9]+$ ]]; then echo "$d"; fi
    done
  } | sort -nu
}

stop_cluster() {
  local port
  for port in $(cluster_node_ports); do
    [[ -f $CDIR/$port/redis.pid ]] && stop_one "Redis Cluster node $HOST:$port" "$CDIR/$port/redis.pid" "$REDIS_PAT"
  done
  return 0
}

redis_version() {
  local v
  v=$(redis-server --version 2>/dev/null) || { echo Redis; return; }
  v=${v#*v=}
  echo "Redis ${v%% *}"
}

# ---------------------------------------------------------------- commands

# Port a running service actually uses (it may have been started with other env).
port_of() { # kafka|redis
  local addr=
  [[ -f $STATE/$1/address ]] && addr=$(<"$STATE/$1/address")
  if [[ -n $addr ]]; then echo "${addr##*:}"
  elif [[ $1 == kafka ]]; then echo "$KAFKA_PORT"
  else echo "$REDIS_PORT"; fi
}

# Port of the running broker's SASL_SSL listener (empty address file: none).
sasl_port() {
  local addr=
  [[ -f $SASL_DIR/address ]] && addr=$(<"$SASL_DIR/address")
  echo "${addr##*:}"
}

stop_one() { # name pidfile pattern
  local pid
  if pid=$(live_pid "$2" "$3"); then
    log "stopping $1 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 60); do
      live_pid "$2" "$3" >/dev/null || break
      sleep 0.5
    done
    if live_pid "$2" "$3" >/dev/null; then
      log "$1 still running after 30s: sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  else
    log "$1 not running"
  fi
  rm -f "$2"
}

print_status() { # name pidfile pattern port version
  local pid
  if pid=$(live_pid "$2" "$3"); then
    printf '  %-14s running  pid %-7s %s:%s  (%s)\n' "$1" "$pid" "$HOST" "$4" "$5"
    return 0
  fi
  printf '  %-14s stopped  %-11s %s:%s\n' "$1" "" "$HOST" "$4"
  return 1
}

cmd_status() {
  local rc=0
  [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} && -n ${REDIS_URL:-} ]] &&
    log "note: KAFKA_BOOTSTRAP_SERVERS/REDIS_URL are set, so 'up' would use those external services"
  print_status kafka "$KDIR/kafka.pid" "$KAFKA_PAT" "$(port_of kafka)" "Kafka $KAFKA_VERSION" || rc=3
  if [[ -f $SASL_DIR/address ]]; then
    print_status kafka-sasl "$KDIR/kafka.pid" "$KAFKA_PAT" "$(sasl_port)" \
      "SASL_SSL SCRAM-SHA-512, user $SASL_USER, password in ${SASL_DIR#"$ROOT"/}/password, CA ${CERTS#"$ROOT"/}/ca.pem" || rc=3
  elif live_pid "$KDIR/kafka.pid" "$KAFKA_PAT" >/dev/null; then
    log "note: this broker was started without the SASL_SSL listener; 'down' then 'up' adds it"
  fi
  print_status redis "$RDIR/redis.pid" "$REDIS_PAT" "$(port_of redis)" "$(redis_version)" || rc=3
  local port state
  for port in $(cluster_node_ports); do
    state=$(cluster_info "$port" cluster_state)
    print_status redis-cluster "$CDIR/$port/redis.pid" "$REDIS_PAT" "$port" \
      "$(redis_version), cluster_state:${state:-?}" || rc=3
  done
  return $rc
}

# host:port of a redis://[user:pass@]host[:port][/db] URL.
redis_url_hostport() {
  local r=${1#*://}
  r=${r#*@}; r=${r%%/*}
  [[ $r == *:* ]] || r=$r:6379
  echo "$r"
}

# Both external services given: just check they answer (with retries, they may be starting).
check_external() {
  local k=${KAFKA_BOOTSTRAP_SERVERS%%,*}
  k=${k#*://}                     # tolerate PLAINTEXT://host:port
  local hps=("$k" "$(redis_url_hostport "$REDIS_URL")")
  # External mode starts no local cluster either; check the external one only if given.
  [[ -n ${REDIS_CLUSTER_URL:-} ]] && hps+=("$(redis_url_hostport "$REDIS_CLUSTER_URL")")
  log "KAFKA_BOOTSTRAP_SERVERS and REDIS_URL are set: using external services, starting nothing"
  local deadline=$((SECONDS + TIMEOUT)) hp
  for hp in "${hps[@]}"; do
    until port_open "${hp%:*}" "${hp##*:}"; do
      ((SECONDS < deadline)) || die "external service $hp does not answer after ${TIMEOUT}s"
      sleep 1
    done
    log "  $hp answers"
  done
}

cmd_up() {
  if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} && -n ${REDIS_URL:-} ]]; then
    check_external
    return 0
  fi
  local t0=$SECONDS
  mkdir -p "$KDIR" "$RDIR" "$CDIR"
  # Start all, then wait for all: Redis and the cluster are ready while the JVM is still booting.
  start_kafka
  start_redis
  start_cluster
  wait_redis
  wait_cluster
  wait_kafka
  ensure_scram_user
  [[ $(port_of kafka) == "$KAFKA_PORT" && $(port_of redis) == "$REDIS_PORT" ]] ||
    log "warning: services were already running on other ports than requested (run 'down' first to change ports)"
  log "ready after $((SECONDS - t0))s:"
  cmd_status
}

cmd_down() {
  stop_one Kafka "$KDIR/kafka.pid" "$KAFKA_PAT"
  stop_one Redis "$RDIR/redis.pid" "$REDIS_PAT"
  stop_cluster
}

cmd_cluster_down() { stop_cluster; }

# Not a service: the tests run their own Prometheus, and promtool checks the rules.
cmd_tools() {
  ensure_cmd promtool prometheus
  ensure_cmd prometheus prometheus
  # The work-list's browser test drives Debian's headless Chromium with its driver.
  ensure_cmd chromium chromium
  ensure_cmd chromedriver chromium-driver
  ensure_cmd curl curl # the web test runs the curl `make demo` prints
  log "$(promtool --version 2>&1 | head -n1)"
}

cmd_reset() {
  cmd_down
  log "deleting ${KDIR#"$ROOT"/}, ${RDIR#"$ROOT"/} and ${CDIR#"$ROOT"/}"
  rm -rf "$KDIR" "$RDIR" "$CDIR"
}

main() {
  local cmd=${1:-}
  case $cmd in
    up | down | status | reset | cluster-down | tools) ;;
    *) echo "usage: $0 up|down|status|reset|cluster-down|tools" >&2; exit 2 ;;
  esac
  # Serialize concurrent invocations (e.g. two make targets in parallel).
  mkdir -p "$STATE"
  if command -v flock >/dev/null; then
    exec 9>"$STATE/.lock"
    flock 9
  fi
  "cmd_${cmd//-/_}"
}

main "$@"
