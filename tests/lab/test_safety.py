"""Safety of the rolling maintenance against actors outside the run (issue 10), on the real lab.

* A guest live-migrated onto a host while the host is in its patch hook (an operator's
  ``virsh migrate``, another tool): the role asks the host again right before rebooting it,
  refuses naming the guest, and the guest keeps running (its heartbeat goes on).
* The run's census: every guest that ran at the start of a run must run somewhere at its end,
  or the run fails naming it.
* evacuate_host.yml is refused while a rolling maintenance run holds the cluster (it marks the
  host it empties: tests/lab/test_migrate_drain.py checks the mark and the unmark advice).
"""
from __future__ import annotations

import json
import os
import pathlib
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import yaml

from test_rolling_maintenance import REPO, _env, run_maintenance  # noqa: E402  (same lab helpers)
from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_state as ms
from ansible_collections.virtfleet.cluster.plugins.module_utils import state_store as store
from ansible_collections.virtfleet.cluster.plugins.module_utils.reservations import ClusterReservations

pytestmark = [pytest.mark.lab, pytest.mark.slow]

# A dozen TCG guests share two cores: gaps under a few seconds are scheduling noise, a guest
# that was killed or restarted loses heartbeats or starts its sequence again.
MAX_HEARTBEAT_GAP_S = 3.0


def _clean_state(state):
    """What an operator does after a refused run: unmark the hosts, release a lock left."""
    for host in state.marks():
        state.unmark("operator", host, force=True)
    state.release_lock("operator", force=True)


def _close_window(state):
    """Close the window an earlier test left open, as a run that finished the cluster would."""
    holder = ms.default_holder("test-setup")
    state.acquire_lock(holder)
    try:
        window = state.window()
        if window and not window.get("closed"):
            state.close_window("test-setup", token=holder["token"])
    finally:
        state.release_lock("test-setup", token=holder["token"])


def _move(lab, guest, source, destination):
    """Live-migrate guest as an operator would, with virsh on the source host."""
    command = ("virsh -c qemu:///session migrate --live --p2p --persistent --undefinesource %s %s"
               % (guest, lab.hosts[destination].libvirt_uri))
    lab.ssh(source, command, timeout=120)


def test_guest_placed_during_the_patch_hook_stops_the_reboot(lab, tmp_path):
    cluster = sorted(lab.clusters)[0]
    first, peer = lab.clusters[cluster][0], lab.clusters[cluster][-1]
    state = ms.ClusterState(lab.state_dir_of(cluster), cluster)
    intruder = sorted(g for g, h in lab.placement().items() if h == peer)[0]
    boots = {h: lab.boot_id(h) for h in lab.clusters[cluster]}
    began = time.time()
    # The patch hook of the first host: somebody migrates a guest onto it (from its peer, with
    # virsh, outside the role), then the lab's patch runs.
    intrude = ("sh -c 'virsh -c %s migrate --live --p2p --persistent --undefinesource %s %s && %s patch'"
               % (lab.hosts[peer].libvirt_uri, intruder, lab.hosts[first].libvirt_uri, lab.host_tool))
    try:
        rc, output, report = run_maintenance(
            lab, tmp_path, rolling_maintenance_hosts=[first], rolling_maintenance_force=True,
            rolling_maintenance_new_window=True, rolling_maintenance_always_reboot=True,
            test_intrude_command=intrude,
            rolling_maintenance_patch_command="{{ test_intrude_command if inventory_hostname == '%s' else lab_patch_command }}"
                                              % first)
        assert lab.where(intruder) == first, "the intruding migration did not happen: %s" % output[-3000:]
        assert lab.boot_id(first) == boots[first], "the host was rebooted with %s on it" % intruder
        assert rc != 0, output[-6000:]
        assert intruder in output and "is not safe to reboot" in output
        host = report["hosts"][first]
        assert host["status"] == "failed" and host["failed_phase"] == "reboot"
        assert intruder in host["message"]
        assert report["run"]["status"] == "failed"
        assert not state.live_tokens() and list(state.marks()) == [first]  # stays marked, lock released
        beats = lab.heartbeat_report(intruder, began, time.time())
        assert beats["restarts"] == 0 and beats["lost"] == 0, beats
        assert beats["max_gap_s"] < MAX_HEARTBEAT_GAP_S, beats
    finally:
        _clean_state(state)
        _send_home(lab, cluster)


def _send_home(lab, cluster):
    """Every guest of the cluster back on the host it started on (the next tests expect it)."""
    for guest, where in lab.placement().items():
        home = lab.guests[guest]
        if where and home in lab.clusters[cluster] and where != home:
            _move(lab, guest, where, home)


def test_a_guest_lost_during_the_run_fails_it_naming_the_guest(lab, tmp_path):
    """The census: a guest that ran at the start and runs nowhere at the end fails the run, even
    when every host went well (here something outside the run kills it during a patch hook)."""
    cluster = sorted(lab.clusters)[0]
    first, peer = lab.clusters[cluster][0], lab.clusters[cluster][-1]
    state = ms.ClusterState(lab.state_dir_of(cluster), cluster)
    victim = sorted(g for g, h in lab.placement().items() if h == peer)[0]
    kill = "sh -c 'virsh -c %s destroy %s && %s patch'" % (lab.hosts[peer].libvirt_uri, victim, lab.host_tool)
    try:
        rc, output, report = run_maintenance(
            lab, tmp_path, rolling_maintenance_hosts=[first], rolling_maintenance_force=True,
            rolling_maintenance_new_window=True, rolling_maintenance_canary=False, test_kill_command=kill,
            rolling_maintenance_patch_command="{{ test_kill_command if inventory_hostname == '%s' else lab_patch_command }}"
                                              % first)
        assert lab.where(victim) is None, "the guest was not killed: %s" % output[-3000:]
        assert report["hosts"][first]["status"] == "done"      # the host itself went well
        assert rc != 0, output[-6000:]
        assert report["run"]["status"] == "failed"
        assert report["census"]["missing"] == [{"guest": victim, "started_on": peer,
                                                "why": "runs on no host of the run's clusters"}]
        assert "guests unaccounted for at the end of the run: %s" % victim in output
    finally:
        _clean_state(state)
        lab.up()  # starts the killed guest again
        _send_home(lab, cluster)


def test_evacuation_is_refused_while_a_rolling_run_holds_the_cluster(lab, tmp_path):
    """evacuate_host.yml checks the cluster lock (it never did): a run holding it keeps its
    hosts; nothing is marked or moved."""
    cluster = sorted(lab.clusters)[-1]
    host = lab.clusters[cluster][0]
    state = ms.ClusterState(lab.state_dir_of(cluster), cluster)
    rolling = ms.default_holder("rolling-4711", {"controller": "awx-node-2", "user": "ops"})
    state.acquire_lock(rolling, shared=True)  # as a rolling maintenance run takes it
    before = lab.placement()
    try:
        result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
                                 os.path.join(REPO, "playbooks", "evacuate_host.yml"), "-i", lab.inventory,
                                 "-e", "evacuate_host=%s" % host], cwd=REPO, env=_env(), capture_output=True,
                                text=True, timeout=300, check=False)
        output = " ".join(result.stdout.split())
        assert result.returncode != 0, output[-3000:]
        assert "locked by run rolling-4711 (ops@awx-node-2, " in output and "evacuate_ignore_lock=true" in output
        assert state.marks() == {} and lab.placement() == before
    finally:
        _clean_state(state)


def test_rebalance_holds_the_lock_while_it_moves_and_never_fills_a_marked_host(lab, tmp_path):
    cluster = sorted(lab.clusters)[-1]
    crowded, other, marked = lab.clusters[cluster][0], lab.clusters[cluster][1], lab.clusters[cluster][2]
    state = ms.ClusterState(lab.state_dir_of(cluster), cluster)
    state.init_identity()  # what the role's preflight (or an operator, once) does
    # Every guest of the cluster on one host; the third host marked by an operator.
    for guest, where in sorted(lab.placement().items()):
        if where in (other, marked):
            _move(lab, guest, where, crowded)
    state.mark("operator", marked, ms.default_holder("operator"), reason="RAM swap")
    began = time.time()
    try:
        result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
                                 os.path.join(REPO, "playbooks", "rebalance.yml"), "-i", lab.inventory,
                                 "-e", "rebalance_target=%s" % ",".join(lab.clusters[cluster]),
                                 "-e", "rebalance_threshold=0.001"], cwd=REPO, env=_env(),
                                capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, result.stdout[-4000:]
        placement = lab.placement()
        on = {h: sorted(g for g, w in placement.items() if w == h) for h in lab.clusters[cluster]}
        assert on[marked] == [] and on[other], on          # moved, never onto the marked host
        history = [json.loads(line) for line in open(os.path.join(state.path, store.HISTORY_FILE))]
        ours = [h for h in history if h["ts"] >= began and h["event"] in ("locked", "unlocked")]
        assert [h["event"] for h in ours] == ["locked", "unlocked"], ours
        assert ours[0]["holder"]["run_id"].startswith("rebalance-")
        assert not state.live_tokens()
        for guest in on[other]:
            beats = lab.heartbeat_report(guest, began, time.time())
            assert beats["restarts"] == 0 and beats["lost"] == 0 and beats["max_gap_s"] < MAX_HEARTBEAT_GAP_S, beats
    finally:
        _clean_state(state)
        _send_home(lab, cluster)


def test_a_host_whose_libvirt_does_not_answer_counts_against_max_unavailable(lab, tmp_path):
    """A cluster member outside the run whose libvirt is down is out of service: with
    max_unavailable 1 no other host of its cluster may go down (the dry run's plan says so)."""
    from test_faults import kill_libvirtd
    cluster = sorted(lab.clusters)[-1]
    *run_hosts, down = lab.clusters[cluster]
    _close_window(ms.ClusterState(lab.state_dir_of(cluster), cluster))  # no host "already done"
    kill_libvirtd(lab, down)
    try:
        rc, output, report = run_maintenance(lab, tmp_path, rolling_maintenance_hosts=run_hosts,
                                             rolling_maintenance_dry_run=True, rolling_maintenance_force=True)
        assert rc == 0, output[-4000:]
        assert report["clusters"][cluster]["max_unavailable"] == 1
        for host in run_hosts:
            assert report["hosts"][host]["status"] == "skipped", report["hosts"][host]
            assert down in report["hosts"][host]["reason"] and "libvirt did not answer" in report["hosts"][host]["reason"]
        assert report["plan"]["waves"] == []
    finally:
        lab.up()  # starts the host's libvirtd (and its guests) again


def test_the_drain_asks_before_each_move_and_never_fills_a_host_marked_since_the_plan(lab, tmp_path):
    """host_drain with shared_state (as the role runs it): the plan was made with the
    destination unmarked; it is marked once the plan is reserved, before the first move starts,
    and no guest goes there."""
    cluster = sorted(lab.clusters)[0]
    source, destination = lab.clusters[cluster][0], lab.clusters[cluster][-1]
    state = ms.ClusterState(lab.state_dir_of(cluster), cluster)
    state.init_identity()
    holder = ms.default_holder("drain-test")
    state.acquire_lock(holder)
    on_source = sorted(g for g, h in lab.placement().items() if h == source)
    play = [{"hosts": source, "gather_facts": False, "tasks": [{"name": "drain", "virtfleet.cluster.host_drain": {
        "host": source, "max_parallel": 1,
        "hosts": [{"name": h, "uri": lab.hosts[h].libvirt_uri} for h in (source, destination)],
        "shared_state": {"path": lab.storage_of(cluster), "cluster": cluster, "run_id": "drain-test",
                         "token": holder["token"]}}}]}]
    playbook = tmp_path / "drain.yml"
    playbook.write_text(yaml.safe_dump(play))
    reserved = []
    planned = threading.Event()

    def mark_once_reserved():
        # Between the plan (its reservation written) and the first move: an operator marks the destination.
        while not planned.is_set():
            reservation = ClusterReservations(state).read().get(source)
            if reservation:
                reserved.append(reservation)
                state.mark("operator", destination, ms.default_holder("operator"), reason="fan replacement")
                return
            time.sleep(0.02)

    marker = threading.Thread(target=mark_once_reserved, daemon=True)
    marker.start()
    began = time.time()
    try:
        result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", lab.inventory,
                                 str(playbook)], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, check=False)
        output = " ".join(result.stdout.split())
        assert result.returncode != 0, output[-3000:]
        assert reserved and {m["destination"] for m in reserved[0]["moves"]} == {destination}, reserved
        assert "%s was marked in maintenance since the plan (by operator: fan replacement)" % destination in output
        assert ClusterReservations(state).read() == {}                     # removed when the drain stopped
        assert sorted(g for g, h in lab.placement().items() if h == source) == on_source  # nothing moved
        for guest in on_source:
            beats = lab.heartbeat_report(guest, began, time.time())
            assert beats["restarts"] == 0 and beats["lost"] == 0 and beats["max_gap_s"] < MAX_HEARTBEAT_GAP_S, beats
    finally:
        planned.set()
        marker.join(5)
        state.unmark("operator", destination, force=True)
        state.release_lock("drain-test", token=holder["token"])


def test_a_host_that_does_not_see_the_shared_state_after_its_reboot_stays_out_of_service(lab, tmp_path):
    """Case 3, after the reboot: the host's view of the shared state is taken away while it
    reboots (an ACL hides the identity file from its user, as a mount that did not come back
    would): after the reboot its next state step is refused naming the file, it stays marked,
    and the lock is released from a host that still sees the state."""
    cluster = sorted(lab.clusters)[0]
    first = lab.clusters[cluster][0]
    state = ms.ClusterState(lab.state_dir_of(cluster), cluster)
    state.init_identity()
    identity_file = os.path.join(state.path, store.IDENTITY_FILE)
    # A named-user ACL entry does not apply to the file's owner: when an earlier run created the
    # identity file from this very host (as its user), the ACL below would hide nothing and the
    # run would pass. Root owns it for this test (the group keeps its read access).
    if os.stat(identity_file).st_uid == pwd.getpwnam(lab.hosts[first].user).pw_uid:
        os.chown(identity_file, 0, -1)
    # Somewhere the host's own user may write (pytest's tmp_path is private to root).
    shared_tmp = tempfile.mkdtemp(prefix="virtfleet-test-", dir="/tmp")
    os.chmod(shared_tmp, 0o777)
    flag = pathlib.Path(shared_tmp) / "rebooting"
    reboot = "sh -c 'touch %s && %s reboot'" % (flag, lab.host_tool)

    def hide_state_once_rebooting():
        deadline = time.time() + 300
        while time.time() < deadline and not flag.exists():
            time.sleep(0.2)
        subprocess.run(["setfacl", "-m", "u:%s:0" % lab.hosts[first].user, identity_file], check=True)
    boots_before = lab.boot_id(first)
    hider = threading.Thread(target=hide_state_once_rebooting, daemon=True)
    hider.start()
    try:
        rc, output, report = run_maintenance(
            lab, tmp_path, rolling_maintenance_hosts=[first], rolling_maintenance_force=True,
            rolling_maintenance_new_window=True, rolling_maintenance_canary=False, test_reboot_command=reboot,
            reboot_command="{{ test_reboot_command if inventory_hostname == '%s' else lab_reboot_command }}" % first)
        hider.join(5)
        assert flag.exists(), output[-3000:]
        assert rc != 0, output[-6000:]
        host = report["hosts"][first]
        assert host["status"] == "failed" and host["failed_phase"] in ("reboot", "verify"), host
        assert lab.boot_id(first) != boots_before                 # it did reboot
        assert identity_file in host["message"], host["message"]
        assert list(state.marks()) == [first]               # stays out of service
        assert state.marks()[first]["phase"] == "patched"   # nothing written once it lost the view
        assert not state.live_tokens()                         # released from a host that sees the state
    finally:
        subprocess.run(["setfacl", "-x", "u:%s" % lab.hosts[first].user, identity_file], check=False)
        shutil.rmtree(shared_tmp, ignore_errors=True)
        _clean_state(state)
        _send_home(lab, cluster)
