"""Scale benchmark: six clusters in one run take about as long as the slowest of them alone.

On the scale lab (inventories/lab-scale: 6 clusters x 2 hosts x 1 guest of 128 MiB, 127.0.9.x),
two methods, alternated each round after one warm-up round that is not counted:

* ``alone``: each cluster in a run of its own, one after the other; the figure is the slowest
  of the six runs (wall time of ansible-playbook);
* ``joint``: the six clusters in one run (wall time).

    ratio = median(joint) / median(alone)      (target <= 1.3; ideal 1.0)

The run needs 12 forks (one per maintained host): the repository's ansible.cfg sets 20.

    .venv/bin/python bench/scale.py [--rounds 3]
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

SCALE_TOPOLOGY = os.path.join(benchlib.REPO, "inventories", "lab-scale", "topology.yml")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="counted rounds (after one warm-up round; default 3)")
    args = parser.parse_args()

    lab = benchlib.BenchLab(topology=SCALE_TOPOLOGY)
    lab.up()
    clusters = sorted(lab.clusters)
    guests = sorted(lab.homes)
    print("machine: %s" % benchlib.machine())
    print("scale: %d clusters, %d hosts, %d guests" % (len(clusters), len(lab.hosts), len(guests)))
    workdir = tempfile.mkdtemp(prefix="virtfleet-bench-scale-")
    figures = {"alone": [], "joint": []}
    try:
        for round_number in range(args.rounds + 1):
            methods = ["alone", "joint"] if round_number % 2 == 0 else ["joint", "alone"]
            for kind in methods:
                runs = [[c] for c in clusters] if kind == "alone" else [clusters]
                walls = []
                for index, run_clusters in enumerate(runs):
                    lab.home(guests)
                    reports = os.path.join(workdir, "r%d-%s-%d" % (round_number, kind, index))
                    os.makedirs(reports)
                    wall, _events = run_rolling(lab, run_clusters, reports)
                    walls.append(wall)
                figure = max(walls)
                counted = round_number > 0
                if counted:
                    figures[kind].append(figure)
                print("round %d%s %-5s %6.1f s%s" % (
                    round_number, "" if counted else " (warm-up, not counted)", kind, figure,
                    " (slowest of %s)" % ", ".join("%.1f" % w for w in walls) if kind == "alone" else ""))
        lab.home(guests)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for kind, values in figures.items():
        print("%s: median %.1f s, spread %.1f-%.1f s over %d rounds"
              % (kind, benchlib.median(values), min(values), max(values), len(values)))
    print("ratio=%.3f" % (benchlib.median(figures["joint"]) / benchlib.median(figures["alone"])))


if __name__ == "__main__":
    main()
