"""Restarting the guests of a dead host (playbooks/recover_host.yml) on the real lab.

* A powered-off host, handed to recover_host.yml by health_watch.yml once it has answered no
  check for health_watch_recover_after checks: its guests start on the other hosts of its
  cluster (their heartbeats resume with a new guest boot), none runs twice, the report says
  where each runs now.
* A host alive but unreachable (frozen: daemons stopped, guests running, leases held): the
  recovery declares it dead but its first start is refused by the held lease, so it stops and
  says so, and no guest runs twice; once the fence hook powers the host off, it proceeds.

Each test puts the lab back: the host powered on, its guests migrated home.
"""
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_state as ms

pytestmark = pytest.mark.lab

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB_PROGRAM = os.path.join(REPO, "roles", "lab", "files", "virtfleet_lab.py")
_spec = importlib.util.spec_from_file_location("virtfleet_lab", LAB_PROGRAM)
labprog = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(labprog)
# Two probes a second apart: the lab's hosts die for good, no need to wait 30 s to be sure.
FAST_PROBES = ["-e", "recover_host_probe_retries=2", "-e", "recover_host_probe_delay=1",
               "-e", "recover_host_probe_timeout=3"]


def ansible_env():
    return dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


def playbook(lab, tmp_path, name, *args):
    proc = subprocess.run(["ansible-playbook", "-i", lab.inventory, os.path.join(REPO, "playbooks", name), *args],
                          cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=600, check=False)
    with open(tmp_path / ("%s-%d.log" % (name, time.monotonic_ns())), "w") as handle:
        handle.write(proc.stdout + proc.stderr)
    return proc


def recover(lab, tmp_path, host, *args):
    """Runs recover_host.yml; returns (process, report)."""
    report_file = tmp_path / ("report-%d.json" % time.monotonic_ns())
    proc = playbook(lab, tmp_path, "recover_host.yml", "-e", "recover_host=%s" % host,
                    "-e", "recover_host_report_file=%s" % report_file, *FAST_PROBES, *args)
    assert report_file.exists(), proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc, json.loads(report_file.read_text())


def virsh(lab, host, *args):
    return subprocess.run(["virsh", "-q", "-c", lab.hosts[host].libvirt_uri, *args], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, LIBVIRT_AUTOSTART="0"), check=False)


def running_on(lab, hosts):
    """guest -> [hosts running it], asked of each of `hosts` (a frozen host is not asked)."""
    found = {}
    for host in hosts:
        listing = virsh(lab, host, "list", "--name")
        assert listing.returncode == 0, listing.stderr
        for name in listing.stdout.split():
            found.setdefault(name, []).append(host)
    return found


def boots_since(lab, guest, since):
    """The guest boots (ids) whose heartbeats the lab saw after `since`."""
    recorded = labprog.saved_lab(lab.state_dir)
    return {boot for _t, _seq, boot in labprog.read_heartbeats(recorded, guest, since)}


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for %s" % what
        time.sleep(0.5)


def restore(lab, host):
    """The host on again and every guest of the lab on its home host."""
    lab.run("poweron", host)
    lab.run("thaw", host)
    for guest, now in sorted(lab.placement().items()):
        if now is not None and now != lab.guests[guest]:
            moved = subprocess.run(["virsh", "-q", "-c", lab.hosts[now].libvirt_uri, "migrate", "--live", "--p2p",
                                    "--persistent", "--undefinesource", guest, lab.hosts[lab.guests[guest]].libvirt_uri],
                                   capture_output=True, text=True, timeout=300, check=False)
            assert moved.returncode == 0, moved.stderr
    lab.up()
    assert lab.placement() == dict(lab.guests)


@pytest.fixture
def dead_host(lab, tmp_path):
    """The last host of the last cluster, its guests recorded in the cluster's shared state;
    powered on and its guests home again afterwards."""
    cluster = sorted(lab.clusters)[-1]
    host = lab.clusters[cluster][-1]
    proc = playbook(lab, tmp_path, "record_guests.yml", "-e", "record_guests_hosts=%s" % ",".join(lab.clusters[cluster]))
    assert proc.returncode == 0, proc.stdout[-3000:]
    guests = sorted(g for g, home in lab.guests.items() if home == host)
    old_boots = {g: boots_since(lab, g, time.time() - 5) for g in guests}
    assert all(old_boots.values()), old_boots
    yield host, [h for h in lab.clusters[cluster] if h != host], guests, old_boots
    restore(lab, host)
    # The records say where the guests run again (home), not where the test had them.
    proc = playbook(lab, tmp_path, "record_guests.yml", "-e", "record_guests_hosts=%s" % ",".join(lab.clusters[cluster]))
    assert proc.returncode == 0, proc.stdout[-3000:]


def assert_restarted(lab, report, host, peers, guests, old_boots, since):
    """Every guest runs on exactly one peer, the one the report names, with a new boot."""
    assert sorted(r["guest"] for r in report["restarted"]) == guests, report
    assert report["lease_held"] is None and not report["unplaced"], report
    copies = running_on(lab, peers)
    for entry in report["restarted"]:
        assert entry["host"] in peers
        assert copies.get(entry["guest"]) == [entry["host"]], copies
        assert report["placement"][entry["guest"]] == entry["host"]
        assert "%s on %s" % (entry["guest"], entry["host"]) in report["msg"]
    for guest in guests:
        wait_for(lambda g=guest: boots_since(lab, g, since) - old_boots[g], 120, "a new boot of %s" % guest)


def test_powered_off_host_guests_restart_on_the_other_hosts_once(lab, dead_host, tmp_path):
    """Through health_watch.yml, which hands a host silent for health_watch_recover_after checks
    to recover_host.yml (checks every second here)."""
    host, peers, guests, old_boots = dead_host
    # When hosts answered is kept only in a state directory that proved it is the cluster's.
    cluster = next(c for c, members in lab.clusters.items() if host in members)
    ms.ClusterState(lab.state_dir_of(cluster), cluster).init_identity()
    watch = ["-e", "health_watch_hosts=%s" % ",".join([host] + peers), "-e", "health_watch_interval=1"]
    proc = playbook(lab, tmp_path, "health_watch.yml", *watch)  # every host answers: last seen now
    assert proc.returncode == 0 and "RECOVER" not in proc.stdout, proc.stdout[-3000:]
    lab.run("poweroff", host)
    since = time.time()
    proc, plan = recover(lab, tmp_path, host, "--check")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert plan["dry_run"] and sorted(r["guest"] for r in plan["plan"]["restart"]) == guests
    assert not any(g in running_on(lab, peers) for g in guests), "check mode started a guest"

    report_file = tmp_path / "report-watch.json"
    proc = playbook(lab, tmp_path, "health_watch.yml", *watch, "-e", "health_watch_recover_after=2",
                    "-e", "recover_host_report_file=%s" % report_file, *FAST_PROBES)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "%s: RECOVER" % host in proc.stdout, proc.stdout[:6000]
    report = json.loads(report_file.read_text())
    assert report["probe"]["dead"] and report["fence"] == "leases"
    assert_restarted(lab, report, host, peers, guests, old_boots, since)


def test_frozen_host_is_refused_by_its_leases_until_the_fence_hook_powers_it_off(lab, dead_host, tmp_path):
    host, peers, guests, old_boots = dead_host
    lab.run("freeze", host)
    since = time.time()
    proc, report = recover(lab, tmp_path, host)
    assert proc.returncode != 0
    # Declared dead (nothing answers), but the first start met the lease the frozen host holds.
    assert report["probe"]["dead"] and report["lease_held"] and not report["restarted"], report
    assert report["lease_held"]["guest"] in guests and "lease is held" in report["msg"]
    assert not any(g in running_on(lab, peers) for g in guests), "a second copy was started"
    # The only copies still run on the frozen host: their heartbeats go on from the same boot.
    for guest in guests:
        wait_for(lambda g=guest: boots_since(lab, g, since + 2) == old_boots[g], 30, "heartbeats of %s" % guest)

    fence = tmp_path / "fence.yml"
    fence.write_text(
        "- name: Power the host off (the lab's power switch)\n"
        "  ansible.builtin.command: %s %s poweroff {{ recover_host }} --topology %s\n"
        "  changed_when: true\n"
        "- name: Confirm the fence\n"
        "  ansible.builtin.set_fact:\n"
        "    recover_host_fence_confirmed: true\n" % (sys.executable, LAB_PROGRAM, lab.topology))
    fenced_at = time.time()
    proc, report = recover(lab, tmp_path, host, "-e", "recover_host_fence_tasks=%s" % fence)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert report["fence"] == "hook"
    assert_restarted(lab, report, host, peers, guests, old_boots, fenced_at)
