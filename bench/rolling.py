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

With --baseline REV, an A/B in one session (figures of different days are not comparable: the
machine's speed varies more than a change's effect): each counted round runs one cluster (bench-a
and bench-b in turn) with the code of REV (a temporary git worktree) and with this tree, their
order alternated; the figures of both, and ratio= for this tree.

    .venv/bin/python bench/rolling.py [--rounds 3] [--baseline REV]
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


def run_rolling(lab, clusters, reports_dir, tree=benchlib.REPO):
    """One rolling maintenance run with the code in ``tree``; returns (wall seconds, events of its log)."""
    extra = {
        "rolling_maintenance_clusters": list(clusters),
        "rolling_maintenance_reports_dir": reports_dir,
        "rolling_maintenance_patch_command": "true",
        "rolling_maintenance_force": True,
        "rolling_maintenance_new_window": True,
    }

    def in_tree(path):  # the inventory, playbook and hooks of the tree that runs
        return os.path.join(tree, os.path.relpath(path, benchlib.REPO))
    command = [os.path.join(os.path.dirname(benchlib.PYTHON), "ansible-playbook"), "-i", in_tree(lab.inventory),
               in_tree(PLAYBOOK), "-e", "@" + in_tree(LAB_HOOKS), "-e", json.dumps(extra)]
    began = time.monotonic()
    proc = subprocess.run(command, cwd=tree, env=dict(benchlib.ansible_env(), ANSIBLE_CONFIG=os.path.join(tree, "ansible.cfg")),
                          capture_output=True, text=True, timeout=3600, check=False)
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


def baseline_tree(revision, directory):
    """A git worktree of ``revision`` that runs as this tree does (its .venv and collection link)."""
    subprocess.run(["git", "worktree", "add", "--detach", directory, revision], cwd=benchlib.REPO, check=True,
                   capture_output=True)
    os.symlink(os.path.join(benchlib.REPO, ".venv"), os.path.join(directory, ".venv"))
    link = os.path.join(directory, ".collections", "ansible_collections", "virtfleet")
    os.makedirs(link)
    os.symlink("../../..", os.path.join(link, "cluster"))
    return directory


def one_run(lab, guests, workdir, label, cluster, tree):
    """Guests home, one run of ``cluster`` with ``tree``'s code; returns (overhead, the line to print)."""
    lab.home(guests)
    reports = tempfile.mkdtemp(prefix="r-", dir=workdir)
    wall, events = run_rolling(lab, [cluster], reports, tree)
    parts = unavoidable(events)[cluster]
    overhead = (wall - parts["total"]) / parts["total"]
    figures = (label, cluster, wall, parts["total"], parts["drain"], parts["reboot"], parts["canary"], parts["hosts"],
               overhead * 100, os.getloadavg()[0])
    return overhead, ("%s %s: wall %6.1f s; unavoidable %6.1f s (drains %.1f s, reboots %.1f s, canaries %.1f s over "
                      "%d hosts); overhead %5.1f%%; load %.1f" % figures)


def alone(lab, guests, workdir, rounds):
    """This tree only: a warm-up round, then ``rounds`` rounds of each cluster, their order alternated."""
    overheads = []
    for round_number in range(rounds + 1):
        for cluster in CLUSTERS if round_number % 2 == 0 else tuple(reversed(CLUSTERS)):
            label = "round %d" % round_number if round_number else "round 0 (warm-up, not counted)"
            overhead, line = one_run(lab, guests, workdir, label, cluster, benchlib.REPO)
            if round_number:
                overheads.append(overhead)
            print(line, flush=True)
    return overheads


def compare(lab, guests, workdir, revision, rounds):
    """A/B: the code of ``revision`` and this tree, interleaved; returns this tree's overheads."""
    trees = {"baseline %s" % revision: baseline_tree(revision, os.path.join(workdir, "baseline")), "this tree": benchlib.REPO}
    overheads = {label: [] for label in trees}
    try:
        print(one_run(lab, guests, workdir, "warm-up (not counted), this tree", CLUSTERS[0], benchlib.REPO)[1], flush=True)
        for round_number in range(1, rounds + 1):
            labels = list(trees) if round_number % 2 else list(reversed(list(trees)))
            for label in labels:
                overhead, line = one_run(lab, guests, workdir, "round %d, %s," % (round_number, label),
                                         CLUSTERS[round_number % 2], trees[label])
                overheads[label].append(overhead)
                print(line, flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", trees["baseline %s" % revision]], cwd=benchlib.REPO,
                       check=False, capture_output=True)
    for label, values in overheads.items():
        print("%s: overhead median %.1f%%, spread %.1f-%.1f%% over %d runs"
              % (label, benchlib.median(values) * 100, min(values) * 100, max(values) * 100, len(values)))
    return overheads["this tree"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="counted rounds (after one warm-up round; default 3)")
    parser.add_argument("--baseline", metavar="REV", help="also run the code of this git revision, interleaved (A/B)")
    args = parser.parse_args()

    lab = benchlib.BenchLab()
    lab.up()
    guests = sorted(g for g, home in lab.homes.items() if lab.hosts[home]["cluster"] in CLUSTERS)
    print("machine: %s" % benchlib.machine())
    print("rolling maintenance of %s, one cluster per run: %d hosts, %d guests" % (
        " and ".join(CLUSTERS), sum(len(lab.clusters[c]) for c in CLUSTERS), len(guests)))
    workdir = tempfile.mkdtemp(prefix="virtfleet-bench-rolling-")
    try:
        overheads = compare(lab, guests, workdir, args.baseline, args.rounds) if args.baseline else alone(
            lab, guests, workdir, args.rounds)
        lab.home(guests)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("overhead: median %.1f%%, spread %.1f-%.1f%% over %d runs"
          % (benchlib.median(overheads) * 100, min(overheads) * 100, max(overheads) * 100, len(overheads)))
    print("ratio=%.3f" % benchlib.median(overheads))


if __name__ == "__main__":
    main()
