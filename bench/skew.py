"""Skew benchmark: a fast cluster beside a slow one finishes as if it were alone.

On the benchmark lab (inventories/lab-bench): bench-a's hosts reboot slowly (each host's
``control/reboot-down-s`` set to --slow-reboot seconds, the lab's slow-reboot option), bench-b's
reboot as usual. Two methods, alternated each round after one warm-up round that is not counted:

* ``alone``: bench-b alone in a run;
* ``joint``: bench-a and bench-b in one run.

The figure is bench-b's finish time in each run: its last host_done event minus the run_start
event (report events, not the wall clock of ansible-playbook, whose finish play waits for every
cluster).

    ratio = median(joint) / median(alone)      (target <= 1.2; lockstep waves: about bench-a's time)

    .venv/bin/python bench/skew.py [--rounds 3] [--slow-reboot 30]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from rolling import run_rolling  # noqa: E402

SLOW, FAST = "bench-a", "bench-b"


def finish_time(events, cluster):
    """Seconds from the run's start to the last host of cluster done."""
    start = min(e["ts"] for e in events if e.get("type") == "run_start")
    done = [e["ts"] for e in events if e.get("type") == "host_done" and e.get("cluster") == cluster]
    if not done:
        raise SystemExit("no host of %s was done in the run" % cluster)
    return max(done) - start


def set_slow_reboot(lab, seconds):
    for host in lab.clusters[SLOW]:
        path = os.path.join(lab.hosts[host]["dir"], "control", "reboot-down-s")
        if seconds:
            with open(path, "w") as handle:
                handle.write("%s\n" % seconds)
        elif os.path.exists(path):
            os.unlink(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="counted rounds (after one warm-up round; default 3)")
    parser.add_argument("--slow-reboot", type=float, default=30.0, help="seconds bench-a's hosts stay down in a reboot")
    args = parser.parse_args()

    lab = benchlib.BenchLab()
    lab.up()
    guests = sorted(g for g, home in lab.homes.items() if lab.hosts[home]["cluster"] in (SLOW, FAST))
    print("machine: %s" % benchlib.machine())
    print("skew: %s reboots take %.0f s more; %s as usual" % (SLOW, args.slow_reboot, FAST))
    workdir = tempfile.mkdtemp(prefix="virtfleet-bench-skew-")
    figures = {"alone": [], "joint": []}
    set_slow_reboot(lab, args.slow_reboot)
    try:
        for round_number in range(args.rounds + 1):
            plan = [("alone", [FAST]), ("joint", [SLOW, FAST])]
            if round_number % 2:
                plan.reverse()
            for kind, clusters in plan:
                lab.home(guests)
                reports = os.path.join(workdir, "r%d-%s" % (round_number, kind))
                os.makedirs(reports)
                wall, events = run_rolling(lab, clusters, reports)
                fast = finish_time(events, FAST)
                slow = finish_time(events, SLOW) if SLOW in clusters else None
                counted = round_number > 0
                if counted:
                    figures[kind].append(fast)
                print("round %d%s %-5s wall %6.1f s; %s finished after %6.1f s%s" % (
                    round_number, "" if counted else " (warm-up, not counted)", kind, wall, FAST, fast,
                    "; %s after %6.1f s" % (SLOW, slow) if slow is not None else ""))
        lab.home(guests)
    finally:
        set_slow_reboot(lab, 0)
        shutil.rmtree(workdir, ignore_errors=True)
    for kind, values in figures.items():
        print("%s: %s finish median %.1f s, spread %.1f-%.1f s over %d rounds"
              % (kind, FAST, benchlib.median(values), min(values), max(values), len(values)))
    print("ratio=%.3f" % (benchlib.median(figures["joint"]) / benchlib.median(figures["alone"])))


if __name__ == "__main__":
    main()
