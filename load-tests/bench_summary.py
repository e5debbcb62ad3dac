#!/usr/bin/env python3
"""Side-by-side summary of one scripts/bench run: Kafka's tools, the bare relay and HelpGrid,
as ratios measured in the same run. Usage: bench_summary.py <bench results folder>."""
import json, pathlib, re, sys

out = pathlib.Path(sys.argv[1])

def read(name):
    p = out / name
    return p.read_text() if p.exists() else ""

def result(name):
    p = out / name / "result.json"
    return json.loads(p.read_text()) if p.exists() else None

def measured(r):
    return [p for p in r["phases"] if p["name"] != "warm-up"] if r else []

def fmt(v, unit="", digits=0):
    return "-" if v is None else f"{v:,.{digits}f}{unit}"

def ratio(a, b):
    return None if a is None or not b else a / b

rows = []
pp = re.search(r"([\d.]+) records/sec .* ([\d.]+) ms avg latency, ([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th", read("producer-performance.txt"))
producer_eps = float(pp.group(1)) if pp else None
cp_lines = [l for l in read("consumer-performance.txt").splitlines() if re.match(r"^\d{4}-", l)]
consumer_eps = float(cp_lines[-1].split(",")[-1]) if cp_lines else None
e2e = re.search(r"Percentiles: 50th = ([\d.]+), 99th = ([\d.]+), 99.9th = ([\d.]+)", read("end-to-end-latency.txt"))
e2e_p50, e2e_p99 = (float(e2e.group(1)), float(e2e.group(2))) if e2e else (None, None)

def burst(name):
    ph = measured(result(name))
    return (ph[0]["throughput_eps"], ph[0]["press_to_assigned"].get("p99_ms")) if ph else (None, None)

alo, alo_p99 = burst("relay-alo")
txn, txn_p99 = burst("relay-txn")
hg, hg_p99 = burst("burst")

steady = result("steady")
best = steady["extra"].get("max_sustained_rate_eps") if steady else None
half = None
if steady and best:
    steps = [p for p in measured(steady) if p["offered_rate_eps"]]
    cand = min(steps, key=lambda p: abs(p["offered_rate_eps"] - best / 2))
    half = (cand["offered_rate_eps"], cand["press_to_assigned"].get("p99_ms"))

print("# HelpGrid benchmark summary\n")
print(f"Results folder: `{out}`\n")
print("| measure | figure |\n| --- | --- |")
print(f"| Kafka ProducerPerformance (acks=all, idempotent, linger 2 ms, lz4) | {fmt(producer_eps)} records/s |")
print(f"| Kafka ConsumerPerformance (fetch rate) | {fmt(consumer_eps)} records/s |")
print(f"| Kafka EndToEndLatency (acks=all) p50 / p99 | {fmt(e2e_p50, ' ms', 1)} / {fmt(e2e_p99, ' ms', 1)} |")
print(f"| bare relay at-least-once, backlog drain | {fmt(alo)} events/s |")
print(f"| bare relay transactional, backlog drain | {fmt(txn)} events/s |")
print(f"| HelpGrid burst (press -> opened + assigned), backlog drain | {fmt(hg)} events/s |")
print(f"| HelpGrid steady: highest rate with p99 press->assigned < 100 ms | {fmt(best)} events/s |")
if half:
    print(f"| HelpGrid p99 press->assigned at ~half that rate ({half[0]:.0}/s) | {fmt(half[1], ' ms', 1)} |")
print()
print("| ratio | value | target |\n| --- | --- | --- |")
print(f"| HelpGrid / transactional relay (throughput) | {fmt(ratio(hg, txn), '', 2)} | >= 0.8 |")
print(f"| transactional relay / at-least-once relay | {fmt(ratio(txn, alo), '', 2)} | >= 0.9 |")
print(f"| HelpGrid / at-least-once relay | {fmt(ratio(hg, alo), '', 2)} | |")
print(f"| at-least-once relay / ProducerPerformance | {fmt(ratio(alo, producer_eps), '', 2)} | |")
if half and e2e_p99 is not None and half[1] is not None:
    print(f"| p99 press->assigned at half max - (EndToEndLatency p99 + 10 ms) | {half[1] - e2e_p99 - 10:+.1f} ms | <= 0 |")
print()
for name in ["burst", "steady", "camera-storm", "fan-out", "flood"]:
    r = result(name)
    if r:
        print(f"## {name}\n")
        for line in r["verdict"]:
            print(f"- {line}")
        for u in r["resources"]:
            print(f"- {u['process']}: CPU avg {u['cpu_avg_pct']}% max {u['cpu_max_pct']}%, RSS max {u['rss_max_mib']} MiB")
        print()
crit = read("criterion.txt")
if crit:
    print("## criterion (router hot path, per event)\n\n```")
    for l in crit.splitlines():
        if "time:" in l or l.startswith("help_event/"):
            print(l.strip())
    print("```")
