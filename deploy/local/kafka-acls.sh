#!/usr/bin/env bash
# deploy/local/kafka-acls.sh - HelpGrid's least-privilege Kafka users and ACLs for one
# deployment (one topic prefix), on a cluster started with `kafka-cluster.sh start --sasl`.
# The same rules as the KafkaUser resources in deploy/kubernetes/.
#
#   kafka-acls.sh PREFIX OUT_DIR
#
# Makes one SCRAM-SHA-512 user per service, named <PREFIX><service>, with a random password
# written to OUT_DIR/<service>.password (mode 0600), and grants:
#
#   router   read roster; read and write incident-events, incident-state (its changelog,
#            read back on restore), help-events and incident-commands (it forwards a record
#            that arrived on another partition than its grid's); write dead-letters; consumer
#            group <PREFIX>router*; transactional ids <PREFIX>router*
#   status   write incident-commands; read and write roster; read incident-events,
#            incident-state (no consumer group: it reads every partition itself); write
#            revocations (an admin's RevokeTokens call); read and write app-links (one-time
#            sign-in links across instances)
#   gateway  write help-events and dead-letters; read and write devices; read incident-events
#            (feedback to the household's device) in consumer group <PREFIX>gateway*
#   archive  read incident-events; write dead-letters; consumer group <PREFIX>archive*
#   notify   read incident-events; read and write notify-subscriptions; write dead-letters;
#            consumer group <PREFIX>notify*
#   status, gateway, archive and notify also read revocations (they verify tokens)
#   revoke   the operator's `helpgrid-token revoke`: writes revocations and nothing else
#
# Every service may also describe its topics and their configurations (the start-up check of
# topic settings). Nobody but the admin may create, delete or alter topics; consoles and
# dispatch systems never touch Kafka (they use the status service's gRPC API).
set -euo pipefail

[[ $# -eq 2 ]] || { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
prefix="$1"
out="$2"
cluster="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kafka-cluster.sh"
mkdir -p "$out"

new_user() {  # new_user SERVICE: a user <prefix><service> with a fresh random password
  local service="$1" pw
  pw="$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
  (umask 077; printf '%s' "$pw" >"$out/$service.password")
  bash "$cluster" add-user "$prefix$service" "$pw" >/dev/null
}

topic_args() {  # topic_args NAME...: --topic <prefix>NAME for each
  local t
  for t in "$@"; do printf -- '--topic\n%s%s\n' "$prefix" "$t"; done
}

allow() {  # allow SERVICE OPERATIONS(comma) TOPIC...
  local service="$1" ops="$2" op
  shift 2
  local args=(--add --allow-principal "User:$prefix$service")
  IFS=, read -ra op <<<"$ops"
  for o in "${op[@]}"; do args+=(--operation "$o"); done
  mapfile -t topics < <(topic_args "$@")
  bash "$cluster" acls "${args[@]}" "${topics[@]}" >/dev/null
}

allow_prefixed() {  # allow_prefixed SERVICE OPERATIONS(comma) --group|--transactional-id NAME
  local service="$1" ops="$2" kind="$3" name="$4" op
  local args=(--add --allow-principal "User:$prefix$service" --resource-pattern-type prefixed)
  IFS=, read -ra op <<<"$ops"
  for o in "${op[@]}"; do args+=(--operation "$o"); done
  bash "$cluster" acls "${args[@]}" "$kind" "$prefix$name" >/dev/null
}

# Each grant is a JVM of its own: run up to eight side by side, try each up to six times, a
# little longer apart each time (an admin request times out while a freshly started cluster
# on a busy machine settles: three tries 2 s apart were not enough at a load average of 30),
# and fail if any still failed.
attempt() {
  local i
  for i in 1 2 3 4 5 6; do
    "$@" && return 0
    (( i < 6 )) || break
    echo "kafka-acls.sh: retrying ($i): $*" >&2
    sleep $(( 2 * i ))
  done
  echo "kafka-acls.sh: failed: $*" >&2
  return 1
}
pids=()
run() {
  while (( $(jobs -rp | wc -l) >= 8 )); do sleep 0.2; done
  attempt "$@" & pids+=($!)
}
for service in router status gateway archive notify revoke; do run new_user "$service"; done

# Every service reads the settings of the deployment's topics at start-up (the check that no
# topic would lose state): describing is read-only.
for service in router status gateway archive notify; do
  run allow_prefixed "$service" Describe,DescribeConfigs --topic ""
done

run allow router Read,Describe,DescribeConfigs roster
# incident-commands too: a command that arrived on another partition than its grid's is forwarded
run allow router Read,Write,Describe,DescribeConfigs incident-commands
# help-events: a press that arrived on another partition than its grid's is forwarded there
run allow router Read,Write,Describe,DescribeConfigs help-events
run allow router Read,Write,Describe,DescribeConfigs incident-events incident-state
run allow router Write,Describe,DescribeConfigs dead-letters
run allow_prefixed router Read,Describe --group router
run allow_prefixed router Write,Describe --transactional-id router

run allow status Write,Describe,DescribeConfigs incident-commands
run allow status Read,Write,Describe,DescribeConfigs roster
run allow status Read,Describe,DescribeConfigs incident-events incident-state
run allow status Read,Write,Describe,DescribeConfigs app-links

run allow gateway Write,Describe,DescribeConfigs help-events dead-letters
run allow gateway Read,Write,Describe,DescribeConfigs devices
run allow gateway Read,Describe incident-events
run allow_prefixed gateway Read,Describe --group gateway

run allow archive Read,Describe incident-events
run allow archive Write,Describe dead-letters
run allow_prefixed archive Read,Describe --group archive

run allow notify Read,Describe incident-events
run allow notify Read,Write,Describe,DescribeConfigs notify-subscriptions
run allow notify Write,Describe dead-letters
run allow_prefixed notify Read,Describe --group notify

for service in status gateway archive notify; do
  run allow "$service" Read,Describe,DescribeConfigs revocations
done
run allow revoke Write,Describe,DescribeConfigs revocations
run allow status Write revocations

failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
(( failed == 0 )) || { echo "kafka-acls.sh: some users or ACLs could not be made" >&2; exit 1; }
echo "users ${prefix}{router,status,gateway,archive,notify,revoke}; passwords in $out/"
