#!/usr/bin/env bash
# deploy/local/mosquitto.sh - run Debian's Mosquitto (MQTT) as a plain process for HelpGrid:
# its own config, password file and persistence folder, a listener on 127.0.0.1 with a free
# port; no system service. See deploy/local/README.md.
#
#   mosquitto.sh start              start (or find) the broker; prints its URL (mqtt://127.0.0.1:PORT)
#   mosquitto.sh stop [--clean]     stop it (SIGTERM, then SIGKILL); --clean also deletes the state
#   mosquitto.sh restart            stop + start, keeping the data (sessions, queued QoS 1) and port
#   mosquitto.sh kill               SIGKILL the broker (a crash, for fault tests)
#   mosquitto.sh status             "running <url> (pid N)" (exit 0) or "not running" (exit 1)
#   mosquitto.sh url                prints only the URL (exit 1 if not running)
#   mosquitto.sh env                prints HELPGRID_GATEWAY_MQTT_{URL,USERNAME,PASSWORD}=... lines
#
# Environment: HELPGRID_MQTT_DIR (state folder, default /tmp/helpgrid-mosquitto),
# HELPGRID_MQTT_PORT (default: a free port, kept across restarts), HELPGRID_MQTT_USER
# (default helpgrid), HELPGRID_MQTT_PASSWORD (default: generated once, kept in the state folder).
set -euo pipefail

STATE_DIR="${HELPGRID_MQTT_DIR:-/tmp/helpgrid-mosquitto}"
WANT_PORT="${HELPGRID_MQTT_PORT:-}"
MQTT_USER="${HELPGRID_MQTT_USER:-helpgrid}"
HOST=127.0.0.1
CONFIG_FILE="$STATE_DIR/mosquitto.conf"
PASSWD_FILE="$STATE_DIR/passwd"
PASSWORD_FILE="$STATE_DIR/password"
PID_FILE="$STATE_DIR/mosquitto.pid"
PORT_FILE="$STATE_DIR/port"
DATA_DIR="$STATE_DIR/data"
LOG_FILE="$STATE_DIR/mosquitto.log"
MOSQUITTO="${HELPGRID_MOSQUITTO:-/usr/sbin/mosquitto}"

log() { printf 'mosquitto.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

broker_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid cmdline
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
  # guard against pid reuse: it must be mosquitto with our config file
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmdline" == *mosquitto* && "$cmdline" == *"$CONFIG_FILE"* ]] || return 1
  printf '%s\n' "$pid"
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

url() { printf 'mqtt://%s:%s\n' "$HOST" "$(cat "$PORT_FILE")"; }

write_config() {
  mkdir -p "$DATA_DIR"
  local port
  if [[ -n "$WANT_PORT" ]]; then
    port="$WANT_PORT"
  elif [[ -f "$PORT_FILE" ]] && ! port_open "$(cat "$PORT_FILE")"; then
    port="$(cat "$PORT_FILE")"
  else
    port="$(free_port)"
  fi
  printf '%s\n' "$port" >"$PORT_FILE"
  if [[ ! -f "$PASSWORD_FILE" ]]; then
    (umask 077; printf '%s\n' "${HELPGRID_MQTT_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')}" >"$PASSWORD_FILE")
  fi
  rm -f "$PASSWD_FILE"
  (umask 077; : >"$PASSWD_FILE")
  mosquitto_passwd -b "$PASSWD_FILE" "$MQTT_USER" "$(cat "$PASSWORD_FILE")" 2>/dev/null \
    || die "mosquitto_passwd failed (apt-get install mosquitto)"
  {
    echo "# written by deploy/local/mosquitto.sh; edits are overwritten on start"
    echo "listener $port $HOST"
    echo "allow_anonymous false"
    echo "password_file $PASSWD_FILE"
    # Sessions and queued QoS 1 messages survive a restart: a gateway that reconnects gets
    # the presses the broker accepted while it was away.
    echo "persistence true"
    echo "persistence_location $DATA_DIR/"
    echo "autosave_interval 1"
    echo "max_queued_messages 100000"
    echo "max_inflight_messages 1000"
    echo "log_dest file $LOG_FILE"
    echo "log_type error"
    echo "log_type warning"
    echo "log_type notice"
    # Started as root, mosquitto drops to the "mosquitto" user, which cannot read this
    # folder; it stays root here, bound to loopback only.
    if [[ "$(id -u)" == 0 ]]; then echo "user root"; fi
  } >"$CONFIG_FILE"
}

cmd_start() {
  if broker_pid >/dev/null; then url; return 0; fi
  [[ -x "$MOSQUITTO" ]] || die "$MOSQUITTO not found (apt-get install mosquitto mosquitto-clients)"
  write_config
  local port; port="$(cat "$PORT_FILE")"
  setsid "$MOSQUITTO" -c "$CONFIG_FILE" >>"$STATE_DIR/stdout.log" 2>&1 < /dev/null &
  local started=$!
  echo "$started" >"$PID_FILE"
  for _ in $(seq 1 100); do
    if port_open "$port"; then url; return 0; fi
    # Whether the child lives, not broker_pid: until it has exec'd mosquitto, its command
    # line is still this script's, which broker_pid rightly does not take for the broker.
    if ! kill -0 "$started" 2>/dev/null || [[ "$(awk '{print $3}' "/proc/$started/stat" 2>/dev/null)" == Z ]]; then
      # The folder may be gone by the time anyone looks (tests clean up): say why here.
      die "mosquitto exited at start: $(tail -n 5 "$LOG_FILE" "$STATE_DIR/stdout.log" 2>/dev/null | tr '\n' ' ')"
    fi
    sleep 0.1
  done
  die "mosquitto did not open port $port within 10 s; see $LOG_FILE"
}

cmd_stop() {
  local pid
  if pid="$(broker_pid)"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do broker_pid >/dev/null || break; sleep 0.1; done
    if broker_pid >/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$PID_FILE"
  if [[ "${1:-}" == "--clean" ]]; then rm -rf "$STATE_DIR"; fi
}

cmd_kill() {
  local pid
  if pid="$(broker_pid)"; then kill -KILL "$pid"; fi
  rm -f "$PID_FILE"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) shift; cmd_stop "${1:-}" ;;
  restart) cmd_stop; cmd_start ;;
  kill) cmd_kill ;;
  status)
    if pid="$(broker_pid)"; then echo "running $(url) (pid $pid)"; else echo "not running"; exit 1; fi ;;
  url) broker_pid >/dev/null || exit 1; url ;;
  env)
    broker_pid >/dev/null || exit 1
    echo "HELPGRID_GATEWAY_MQTT_URL=$(url)"
    echo "HELPGRID_GATEWAY_MQTT_USERNAME=$MQTT_USER"
    echo "HELPGRID_GATEWAY_MQTT_PASSWORD=$(cat "$PASSWORD_FILE")" ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
