"""Scale benchmark of the rolling maintenance preflight's pure work.

What the preflight computes once for the whole run, on the controller, from the facts it
gathered: the capacity input from every host's facts (``capacity_from_facts``), then the plan
(``plan_maintenance``: which hosts are maintained, their order per cluster, and the proof that
each cluster absorbs the guests of each host in turn). No libvirt, no Ansible: the figures are
the planner's own cost.

The estate is synthetic: C clusters x 10 hosts x 30 running guests (of 1-8 GiB, 1-4 vCPUs, on
hosts of 512 GiB and 64 CPUs, so every cluster fits), one host per 50 clusters marked by an
operator and one per 70 clusters not answering, so those paths are taken too. It is measured at
1/100, 1/10 and the full estate (1,000 clusters, 300,000 guests). Each measurement runs in a
fresh process (its peak RSS is the preflight's memory, the inputs included); a warm-up
measurement per size is not counted; sizes alternate between rounds.

    .venv/bin/python bench/plan_scale.py [--rounds 3] [--clusters 1000]

Prints the median and spread per size, how time grows (time at 10x the estate / time at 1x,
for both steps), and ends with ``ratio=<time at the full estate / time at 1/10 of it>``:
near-linear is 10; the target is <= 12. Targets at the full estate: <= 10 s and <= 1 GiB.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, ".collections"))

HOSTS_PER_CLUSTER = 10
GUESTS_PER_HOST = 30


def synthetic_estate(clusters: int) -> dict:
    """The maintenance_plan module's input for an estate of ``clusters`` clusters."""
    hosts, facts, members, marked, unreachable = [], {}, {}, [], {}
    for c in range(clusters):
        cluster = "c%04d" % c
        members[cluster] = []
        for h in range(HOSTS_PER_CLUSTER):
            name = "%s-hv%02d" % (cluster, h)
            members[cluster].append(name)
            if c % 70 == 5 and h == 9:
                unreachable[name] = "its libvirt did not answer at preflight"
                continue
            mark = None
            if c % 50 == 3 and h == 8:
                marked.append(name)
                mark = {"host": name, "owner": {"run_id": "operator"}, "reason": "memory errors, under repair"}
            guests = [{"name": "%s-g%02d" % (name, g), "active": True,
                       "memory_mib": 1024 * (1 + (g % 8)), "max_memory_mib": 1024 * (1 + (g % 8)),
                       "vcpus": 1 + g % 4, "arch": "x86_64", "domain_type": "kvm", "movable": True}
                      for g in range(GUESTS_PER_HOST)]
            facts[name] = {"memory_total_mib": 512 * 1024, "memory_free_mib": 512 * 1024 - sum(
                guest["memory_mib"] for guest in guests), "cpus": 64, "guests": guests}
            hosts.append({"name": name, "cluster": cluster, "max_unavailable": 1 + c % 2,
                          "needs_patch": True, "reboot_required": True, "guests": len(guests), "mark": mark})
    return {"hosts": hosts, "facts": facts, "members": members, "marked": marked,
            "unreachable": unreachable}


def measure(clusters: int) -> dict:
    """One measurement in this process: both steps timed apart, the peak RSS at the end."""
    from ansible_collections.virtfleet.cluster.plugins.module_utils.maintenance_plan import (
        capacity_from_facts, plan_maintenance)
    estate = synthetic_estate(clusters)
    started, cpu_started = time.perf_counter(), time.process_time()
    capacity = capacity_from_facts(estate["members"], estate["facts"], estate["marked"])
    capacity_s, capacity_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    started, cpu_started = time.perf_counter(), time.process_time()
    plan = plan_maintenance(estate["hosts"], "bench-run", capacity=capacity, members=estate["members"],
                            marked=estate["marked"], unreachable=estate["unreachable"])
    plan_s, plan_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    if not plan["ok"]:
        raise SystemExit("the synthetic estate should fit: %s" % plan["capacity"]["problems"][:3])
    return {"clusters": clusters, "hosts": len(estate["hosts"]), "guests": len(estate["hosts"]) * GUESTS_PER_HOST,
            "maintained": len(plan["maintained"]), "waves": len(plan["waves"]),
            "capacity_s": capacity_s, "plan_s": plan_s, "total_s": capacity_s + plan_s,
            "cpu_s": capacity_cpu_s + plan_cpu_s,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def measure_in_child(clusters: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--measure", str(clusters)], capture_output=True,
                          text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise SystemExit("measurement at %d clusters failed: %s" % (clusters, proc.stderr[-2000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="counted rounds per size (after one warm-up)")
    parser.add_argument("--clusters", type=int, default=1000, help="clusters of the full estate")
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return

    sizes = [max(1, args.clusters // 100), max(1, args.clusters // 10), args.clusters]
    print("machine: %d CPUs, load %s, %s" % (os.cpu_count(), " ".join("%.2f" % x for x in os.getloadavg()),
                                             time.strftime("%Y-%m-%d %H:%M:%S %Z")))
    for size in sizes:
        warm = measure_in_child(size)
        print("warm-up  %5d clusters %7d guests  %7.3f s (not counted)" % (size, warm["guests"], warm["total_s"]))
    runs = {size: [] for size in sizes}
    for round_index in range(args.rounds):
        for size in (sizes if round_index % 2 == 0 else list(reversed(sizes))):
            runs[size].append(measure_in_child(size))
    medians = {}
    for size in sizes:
        figures = runs[size]
        total = [f["total_s"] for f in figures]
        medians[size] = {key: statistics.median(f[key] for f in figures)
                         for key in ("capacity_s", "plan_s", "total_s", "peak_rss_mib")}
        print("%5d clusters %4d x %d hosts %7d guests: median %7.3f s (capacity %.3f s, plan %.3f s), "
              "spread %.3f-%.3f s, peak RSS %.0f MiB; %d hosts maintained in %d waves"
              % (size, size, HOSTS_PER_CLUSTER, figures[0]["guests"], medians[size]["total_s"],
                 medians[size]["capacity_s"], medians[size]["plan_s"], min(total), max(total),
                 medians[size]["peak_rss_mib"], figures[0]["maintained"], figures[0]["waves"]))
    small, middle, full = sizes
    growth_low = medians[middle]["total_s"] / medians[small]["total_s"]
    growth_high = medians[full]["total_s"] / medians[middle]["total_s"]
    print("growth x10 (1/100 -> 1/10): %.1f; growth x10 (1/10 -> full): %.1f (near-linear: 10, target <= 12)"
          % (growth_low, growth_high))
    print("full estate: %.2f s (target <= 10 s), peak RSS %.0f MiB (target <= 1024 MiB)"
          % (medians[full]["total_s"], medians[full]["peak_rss_mib"]))
    print("full_s=%.3f" % medians[full]["total_s"])
    print("peak_rss_mib=%.0f" % medians[full]["peak_rss_mib"])
    print("ratio=%.2f" % growth_high)


if __name__ == "__main__":
    main()
