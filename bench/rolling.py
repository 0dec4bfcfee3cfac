"""Rolling maintenance benchmark: the orchestration overhead of one cluster's maintenance.

On the benchmark lab (inventories/lab-bench: clusters bench-a and bench-b, each shaped like
the default lab - 3 hosts x 2 guests of 128 MiB), runs playbooks/rolling_maintenance.yml over
one cluster at a time with the lab's hooks (patching is a no-op so every run has the same
work; force so no host is skipped; canary and homogeneity checks on, as in production).

Unavoidable parts, from each run's event log (reports/<run>/events.jsonl): per host the drain
(first drain migration start to last drain migration end), the reboot (the reboot module's
elapsed time) and the canary migrations (onto the host and back). Hosts of one cluster go one
after the other (max_unavailable 1), so a cluster's parts add up.

    overhead = (wall time of the run - unavoidable time) / unavoidable time    (target <= 0.25)

Method: one warm-up round that is not counted (the first migrations after a daemon starts are
slow), then --rounds counted rounds of bench-a alone and bench-b alone, their order alternated;
the median and spread of the counted runs' overheads. Clusters in parallel are bench/scale.py's.

    .venv/bin/python bench/rolling.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

CLUSTERS = ("bench-a", "bench-b")
LAB_HOOKS = os.path.join(benchlib.REPO, "roles", "rolling_maintenance", "examples", "lab_hooks.yml")
PLAYBOOK = os.path.join(benchlib.REPO, "playbooks", "rolling_maintenance.yml")


def run_rolling(lab, clusters, reports_dir):
    """One rolling maintenance run; returns (wall seconds, events of its log)."""
    extra = {
        "rolling_maintenance_clusters": list(clusters),
        "rolling_maintenance_reports_dir": reports_dir,
        "rolling_maintenance_patch_command": "true",
        "rolling_maintenance_force": True,
        "rolling_maintenance_new_window": True,
    }
    command = [os.path.join(os.path.dirname(benchlib.PYTHON), "ansible-playbook"), "-i", lab.inventory, PLAYBOOK,
               "-e", "@" + LAB_HOOKS, "-e", json.dumps(extra)]
    began = time.monotonic()
    proc = subprocess.run(command, cwd=benchlib.REPO, env=benchlib.ansible_env(), capture_output=True, text=True,
                          timeout=3600, check=False)
    wall = time.monotonic() - began
    if proc.returncode != 0:
        raise SystemExit("rolling maintenance of %s failed:\n%s\n%s"
                         % (", ".join(clusters), proc.stdout[-5000:], proc.stderr[-2000:]))
    logs = [os.path.join(reports_dir, d, "events.jsonl") for d in os.listdir(reports_dir)]
    newest = max(logs, key=os.path.getmtime)
    with open(newest) as handle:
        return wall, [json.loads(line) for line in handle if line.strip()]


def unavoidable(events):
    """{cluster: seconds of drains + reboots + canary migrations, summed over its hosts}."""
    per_host = {}
    for event in events:
        host = event.get("host")
        if not host:
            continue
        entry = per_host.setdefault(host, {"cluster": event.get("cluster"), "drain": [], "canary": [], "reboot": 0.0})
        if event.get("type") == "migration" and event.get("status") == "ok":
            entry["drain" if event.get("purpose") == "drain" else "canary"].append((event["started"], event["ended"]))
        elif event.get("type") == "phase" and event.get("phase") == "reboot" and event.get("state") == "end":
            entry["reboot"] = float((event.get("details") or {}).get("elapsed_s") or 0)
    clusters = {}
    for host, entry in per_host.items():
        drain = (max(e for _s, e in entry["drain"]) - min(s for s, _e in entry["drain"])) if entry["drain"] else 0.0
        canary = sum(e - s for s, e in entry["canary"])
        parts = clusters.setdefault(entry["cluster"], {"drain": 0.0, "reboot": 0.0, "canary": 0.0, "hosts": 0})
        parts["drain"] += drain
        parts["reboot"] += entry["reboot"]
        parts["canary"] += canary
        parts["hosts"] += 1 if (entry["drain"] or entry["reboot"]) else 0
    for parts in clusters.values():
        parts["total"] = parts["drain"] + parts["reboot"] + parts["canary"]
    return clusters


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="counted rounds (after one warm-up round; default 3)")
    args = parser.parse_args()

    lab = benchlib.BenchLab()
    lab.up()
    guests = sorted(g for g, home in lab.homes.items() if lab.hosts[home]["cluster"] in CLUSTERS)
    print("machine: %s" % benchlib.machine())
    print("rolling maintenance of %s, one cluster per run: %d hosts, %d guests" % (
        " and ".join(CLUSTERS), sum(len(lab.clusters[c]) for c in CLUSTERS), len(guests)))
    workdir = tempfile.mkdtemp(prefix="virtfleet-bench-rolling-")
    overheads = []
    try:
        for round_number in range(args.rounds + 1):
            order = CLUSTERS if round_number % 2 == 0 else tuple(reversed(CLUSTERS))
            for cluster in order:
                lab.home(guests)
                reports = os.path.join(workdir, "r%d-%s" % (round_number, cluster))
                os.makedirs(reports)
                wall, events = run_rolling(lab, [cluster], reports)
                parts = unavoidable(events)[cluster]
                overhead = (wall - parts["total"]) / parts["total"]
                counted = round_number > 0
                if counted:
                    overheads.append(overhead)
                print("round %d%s %s: wall %6.1f s; unavoidable %6.1f s (drains %.1f s, reboots %.1f s, "
                      "canaries %.1f s over %d hosts); overhead %5.1f%%" % (
                          round_number, "" if counted else " (warm-up, not counted)", cluster, wall,
                          parts["total"], parts["drain"], parts["reboot"], parts["canary"], parts["hosts"],
                          overhead * 100))
        lab.home(guests)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("overhead: median %.1f%%, spread %.1f-%.1f%% over %d runs"
          % (benchlib.median(overheads) * 100, min(overheads) * 100, max(overheads) * 100, len(overheads)))
    print("ratio=%.3f" % benchlib.median(overheads))


if __name__ == "__main__":
    main()
