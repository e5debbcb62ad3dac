#!/usr/bin/env bash
# deploy/local/kafka-cluster.sh - a real three-node Apache Kafka cluster (KRaft; each node is
# broker and controller) on one machine, from the same Maven Central jars as kafka.sh: own
# ports and data folders per node, internal topics at replication factor 3 and
# min.insync.replicas 2. For the broker-failure fault suite and the least-privilege run.
#
#   kafka-cluster.sh start [--sasl]     start (or find) the cluster; prints the bootstrap list.
#                                       --sasl: clients and brokers authenticate with
#                                       SASL/SCRAM-SHA-512 and ACLs are enforced (the admin
#                                       user is a super user; see admin-config)
#   kafka-cluster.sh stop [--clean]     stop every node; --clean also deletes the data
#   kafka-cluster.sh status             one line per node; exit 0 if all run
#   kafka-cluster.sh bootstrap          the bootstrap list (host:port,host:port,host:port)
#   kafka-cluster.sh kill N             SIGKILL node N (a crash); data and ports kept
#   kafka-cluster.sh start-node N       start node N again (after kill/stop-node)
#   kafka-cluster.sh stop-node N        SIGTERM node N (a clean shutdown, as in a rolling restart)
#   kafka-cluster.sh pause N | resume N SIGSTOP / SIGCONT node N (a hung broker)
#   kafka-cluster.sh pid N              the java pid of node N
#   kafka-cluster.sh leader TOPIC P     the node id leading partition P of TOPIC
#   kafka-cluster.sh coordinator TXID   the node id that coordinates transactional id TXID
#   kafka-cluster.sh controller         the node id of the active KRaft controller (quorum leader)
#   kafka-cluster.sh group-coordinator G the node id that coordinates consumer group G
#   kafka-cluster.sh admin-config       path of the admin client properties (SASL mode)
#   kafka-cluster.sh add-user NAME PW   create or update a SCRAM-SHA-512 user (SASL mode)
#   kafka-cluster.sh acls ARGS...       org.apache.kafka.tools.AclCommand, as admin
#   kafka-cluster.sh topics ARGS...     org.apache.kafka.tools.TopicCommand, as admin
#   kafka-cluster.sh transactions ARGS... org.apache.kafka.tools.TransactionsCommand, as admin
#                                       (e.g. `describe --transactional-id ID`, `find-hanging
#                                       --broker-id N`)
#   kafka-cluster.sh groups ARGS...     the consumer group tool, as admin (e.g. `--describe
#                                       --group G`)
#
# Environment: HELPGRID_KAFKA_CLUSTER_DIR (state, default /tmp/helpgrid-kafka-cluster),
# HELPGRID_KAFKA_CLUSTER_HEAP (per node, default "-Xms192m -Xmx512m"),
# HELPGRID_KAFKA_NODE_START_S (how long start-node waits for the port, default 180), and kafka.sh's
# HELPGRID_KAFKA_VERSION / HELPGRID_KAFKA_CACHE.
set -euo pipefail

CLUSTER_SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=kafka.sh
source "$CLUSTER_SCRIPT_DIR/kafka.sh"

NODES=3
CLUSTER_DIR="${HELPGRID_KAFKA_CLUSTER_DIR:-/tmp/helpgrid-kafka-cluster}"
NODE_HEAP="${HELPGRID_KAFKA_CLUSTER_HEAP:--Xms192m -Xmx512m}"
CLUSTER_TAG="$CLUSTER_DIR/.helpgrid-kafka-cluster"
CLUSTER_PORTS="$CLUSTER_DIR/ports"
CLUSTER_ID="$CLUSTER_DIR/cluster.id"
MODE_FILE="$CLUSTER_DIR/mode"
ADMIN_CONFIG="$CLUSTER_DIR/admin.properties"
ADMIN_PASSWORD_FILE="$CLUSTER_DIR/admin.password"

log() { printf 'kafka-cluster.sh: %s\n' "$*" >&2; }

node_dir() { printf '%s/node-%s' "$CLUSTER_DIR" "$1"; }
node_pid_file() { printf '%s/kafka.pid' "$(node_dir "$1")"; }
node_config() { printf '%s/server.properties' "$(node_dir "$1")"; }

check_node() { [[ "$1" =~ ^[1-3]$ ]] || die "node must be 1, 2 or 3 (got '$1')"; }

ensure_cluster_dir() {
  if [[ -d "$CLUSTER_DIR" && ! -f "$CLUSTER_TAG" ]] && [[ -n "$(ls -A "$CLUSTER_DIR")" ]]; then
    die "$CLUSTER_DIR exists, is not empty and was not made by kafka-cluster.sh"
  fi
  mkdir -p "$CLUSTER_DIR"
  touch "$CLUSTER_TAG"
}

lock_cluster() {
  exec 9>"$CLUSTER_DIR/.lock"
  flock -w 300 9 || die "timed out waiting for another kafka-cluster.sh on $CLUSTER_DIR"
}

# ---------------------------------------------------------------- ports

# Six distinct free ports: node N's client port and controller port.
choose_cluster_ports() {
  [[ -f "$CLUSTER_PORTS" ]] && return 0
  local -A seen=()
  local picked=() a b
  while (( ${#picked[@]} < 2 * NODES )); do
    read -r a b < <(pick_two_ports)
    for p in "$a" "$b"; do
      [[ -n "${seen[$p]:-}" ]] && continue
      seen[$p]=1
      picked+=("$p")
    done
  done
  local n
  for n in $(seq 1 $NODES); do
    printf 'node%s.broker=%s\nnode%s.controller=%s\n' \
      "$n" "${picked[$(( 2 * n - 2 ))]}" "$n" "${picked[$(( 2 * n - 1 ))]}"
  done >"$CLUSTER_PORTS"
}

port_of() {  # port_of N broker|controller
  sed -n "s/^node$1\.$2=\([0-9]*\)$/\1/p" "$CLUSTER_PORTS"
}

bootstrap_list() {
  local n out=()
  for n in $(seq 1 $NODES); do out+=("$HOST:$(port_of "$n" broker)"); done
  local IFS=,
  printf '%s\n' "${out[*]}"
}

voters() {
  local n out=()
  for n in $(seq 1 $NODES); do out+=("$n@$HOST:$(port_of "$n" controller)"); done
  local IFS=,
  printf '%s' "${out[*]}"
}

sasl_mode() { [[ -f "$MODE_FILE" ]] && [[ "$(cat "$MODE_FILE")" == sasl ]]; }

# ---------------------------------------------------------------- config

write_node_config() {
  local n="$1" dir bport cport
  dir="$(node_dir "$n")"
  bport="$(port_of "$n" broker)"
  cport="$(port_of "$n" controller)"
  mkdir -p "$dir/data" "$dir/logs"
  {
    cat <<EOF
# Generated by deploy/local/kafka-cluster.sh at every start. Apache Kafka $KAFKA_VERSION,
# node $n of $NODES, KRaft (broker and controller in one JVM).
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$(voters)
controller.listener.names=CONTROLLER
log.dirs=$dir/data

# every internal topic replicated three times, writes need two in sync
num.partitions=1
default.replication.factor=3
min.insync.replicas=2
auto.create.topics.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
# a failed leader's partitions move quickly; unclean election never (it loses acknowledged writes)
unclean.leader.election.enable=false
replica.lag.time.max.ms=10000
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000

# three JVMs on a small machine
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
num.replica.fetchers=1
EOF
    if sasl_mode; then
      cat <<EOF

# SASL: clients and brokers use SCRAM-SHA-512 (users live in the cluster metadata);
# the controller listener uses PLAIN with a fixed controller identity. ACLs enforced.
listeners=SASL_PLAINTEXT://$HOST:$bport,CONTROLLER://$HOST:$cport
advertised.listeners=SASL_PLAINTEXT://$HOST:$bport
inter.broker.listener.name=SASL_PLAINTEXT
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(cat "$ADMIN_PASSWORD_FILE")";
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="controller" password="$(cat "$ADMIN_PASSWORD_FILE")" user_controller="$(cat "$ADMIN_PASSWORD_FILE")";
listener.name.controller.sasl.enabled.mechanisms=PLAIN
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:controller
EOF
    else
      cat <<EOF

listeners=PLAINTEXT://$HOST:$bport,CONTROLLER://$HOST:$cport
advertised.listeners=PLAINTEXT://$HOST:$bport
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
EOF
    fi
  } >"$(node_config "$n")"
}

write_admin_config() {
  if sasl_mode; then
    cat >"$ADMIN_CONFIG" <<EOF
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(cat "$ADMIN_PASSWORD_FILE")";
request.timeout.ms=5000
default.api.timeout.ms=15000
EOF
  else
    printf 'request.timeout.ms=5000\ndefault.api.timeout.ms=15000\n' >"$ADMIN_CONFIG"
  fi
}

format_nodes() {
  local cid n args
  if [[ -s "$CLUSTER_ID" ]]; then
    cid="$(cat "$CLUSTER_ID")"
  else
    cid="$(run_quick kafka.tools.StorageTool random-uuid)"
    printf '%s\n' "$cid" >"$CLUSTER_ID"
  fi
  for n in $(seq 1 $NODES); do
    [[ -f "$(node_dir "$n")/data/meta.properties" ]] && continue
    args=(format -t "$cid" -c "$(node_config "$n")" --ignore-formatted)
    # the broker's own SCRAM identity must exist before the brokers can talk to each other
    sasl_mode && args+=(--add-scram "SCRAM-SHA-512=[name=admin,password=$(cat "$ADMIN_PASSWORD_FILE")]")
    log "formatting node $n (cluster id $cid)"
    run_quick kafka.tools.StorageTool "${args[@]}" >>"$(node_dir "$n")/logs/format.log" 2>&1 \
      || { tail -n 20 "$(node_dir "$n")/logs/format.log" >&2; die "format of node $n failed"; }
  done
}

# ---------------------------------------------------------------- processes

node_pid() {
  local f pid cmdline
  f="$(node_pid_file "$1")"
  [[ -f "$f" ]] || return 1
  pid="$(tr -dc '0-9' <"$f")"
  pid_alive "$pid" || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmdline" == *kafka.Kafka* && "$cmdline" == *"$(node_config "$1")"* ]] || return 1
  printf '%s\n' "$pid"
}

launch_node() {
  local n="$1" dir
  dir="$(node_dir "$n")"
  node_pid "$n" >/dev/null && return 0
  rm -f "$(node_pid_file "$n")"
  local jvm=(
    $NODE_HEAP
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:ActiveProcessorCount=2 -Djava.awt.headless=true
    -Dkafka.logs.dir="$dir/logs"
    -Dlog4j2.configurationFile="$SCRIPT_DIR/log4j2-broker.xml"
    -cp "$(classpath)"
    kafka.Kafka "$(node_config "$n")"
  )
  printf '\n==== %s starting node %s\n' "$(date '+%F %T')" "$n" >>"$dir/logs/kafka.out"
  setsid nohup bash -c 'echo $$ >"$1"; shift; exec "$@"' kafka-launch "$(node_pid_file "$n")" \
    "$JAVA" "${jvm[@]}" </dev/null >>"$dir/logs/kafka.out" 2>&1 8>&- 9>&- &
  local i
  for i in $(seq 1 100); do [[ -s "$(node_pid_file "$n")" ]] && break; sleep 0.05; done
}

# The cluster is ready when every node's client port accepts and the cluster answers a
# topic listing through the admin config.
wait_cluster_ready() {
  local deadline=$(( SECONDS + ${1:-90} )) n ok
  while :; do
    ok=1
    for n in $(seq 1 $NODES); do
      node_pid "$n" >/dev/null || { ok=0; break; }
      port_open "$(port_of "$n" broker)" || { ok=0; break; }
    done
    if (( ok )) && timeout 25 "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$SCRIPT_DIR/log4j2-tools.xml" -cp "$(classpath)" \
        org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap_list)" \
        --command-config "$ADMIN_CONFIG" --list >/dev/null 2>&1; then
      return 0
    fi
    (( SECONDS >= deadline )) && return 1
    sleep 1
  done
}

cmd_cluster_start() {
  local want=plain
  case "${1:-}" in
    "") ;;
    --sasl) want=sasl ;;
    *) die "usage: $0 start [--sasl]" ;;
  esac
  cmd_fetch
  check_java
  ensure_cluster_dir
  lock_cluster
  if [[ -f "$MODE_FILE" && "$(cat "$MODE_FILE")" != "$want" ]]; then
    die "$CLUSTER_DIR holds a $(cat "$MODE_FILE") cluster; stop it with --clean first"
  fi
  printf '%s\n' "$want" >"$MODE_FILE"
  if [[ "$want" == sasl && ! -s "$ADMIN_PASSWORD_FILE" ]]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$ADMIN_PASSWORD_FILE")
  fi
  choose_cluster_ports
  local n t0
  t0=$(now_ms)
  for n in $(seq 1 $NODES); do write_node_config "$n"; done
  write_admin_config
  format_nodes
  for n in $(seq 1 $NODES); do launch_node "$n"; done
  wait_cluster_ready 120 || die "the cluster did not become ready; logs in $CLUSTER_DIR/node-*/logs"
  log "three nodes ready at $(bootstrap_list) in $(( $(now_ms) - t0 )) ms ($want, state $CLUSTER_DIR)"
  bootstrap_list
}

stop_node() {  # stop_node N [SIGNAL]
  local n="$1" sig="${2:-TERM}" pid
  pid="$(node_pid "$n")" || return 0
  kill -CONT "$pid" 2>/dev/null || true
  kill "-$sig" "$pid" 2>/dev/null || true
  local deadline=$(( SECONDS + 40 ))
  while pid_alive "$pid" && (( SECONDS < deadline )); do sleep 0.2; done
  if pid_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  while pid_alive "$pid"; do sleep 0.1; done
  rm -f "$(node_pid_file "$n")"
}

cmd_cluster_stop() {
  [[ -f "$CLUSTER_TAG" ]] || { log "not running"; return 0; }
  lock_cluster
  local n
  # stop brokers in parallel: one at a time, the last ones wait on a lost quorum
  for n in $(seq 1 $NODES); do stop_node "$n" TERM & done
  wait
  if [[ "${1:-}" == --clean ]]; then rm -rf -- "$CLUSTER_DIR"; log "removed $CLUSTER_DIR"; fi
  log "stopped"
}

cmd_cluster_status() {
  [[ -f "$CLUSTER_PORTS" ]] || { echo "not running"; return 1; }
  local n pid all=0
  for n in $(seq 1 $NODES); do
    if pid="$(node_pid "$n")"; then
      local st; st="$(awk '{print $3}' "/proc/$pid/stat")"
      echo "node $n running $HOST:$(port_of "$n" broker) (pid $pid, state $st)"
    else
      echo "node $n not running"; all=1
    fi
  done
  return $all
}

admin_tool() {  # admin_tool CLASS ARGS...: a Kafka tool against the cluster as admin
  local cls="$1"; shift
  run_java "$TOOL_HEAP_OPTS" "$cls" --bootstrap-server "$(bootstrap_list)" \
    --command-config "$ADMIN_CONFIG" "$@"
}

cmd_leader() {
  [[ $# -eq 2 ]] || die "usage: $0 leader TOPIC PARTITION"
  admin_tool org.apache.kafka.tools.TopicCommand --describe --topic "$1" 2>/dev/null \
    | awk -v p="$2" '$0 ~ "Partition: "p"[ \t]" { for (i = 1; i <= NF; i++) if ($i == "Leader:") print $(i+1) }'
}

cmd_coordinator() {
  [[ $# -eq 1 ]] || die "usage: $0 coordinator TRANSACTIONAL_ID"
  run_java "$TOOL_HEAP_OPTS" org.apache.kafka.tools.TransactionsCommand \
    --bootstrap-server "$(bootstrap_list)" --command-config "$ADMIN_CONFIG" \
    describe --transactional-id "$1" 2>/dev/null \
    | awk 'NR == 2 { print $1 }'
}

# Each node is a voter here, so the quorum leader is one of 1..3 (and a broker too).
cmd_controller() {
  [[ $# -eq 0 ]] || die "usage: $0 controller"
  admin_tool org.apache.kafka.tools.MetadataQuorumCommand describe --status 2>/dev/null \
    | awk '$1 == "LeaderId:" { print $2 }'
}

cmd_group_coordinator() {
  [[ $# -eq 1 ]] || die "usage: $0 group-coordinator GROUP"
  # the COORDINATOR (ID) column reads "host:port (N)"
  admin_tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --describe --group "$1" \
    --state 2>/dev/null | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\([0-9]+\)$/) { gsub(/[()]/, "", $i); print $i; exit } }'
}

cmd_add_user() {
  [[ $# -eq 2 ]] || die "usage: $0 add-user NAME PASSWORD"
  sasl_mode || die "add-user needs a cluster started with --sasl"
  run_java "$TOOL_HEAP_OPTS" kafka.admin.ConfigCommand --bootstrap-server "$(bootstrap_list)" \
    --command-config "$ADMIN_CONFIG" --alter --add-config "SCRAM-SHA-512=[password=$2]" \
    --entity-type users --entity-name "$1"
}

cluster_main() {
  local cmd="${1:-help}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    start) cmd_cluster_start "$@" ;;
    stop) cmd_cluster_stop "$@" ;;
    status) cmd_cluster_status ;;
    bootstrap) [[ -f "$CLUSTER_PORTS" ]] || die "not running"; bootstrap_list ;;
    kill) check_node "${1:-}"; stop_node "$1" KILL; log "node $1 killed (SIGKILL)" ;;
    stop-node) check_node "${1:-}"; stop_node "$1" TERM; log "node $1 stopped" ;;
    start-node)
      check_node "${1:-}"; lock_cluster; write_node_config "$1"; launch_node "$1"
      # a node restarted on a busy two-core machine (two other JVMs, builds) took over 60 s
      local deadline=$(( SECONDS + ${HELPGRID_KAFKA_NODE_START_S:-180} ))
      until port_open "$(port_of "$1" broker)"; do
        (( SECONDS < deadline )) || die "node $1 did not open its port"
        sleep 0.5
      done
      log "node $1 started" ;;
    pause) check_node "${1:-}"; kill -STOP "$(node_pid "$1")"; log "node $1 paused (SIGSTOP)" ;;
    resume) check_node "${1:-}"; kill -CONT "$(node_pid "$1")"; log "node $1 resumed (SIGCONT)" ;;
    pid) check_node "${1:-}"; node_pid "$1" ;;
    leader) cmd_leader "$@" ;;
    coordinator) cmd_coordinator "$@" ;;
    controller) cmd_controller "$@" ;;
    group-coordinator) cmd_group_coordinator "$@" ;;
    admin-config) echo "$ADMIN_CONFIG" ;;
    add-user) cmd_add_user "$@" ;;
    acls) admin_tool org.apache.kafka.tools.AclCommand "$@" ;;
    topics) admin_tool org.apache.kafka.tools.TopicCommand "$@" ;;
    transactions) admin_tool org.apache.kafka.tools.TransactionsCommand "$@" ;;
    groups) admin_tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand "$@" ;;
    help|-h|--help) sed -n '2,36p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
    *) sed -n '2,36p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}

cluster_main "$@"
