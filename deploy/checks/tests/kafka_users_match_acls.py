"""The Strimzi KafkaUsers grant exactly what deploy/local/kafka-acls.sh grants.

    python kafka_users_match_acls.py STRIMZI_YAML KAFKA_ACLS_SH

kafka-acls.sh is what the SASL/ACL run (load-tests/tests/kafka_acl.rs) proves: each service
works with those rights and is refused beyond them. The KafkaUsers in deploy/kubernetes must
say the same, or a cluster deployed from them fails (too little) or trusts too much. Both
sides become sets of (service, resource type, name without the deployment prefix, pattern,
operation); prints `ok <service>` per service, or `FAILED <service>: …` with what only one
side grants, and exits 1 if any differ. A grant line of kafka-acls.sh this script cannot
read fails too, so a new kind of grant cannot slip past it.
"""

import re
import sys

import yaml

PREFIX = "helpgrid."
USER_PREFIX = "helpgrid-"
KINDS = {"--group": "group", "--transactional-id": "transactionalId", "--topic": "topic"}


def from_script(path):
    """Grants of kafka-acls.sh: `run allow SERVICE OPS TOPIC...` (literal topics) and
    `run allow_prefixed SERVICE OPS --group|--transactional-id|--topic NAME` (prefixed), also
    inside `for service in ...; do ... done`."""
    grants = set()
    loop = None
    for number, raw in enumerate(open(path), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"for service in ([\w ]+); do(.*)", line)
        if m:
            loop = m.group(1).split()
            line = m.group(2).strip()
            if line.endswith("done"):  # a loop on one line
                line = line.removesuffix("done").strip().rstrip(";")
                if line.startswith("run allow"):
                    sys.exit(f"FAILED kafka-acls.sh:{number}: write grants in a loop on lines of their own")
                loop = None
            if not line:
                continue
        if line == "done":
            loop = None
            continue
        if not re.match(r"run allow", line):
            continue
        words = line.split()
        services = loop if words[2] == '"$service"' else [words[2]]
        if words[2] == '"$service"' and loop is None:
            sys.exit(f"FAILED kafka-acls.sh:{number}: $service outside a loop: {raw.strip()}")
        ops = words[3].split(",")
        if words[1] == "allow" and len(words) > 4:
            resources = [("topic", name, "literal") for name in words[4:]]
        elif words[1] == "allow_prefixed" and len(words) == 6 and words[4] in KINDS:
            resources = [(KINDS[words[4]], words[5].strip('"'), "prefix")]
        else:
            sys.exit(f"FAILED kafka-acls.sh:{number}: cannot read this grant: {raw.strip()}")
        for service in services:
            for kind, name, pattern in resources:
                for op in ops:
                    grants.add((service, kind, name, pattern, op))
    return grants


def from_users(path):
    grants = set()
    for doc in yaml.safe_load_all(open(path)):
        if not doc or doc.get("kind") != "KafkaUser":
            continue
        service = doc["metadata"]["name"].removeprefix(USER_PREFIX)
        for acl in doc["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            name = resource.get("name", "")
            if not name.startswith(PREFIX):
                sys.exit(f"FAILED {service}: {name!r} is not under the deployment prefix {PREFIX!r}")
            for op in acl["operations"]:
                grants.add((service, resource["type"], name[len(PREFIX):],
                            resource.get("patternType", "literal"), op))
    return grants


def main():
    users, script = from_users(sys.argv[1]), from_script(sys.argv[2])
    failed = False
    for service in sorted({g[0] for g in users | script}):
        mine = {g[1:] for g in users if g[0] == service}
        proved = {g[1:] for g in script if g[0] == service}
        if mine == proved:
            print(f"ok {service}: {len(mine)} grants", flush=True)
            continue
        failed = True
        print(f"FAILED {service}: KafkaUser only {sorted(mine - proved)}; "
              f"kafka-acls.sh only {sorted(proved - mine)}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
