"""HelpGrid's own rules for deploy/kubernetes, beyond the schemas.

    python helpgrid_manifest_rules.py STRIMZI_YAML HELPGRID_YAML TOPIC...

TOPIC: every topic name (without prefix) the services use, read from their code by the
caller. Prints `ok <rule>` per rule; on the first broken rule prints `FAILED <rule>: <why>`
and exits 1.
"""

import sys

import yaml

COMPACTED = {"roster", "incident-state", "devices", "notify-subscriptions", "revocations"}
GRID_KEYED = {"help-events", "incident-commands", "incident-events", "incident-state"}
PREFIX = "helpgrid."


def check(rule, condition, why=""):
    if not condition:
        print(f"FAILED {rule}: {why}", flush=True)
        sys.exit(1)
    print(f"ok {rule}", flush=True)


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def acls(user):
    """(topic or resource name, type, pattern, set of operations) per ACL."""
    return [
        (a["resource"].get("name"), a["resource"]["type"], a["resource"].get("patternType", "literal"), set(a["operations"]))
        for a in user["spec"]["authorization"]["acls"]
    ]


def may(user, op, topic):
    return any(t == "topic" and n == PREFIX + topic and op in ops for n, t, _, ops in acls(user))


def written_topics(user):
    return {n[len(PREFIX):] for n, t, _, ops in acls(user) if t == "topic" and ops & {"Write", "All"}}


def read_topics(user):
    return {n[len(PREFIX):] for n, t, _, ops in acls(user) if t == "topic" and ops & {"Read", "All"}}


def main():
    strimzi, helpgrid, used = load(sys.argv[1]), load(sys.argv[2]), set(sys.argv[3:])
    by_kind = {}
    for d in strimzi + helpgrid:
        by_kind.setdefault(d["kind"], []).append(d)

    # Kafka: KRaft with node pools for both roles.
    kafka = by_kind["Kafka"][0]
    check("kafka has no zookeeper (KRaft)", "zookeeper" not in kafka["spec"])
    pools = by_kind.get("KafkaNodePool", [])
    roles = {r for p in pools for r in p["spec"]["roles"]}
    check("node pools give controllers and brokers", roles == {"controller", "broker"}, roles)
    check(
        "every node pool belongs to the cluster",
        all(p["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"] for p in pools),
    )
    config = kafka["spec"]["kafka"]["config"]
    check("min.insync.replicas 2, no auto-created topics",
          str(config.get("min.insync.replicas")) == "2" and config.get("auto.create.topics.enable") is False)

    # Topics: one for every topic the code uses, with the settings the services check.
    topics = {t["spec"]["topicName"][len(PREFIX):]: t for t in by_kind["KafkaTopic"]}
    check("a KafkaTopic for every topic the services use", used <= set(topics), used - set(topics))
    check("a KafkaTopic for each topic being added (incident-state, devices, notify-subscriptions)",
          {"incident-state", "devices", "notify-subscriptions"} <= set(topics))
    for name, topic in topics.items():
        spec = topic["spec"]
        policy = spec["config"].get("cleanup.policy")
        check(f"{name}: replicas 3, min.insync.replicas 2",
              spec["replicas"] == 3 and str(spec["config"].get("min.insync.replicas")) == "2")
        if name in COMPACTED:
            check(f"{name}: compacted", policy == "compact", policy)
        else:
            check(f"{name}: deleted by age, with an explicit retention",
                  policy == "delete" and "retention.ms" in spec["config"], spec["config"])
    counts = {topics[n]["spec"]["partitions"] for n in GRID_KEYED}
    check("grid-keyed topics are co-partitioned", len(counts) == 1, counts)
    configmap = next(d for d in by_kind["ConfigMap"] if d["metadata"]["name"] == "helpgrid")
    check("the services expect the topics' partition count",
          int(configmap["data"]["HELPGRID_TOPIC_PARTITIONS"]) == counts.pop())
    check("the services use the topics' prefix", configmap["data"]["HELPGRID_TOPIC_PREFIX"] == PREFIX)

    # Users: least privilege.
    users = {u["metadata"]["name"]: u for u in by_kind["KafkaUser"]}
    router = users["helpgrid-router"]
    for t in ["help-events", "incident-commands", "roster", "incident-state"]:
        check(f"router reads {t}", may(router, "Read", t))
    # help-events and incident-commands: a record that arrived on another partition than its
    # grid's is forwarded there.
    check("router writes only incident-events, incident-state, dead-letters and forwarded input",
          written_topics(router) == {"incident-events", "incident-state", "dead-letters", "help-events",
                                     "incident-commands"},
          written_topics(router))
    check("router's transactional ids are a prefix ACL",
          any(t == "transactionalId" and p == "prefix" and {"Write", "Describe"} <= ops for _, t, p, ops in acls(router)))
    check("status writes only commands, roster, revocations (admin RevokeTokens) and app-links",
          written_topics(users["helpgrid-status"]) == {"incident-commands", "roster", "revocations", "app-links"},
          written_topics(users["helpgrid-status"]))
    check("gateway writes only help-events, devices and dead-letters",
          written_topics(users["helpgrid-gateway"]) == {"help-events", "devices", "dead-letters"},
          written_topics(users["helpgrid-gateway"]))
    check("archive writes only dead-letters and reads incident-events",
          written_topics(users["helpgrid-archive"]) == {"dead-letters"}
          and "incident-events" in read_topics(users["helpgrid-archive"]))
    check("notify writes only notify-subscriptions and dead-letters and reads incident-events",
          written_topics(users["helpgrid-notify"]) == {"notify-subscriptions", "dead-letters"}
          and "incident-events" in read_topics(users["helpgrid-notify"]))
    for name, user in users.items():
        check(f"{name}: nobody but the admin creates, deletes or alters",
              not any(ops & {"Create", "Delete", "Alter", "AlterConfigs"} for _, _, _, ops in acls(user)))
    check("no user may do everything",
          not any("All" in ops or t == "cluster" for u in users.values() for _, t, _, ops in acls(u)))

    # Workloads.
    workloads = by_kind.get("StatefulSet", []) + by_kind.get("Deployment", [])
    router_set = [w for w in by_kind.get("StatefulSet", []) if w["metadata"]["name"] == "helpgrid-router"]
    check("the router is a StatefulSet", len(router_set) == 1)
    container = router_set[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    check("the router's transactional id comes from its pod name",
          "$(POD_NAME)" in env.get("HELPGRID_ROUTER_TRANSACTIONAL_ID", ""))
    claims = {t["metadata"]["name"] for t in router_set[0]["spec"].get("volumeClaimTemplates", [])}
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    state_dir = env.get("HELPGRID_ROUTER_STATE_DIR", "")
    check("the router's checkpoints live on a volume of its own pod (a claim template, mounted at its state folder)",
          state_dir != "" and mounts.get(state_dir) in claims, (state_dir, mounts, claims))
    check("the router is ready only on /readyz and alive on /livez",
          container["readinessProbe"]["httpGet"]["path"] == "/readyz"
          and container["livenessProbe"]["httpGet"]["path"] == "/livez")
    names = {w["metadata"]["name"] for w in workloads}
    check("a workload per service",
          {"helpgrid-router", "helpgrid-status", "helpgrid-gateway", "helpgrid-archive", "helpgrid-notify"} <= names, names)
    pdbs = [p["spec"]["selector"]["matchLabels"] for p in by_kind["PodDisruptionBudget"]]
    for w in workloads:
        name = w["metadata"]["name"]
        labels = w["spec"]["template"]["metadata"]["labels"]
        check(f"{name}: has a PodDisruptionBudget",
              any(all(labels.get(k) == v for k, v in sel.items()) for sel in pdbs))
        check(f"{name}: labelled part of helpgrid (NetworkPolicies, Kafka listener peers)",
              labels.get("app.kubernetes.io/part-of") == "helpgrid")
        for c in w["spec"]["template"]["spec"]["containers"]:
            requests = c.get("resources", {}).get("requests", {})
            check(f"{name}/{c['name']}: requests CPU and memory, limits memory",
                  "cpu" in requests and "memory" in requests and "memory" in c["resources"].get("limits", {}))
            check(f"{name}/{c['name']}: readiness and liveness probes",
                  "readinessProbe" in c and "livenessProbe" in c)
            env = {e["name"]: e for e in c.get("env", [])}
            user = next((u for u in users if u in env.get("HELPGRID_KAFKA_OPTIONS", {}).get("value", "")), None)
            check(f"{name}/{c['name']}: connects to Kafka as its own user",
                  user == name, user)
    policies = by_kind["NetworkPolicy"]
    check("ingress is denied unless a policy allows it",
          any(p["spec"].get("policyTypes") == ["Ingress"] and "ingress" not in p["spec"] for p in policies))


if __name__ == "__main__":
    main()
