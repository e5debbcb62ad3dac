#!/usr/bin/env python3
"""scripts/bench-consumers' runs (old-N, new-N) side by side: CPU seconds per 100,000 presses
of every process, the archive's and PostgreSQL's CPU per 100,000 archived rows, and the
new/old ratio of the averages. Latencies are context on a shared machine. Nothing is asserted.

Usage: consumers_summary.py <results folder>"""
import json, pathlib, statistics, sys

out = pathlib.Path(sys.argv[1])
runs = {}
for d in sorted(out.iterdir()):
    p = d / "result.json"
    if d.is_dir() and p.exists():
        r = json.loads(p.read_text())
        pg = d / "postgres.json"
        r["postgres"] = json.loads(pg.read_text()) if pg.exists() else {}
        runs[d.name] = r


def presses(r):
    return sum(p.get("sent") or 0 for p in r["phases"])


def figures(r):
    n = presses(r)
    if not n:
        return {}
    f = {u["process"]: 100_000 * u["cpu_seconds"] / n for u in r["resources"]}
    pg = r["postgres"]
    rows = pg.get("archived_rows") or 0
    if "postgres_cpu_seconds" in pg:
        f["postgresql (per press)"] = 100_000 * pg["postgres_cpu_seconds"] / n
    if rows:
        if "postgres_cpu_seconds" in pg:
            f["postgresql per 100k rows"] = 100_000 * pg["postgres_cpu_seconds"] / rows
        for u in r["resources"]:
            if u["process"] == "helpgrid-archive":
                f["helpgrid-archive per 100k rows"] = 100_000 * u["cpu_seconds"] / rows
    return f


def side(prefix):
    return [figures(r) for name, r in runs.items() if name.startswith(prefix)]


old, new = side("old-"), side("new-")
rows = sorted({k for r in old + new for k in r})
print("# The consumers' CPU: old vs new build of notify, archive and gateway\n")
print(f"Results folder: `{out}`; runs: {', '.join(runs)}\n")
print("CPU seconds per 100,000 presses (or per 100,000 archived rows where named)\n")
print("| process | old | new | new / old |\n| --- | --- | --- | --- |")
for k in rows:
    a = [r[k] for r in old if k in r]
    b = [r[k] for r in new if k in r]
    ma = statistics.mean(a) if a else None
    mb = statistics.mean(b) if b else None
    f = lambda xs: " / ".join(f"{x:.2f}" for x in xs) or "-"
    ratio = f"{mb / ma:.2f}" if ma and mb else "-"
    print(f"| {k} | {f(a)} | {f(b)} | {ratio} |")
print()
for name, r in runs.items():
    hooks = r["header"].get("webhooks") or {}
    ph = [p for p in r["phases"] if p["name"] != "warm-up"]
    a = ph[0].get("press_to_assigned", {}) if ph else {}
    w = ph[0].get("assigned_to_webhook", {}) if ph else {}
    rec = r.get("reconciliation", {})
    pg = r["postgres"]
    print(f"- {name}: sent {rec.get('sent')}, lost {rec.get('lost')}; webhooks received "
          f"{hooks.get('received')} in {hooks.get('requests')} requests, repeats "
          f"{hooks.get('repeats')}; rows archived {pg.get('archived_rows')}; press -> assigned "
          f"p99 {a.get('p99_ms')} ms; load average at the end {pg.get('load_average')}")
