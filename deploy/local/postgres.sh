#!/usr/bin/env bash
# deploy/local/postgres.sh - run Debian's PostgreSQL 15 as a plain process for the archive:
# its own state folder, free port and socket directory, no system service. initdb and
# postgres refuse to run as root (and CI runs as root), so as root they run as the `postgres`
# user the package creates, on a state folder that user owns.
#
#   postgres.sh start            initialise (once) and start; prints the connection URL
#   postgres.sh stop [--clean]   stop it (fast shutdown); --clean also deletes the data
#   postgres.sh kill             SIGKILL the postmaster (a crash, for fault tests)
#   postgres.sh status           "running <url> ..." (exit 0) or "not running" (exit 1)
#   postgres.sh url              prints only the connection URL (exit 1 if not running)
#   postgres.sh psql ARGS...     psql against the running server
#
# Settings: HELPGRID_POSTGRES_DIR (state folder, default /tmp/helpgrid-postgres),
# HELPGRID_POSTGRES_PORT (default: a free port, kept across restarts), HELPGRID_POSTGRES_BIN
# (default /usr/lib/postgresql/15/bin), HELPGRID_POSTGRES_DB (database, default helpgrid).
set -euo pipefail

PG_BIN="${HELPGRID_POSTGRES_BIN:-/usr/lib/postgresql/15/bin}"
STATE_DIR="${HELPGRID_POSTGRES_DIR:-/tmp/helpgrid-postgres}"
WANT_PORT="${HELPGRID_POSTGRES_PORT:-}"
DB_NAME="${HELPGRID_POSTGRES_DB:-helpgrid}"
START_TIMEOUT="${HELPGRID_POSTGRES_START_TIMEOUT:-60}"
HOST=127.0.0.1
DB_USER=helpgrid

STATE_TAG="$STATE_DIR/.helpgrid-postgres-state"
DATA_DIR="$STATE_DIR/data"
SOCKET_DIR="$STATE_DIR/socket"
LOG_FILE="$STATE_DIR/postgres.log"
PORT_FILE="$STATE_DIR/port"

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

# Runs a PostgreSQL binary as the user that owns the data (postgres when we are root).
as_owner() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

check_bin() {
  [[ -x "$PG_BIN/postgres" && -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]] \
    || die "PostgreSQL binaries not found in $PG_BIN (apt-get install -y postgresql, or set HELPGRID_POSTGRES_BIN)"
  if [[ "$(id -u)" == 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' user (Debian's postgresql package creates it)"
  fi
}

port_free() {
  python3 - "$HOST" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
# Ignore TIME_WAIT leftovers of the previous run's connections, as postgres itself does:
# otherwise a restart would move to another port and break every client's URL.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

pick_port() {
  local lo=32768 hi=60999 tries=0 p
  [[ -r /proc/sys/net/ipv4/ip_local_port_range ]] && read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
  local min=15000 max=$(( lo - 1 ))
  (( max - min < 1000 )) && { min=20000; max=30000; }
  while (( tries < 500 )); do
    tries=$(( tries + 1 ))
    p=$(( min + (RANDOM * 32768 + RANDOM) % (max - min + 1) ))
    port_free "$p" && { echo "$p"; return 0; }
  done
  die "could not find a free port on $HOST"
}

read_port() { [[ -s "$PORT_FILE" ]] && PORT="$(tr -dc '0-9' <"$PORT_FILE")" && [[ -n "$PORT" ]]; }

url() { printf 'postgres://%s@%s:%s/%s\n' "$DB_USER" "$HOST" "$PORT" "$DB_NAME"; }

ensure_state_dir() {
  if [[ -d "$STATE_DIR" && ! -f "$STATE_TAG" ]] && [[ -n "$(ls -A "$STATE_DIR")" ]]; then
    die "$STATE_DIR exists, is not empty and was not made by postgres.sh; set HELPGRID_POSTGRES_DIR elsewhere"
  fi
  mkdir -p "$STATE_DIR" "$SOCKET_DIR"
  touch "$STATE_TAG" "$LOG_FILE"
  if [[ "$(id -u)" == 0 ]]; then
    chown postgres:postgres "$STATE_DIR" "$SOCKET_DIR" "$LOG_FILE"
    # The postgres user must be able to reach the state folder through its parents.
    chmod o+x "$(dirname "$STATE_DIR")" 2>/dev/null || true
  fi
}

# Serialises start/stop on one state folder (fd 9, held until the script exits).
lock_state() {
  exec 9>"$STATE_DIR/.lock"
  flock -w $(( START_TIMEOUT + 60 )) 9 || die "timed out waiting for another postgres.sh on $STATE_DIR"
}

init_if_needed() {
  [[ -f "$DATA_DIR/PG_VERSION" ]] && return 0
  log "initialising $DATA_DIR"
  # Local connections only (127.0.0.1 and the socket), trusted: this is a development server.
  as_owner "$PG_BIN/initdb" -D "$DATA_DIR" -U "$DB_USER" --auth=trust --encoding=UTF8 \
    --locale=C.UTF-8 >>"$LOG_FILE" 2>&1 || { tail -n 20 "$LOG_FILE" >&2; die "initdb failed"; }
}

running() { as_owner "$PG_BIN/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1; }

ready() { "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PORT" -U "$DB_USER" -d postgres; }

cmd_start() {
  check_bin
  ensure_state_dir
  lock_state
  init_if_needed
  if running && read_port; then
    log "already running on port $PORT"
    url
    return 0
  fi
  if [[ -n "$WANT_PORT" ]]; then
    PORT="$WANT_PORT"
  elif read_port && port_free "$PORT"; then
    :  # the previous run's port, so clients reconnect to the same address
  else
    PORT="$(pick_port)"
  fi
  echo "$PORT" >"$PORT_FILE"
  # Settings on the command line (not postgresql.conf) so one data folder can move ports.
  # fsync stays on: the archive's exactly-once claim rests on a commit being durable.
  as_owner "$PG_BIN/pg_ctl" -D "$DATA_DIR" -l "$LOG_FILE" -w -t "$START_TIMEOUT" \
    -o "-c listen_addresses=$HOST -p $PORT -c unix_socket_directories=$SOCKET_DIR \
        -c max_connections=200 -c shared_buffers=256MB -c synchronous_commit=on" \
    start >/dev/null 9>&- || { tail -n 20 "$LOG_FILE" >&2; die "PostgreSQL did not start; log in $LOG_FILE"; }
  local deadline=$(( SECONDS + START_TIMEOUT ))
  until ready; do
    (( SECONDS >= deadline )) && die "PostgreSQL does not answer on port $PORT; log in $LOG_FILE"
    sleep 0.2
  done
  if ! "$PG_BIN/../bin/psql" -h "$HOST" -p "$PORT" -U "$DB_USER" -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
    "$PG_BIN/createdb" -h "$HOST" -p "$PORT" -U "$DB_USER" "$DB_NAME"
  fi
  log "PostgreSQL ready on $HOST:$PORT (state $STATE_DIR)"
  url
}

cmd_stop() {
  local clean=0
  case "${1:-}" in
    "") ;;
    --clean) clean=1 ;;
    *) die "usage: $0 stop [--clean]" ;;
  esac
  if [[ ! -d "$STATE_DIR" ]]; then log "not running"; return 0; fi
  [[ -f "$STATE_TAG" ]] || die "$STATE_DIR was not made by postgres.sh; not touching it"
  lock_state
  if [[ -f "$DATA_DIR/PG_VERSION" ]] && running; then
    as_owner "$PG_BIN/pg_ctl" -D "$DATA_DIR" -m fast -w stop >/dev/null
    log "stopped"
  else
    log "not running"
  fi
  if (( clean )); then
    rm -rf -- "$STATE_DIR"
    log "removed $STATE_DIR"
  fi
}

cmd_kill() {
  [[ -f "$DATA_DIR/postmaster.pid" ]] || { log "not running"; return 0; }
  local pid
  pid="$(head -n1 "$DATA_DIR/postmaster.pid" | tr -dc '0-9')"
  [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null || true
  while [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  log "killed postmaster pid $pid (SIGKILL); 'start' recovers the data"
}

cmd_status() {
  if [[ -f "$STATE_TAG" && -f "$DATA_DIR/PG_VERSION" ]] && running && read_port && ready; then
    echo "running $(url) (state $STATE_DIR)"
    return 0
  fi
  echo "not running"
  return 1
}

cmd_url() {
  if [[ -f "$STATE_TAG" && -f "$DATA_DIR/PG_VERSION" ]] && running && read_port; then
    url
  else
    log "not running"
    return 1
  fi
}

cmd_psql() {
  cmd_url >/dev/null || die "not running; start it with: $0 start"
  read_port
  psql -h "$HOST" -p "$PORT" -U "$DB_USER" -d "$DB_NAME" "$@"
}

main() {
  local cmd="${1:-help}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    start)  cmd_start ;;
    stop)   cmd_stop "$@" ;;
    kill)   cmd_kill ;;
    status) cmd_status ;;
    url)    cmd_url ;;
    psql)   cmd_psql "$@" ;;
    help|-h|--help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
