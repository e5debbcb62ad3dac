#!/usr/bin/env python3
"""Where a broker's request time goes, per request type, between two moments: queue (waiting
for a request handler thread), local (the handler's own work: append, read), remote
(waiting for other replicas or a delayed operation: acks=all, a long-poll fetch), response
queue and send. From the broker's JMX `kafka.network:type=RequestMetrics` (mean since start
times count, so two snapshots give the window's mean).

The broker must run with JMX on, e.g. deploy/local/kafka.sh started with
HELPGRID_KAFKA_JVM_OPTS="-Dcom.sun.management.jmxremote.port=P -Dcom.sun.management.jmxremote.rmi.port=P
-Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false
-Djava.rmi.server.hostname=127.0.0.1".

Usage: broker_requests.py snapshot <jmx port> <out.json>
       broker_requests.py diff <before.json> <after.json>"""
import csv, json, pathlib, re, subprocess, sys

REQUESTS = ["Produce", "AddPartitionsToTxn", "AddOffsetsToTxn", "TxnOffsetCommit", "EndTxn",
            "WriteTxnMarkers", "FetchConsumer", "OffsetCommit", "Heartbeat"]
# Errors answered per request type (a CONCURRENT_TRANSACTIONS answer to AddPartitionsToTxn
# makes librdkafka wait a fixed 20 ms before it asks again). Read with a wildcard and the
# Count attribute alone, in a JmxTool call of its own: a meter has no Mean, and an error never
# answered has no MBean.
ERROR_REQUESTS = ["AddPartitionsToTxn", "AddOffsetsToTxn", "TxnOffsetCommit", "EndTxn", "Produce"]
PARTS = ["RequestQueueTimeMs", "LocalTimeMs", "RemoteTimeMs", "ResponseQueueTimeMs",
         "ResponseSendTimeMs", "TotalTimeMs"]
ROOT = pathlib.Path(__file__).resolve().parent.parent


def snapshot(port, out):
    names = [f"kafka.network:type=RequestMetrics,name={part},request={request}"
             for part in PARTS for request in REQUESTS]
    argv = ["bash", str(ROOT / "deploy/local/kafka.sh"), "tool", "JmxTool", "--jmx-url",
            f"service:jmx:rmi:///jndi/rmi://127.0.0.1:{port}/jmxrmi",
            "--attributes", "Count,Mean", "--one-time", "true"]
    for name in names:
        argv += ["--object-name", name]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    text = run.stdout
    if "\"time\"" not in text:
        sys.exit(f"JmxTool printed no values: {run.stderr[-2000:]}")
    lines = [l for l in text.splitlines() if l.startswith('"time"') or (l and l[0].isdigit())]
    header, row = list(csv.reader([lines[0]]))[0], list(csv.reader([lines[-1]]))[0]
    got = dict(zip(header, row))
    values = {}
    for part in PARTS:
        for request in REQUESTS:
            name = f"kafka.network:type=RequestMetrics,name={part},request={request}"
            if f"{name}:Count" in got:
                values[f"{request}/{part}"] = [float(got[f"{name}:Count"] or 0),
                                               float(got.get(f"{name}:Mean") or 0)]
    errors = argv[:argv.index("--attributes")] + ["--attributes", "Count", "--one-time", "true"]
    for request in ERROR_REQUESTS:
        errors += ["--object-name", f"kafka.network:type=RequestMetrics,name=ErrorsPerSec,request={request},error=*"]
    run = subprocess.run(errors, capture_output=True, text=True, timeout=300)
    lines = [l for l in run.stdout.splitlines() if l.startswith('"time"') or (l and l[0].isdigit())]
    if len(lines) >= 2:
        header, row = list(csv.reader([lines[0]]))[0], list(csv.reader([lines[-1]]))[0]
        for name, value in zip(header, row):
            m = re.search(r"request=(\w+),error=(\w+):Count", name)
            if m and m.group(2) != "NONE":
                values[f"{m.group(1)}/error/{m.group(2)}"] = [float(value or 0), 0.0]
    pathlib.Path(out).write_text(json.dumps(values))


def diff(a_path, b_path):
    a = json.loads(pathlib.Path(a_path).read_text())
    b = json.loads(pathlib.Path(b_path).read_text())
    print("| request | count | queue ms | local ms | remote ms | resp. queue ms | send ms | total ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for request in REQUESTS:
        cells, count = [], 0
        for part in PARTS:
            key = f"{request}/{part}"
            c1, m1 = a.get(key, [0, 0])
            c2, m2 = b.get(key, [0, 0])
            n = c2 - c1
            count = max(count, n)
            cells.append(f"{(c2 * m2 - c1 * m1) / n:.2f}" if n > 0 else "-")
        if count:
            print(f"| {request} | {count:,.0f} | " + " | ".join(cells) + " |")
    keys = sorted(k for k in set(a) | set(b) if "/error/" in k)
    errors = [(*k.split("/error/"), b.get(k, [0, 0])[0] - a.get(k, [0, 0])[0]) for k in keys]
    if any(n for _, _, n in errors):
        print("\n| request | error | answered |\n| --- | --- | --- |")
        for r, e, n in errors:
            if n:
                print(f"| {r} | {e} | {n:,.0f} |")


if sys.argv[1] == "snapshot":
    snapshot(sys.argv[2], sys.argv[3])
else:
    diff(sys.argv[2], sys.argv[3])
