"""Each cluster on its own clock (issue 11), on the session lab.

* Two clusters in one run, one whose host reboots slowly (held down by the lab until the fast
  cluster's hosts are done): the fast cluster's second host starts while the slow host is still
  in maintenance, and the fast cluster finishes first - read from the run's events
  (report.json), not from timing thresholds.
* Two runs at once on one cluster with max_unavailable 1 share it (its lock, slots and window):
  never two of its hosts out of service at once (from both runs' events and from the shared
  state, sampled while they run), each host maintained once.
* Two hosts of one cluster out at once (max_unavailable 2) drain side by side: the second plans
  while the first migrates, with the first's reservation subtracted (from the drain events),
  and the one destination left never receives two guests at once (sampled from its libvirt).

Lean on purpose (CI budget): no canary, three hosts in each of the first two tests.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time

import libvirt
import pytest

from test_faults import put_guests_home  # noqa: E402  (same lab helpers)
from test_rolling_maintenance import run_maintenance  # noqa: E402
from ansible_collections.virtfleet.cluster.plugins.module_utils import cluster_slots as cs
from ansible_collections.virtfleet.cluster.plugins.module_utils import drain
from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_state as ms
from ansible_collections.virtfleet.cluster.plugins.module_utils import state_store as store

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def _control(lab, host, name):
    return os.path.join(lab.state_dir, "hosts", host, "control", name)


def _reboot_override(lab, host):
    return _control(lab, host, "reboot-down-s")


def test_a_fast_cluster_does_not_wait_for_a_slow_reboot_elsewhere(shared_state_restored, tmp_path):
    lab = shared_state_restored
    slow_cluster, fast_cluster = sorted(lab.clusters)[:2]
    slow = lab.clusters[slow_cluster][0]
    fast_first, fast_second = lab.clusters[fast_cluster][:2]
    # The slow host stays down in its reboot (the lab's reboot-hold) until the fast cluster has
    # both its hosts recorded done in the run's window - however long that takes on this machine.
    hold = _control(lab, slow, "reboot-hold")
    open(hold, "w").close()
    began = time.time()
    fast_state = ms.ClusterState(lab.state_dir_of(fast_cluster), fast_cluster)
    stop, released = threading.Event(), {}

    def release_when_the_fast_cluster_is_done():
        try:
            while not stop.wait(0.5):
                with contextlib.suppress(store.StateError, OSError, ValueError):  # replaced under the reader
                    window = fast_state.window() or {}
                    if window.get("opened", 0) >= began and {fast_first, fast_second} <= set(window.get("hosts_done") or {}):
                        released["at"] = time.time()
                        break
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(hold)
    releaser = threading.Thread(target=release_when_the_fast_cluster_is_done, daemon=True)
    releaser.start()
    try:
        rc, output, report = run_maintenance(
            lab, tmp_path, rolling_maintenance_hosts=[slow, fast_first, fast_second], rolling_maintenance_force=True,
            rolling_maintenance_new_window=True, rolling_maintenance_canary=False)
    finally:
        stop.set()
        releaser.join(10)
    assert rc == 0, output[-6000:]
    hosts = report["hosts"]
    assert all(hosts[h]["status"] == "done" and hosts[h]["rebooted"] for h in (slow, fast_first, fast_second)), hosts
    # The plan puts the fast cluster's second host in a second round (max_unavailable 1): in
    # lockstep waves it would start only after the slow host is done.
    assert report["plan"]["slot_order"][fast_cluster] == [[fast_first], [fast_second]]
    assert hosts[fast_first]["end"] <= hosts[fast_second]["start"]          # its own order kept
    assert hosts[fast_second]["start"] < hosts[slow]["end"]                 # not held by the slow host
    assert report["clusters"][fast_cluster]["ended"] < report["clusters"][slow_cluster]["ended"]
    # The hold took effect: the slow host's reboot lasted until the fast cluster's hosts were done.
    reboot = [p for p in hosts[slow]["phases"] if p["phase"] == "reboot"][0]
    assert released and reboot["start"] < released["at"] <= reboot["end"], (reboot, released)
    assert report["clusters"][fast_cluster]["max_in_maintenance"] == 1


MAX_HEARTBEAT_GAP_S = 3.0  # as in test_faults and test_safety: a live migration's pause, not a stop

# The patch step a no-op: the hosts keep their pending updates for later tests (test_lab's
# patch-and-reboot test expects the last host of the first cluster fresh).
KEEP_PENDING_UPDATES = {"rolling_maintenance_patch_command": "true"}


def test_two_runs_on_one_cluster_never_take_two_hosts_out(shared_state_restored, tmp_path):
    """Two operators at once on one cluster (max_unavailable 1): the first maintains h1 and h2,
    the second, started while h1 is out, h2 and h3. They share the cluster's lock and slots:
    never two hosts out at once (the shared state sampled, and both runs' events), each host
    maintained and rebooted once (h2 by whichever run got its slot first; the other skips it),
    one window holding all three, every guest accounted for by both runs' census and its
    heartbeat (no restart, no long gap)."""
    lab = shared_state_restored
    cluster = sorted(lab.clusters)[0]
    h1, h2, h3 = lab.clusters[cluster][:3]
    state = ms.ClusterState(lab.state_dir_of(cluster), cluster)
    boots = {h: lab.boot_id(h) for h in (h1, h2, h3)}
    guests = sorted(g for g, where in lab.placement().items() if where in (h1, h2, h3))
    began = time.time()
    samples = []
    stop = threading.Event()

    def sample():
        # Everything out of service in the cluster, as the shared state says: marks and host slots.
        while not stop.is_set():
            try:
                out = set(state.marks()) | {r.get("host") for r in cs.ClusterSlots(state).read().values()
                                            if r.get("pool") == "host"}
                samples.append((out, len(state.runs())))
            except (store.StateError, OSError, ValueError):
                pass  # a file replaced under the reader: the next sample reads it
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    outcome = {}

    def first_run():
        outcome["first"] = run_maintenance(lab, tmp_path / "first", rolling_maintenance_hosts=[h1, h2],
                                           rolling_maintenance_force=True, rolling_maintenance_new_window=True,
                                           rolling_maintenance_canary=False, **KEEP_PENDING_UPDATES)

    runner = threading.Thread(target=first_run)
    try:
        runner.start()
        deadline = time.time() + 300
        while not (state.runs() and h1 in state.marks()) and runner.is_alive() and time.time() < deadline:
            time.sleep(0.2)
        first_id = [r["holder"]["run_id"] for r in state.runs().values()]
        assert len(first_id) == 1 and h1 in state.marks(), "the first run never took h1 out"
        # The second asks for a new window too: while the first works in the cluster it joins its window.
        outcome["second"] = run_maintenance(lab, tmp_path / "second", rolling_maintenance_hosts=[h2, h3],
                                            rolling_maintenance_force=True, rolling_maintenance_new_window=True,
                                            rolling_maintenance_canary=False, **KEEP_PENDING_UPDATES)
        runner.join(900)
    finally:
        stop.set()
        sampler.join(5)
        runner.join(900)
    reports = {}
    for name in ("first", "second"):
        rc, output, report = outcome[name]
        assert rc == 0, output[-6000:]
        assert report["run"]["status"] == "ok", report["run"]
        assert report["census"]["started"] > 0 and report["census"]["missing"] == [], report["census"]
        reports[name] = report
    # Both ran in the cluster at once, sharing it: the second's lock says with whom.
    assert any(n == 2 for _out, n in samples), "the runs never held the cluster together"
    shared = [lock for lock in reports["second"]["locks"] if lock["state"] == "acquired"]
    assert shared and "shares the cluster with run %s" % first_id[0] in shared[0]["message"], reports["second"]["locks"]
    # Never two hosts out at once: in the shared state and in the two runs' timelines together.
    assert samples and max(len(out) for out, _n in samples) == 1, [s for s in samples if len(s[0]) > 1][:5]
    assert {h for out, _n in samples for h in out} == {h1, h2, h3}
    done = {name: [h for h, entry in r["hosts"].items() if entry["status"] == "done"] for name, r in reports.items()}
    assert sorted(done["first"] + done["second"]) == [h1, h2, h3], done     # each host once
    assert h1 in done["first"] and h3 in done["second"]
    other = "second" if h2 in done["first"] else "first"
    assert reports[other]["hosts"][h2]["status"] == "skipped", reports[other]["hosts"][h2]
    intervals = sorted((r["hosts"][h]["start"], r["hosts"][h]["end"]) for name, r in reports.items() for h in done[name])
    assert all(a[1] <= b[0] for a, b in zip(intervals, intervals[1:])), intervals
    assert all(lab.boot_id(h) != boots[h] for h in (h1, h2, h3))
    # One window holds the three hosts; both runs are gone from the lock.
    window = state.window()
    assert set(window["hosts_done"]) >= {h1, h2, h3} and len(window["runs"]) >= 2, window
    assert not state.live_tokens() and state.marks() == {}
    # Every guest of the cluster kept running through both runs' moves: no restart, no long gap.
    ended = time.time()
    for guest in guests:
        beats = lab.heartbeat_report(guest, began, ended)
        assert beats["restarts"] == 0 and beats["lost"] == 0 and beats["max_gap_s"] < MAX_HEARTBEAT_GAP_S, (guest, beats)


# Slow enough that the second drain plans while the first still migrates (its two guests go one
# after the other to the one destination left), fast enough for the CI budget.
DRAIN_BANDWIDTH_MIB = 8


def test_two_drains_of_one_cluster_run_side_by_side_subtract_each_other_and_share_the_destination(shared_state_restored, tmp_path):
    lab = shared_state_restored
    cluster = sorted(lab.clusters)[0]
    first, second, third = lab.clusters[cluster][:3]
    put_guests_home(lab)  # each host to drain runs its own guests, whatever earlier tests moved
    before = lab.placement()
    assert all(h in before.values() for h in (first, second)), before
    # What arrives on the one destination left, as its own daemon lists it, sampled meanwhile.
    arriving, stop = [], threading.Event()

    def sample():
        conn = libvirt.open(lab.hosts[third].libvirt_uri)
        try:
            while not stop.is_set():
                arriving.append(drain.arriving_guests(conn))
                time.sleep(0.2)
        finally:
            conn.close()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.time()
    try:
        rc, output, report = run_maintenance(
            lab, tmp_path, rolling_maintenance_hosts=[first, second], rolling_maintenance_force=True,
            rolling_maintenance_new_window=True, rolling_maintenance_canary=False, virtfleet_max_unavailable=2,
            rolling_maintenance_migration_options={"bandwidth_mib": DRAIN_BANDWIDTH_MIB})
    finally:
        ended = time.time()
        stop.set()
        sampler.join(10)
    assert rc == 0, output[-6000:]
    hosts = report["hosts"]
    assert all(hosts[h]["status"] == "done" for h in (first, second)), hosts
    assert report["plan"]["slot_order"][cluster] == [[first, second]]
    assert report["clusters"][cluster]["max_in_maintenance"] == 2
    drains = {h: [p for p in hosts[h]["phases"] if p["phase"] == "drain"][0] for h in (first, second)}
    assert all(d["state"] == "end" for d in drains.values()), drains
    # Side by side: each drain began before the other ended.
    assert all(drains[h]["start"] < drains[o]["end"] for h, o in ((first, second), (second, first))), drains
    # The drain that planned second (the move turn decides, not the phase marks, which come a moment
    # earlier) subtracted what the first had reserved on the one destination left and not yet
    # delivered; the first planned with nothing reserved.
    found = {h: drains[h]["details"]["reserved"] for h in (first, second)}
    # Shown when an assertion below fails: when each drain ran and what its plan found reserved.
    print("drains:", {h: (d["start"] - began, d["end"] - began, d["details"]) for h, d in drains.items()})
    planned_later = [h for h in found if found[h]]
    assert len(planned_later) == 1, drains
    later = planned_later[0]
    earlier = first if later == second else second
    guests_of_earlier = sorted(g for g, h in before.items() if h == earlier)
    reserved = found[later]
    assert list(reserved) == [third] and reserved[third]["guests"], reserved
    assert set(reserved[third]["guests"]) <= set(guests_of_earlier)
    assert reserved[third]["memory_mib"] >= 128 * len(reserved[third]["guests"])
    assert found[earlier] == {}
    # The two drains together sent one guest at a time into it (max_incoming_per_destination 1).
    assert max(len(names) for names in arriving) == 1, [names for names in arriving if len(names) > 1][:5]
    assert {name for names in arriving for name in names} <= set(before), arriving
    # No reservation is left, and every guest runs and never stopped.
    assert ms.ClusterState(lab.state_dir_of(cluster), cluster).snapshot()["reservations"] == {}
    moved = sorted(g for g, h in before.items() if h in (first, second))
    after = lab.placement()
    assert all(after[g] not in (None, first, second) for g in moved), after
    for guest in moved:
        beats = lab.heartbeat_report(guest, began, ended)
        assert beats["restarts"] == 0 and beats["lost"] == 0, (guest, beats)


def test_the_lab_reboot_delay_is_read_at_each_reboot(lab):
    """The lab option itself: a host's reboot-down-s file sets how long a requested reboot keeps it down."""
    host = sorted(lab.hosts)[-1]
    override = _reboot_override(lab, host)
    with open(override, "w") as handle:
        handle.write("7.5\n")
    try:
        assert lab_program_down_seconds(lab, host) == 7.5
    finally:
        os.unlink(override)
    assert lab_program_down_seconds(lab, host) == 1.0


def lab_program_down_seconds(lab, host):
    from conftest import labprog
    recorded = labprog.load_lab(lab.topology)
    return labprog.reboot_down_seconds(recorded["hosts"][host])
