#!/usr/bin/env python3
"""Issue 13's figures from one scripts/bench-flood (or bench-scale) results folder: the
flood with every service, HelpGrid / transactional relay, steady 2,000/s against Kafka's
EndToEndLatency, CPU seconds per 100,000 presses by process. Nothing is asserted: it prints
what the runs measured, with targets beside them.

Usage: flood_summary.py <results folder>"""
import json, pathlib, re, sys

out = pathlib.Path(sys.argv[1])


def result(name):
    p = out / name / "result.json"
    return json.loads(p.read_text()) if p.exists() else None


def measured(r):
    return [p for p in r["phases"] if p["name"] != "warm-up"] if r else []


def fmt(v, unit="", digits=0):
    return "-" if v is None else f"{v:,.{digits}f}{unit}"


def sent(r):
    return sum(p.get("sent") or 0 for p in r["phases"]) if r else 0


def cpu_table(r):
    """CPU seconds per 100,000 presses sent (warm-up included: CPU is counted for the
    whole run) and peak RSS, by process."""
    n = sent(r)
    rows = ["| process | CPU s | CPU s per 100k presses | CPU avg % | RSS max MiB |",
            "| --- | --- | --- | --- | --- |"]
    for u in r["resources"]:
        per = 100_000 * u["cpu_seconds"] / n if n else None
        rows.append(f"| {u['process']} | {fmt(u['cpu_seconds'], '', 1)} | {fmt(per, '', 2)} | "
                    f"{u['cpu_avg_pct']} | {fmt(u['rss_max_mib'])} |")
    return "\n".join(rows)


e2e_text = (out / "end-to-end-latency.txt").read_text() if (out / "end-to-end-latency.txt").exists() else ""
e2e = re.search(r"Percentiles: 50th = ([\d.]+), 99th = ([\d.]+), 99.9th = ([\d.]+)", e2e_text)
e2e_p50, e2e_p99 = (float(e2e.group(1)), float(e2e.group(2))) if e2e else (None, None)

print("# Issue 13: the city flood, side by side\n")
print(f"Results folder: `{out}`\n")
# A bench-scale folder has only scale-* runs: no table of the flood's figures then.
flood_figures = any((out / n / "result.json").exists() for n in ["relay-txn", "burst", "steady", "flood"]) or e2e
if flood_figures:
    print("| measure | figure | target |\n| --- | --- | --- |")
    print(f"| Kafka EndToEndLatency (acks=all) p50 / p99 | {fmt(e2e_p50, ' ms', 1)} / {fmt(e2e_p99, ' ms', 1)} | |")

    relay, hg = result("relay-txn"), result("burst")
    relay_eps = measured(relay)[0]["throughput_eps"] if measured(relay) else None
    hg_eps = measured(hg)[0]["throughput_eps"] if measured(hg) else None
    print(f"| transactional relay, burst drain | {fmt(relay_eps)} events/s | |")
    print(f"| HelpGrid, burst drain | {fmt(hg_eps)} presses/s | |")
    if relay_eps and hg_eps:
        print(f"| HelpGrid / transactional relay | {hg_eps / relay_eps:.2f} | >= 0.8 |")

    steady = measured(result("steady"))
    if steady:
        s = steady[0]["press_to_assigned"]
        limit = None if e2e_p99 is None else e2e_p99 + 10
        print(f"| steady {fmt(steady[0].get('offered_rate_eps'))}/s: press -> assigned p50 / p99 / max | "
              f"{fmt(s.get('p50_ms'), ' ms', 1)} / {fmt(s.get('p99_ms'), ' ms', 1)} / {fmt(s.get('max_ms'), ' ms', 1)} | "
              f"p99 <= {fmt(limit, ' ms', 1)} (EndToEndLatency p99 + 10 ms) |")

    flood = result("flood")
    if flood:
        ph = measured(flood)
        a = ph[0]["press_to_assigned"] if ph else {}
        rec = flood["reconciliation"]
        print(f"| flood: presses sent / accounted / lost | {fmt(rec['sent'])} / {fmt(rec['accounted'])} / {fmt(rec['lost'])} | 0 lost |")
        print(f"| flood: press -> assigned p50 / p99 / max | {fmt(a.get('p50_ms'), ' ms', 1)} / "
              f"{fmt(a.get('p99_ms'), ' ms', 1)} / {fmt(a.get('max_ms'), ' ms', 1)} | p99 <= 1,000 ms |")
        print(f"| flood: max consumer lag | {fmt(flood.get('max_lag'))} records | |")
        rm = flood["header"].get("router_metrics") or {}
        print(f"| flood: router transactions / mean ms / mean records in | {fmt(rm.get('transactions'))} / "
              f"{fmt(rm.get('transaction_mean_ms'), '', 1)} / {fmt(rm.get('batch_mean_records'), '', 1)} | |")
        hooks = (flood["header"].get("webhooks") or {}).get("assignment_to_webhook") or []
        for h in hooks:
            if h.get("phase") != "warm-up":
                print(f"| flood: assignment -> webhook received p50 / p99 / max ({fmt(h.get('received'))} received) | "
                      f"{fmt(h.get('p50_ms'), ' ms', 1)} / {fmt(h.get('p99_ms'), ' ms', 1)} / {fmt(h.get('max_ms'), ' ms', 1)} | |")
print()
for name in ["relay-txn", "burst", "steady", "flood-warmup", "flood"]:
    r = result(name)
    if r:
        print(f"## {name}\n")
        if name == "flood-warmup":
            print("The broker's warm-up before the flood (same services, smaller city): its figures are "
                  "not the flood's; the flood below ran on the broker it warmed.\n")
        for line in r["verdict"]:
            print(f"- {line}")
        print()
        print(cpu_table(r))
        print()
# bench-scale: one folder per (partitions, routers)
scale = sorted(p for p in out.glob("scale-p*-r*") if (p / "result.json").exists())
if scale:
    print("## scale-out (burst drain)\n")
    print("| partitions | routers | presses/s | p99 press -> assigned | router CPU s per 100k (all instances) | broker CPU s per 100k |")
    print("| --- | --- | --- | --- | --- | --- |")
    for p in scale:
        r = json.loads((p / "result.json").read_text())
        m = re.match(r"scale-p(\d+)-r(\d+)", p.name)
        ph = measured(r)
        n = sent(r)
        router = sum(u["cpu_seconds"] for u in r["resources"] if u["process"].startswith("helpgrid-router"))
        kafka = sum(u["cpu_seconds"] for u in r["resources"] if u["process"] == "kafka")
        print(f"| {m.group(1)} | {m.group(2)} | {fmt(ph[0]['throughput_eps'] if ph else None)} | "
              f"{fmt(ph[0]['press_to_assigned'].get('p99_ms') if ph else None, ' ms', 1)} | "
              f"{fmt(100_000 * router / n if n else None, '', 2)} | {fmt(100_000 * kafka / n if n else None, '', 2)} |")
