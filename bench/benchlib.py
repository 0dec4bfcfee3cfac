"""Shared helpers of the lab benchmarks (bench/drain.py, bench/rolling.py).

The benchmarks run on their own lab, inventories/lab-bench (127.0.8.x, users vf-bench-*), so
they never disturb the default lab's tests. Figures are printed, the last line of each
benchmark is `ratio=<value>`.
"""
from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_TOPOLOGY = os.path.join(REPO, "inventories", "lab-bench", "topology.yml")
LAB_PROGRAM = os.path.join(REPO, "roles", "lab", "files", "virtfleet_lab.py")
PYTHON = os.path.join(REPO, ".venv", "bin", "python")

sys.path.insert(0, os.path.join(REPO, ".collections"))
from ansible_collections.virtfleet.cluster.plugins.module_utils import drain  # noqa: E402
from ansible_collections.virtfleet.cluster.plugins.module_utils import migration  # noqa: E402

_spec = importlib.util.spec_from_file_location("virtfleet_lab", LAB_PROGRAM)
labprog = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(labprog)


def lab_command(*args, topology=BENCH_TOPOLOGY) -> dict:
    proc = subprocess.run([PYTHON, LAB_PROGRAM, *args, "--json", "--topology", topology],
                          capture_output=True, text=True, timeout=1800, check=False)
    try:
        document = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        document = {"msg": proc.stderr[-2000:]}
    if proc.returncode != 0:
        raise SystemExit("lab %s failed: %s" % (args[0], document.get("msg")))
    return document


class BenchLab:
    """The benchmark lab as recorded by the lab program."""

    def __init__(self, topology=BENCH_TOPOLOGY):
        self.topology = topology
        self.inventory = os.path.dirname(topology)
        self.description = labprog.load_lab(topology)
        self.state_dir = self.description["state_dir"]
        self.hosts = self.description["hosts"]
        self.clusters = {name: list(c["hosts"]) for name, c in self.description["clusters"].items()}
        self.homes = {name: g["home"] for name, g in self.description["guests"].items()}

    def up(self) -> dict:
        return lab_command("up", topology=self.topology)

    def uri(self, host):
        return self.hosts[host]["libvirt_uri"]

    def placement(self) -> dict:
        found = labprog.locate_guests(labprog.saved_lab(self.state_dir))
        return {g: (found[g]["host"] if g in found and found[g]["running"] else None) for g in self.homes}

    def guests_on(self, host):
        return sorted(g for g, h in self.placement().items() if h == host)

    def heartbeat_report(self, guest, start, end):
        beats = [(t, seq) for t, seq, _boot in labprog.read_heartbeats(labprog.saved_lab(self.state_dir), guest)
                 if start <= t <= end]
        gaps = [b[0] - a[0] for a, b in zip(beats, beats[1:])]
        lost = sum(max(0, b[1] - a[1] - 1) for a, b in zip(beats, beats[1:]))
        return {"count": len(beats), "max_gap_s": max(gaps) if gaps else None, "lost": lost}

    def move(self, moves, parallel=4):
        """Run [(guest, source, destination)] with our migration code (setup steps, not timed)."""
        def one(move):
            return migration.migrate_guest(move["guest"], self.uri(move["source"]), self.uri(move["destination"]),
                                           source_name=move["source"], dest_name=move["destination"])
        outcomes = drain.run_moves([{"guest": g, "source": s, "destination": d} for g, s, d in moves], one,
                                   max_parallel=parallel, max_incoming_per_destination=parallel)
        failed = [o for o in outcomes if o["status"] != "migrated"]
        if failed:
            raise SystemExit("could not move guests back: %s" % failed)

    def home(self, guests=None):
        """Start guests that died, then put every guest (or the given ones) on its home host."""
        self.up()
        placement = self.placement()
        self.move([(g, placement[g], self.homes[g]) for g in sorted(guests or self.homes)
                   if placement[g] not in (None, self.homes[g])])
        wrong = {g: h for g, h in self.placement().items() if h != self.homes[g] and (not guests or g in guests)}
        if wrong:
            raise SystemExit("guests not at home after the benchmark's reset: %s" % wrong)


def machine() -> dict:
    """What the figures were measured on."""
    with open("/proc/meminfo") as handle:
        total_kib = int(handle.readline().split()[1])
    return {"nproc": os.cpu_count(), "memory_gib": round(total_kib / 1024 / 1024, 1),
            "load": " ".join("%.2f" % x for x in os.getloadavg()),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def ansible_env():
    return dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                ANSIBLE_FORCE_COLOR="0", PATH=os.path.dirname(PYTHON) + os.pathsep + os.environ.get("PATH", ""))


def median(values):
    return statistics.median(values) if values else float("nan")


def percentile(values, share):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]
