#!/usr/bin/env python3
"""Issue 13's steady-load figures from one scripts/bench-steady results folder: press ->
assigned at a steady rate for the transactional relay (Kafka's transactions with no logic: the
floor) and for HelpGrid in each variant, against Kafka's EndToEndLatency p99 + 10 ms; where a
press's time goes inside the router (its own metrics: the press's age when the pipeline takes
it, the decision, each step of the transaction); the broker's CPU per 100,000 presses.
Nothing is asserted: it prints what the runs measured.

Usage: steady_summary.py <results folder>"""
import json, pathlib, re, statistics, sys

out = pathlib.Path(sys.argv[1])


def fmt(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"


e2e_text = (out / "end-to-end-latency.txt").read_text() if (out / "end-to-end-latency.txt").exists() else ""
e2e = re.search(r"Percentiles: 50th = ([\d.]+), 99th = ([\d.]+), 99.9th = ([\d.]+)", e2e_text)
e2e_p99 = float(e2e.group(2)) if e2e else None

runs = []
for p in sorted(out.glob("*/result.json"), key=lambda p: p.stat().st_mtime):
    r = json.loads(p.read_text())
    phases = [ph for ph in r["phases"] if ph["name"] != "warm-up"]
    if not phases:
        continue
    ph = phases[0]
    a = ph.get("press_to_assigned") or {}
    rm = r["header"].get("router_metrics") or {}
    steps = rm.get("step_mean_ms") or {}
    cpu = {u["process"]: u["cpu_seconds"] for u in r.get("resources", [])}
    # The relay has no metrics endpoint: its step means are in its log's last line, and
    # every transaction slower than 50 ms has a line of its own.
    relay_log = p.parent / "helpgrid-relay.log"
    if not rm and relay_log.exists():
        text = relay_log.read_text(errors="replace")
        last = re.findall(r"relay stopping.*", text) or re.findall(r".*relay stopping", text)
        def field(name):
            m = re.search(rf"{name}=([\d.]+)", last[-1]) if last else None
            return float(m.group(1)) if m else None
        steps = {"produce": field("produce_ms_per_batch"), "offsets": field("offsets_ms_per_batch"),
                 "deliver": field("deliver_ms_per_batch"), "commit": field("commit_or_flush_ms_per_batch")}
        batches, relayed = field("batches"), field("relayed")
        if batches:
            rm = {"step_mean_ms": steps, "batch_mean_records": relayed / batches if relayed else None,
                  "transaction_mean_ms": sum(v for v in steps.values() if v is not None)}
        slow = text.count("slow transaction")
        if slow:
            rm["slow_transactions"] = slow
    sent = sum(x.get("sent") or 0 for x in r["phases"])
    name = p.parent.name
    runs.append({
        "run": name,
        # bench-steady names runs <variant>-<round>
        "variant": name.rsplit("-", 1)[0],
        # bench-steady notes the load average as each run starts
        "load": (out / f"{name}.load").read_text().split()[0] if (out / f"{name}.load").exists() else None,
        "p50": a.get("p50_ms"), "p99": a.get("p99_ms"), "max": a.get("max_ms"),
        "clean": "clean" in " ".join(r.get("verdict", [])) and "NOT CLEAN" not in " ".join(r.get("verdict", [])),
        "age": rm.get("input_age_mean_ms"), "decide": rm.get("decide_mean_ms"),
        "commit_wait": rm.get("commit_wait_mean_ms"),
        "txn": rm.get("transaction_mean_ms"), "records": rm.get("batch_mean_records"),
        "produce": steps.get("produce"), "offsets": steps.get("offsets"),
        "deliver": steps.get("deliver"), "commit": steps.get("commit"),
        "slow": rm.get("slow_transactions"),
        "kafka_cpu": 100_000 * cpu["kafka"] / sent if "kafka" in cpu and sent else None,
        "router_cpu": 100_000 * cpu["helpgrid-router"] / sent if "helpgrid-router" in cpu and sent else None,
    })

print("# Issue 13: steady load, side by side\n")
print(f"Results folder: `{out}`\n")
target = e2e_p99 + 10 if e2e_p99 is not None else None
print(f"Kafka EndToEndLatency p99: {fmt(e2e_p99)} ms, so the target p99 press -> assigned is <= {fmt(target)} ms.\n")
print("| run | load avg | p50 ms | p99 ms | max ms | clean | press age at poll ms | decide ms | txn ms (produce / offsets / deliver / commit) | commit waited ms | records per txn | kafka CPU s / 100k | router CPU s / 100k |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in runs:
    steps = " / ".join(fmt(r[k]) for k in ["produce", "offsets", "deliver", "commit"])
    print(f"| {r['run']} | {r['load'] or '-'} | {fmt(r['p50'])} | {fmt(r['p99'])} | {fmt(r['max'])} | {'yes' if r['clean'] else 'NO'} | "
          f"{fmt(r['age'])} | {fmt(r['decide'])} | {fmt(r['txn'])} ({steps}) | {fmt(r['commit_wait'])} | {fmt(r['records'], 0)} | "
          f"{fmt(r['kafka_cpu'], 2)} | {fmt(r['router_cpu'], 2)} |")

slow = [f"{r['run']} {r['slow']}" for r in runs if r.get("slow")]
if slow:
    print(f"\nRelay transactions slower than 50 ms (each logged with its steps): {', '.join(slow)}.")

variants = {}
for r in runs:
    variants.setdefault(r["variant"], []).append(r)
relay = variants.get("relay")
if relay:
    relay_p99 = statistics.median(r["p99"] for r in relay if r["p99"] is not None)
    print(f"\nMedian p99 per variant, and its ratio to the transactional relay's ({fmt(relay_p99)} ms) in the same folder:\n")
    print("| variant | runs | median p50 ms | median p99 ms | p99 / relay p99 | p99 - target ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for v, rs in variants.items():
        p99s = [r["p99"] for r in rs if r["p99"] is not None]
        p50s = [r["p50"] for r in rs if r["p50"] is not None]
        if not p99s:
            continue
        m99 = statistics.median(p99s)
        print(f"| {v} | {len(rs)} | {fmt(statistics.median(p50s))} | {fmt(m99)} | {fmt(m99 / relay_p99, 2)} | "
              f"{fmt(m99 - target) if target is not None else '-'} |")
