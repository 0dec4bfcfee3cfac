"""Scale benchmark of the virtfleet.cluster.topology inventory plugin.

Generates a 10,000-host topology (2 regions x 5 zones x 10 pods x 10 clusters x 10 hosts) in a
temporary directory, plus the same hosts, groups and host variables written as a static YAML
inventory (read by Ansible's own `yaml` plugin). Then times `ansible-inventory --list` over both,
alternating, several repetitions each, and prints the medians and the peak RSS of each.
The last line is `ratio=<median topology / median static>` (lower is better; target <= 1.0).

    .venv/bin/python bench/inventory_scale.py [--repeat 5] [--keep]

Addresses come from 198.18.0.0/15, the range set aside for benchmarks; nothing is contacted.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = {"regions": 2, "zones": 5, "pods": 10, "clusters": 10, "hosts": 10}
HYPERVISORS = ("kvm", "kvm", "xen", "hyperv")
Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def generate_topology(shape=None) -> dict:
    shape = shape or SHAPE
    host_number = 0
    regions = []
    for r in range(shape["regions"]):
        zones = []
        for z in range(shape["zones"]):
            pods = []
            for p in range(shape["pods"]):
                clusters = []
                for c in range(shape["clusters"]):
                    name = "r%d-z%d-p%d-c%d" % (r, z, p, c)
                    hosts = []
                    for _unused in range(shape["hosts"]):
                        host_number += 1
                        address = "198.18.%d.%d" % (host_number // 250, host_number % 250 + 1)
                        hosts.append({"name": "hv%05d" % host_number, "address": address})
                    clusters.append({
                        "name": name,
                        "hypervisor": HYPERVISORS[c % len(HYPERVISORS)],
                        "storage": {"name": "pool-" + name, "type": "shared" if c % 2 else "local",
                                    "path": "/srv/pools/" + name},
                        "max_unavailable": 1 + c % 2,
                        "vars": {"rack": "rack-%d" % c},
                        "hosts": hosts,
                    })
                pods.append({"name": "r%d-z%d-p%d" % (r, z, p), "clusters": clusters})
            zones.append({"name": "r%d-z%d" % (r, z), "vars": {"zone_dns": "198.18.255.%d" % (z + 1)},
                          "pods": pods})
        regions.append({"name": "r%d" % r, "vars": {"ntp_server": "ntp.r%d.invalid" % r}, "zones": zones})
    return {"plugin": "virtfleet.cluster.topology", "vars": {"ansible_user": "root"}, "regions": regions}


def static_inventory(topology: dict) -> dict:
    """The same hosts, groups and host variables as a static YAML inventory, built with the
    plugin's own model (so the two inventories cannot drift apart)."""
    sys.path.insert(0, os.path.join(REPO, ".collections"))
    from ansible.inventory.group import to_safe_group_name
    from ansible_collections.virtfleet.cluster.plugins.module_utils.topology import parse_topology
    from ansible_collections.virtfleet.cluster.plugins.module_utils.topology_layout import build_layout

    layout = build_layout(parse_topology(topology), lambda name: to_safe_group_name(name, force=True, silent=True))
    groups: dict = {}
    top = {}
    for group, parent in layout.groups:
        groups[group] = {}
        if parent is None:
            top[group] = groups[group]
        else:
            groups[parent].setdefault("children", {})[group] = groups[group]
    for host, cluster_group, hypervisor_group, variables in layout.hosts():
        groups[cluster_group].setdefault("hosts", {})[host] = variables
        groups[hypervisor_group].setdefault("hosts", {})[host] = None
    return {"all": {"children": top}}


def run_inventory(path: str) -> tuple[float, float, int, bytes]:
    """One `ansible-inventory --list`: (wall seconds, CPU seconds, peak RSS in KiB, output)."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"))
    command = [os.path.join(REPO, ".venv", "bin", "ansible-inventory"), "-i", path, "--list"]
    with tempfile.TemporaryFile() as output:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.PIPE, cwd=REPO, env=env)
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the max over all runs).
        _pid, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        errors = process.stderr.read()
        process.stderr.close()
        if process.returncode != 0 or b"WARNING" in errors or b"ERROR" in errors:
            raise SystemExit("ansible-inventory failed on %s:\n%s" % (path, errors.decode(errors="replace")))
        output.seek(0)
        return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, output.read()


def comparable(listing: bytes) -> dict:
    data = json.loads(listing)
    for variables in data["_meta"]["hostvars"].values():
        variables.pop("inventory_file", None)
        variables.pop("inventory_dir", None)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each inventory (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files and print their directory")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="virtfleet-bench-")
    try:
        topology = generate_topology()
        ours = os.path.join(workdir, "topology.yml")
        static = os.path.join(workdir, "static.yml")
        with open(ours, "w") as handle:
            yaml.dump(topology, handle, Dumper=Dumper, sort_keys=False, default_flow_style=None, width=200)
        with open(static, "w") as handle:
            yaml.dump(static_inventory(topology), handle, Dumper=Dumper, sort_keys=False, width=200)
        hosts = sum(len(c["hosts"]) for r in topology["regions"] for z in r["zones"]
                    for p in z["pods"] for c in p["clusters"])
        print("hosts=%d topology_file=%d bytes static_file=%d bytes"
              % (hosts, os.path.getsize(ours), os.path.getsize(static)))

        times = {"topology": [], "static": []}
        cpu = {"topology": [], "static": []}
        peaks = {"topology": [], "static": []}
        listings = {}
        for _unused in range(args.repeat):
            for name, path in (("topology", ours), ("static", static)):
                elapsed, cpu_seconds, peak, listing = run_inventory(path)
                times[name].append(elapsed)
                cpu[name].append(cpu_seconds)
                peaks[name].append(peak)
                listings[name] = listing
        same = comparable(listings["topology"]) == comparable(listings["static"])
        print("same --list output (apart from inventory_file/inventory_dir): %s" % ("yes" if same else "NO"))
        for name in ("topology", "static"):
            # CPU time is printed too: it barely moves when the machine is busy, wall time does.
            print("%-8s median %.3f s  (runs: %s)  median CPU %.3f s  peak RSS %.1f MiB"
                  % (name, statistics.median(times[name]), " ".join("%.3f" % t for t in times[name]),
                     statistics.median(cpu[name]), max(peaks[name]) / 1024))
        print("cpu_ratio=%.3f" % (statistics.median(cpu["topology"]) / statistics.median(cpu["static"])))
        print("memory=%.2f" % (max(peaks["topology"]) / max(peaks["static"])))
        if args.keep:
            print("files kept in %s" % workdir)
        print("ratio=%.3f" % (statistics.median(times["topology"]) / statistics.median(times["static"])))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
