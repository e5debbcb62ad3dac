#!/usr/bin/env python3
"""Where a JVM (the Kafka broker) spends its CPU, from a JFR recording: the share of
execution samples by top frame (method), and by the first frame from a Kafka / JDK package
that explains it (what the broker was doing: produce, fetch, transaction markers, network,
GC is not sampled here, see the GC log). Nothing is asserted.

Record during a flood (JDK 17's jcmd/jfr, the broker's pid from its state folder):
  jcmd $(cat $HELPGRID_KAFKA_DIR/kafka.pid) JFR.start name=flood settings=profile filename=/tmp/broker.jfr duration=30s
  python3 load-tests/jfr_hot.py /tmp/broker.jfr [top]

Usage: jfr_hot.py <recording.jfr> [rows, default 25]"""
import collections, json, subprocess, sys

path = sys.argv[1]
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 25
raw = subprocess.run(["jfr", "print", "--json", "--events", "jdk.ExecutionSample", path],
                     check=True, capture_output=True, text=True).stdout
events = json.loads(raw)["recording"]["events"]

top = collections.Counter()
area = collections.Counter()
threads = collections.Counter()


def name(frame):
    m = frame.get("method") or {}
    t = (m.get("type") or {}).get("name", "?").replace("/", ".")
    return f"{t}.{m.get('name', '?')}"


# The first Kafka frame (from the top) in one of these packages says what the work was for.
AREAS = [
    ("org.apache.kafka.common.compress", "compression (lz4 etc.)"),
    ("org.apache.kafka.common.record", "record batches (validate, iterate, CRC)"),
    ("org.apache.kafka.storage.internals.log", "log (append, index, segments)"),
    ("kafka.log", "log (append, index, segments)"),
    ("org.apache.kafka.common.network", "network (selector, send, receive)"),
    ("org.apache.kafka.common.requests", "request/response (de)serialisation"),
    ("org.apache.kafka.common.message", "request/response (de)serialisation"),
    ("org.apache.kafka.common.protocol", "request/response (de)serialisation"),
    ("kafka.network", "network (processor, request channel)"),
    ("org.apache.kafka.coordinator.transaction", "transaction coordinator"),
    ("kafka.coordinator.transaction", "transaction coordinator"),
    ("org.apache.kafka.coordinator.group", "group coordinator (offsets, heartbeats)"),
    ("kafka.coordinator.group", "group coordinator (offsets, heartbeats)"),
    ("kafka.server.ReplicaManager", "replica manager (produce/fetch paths)"),
    ("kafka.server.KafkaApis", "request handlers (KafkaApis)"),
    ("kafka.server", "broker (other kafka.server)"),
    ("org.apache.kafka.server", "broker (org.apache.kafka.server)"),
    ("org.apache.kafka.raft", "KRaft controller"),
    ("org.apache.kafka.controller", "KRaft controller"),
    ("sun.nio", "JDK NIO"),
    ("java.", "JDK (other)"),
    ("jdk.", "JDK (other)"),
    ("scala.", "Scala library"),
]

for e in events:
    v = e["values"]
    frames = (v.get("stackTrace") or {}).get("frames") or []
    threads[(v.get("sampledThread") or {}).get("javaName") or "?"] += 1
    if not frames:
        continue
    top[name(frames[0])] += 1
    # The first Kafka frame from the top names the work (a JDK map or lock under a Kafka
    # request handler is that handler's cost); a stack with none is the JDK's or Scala's own.
    types = [((f.get("method") or {}).get("type") or {}).get("name", "").replace("/", ".") for f in frames]
    label = next((a for t in types for p, a in AREAS if t.startswith(p) and "kafka" in p), None)
    if label is None:
        label = next((a for t in types for p, a in AREAS if t.startswith(p)), "other")
    area[label] += 1

n = sum(top.values()) or 1
print(f"# {path}: {n} execution samples\n")
print("| area (first Kafka frame from the top) | share |\n| --- | --- |")
for a, c in area.most_common():
    print(f"| {a} | {100 * c / n:.1f} % |")
print("\n| top frame | share |\n| --- | --- |")
for m, c in top.most_common(rows):
    print(f"| `{m}` | {100 * c / n:.1f} % |")
print("\n| thread | share |\n| --- | --- |")
for t, c in threads.most_common(12):
    print(f"| {t} | {100 * c / n:.1f} % |")
