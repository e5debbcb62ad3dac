# Sourced by the README's two commands and by .ci/run: installs the Debian packages a command
# needs when they are missing, so both commands work on a fresh machine.
#
#   source scripts/lib/packages.sh
#   ensure_packages "${HELPGRID_TEST_PACKAGES[@]}"
#
# Set HELPGRID_SKIP_APT=1 to only check (it then fails naming what is missing).

# Build: librdkafka is compiled with OpenSSL and zlib. The TLS test makes certificates with
# openssl. Kafka runs on Java with jars fetched by Maven (checked, not installed).
HELPGRID_BUILD_PACKAGES=(libssl-dev zlib1g-dev pkg-config openssl python3)
# Every server and tool the test suite starts or drives: Chromium through chromedriver (with
# a CJK font so screenshots are legible), xmllint for CAP, Mosquitto (MQTT), PostgreSQL,
# Prometheus and promtool; curl (queries Prometheus's API); Python's grpcio and protobuf (a
# stock gRPC client for notify); python3-venv for the stock Python clients other tests install
# from PyPI (grpcio-reflection, schema validators); procps for `kill` (the tests send SIGTERM
# and SIGSTOP to services and brokers).
HELPGRID_TEST_PACKAGES=("${HELPGRID_BUILD_PACKAGES[@]}" chromium chromium-driver libxml2-utils
  fonts-wqy-microhei mosquitto mosquitto-clients postgresql prometheus python3-grpcio
  python3-protobuf curl python3-venv procps)
# What scripts/run-city starts.
HELPGRID_RUN_PACKAGES=("${HELPGRID_BUILD_PACKAGES[@]}" mosquitto mosquitto-clients postgresql)

ensure_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "${HELPGRID_SKIP_APT:-0}" = 1 ]; then
      echo "missing Debian packages: ${missing[*]} (apt-get install -y ${missing[*]})" >&2
      return 1
    fi
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    echo "installing Debian packages: ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >&2
  fi
  local tool
  for tool in java mvn cargo; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool is needed on PATH (see README: Quick start)" >&2; return 1; }
  done
}
