#!/usr/bin/env python3
"""CPU seconds per 100,000 presses by process for scripts/bench-flood-levers' runs (off-N,
on-N), side by side, with the on/off ratio of the averages. Also the webhooks' requests
per notification and press -> assigned, which on a shared machine are context, not
figures. Nothing is asserted.

Usage: lever_summary.py <results folder>"""
import json, pathlib, statistics, sys

out = pathlib.Path(sys.argv[1])
runs = {}
for d in sorted(out.iterdir()):
    p = d / "result.json"
    if d.is_dir() and p.exists():
        runs[d.name] = json.loads(p.read_text())


def per_100k(r):
    n = sum(p.get("sent") or 0 for p in r["phases"])
    return {u["process"]: 100_000 * u["cpu_seconds"] / n for u in r["resources"]} if n else {}


def side(prefix):
    return [per_100k(r) for name, r in runs.items() if name.startswith(prefix)]


off, on = side("off-"), side("on-")
processes = sorted({p for r in off + on for p in r})
print("# Lever: CPU seconds per 100,000 presses, off vs on\n")
print(f"Results folder: `{out}`; runs: {', '.join(runs)}\n")
print("| process | off | on | on / off |\n| --- | --- | --- | --- |")
tot_off = tot_on = 0.0
for p in processes:
    a = [r[p] for r in off if p in r]
    b = [r[p] for r in on if p in r]
    ma = statistics.mean(a) if a else None
    mb = statistics.mean(b) if b else None
    tot_off += ma or 0
    tot_on += mb or 0
    f = lambda xs: " / ".join(f"{x:.2f}" for x in xs) or "-"
    ratio = f"{mb / ma:.2f}" if ma and mb else "-"
    print(f"| {p} | {f(a)} | {f(b)} | {ratio} |")
print(f"| **all** | {tot_off:.2f} | {tot_on:.2f} | {tot_on / tot_off if tot_off else 0:.2f} |")
print()
for name, r in runs.items():
    hooks = r["header"].get("webhooks") or {}
    rm = r["header"].get("router_metrics") or {}
    ph = [p for p in r["phases"] if p["name"] != "warm-up"]
    a = ph[0].get("press_to_assigned", {}) if ph else {}
    rec = r.get("reconciliation", {})
    req, got = hooks.get("requests"), hooks.get("received")
    per = f"{got / req:.1f}" if req else "-"
    print(f"- {name}: sent {rec.get('sent')}, lost {rec.get('lost')}; webhooks received {got} in {req} "
          f"requests ({per} per request), repeats {hooks.get('repeats')}; press -> assigned p50 "
          f"{a.get('p50_ms')} ms, p99 {a.get('p99_ms')} ms (shared machine: context only); router "
          f"{rm.get('transactions')} transactions, mean {rm.get('transaction_mean_ms') or 0:.1f} ms, "
          f"{rm.get('batch_mean_records') or 0:.0f} input records")

for name in runs:
    for extra, title in [("schedstat.md", "threads during the flood"), ("broker-requests.md", "broker request times over the run"),
                        ("broker-jfr.md", "where the broker's CPU went (JFR)")]:
        f = out / name / extra
        if f.exists():
            print(f"\n## {name}: {title}\n")
            print(f.read_text())
