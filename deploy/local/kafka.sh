#!/usr/bin/env bash
# deploy/local/kafka.sh - run a real single-node Apache Kafka (KRaft, broker+controller in one
# JVM) from Maven Central jars: no Docker, no Kafka tarball. See deploy/local/README.md.
#
#   kafka.sh fetch                 download the jars once into the cache folder
#   kafka.sh start                 start (or find) the broker; prints the bootstrap address
#   kafka.sh stop [--clean]        stop it (SIGTERM, then SIGKILL); --clean also deletes the data
#   kafka.sh restart               stop + start, keeping the data and the same ports
#   kafka.sh kill                  SIGKILL the broker (a crash, for fault tests); data and ports kept
#   kafka.sh status                "running <addr> ..." (exit 0) or "not running" (exit 1)
#   kafka.sh bootstrap             prints only the bootstrap address (exit 1 if not running)
#   kafka.sh topics ARGS...        org.apache.kafka.tools.TopicCommand against the running broker
#   kafka.sh tool CLASS ARGS...    any Java class from the lib folder (short names are looked up
#                                  in org.apache.kafka.tools, e.g. "tool ProducerPerformance ...")
#   kafka.sh classpath             prints the Java classpath of the jars
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

KAFKA_VERSION="${HELPGRID_KAFKA_VERSION:-4.1.2}"
LIB_DIR="${HELPGRID_KAFKA_CACHE:-${HOME}/.cache/helpgrid/kafka-${KAFKA_VERSION}/lib}"
STATE_DIR="${HELPGRID_KAFKA_DIR:-/tmp/helpgrid-kafka}"
START_TIMEOUT="${HELPGRID_KAFKA_START_TIMEOUT:-60}"
STOP_TIMEOUT="${HELPGRID_KAFKA_STOP_TIMEOUT:-30}"
HEAP_OPTS="${HELPGRID_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
# The parallel collector: on two cores shared with the services, G1's concurrent work cost the
# broker 8-14 % more CPU per press in the city flood (docs/performance.md); young pauses on this
# 1 GiB heap stay short. HELPGRID_KAFKA_GC_OPTS="-XX:+UseG1GC -XX:MaxGCPauseMillis=20" for G1.
GC_OPTS="${HELPGRID_KAFKA_GC_OPTS:--XX:+UseParallelGC}"
TOOL_HEAP_OPTS="${HELPGRID_KAFKA_TOOL_HEAP_OPTS:--Xmx512m}"
EXTRA_JVM_OPTS="${HELPGRID_KAFKA_JVM_OPTS:-}"
EXTRA_PROPS_FILE="${HELPGRID_KAFKA_EXTRA_PROPS:-}"
WANT_BROKER_PORT="${HELPGRID_KAFKA_PORT:-}"
WANT_CONTROLLER_PORT="${HELPGRID_KAFKA_CONTROLLER_PORT:-}"
HOST=127.0.0.1

LIB_MARKER="$LIB_DIR/.helpgrid-fetched"
STATE_TAG="$STATE_DIR/.helpgrid-kafka-state"
PID_FILE="$STATE_DIR/kafka.pid"
PORTS_FILE="$STATE_DIR/ports"
BOOTSTRAP_FILE="$STATE_DIR/bootstrap"
CONFIG_FILE="$STATE_DIR/server.properties"
PROBE_CONFIG="$STATE_DIR/admin-probe.properties"
CLUSTER_ID_FILE="$STATE_DIR/cluster.id"
DATA_DIR="$STATE_DIR/data"
LOG_DIR="$STATE_DIR/logs"

JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { date +%s%3N; }

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# ---------------------------------------------------------------- jars

lib_stamp() {
  # The marker records the version and the pom it was fetched with: a changed pom refetches.
  printf 'kafka=%s pom=%s\n' "$KAFKA_VERSION" "$(sha256sum "$SCRIPT_DIR/pom.xml" | cut -d' ' -f1)"
}

lib_ready() {
  [[ -f "$LIB_MARKER" ]] && [[ "$(cat "$LIB_MARKER")" == "$(lib_stamp)" ]]
}

cmd_fetch() {
  lib_ready && return 0
  command -v mvn >/dev/null 2>&1 || die "mvn (Maven) is needed to fetch the Kafka jars"
  mkdir -p "$(dirname "$LIB_DIR")"
  exec 8>"$LIB_DIR.lock"
  flock -w 900 8 || die "timed out waiting for another fetch ($LIB_DIR.lock)"
  if lib_ready; then exec 8>&-; return 0; fi
  if [[ -d "$LIB_DIR" && ! -f "$LIB_MARKER" ]] && [[ -n "$(ls -A "$LIB_DIR")" ]]; then
    die "$LIB_DIR exists, is not empty and was not made by kafka.sh; remove it or set HELPGRID_KAFKA_CACHE"
  fi
  local tmp="$LIB_DIR.tmp.$$" t0
  rm -rf "$tmp"
  t0=$(now_ms)
  log "fetching Apache Kafka $KAFKA_VERSION jars with Maven into $LIB_DIR (once)"
  if ! mvn -B -q -Dstyle.color=never -f "$SCRIPT_DIR/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >&2; then
    rm -rf "$tmp"
    die "mvn could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its dependencies"
  fi
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" && -f "$tmp/kafka-tools-$KAFKA_VERSION.jar" ]] \
    || { rm -rf "$tmp"; die "mvn finished but the Kafka $KAFKA_VERSION jars are missing"; }
  lib_stamp >"$tmp/.helpgrid-fetched"
  rm -rf "$LIB_DIR"
  mv "$tmp" "$LIB_DIR"
  exec 8>&-
  log "fetched $(find "$LIB_DIR" -name '*.jar' | wc -l) jars in $(( ($(now_ms) - t0) / 1000 ))s"
}

classpath() { printf '%s/*' "$LIB_DIR"; }

check_java() {
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (install Java 17+ or set JAVA_HOME)"
  local v major
  v="$("$JAVA" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)"
  major="${v%%.*}"
  [[ "$major" =~ ^[0-9]+$ ]] && (( major >= 17 )) || die "Kafka $KAFKA_VERSION needs Java 17+, found '${v:-unknown}'"
}

# Runs a Java class from the lib folder with the CLI-tools logging config (WARN to stderr).
run_java() {
  local heap="$1"; shift
  # shellcheck disable=SC2086  # heap/extra options are deliberately word-split
  "$JAVA" $heap -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$SCRIPT_DIR/log4j2-tools.xml" \
    -cp "$(classpath)" "$@"
}

# Short-lived helper JVMs (format, readiness probe): tuned for start-up time, not throughput.
run_quick() {
  run_java "-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1" "$@"
}

# ---------------------------------------------------------------- process / ports

pid_alive() {
  local pid="$1" state
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  # a zombie that nobody reaps yet is dead for our purposes
  state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
  [[ "$state" != "Z" ]]
}

# Prints the pid of the broker started by this script for this state folder, if it is alive.
broker_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  pid_alive "$pid" || return 1
  # guard against pid reuse: it must be our kafka.Kafka with our config file
  local cmdline
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmdline" == *kafka.Kafka* && "$cmdline" == *"$CONFIG_FILE"* ]] || return 1
  printf '%s\n' "$pid"
}

port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

have_python() { command -v python3 >/dev/null 2>&1; }

port_free() {
  local port="$1"
  if have_python; then
    python3 - "$HOST" "$port" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers, like Java does
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
  else
    ! port_open "$port"
  fi
}

# Prints two distinct free ports. They are drawn below the kernel's ephemeral range so that an
# outgoing connection is unlikely to hold them when the broker is restarted on the same ports.
pick_two_ports() {
  local lo=32768 hi=60999 a b tries=0
  if [[ -r /proc/sys/net/ipv4/ip_local_port_range ]]; then
    read -r lo hi </proc/sys/net/ipv4/ip_local_port_range || true
  fi
  local min=15000 max=$(( lo - 1 ))
  if (( max - min < 1000 )); then min=$(( hi + 1 )); max=65000; fi
  if (( max - min < 1000 )); then min=20000; max=30000; fi
  a="" b=""
  while (( tries < 500 )); do
    tries=$(( tries + 1 ))
    local p=$(( min + (RANDOM * 32768 + RANDOM) % (max - min + 1) ))
    [[ "$p" == "$a" ]] && continue
    port_free "$p" || continue
    if [[ -z "$a" ]]; then a="$p"; else b="$p"; break; fi
  done
  [[ -n "$a" && -n "$b" ]] || die "could not find two free ports on $HOST"
  printf '%s %s\n' "$a" "$b"
}

read_ports() {
  BROKER_PORT="" CONTROLLER_PORT=""
  [[ -f "$PORTS_FILE" ]] || return 1
  BROKER_PORT="$(sed -n 's/^broker=\([0-9]*\)$/\1/p' "$PORTS_FILE")"
  CONTROLLER_PORT="$(sed -n 's/^controller=\([0-9]*\)$/\1/p' "$PORTS_FILE")"
  [[ -n "$BROKER_PORT" && -n "$CONTROLLER_PORT" ]]
}

wait_ports_free() {  # wait_ports_free SECONDS PORT...
  local deadline=$(( SECONDS + $1 )); shift
  while :; do
    local all=1 p
    for p in "$@"; do port_free "$p" || { all=0; break; }; done
    (( all )) && return 0
    (( SECONDS >= deadline )) && return 1
    sleep 0.5
  done
}

choose_ports() {
  if [[ -n "$WANT_BROKER_PORT" || -n "$WANT_CONTROLLER_PORT" ]]; then
    [[ -n "$WANT_BROKER_PORT" && -n "$WANT_CONTROLLER_PORT" ]] \
      || die "set both HELPGRID_KAFKA_PORT and HELPGRID_KAFKA_CONTROLLER_PORT, or neither"
    BROKER_PORT="$WANT_BROKER_PORT" CONTROLLER_PORT="$WANT_CONTROLLER_PORT"
    wait_ports_free 10 "$BROKER_PORT" "$CONTROLLER_PORT" \
      || die "port $BROKER_PORT or $CONTROLLER_PORT on $HOST is in use"
  elif read_ports; then
    # reuse the ports of the previous run so clients can reconnect to the same address
    if ! wait_ports_free 10 "$BROKER_PORT" "$CONTROLLER_PORT"; then
      log "warning: previous ports $BROKER_PORT/$CONTROLLER_PORT are taken; picking new ones"
      read -r BROKER_PORT CONTROLLER_PORT < <(pick_two_ports)
    fi
  else
    read -r BROKER_PORT CONTROLLER_PORT < <(pick_two_ports)
  fi
  printf 'broker=%s\ncontroller=%s\n' "$BROKER_PORT" "$CONTROLLER_PORT" >"$PORTS_FILE"
}

bootstrap_addr() { printf '%s:%s' "$HOST" "$BROKER_PORT"; }

# ---------------------------------------------------------------- state folder

ensure_state_dir() {
  if [[ -d "$STATE_DIR" && ! -f "$STATE_TAG" ]] && [[ -n "$(ls -A "$STATE_DIR")" ]]; then
    die "$STATE_DIR exists, is not empty and was not made by kafka.sh; set HELPGRID_KAFKA_DIR elsewhere"
  fi
  mkdir -p "$STATE_DIR" "$LOG_DIR"
  touch "$STATE_TAG"
}

# Serialises start/stop/restart on one state folder (fd 9; held until this script exits).
STATE_LOCKED=0
lock_state() {
  (( STATE_LOCKED )) && return 0
  exec 9>"$STATE_DIR/.lock"
  flock -w $(( START_TIMEOUT + STOP_TIMEOUT + 60 )) 9 \
    || die "timed out waiting for another kafka.sh on $STATE_DIR"
  STATE_LOCKED=1
}

write_config() {
  cat >"$CONFIG_FILE" <<EOF
# Generated by deploy/local/kafka.sh at every start: edit the script (or use
# HELPGRID_KAFKA_EXTRA_PROPS), not this file. Apache Kafka $KAFKA_VERSION, single node, KRaft.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://$HOST:$BROKER_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$BROKER_PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA_DIR

# one node: every internal topic has a single replica
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# small machine (2 cores)
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
  if [[ -n "$EXTRA_PROPS_FILE" ]]; then
    [[ -f "$EXTRA_PROPS_FILE" ]] || die "HELPGRID_KAFKA_EXTRA_PROPS=$EXTRA_PROPS_FILE is not a file"
    { printf '\n# from HELPGRID_KAFKA_EXTRA_PROPS=%s (later keys win)\n' "$EXTRA_PROPS_FILE"
      cat "$EXTRA_PROPS_FILE"; } >>"$CONFIG_FILE"
  fi
  # admin client settings for the readiness probe: fail fast instead of the 60 s default
  cat >"$PROBE_CONFIG" <<EOF
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
}

format_if_needed() {
  [[ -f "$DATA_DIR/meta.properties" ]] && return 0
  local cid
  if [[ -s "$CLUSTER_ID_FILE" ]]; then
    cid="$(cat "$CLUSTER_ID_FILE")"
  else
    cid="$(run_quick kafka.tools.StorageTool random-uuid)"
    [[ -n "$cid" ]] || die "StorageTool random-uuid printed nothing"
    printf '%s\n' "$cid" >"$CLUSTER_ID_FILE"
  fi
  log "formatting $DATA_DIR (cluster id $cid)"
  run_quick kafka.tools.StorageTool format -t "$cid" -c "$CONFIG_FILE" --ignore-formatted \
    >>"$LOG_DIR/format.log" 2>&1 || { tail -n 20 "$LOG_DIR/format.log" >&2; die "storage format failed"; }
}

launch_broker() {
  rm -f "$PID_FILE"
  local jvm=(
    $HEAP_OPTS
    -server $GC_OPTS -XX:MaxInlineLevel=15 -Djava.awt.headless=true
    "-Xlog:gc*:file=$LOG_DIR/gc.log:time,tags:filecount=5,filesize=20M"
    -Dkafka.logs.dir="$LOG_DIR"
    -Dlog4j2.configurationFile="$SCRIPT_DIR/log4j2-broker.xml"
    $EXTRA_JVM_OPTS
    -cp "$(classpath)"
    kafka.Kafka "$CONFIG_FILE"
  )
  printf '\n==== %s starting Kafka %s on %s\n' "$(date '+%F %T')" "$KAFKA_VERSION" "$(bootstrap_addr)" \
    >>"$LOG_DIR/kafka.out"
  # Own session (setsid): the broker survives the caller's process group being killed.
  # The wrapper writes its own pid and then execs java, so the pid file holds java's pid.
  setsid nohup bash -c 'echo $$ >"$1"; shift; exec "$@"' kafka-launch "$PID_FILE" \
    "$JAVA" "${jvm[@]}" </dev/null >>"$LOG_DIR/kafka.out" 2>&1 8>&- 9>&- &
  local i
  for i in $(seq 1 100); do [[ -s "$PID_FILE" ]] && break; sleep 0.05; done
  [[ -s "$PID_FILE" ]] || die "broker did not start (no pid file); see $LOG_DIR/kafka.out"
}

# TopicCommand --list with short admin timeouts, bounded by timeout(1).
probe_list_topics() {
  timeout 25 "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$SCRIPT_DIR/log4j2-tools.xml" -cp "$(classpath)" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap_addr)" \
    --command-config "$PROBE_CONFIG" --list >/dev/null 2>&1
}

# wait_ready PID: the broker port accepts connections and TopicCommand --list answers.
wait_ready() {
  local pid="$1" deadline=$(( SECONDS + START_TIMEOUT ))
  while :; do
    if ! pid_alive "$pid"; then
      log "broker (pid $pid) exited during start-up; last lines of $LOG_DIR:"
      tail -n 15 "$LOG_DIR/kafka.out" >&2 || true
      tail -n 15 "$LOG_DIR/server.log" >&2 2>/dev/null || true
      return 1
    fi
    if port_open "$BROKER_PORT" && probe_list_topics; then
      return 0
    fi
    if (( SECONDS >= deadline )); then
      log "broker (pid $pid) not ready after ${START_TIMEOUT}s; see $LOG_DIR/server.log"
      return 1
    fi
    sleep 0.5
  done
}

# ---------------------------------------------------------------- commands

cmd_start() {
  cmd_fetch
  check_java
  ensure_state_dir
  lock_state
  local pid
  if pid="$(broker_pid)"; then
    read_ports || die "broker pid $pid is running but $PORTS_FILE is missing; run: $0 stop"
    wait_ready "$pid" || die "broker pid $pid is running but does not answer on $(bootstrap_addr); try: $0 restart"
    bootstrap_addr >"$BOOTSTRAP_FILE"; echo >>"$BOOTSTRAP_FILE"
    log "already running (pid $pid)"
    bootstrap_addr; echo
    return 0
  fi
  rm -f "$PID_FILE" "$BOOTSTRAP_FILE"
  choose_ports
  write_config
  format_if_needed
  local t0; t0=$(now_ms)
  launch_broker
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  if ! wait_ready "$pid"; then
    log "stopping the half-started broker"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$PID_FILE"
    die "Kafka did not become ready; logs in $LOG_DIR"
  fi
  bootstrap_addr >"$BOOTSTRAP_FILE"; echo >>"$BOOTSTRAP_FILE"
  log "Kafka $KAFKA_VERSION ready at $(bootstrap_addr) in $(( $(now_ms) - t0 )) ms (pid $pid, state $STATE_DIR)"
  bootstrap_addr; echo
}

stop_broker() {
  local pid
  if ! pid="$(broker_pid)"; then
    rm -f "$PID_FILE" "$BOOTSTRAP_FILE"
    log "not running"
    return 0
  fi
  log "stopping broker pid $pid (SIGTERM, up to ${STOP_TIMEOUT}s)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$(( SECONDS + STOP_TIMEOUT ))
  while pid_alive "$pid" && (( SECONDS < deadline )); do sleep 0.2; done
  if pid_alive "$pid"; then
    log "broker pid $pid still alive after ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while pid_alive "$pid"; do sleep 0.1; done
  fi
  rm -f "$PID_FILE" "$BOOTSTRAP_FILE"
  log "stopped"
}

cmd_stop() {
  local clean=0
  case "${1:-}" in
    "") ;;
    --clean) clean=1 ;;
    *) die "usage: $0 stop [--clean]" ;;
  esac
  if [[ ! -d "$STATE_DIR" ]]; then log "not running"; return 0; fi
  [[ -f "$STATE_TAG" ]] || die "$STATE_DIR was not made by kafka.sh; not touching it"
  lock_state
  stop_broker
  if (( clean )); then
    rm -rf -- "$STATE_DIR"
    log "removed $STATE_DIR"
  fi
}

cmd_kill() {
  if [[ ! -f "$STATE_TAG" ]]; then log "not running"; return 0; fi
  lock_state
  local pid
  if ! pid="$(broker_pid)"; then
    rm -f "$PID_FILE" "$BOOTSTRAP_FILE"
    log "not running"
    return 0
  fi
  kill -KILL "$pid" 2>/dev/null || true
  while pid_alive "$pid"; do sleep 0.1; done
  rm -f "$PID_FILE" "$BOOTSTRAP_FILE"
  log "killed broker pid $pid (SIGKILL); data and ports kept, 'start' brings it back"
}

cmd_restart() {
  cmd_stop
  cmd_start
}

running_addr() {  # prints the address and returns 0 if the broker runs and its port accepts
  broker_pid >/dev/null || return 1
  read_ports || return 1
  port_open "$BROKER_PORT" || return 1
  bootstrap_addr; echo
}

cmd_status() {
  local addr pid
  if addr="$(running_addr)"; then
    echo "running $addr (pid $(broker_pid), Kafka $KAFKA_VERSION, state $STATE_DIR)"
    return 0
  fi
  if pid="$(broker_pid)"; then
    echo "not running (pid $pid alive but its port does not answer yet; state $STATE_DIR)"
  else
    echo "not running"
  fi
  return 1
}

cmd_bootstrap() {
  local addr
  addr="$(running_addr)" || { log "not running"; return 1; }
  echo "$addr"
}

cmd_topics() {
  local addr a
  addr="$(running_addr)" || die "broker not running; start it with: $0 start"
  lib_ready || die "jars not fetched; run: $0 fetch"
  for a in "$@"; do
    if [[ "$a" == --bootstrap-server* ]]; then
      run_java "$TOOL_HEAP_OPTS" org.apache.kafka.tools.TopicCommand "$@"
      return
    fi
  done
  run_java "$TOOL_HEAP_OPTS" org.apache.kafka.tools.TopicCommand --bootstrap-server "$addr" "$@"
}

cmd_tool() {
  [[ $# -ge 1 ]] || die "usage: $0 tool CLASS [ARGS...]"
  local cls="$1"; shift
  [[ "$cls" == *.* ]] || cls="org.apache.kafka.tools.$cls"
  cmd_fetch
  run_java "$TOOL_HEAP_OPTS" "$cls" "$@"
}

main() {
  local cmd="${1:-help}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    fetch)     cmd_fetch; log "jars ready in $LIB_DIR" ;;
    start)     cmd_start ;;
    stop)      cmd_stop "$@" ;;
    restart)   cmd_restart ;;
    kill)      cmd_kill ;;
    status)    cmd_status ;;
    bootstrap) cmd_bootstrap ;;
    topics)    cmd_topics "$@" ;;
    tool)      cmd_tool "$@" ;;
    classpath) cmd_fetch; classpath; echo ;;
    help|-h|--help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

# Sourced by kafka-cluster.sh for its helpers; run as a command otherwise.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
