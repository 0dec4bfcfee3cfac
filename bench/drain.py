"""Drain benchmark: our host_drain against a plain sequential `virsh migrate` loop.

One host (bd1 of inventories/lab-bench) runs 8 guests of 256 MiB; bd2 and bd3 are empty. Each
round drains bd1 three ways, in alternating order, putting the guests back on bd1 (untimed)
between them:

* ``ours-parallel``: ``ansible localhost -m virtfleet.cluster.host_drain`` with max_parallel 4
  and 2 incoming per destination (the whole Ansible run is timed: start-up, facts, plan,
  migrations, final check);
* ``ours-serial``: the same with max_parallel 1 (must never be slower than the loop);
* ``virsh-loop``: ``virsh migrate --live --p2p --persistent --undefinesource`` per guest, one
  after the other, alternating destinations bd2/bd3 (what an operator's shell loop does).

Downtime of every migration comes from libvirt's completed job statistics (ours: the module's
result; the loop: ``virsh domjobinfo --completed`` on the destination).

    .venv/bin/python bench/drain.py [--rounds 2]

Last line: ``ratio=<median ours-parallel / median virsh-loop>`` (target <= 0.6).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

SOURCE = "bd1"
DESTINATIONS = ("bd2", "bd3")
ANSIBLE = os.path.join(benchlib.REPO, ".venv", "bin", "ansible")


def drain_with_host_drain(lab, max_parallel, max_downtime_ms=None):
    """One drain through Ansible; returns (wall seconds, [downtime ms], module elapsed s)."""
    args = {
        "host": SOURCE,
        "hosts": [{"name": h, "uri": lab.uri(h)} for h in (SOURCE,) + DESTINATIONS],
        "max_parallel": max_parallel,
        "max_incoming_per_destination": 2 if max_parallel > 1 else 1,
        # Every lab host shares this machine's memory: a small reserve, as in the lab hooks.
        "memory_reserve_mib": 256,
    }
    if max_downtime_ms:
        args["migration"] = {"max_downtime_ms": max_downtime_ms}
    env = dict(benchlib.ansible_env(), ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    began = time.monotonic()
    proc = subprocess.run([ANSIBLE, "localhost", "-m", "virtfleet.cluster.host_drain", "-a", json.dumps(args)],
                          cwd=benchlib.REPO, env=env, capture_output=True, text=True, timeout=1800, check=False)
    wall = time.monotonic() - began
    match = re.search(r"^localhost \| (\w+!?) => (\{.*)", proc.stdout, re.S | re.M)
    if proc.returncode != 0 or not match:
        raise SystemExit("host_drain failed:\n%s\n%s" % (proc.stdout[-4000:], proc.stderr[-2000:]))
    result = json.loads(match.group(2))
    downtimes = [m["result"]["downtime_ms"] for m in result["migrations"] if m["status"] == "migrated"]
    if len(downtimes) != len(result["migrations"]) or result["remaining_guests"]:
        raise SystemExit("host_drain left guests: %s" % result.get("msg"))
    return wall, downtimes, result.get("elapsed_s")


def virsh(*args):
    return subprocess.run(["virsh", "-q", *args], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, LIBVIRT_AUTOSTART="0"), check=False)


def drain_with_virsh_loop(lab):
    """The operator's loop: one `virsh migrate` after the other; returns (wall s, [downtime ms])."""
    guests = lab.guests_on(SOURCE)
    downtimes = []
    began = time.monotonic()
    for index, guest in enumerate(guests):
        destination = DESTINATIONS[index % len(DESTINATIONS)]
        proc = virsh("-c", lab.uri(SOURCE), "migrate", "--live", "--p2p", "--persistent", "--undefinesource",
                     guest, lab.uri(destination))
        if proc.returncode != 0:
            raise SystemExit("virsh migrate %s failed: %s" % (guest, proc.stderr))
        # Read right after each migration (not timed apart: an operator's loop would not read
        # it, but it costs milliseconds and the figure is the point of the benchmark).
        info = virsh("-c", lab.uri(destination), "domjobinfo", guest, "--completed").stdout
        found = re.search(r"^(?:Total downtime|Downtime):\s+(\d+)\s*ms", info, re.M)
        downtimes.append(int(found.group(1)) if found else None)
    return time.monotonic() - began, downtimes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the three drains (default 2)")
    parser.add_argument("--max-downtime-ms", type=int, default=None,
                        help="our drains ask QEMU for this maximum downtime (default: QEMU's 300 ms, as the loop)")
    args = parser.parse_args()

    lab = benchlib.BenchLab()
    lab.up()
    guests = sorted(g for g, home in lab.homes.items() if home == SOURCE)
    memory = {g["memory_mib"] for name, g in lab.description["guests"].items() if name in guests}
    print("machine: %s" % benchlib.machine())
    print("drain of %s: %d guests of %s MiB into %s; our max downtime: %s" % (
        SOURCE, len(guests), "/".join(map(str, memory)), ", ".join(DESTINATIONS),
        "%d ms" % args.max_downtime_ms if args.max_downtime_ms else "QEMU default (300 ms)"))
    kinds = ("ours-parallel", "ours-serial", "virsh-loop")
    walls = {kind: [] for kind in kinds}
    downtimes = {kind: [] for kind in kinds}
    for round_number in range(args.rounds):
        # Alternate the order so that no method always runs first (warm caches, load drift).
        order = kinds if round_number % 2 == 0 else tuple(reversed(kinds))
        for kind in order:
            lab.home(guests)
            time.sleep(2)  # let the guests settle after the moves back
            if kind == "virsh-loop":
                wall, down = drain_with_virsh_loop(lab)
                extra = ""
            else:
                wall, down, inside = drain_with_host_drain(lab, 4 if kind == "ours-parallel" else 1,
                                                           args.max_downtime_ms)
                extra = " (module %.1f s)" % inside
            walls[kind].append(wall)
            downtimes[kind].extend(d for d in down if d is not None)
            print("round %d %-13s %6.1f s%s downtimes ms: %s" % (round_number + 1, kind, wall, extra,
                                                                 " ".join(str(d) for d in down)))
    lab.home(guests)

    for kind in kinds:
        print("%-13s median %6.1f s (runs %s); downtime median %s ms, worst %s ms over %d migrations"
              % (kind, benchlib.median(walls[kind]), " ".join("%.1f" % w for w in walls[kind]),
                 benchlib.median(downtimes[kind]), max(downtimes[kind] or [float("nan")]), len(downtimes[kind])))
    loop = benchlib.median(walls["virsh-loop"])
    serial_ratio = benchlib.median(walls["ours-serial"]) / loop
    all_ours = downtimes["ours-parallel"] + downtimes["ours-serial"]
    print("downtime_median_ms=%s" % benchlib.median(all_ours))
    print("downtime_worst_ms=%s" % max(all_ours or [float("nan")]))
    print("serial_ratio=%.3f" % serial_ratio)
    print("ratio=%.3f" % (benchlib.median(walls["ours-parallel"]) / loop))


if __name__ == "__main__":
    main()
