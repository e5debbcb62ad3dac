#!/usr/bin/env python3
"""Where the threads of some processes spent a time window: on a CPU, runnable but waiting
for one (the run queue: CPU starvation), or off it (blocked: waiting on I/O, a lock, a
reply), from /proc/<pid>/task/<tid>/schedstat (Linux, schedstats on) and the window's
length. Threads are grouped by name; a thread busy the whole window sums to 100 %.

It answers issue 13's first question: is the router's pipeline thread waiting on Kafka,
and is Kafka (or the router) itself waiting for a CPU?

Usage: schedstat.py --seconds 20 --pid router=1234 --pid kafka=5678 [--pid ...]"""
import argparse, collections, os, re, time


def threads(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run_ns, wait_ns, _ = (int(x) for x in f.read().split())
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except (OSError, ValueError):
            continue
        out[tid] = (re.sub(r"[-#]?\d+$", "", name) or name, run_ns, wait_ns)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--pid", action="append", required=True, help="label=pid")
    a = ap.parse_args()
    pids = [p.split("=", 1) for p in a.pid]
    before = {label: threads(pid) for label, pid in pids}
    t0 = time.monotonic()
    time.sleep(a.seconds)
    window = time.monotonic() - t0
    after = {label: threads(pid) for label, pid in pids}
    print(f"window {window:.1f} s; per thread group: on CPU / waiting for a CPU / off CPU "
          f"(% of the window, summed over the group's threads)\n")
    print("| process | threads | n | on CPU % | run-queue wait % | off CPU % | wait per CPU s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, _ in pids:
        groups = collections.defaultdict(lambda: [0, 0, 0])
        for tid, (name, run, wait) in after[label].items():
            b = before[label].get(tid, (name, 0, 0))
            g = groups[name]
            g[0] += 1
            g[1] += run - b[1]
            g[2] += wait - b[2]
        total_run = sum(g[1] for g in groups.values())
        total_wait = sum(g[2] for g in groups.values())
        for name, (n, run, wait) in sorted(groups.items(), key=lambda kv: -kv[1][1])[:8]:
            on = 100 * run / 1e9 / window
            rq = 100 * wait / 1e9 / window
            off = max(0.0, 100 * n - on - rq)
            per = f"{wait / run:.2f}" if run else "-"
            print(f"| {label} | {name} | {n} | {on:.1f} | {rq:.1f} | {off:.1f} | {per} |")
        per = f"{total_wait / total_run:.2f}" if total_run else "-"
        print(f"| {label} | **all** | {sum(g[0] for g in groups.values())} | "
              f"{100 * total_run / 1e9 / window:.1f} | {100 * total_wait / 1e9 / window:.1f} | | {per} |")


main()
