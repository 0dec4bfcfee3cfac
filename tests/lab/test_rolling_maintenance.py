"""Rolling maintenance on real lab hosts.

* The molecule scenario ``rolling_maintenance`` (its own lab, created and destroyed by
  molecule) maintains a whole lab and checks it from the outside.
* On the default lab (the ``lab`` fixture): a dry run changes nothing; a run is refused while
  another run holds a cluster's lock; a failure leaves the state as specified and a re-run
  resumes (and moves the guests back home).
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

import libvirt
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, ".collections"))

from ansible_collections.virtfleet.cluster.plugins.module_utils import canary as owned_canary  # noqa: E402
from ansible_collections.virtfleet.cluster.plugins.module_utils.guest_records import GuestRecords  # noqa: E402
from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_state as ms  # noqa: E402
from ansible_collections.virtfleet.cluster.plugins.module_utils import state_store as store  # noqa: E402

PLAYBOOK = os.path.join(REPO, "playbooks", "rolling_maintenance.yml")
LAB_HOOKS = os.path.join(REPO, "roles", "rolling_maintenance", "examples", "lab_hooks.yml")
VENV_BIN = os.path.dirname(sys.executable)

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def _env():
    env = dict(os.environ)
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env["ANSIBLE_CONFIG"] = os.path.join(REPO, "ansible.cfg")
    env.setdefault("ANSIBLE_FORCE_COLOR", "0")
    return env


def run_maintenance(lab, tmp_path, timeout=900, **extra_vars):
    """Runs playbooks/rolling_maintenance.yml on the lab; returns (rc, output, report or None).

    A run of some hosts or clusters targets their clusters only (rolling_maintenance_target),
    as an operator maintaining one cluster would: the other cluster's hosts cost the run
    nothing (the CI budget). Runs over the whole lab keep every host in the play."""
    reports = tmp_path / ("reports-%d" % time.time_ns())
    extra = dict(extra_vars, rolling_maintenance_reports_dir=str(reports))
    if "rolling_maintenance_target" not in extra:  # a caller's own target (another inventory) wins
        clusters = set(extra_vars.get("rolling_maintenance_clusters") or ())
        clusters |= {lab.hosts[h].cluster for h in extra_vars.get("rolling_maintenance_hosts") or ()}
        if clusters:
            extra["rolling_maintenance_target"] = ",".join(h for c in sorted(clusters) for h in lab.clusters[c])
    command = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", lab.inventory, PLAYBOOK,
               "-e", "@" + LAB_HOOKS, "-e", json.dumps(extra)]
    result = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout, check=False)
    output = result.stdout + result.stderr
    runs = sorted(glob.glob(str(reports / "*" / "report.json")))
    report = json.load(open(runs[-1])) if runs else None
    return result.returncode, output, report


def state_files(lab):
    """Every file of every cluster's shared maintenance state, with its content."""
    files = {}
    for cluster in lab.clusters:
        for path in glob.glob(os.path.join(lab.state_dir_of(cluster), "**"), recursive=True):
            if os.path.isfile(path):
                files[path] = open(path).read()
    return files


def canary_domains(lab):
    """Every domain named like the collection's canary on every lab host, as "<name> on <host>"."""
    found = []
    for host in lab.hosts.values():
        conn = libvirt.open(host.libvirt_uri)
        try:
            found += ["%s on %s" % (d.name(), host.name) for d in conn.listAllDomains(0)
                      if d.name().startswith(owned_canary.CANARY_PREFIX)]
        finally:
            conn.close()
    return found


def leave_a_crashed_runs_canary(lab, host, proves):
    """What a run killed during its canary leaves: the owned canary for ``proves`` running on
    ``host``, shaped like the lab's guests (TCG, qemu64)."""
    cpu = "<cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model><feature policy='disable' name='svm'/></cpu>"
    shape = owned_canary.GuestShape("qemu", "x86_64", "pc", cpu)
    conn = libvirt.open(lab.hosts[host].libvirt_uri)
    try:
        conn.createXML(owned_canary.canary_domain_xml(owned_canary.canary_name(proves), shape, 32, proves, "crashed-run"), 0)
    finally:
        conn.close()


def pending_updates(lab, host):
    return lab.ssh(host, "%s pending-updates" % lab.host_tool).stdout


# --------------------------------------------------------------------------- molecule
def test_molecule_scenario_maintains_a_whole_lab():
    """create (its own lab) -> prepare -> converge (the role) -> verify -> destroy."""
    started = time.time()
    result = subprocess.run([os.path.join(VENV_BIN, "molecule"), "test", "-s", "rolling_maintenance"],
                            cwd=REPO, env=_env(), capture_output=True, text=True, timeout=1800, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert "verify: Executed: Successful" in output.replace("\x1b", "") or "verify" in output
    print("molecule test -s rolling_maintenance: %.0f s" % (time.time() - started))


# --------------------------------------------------------------------------- default lab
def test_dry_run_changes_nothing(lab, tmp_path):
    # An operator's mark on one host: the plan must leave that host as found, never use it.
    first_cluster = sorted(lab.clusters)[0]
    disabled = lab.clusters[first_cluster][-1]
    operator = ms.ClusterState(lab.state_dir_of(first_cluster), first_cluster)
    operator.mark("operator", disabled, ms.default_holder("operator"), reason="fan replacement")
    try:
        _dry_run_changes_nothing(lab, tmp_path, disabled)
    finally:
        operator.unmark("operator", disabled, force=True)


def _dry_run_changes_nothing(lab, tmp_path, disabled):
    before = {"boot": {h: lab.boot_id(h) for h in lab.hosts}, "placement": lab.placement(),
              "state": state_files(lab), "pending": {h: pending_updates(lab, h) for h in lab.hosts}}
    rc, output, report = run_maintenance(lab, tmp_path, rolling_maintenance_dry_run=True,
                                         rolling_maintenance_force=True)
    assert rc == 0, output[-6000:]
    after = {"boot": {h: lab.boot_id(h) for h in lab.hosts}, "placement": lab.placement(),
             "state": state_files(lab), "pending": {h: pending_updates(lab, h) for h in lab.hosts}}
    assert after == before
    assert report["run"]["status"] == "dry_run" and report["run"]["dry_run"]
    waves = report["plan"]["waves"]
    assert "fan replacement" in report["hosts"][disabled]["reason"]
    assert report["hosts"][disabled]["status"] == "skipped"
    # The disabled host counts against its cluster's max_unavailable: with a limit of 1 the
    # rest of its cluster waits; with more, one host fewer goes at a time.
    cluster = lab.hosts[disabled].cluster
    limit = report["clusters"][cluster]["max_unavailable"]
    if limit == 1:
        # (a host done in a window an earlier test left open is skipped as already done)
        assert all("out of service" in report["hosts"][h]["reason"] or report["hosts"][h]["reason"].startswith("already done")
                   for h in lab.clusters[cluster] if h != disabled)
    # Other hosts may be skipped as done in an open maintenance window (an earlier test's).
    planned = {h for h in lab.hosts if report["hosts"][h]["status"] != "skipped"}
    assert planned and disabled not in planned
    assert sorted(h for wave in waves for h in wave) == sorted(planned)
    for wave in waves:  # at most max_unavailable hosts of a cluster down per wave, clusters side by side
        for name in lab.clusters:
            in_wave = [h for h in wave if lab.hosts[h].cluster == name]
            down = 1 if name == cluster else 0
            assert len(in_wave) + down <= report["clusters"][name]["max_unavailable"]
        assert len({lab.hosts[h].cluster for h in wave}) == len([c for c in lab.clusters
                                                                 if set(lab.clusters[c]) & set(wave)])
    # The slot order per cluster: the same hosts, each cluster's rounds on its own (issue 11).
    slot_order = report["plan"]["slot_order"]
    assert sorted(h for rounds in slot_order.values() for r in rounds for h in r) == sorted(planned)
    for name, rounds in slot_order.items():
        assert all(lab.hosts[h].cluster == name for r in rounds for h in r)
        assert all(len(r) + (1 if name == cluster else 0) <= report["clusters"][name]["max_unavailable"] for r in rounds)
    assert "Slot order per cluster" in output
    drain_plans = report["plan"]["drain_plans"]
    assert set(drain_plans) == planned
    placement = lab.placement()
    for host, plan in drain_plans.items():  # every guest of a planned host has a destination
        assert sorted(m["guest"] for m in plan["moves"]) == sorted(g for g, h in placement.items() if h == host)
    assert not [m for plan in drain_plans.values() for m in plan["moves"] if m["destination"] == disabled]
    assert report["totals"]["migrations"] == 0


def test_second_run_is_refused_while_a_cluster_is_locked(lab, tmp_path):
    """A run that holds the cluster to itself (rebalance.yml, an operator's lock) keeps a rolling
    maintenance run out; only rolling maintenance runs share a cluster."""
    cluster = sorted(lab.clusters)[-1]
    state = ms.ClusterState(lab.state_dir_of(cluster), cluster)
    holder = ms.default_holder("other-run-4711", {"controller": "awx-node-2", "user": "ops"})
    state.acquire_lock(holder)
    try:
        boots = {h: lab.boot_id(h) for h in lab.clusters[cluster]}
        rc, output, report = run_maintenance(lab, tmp_path, rolling_maintenance_clusters=[cluster],
                                             rolling_maintenance_force=True)
        assert rc != 0
        assert "other-run-4711" in output and "rolling_maintenance_force_unlock" in output
        assert report["run"]["status"] == "refused"
        assert "other-run-4711" in report["run"]["message"]
        # Nothing changed: the holder still holds the lock, no host marked or rebooted.
        assert state.lock()["holder"]["run_id"] == "other-run-4711"
        assert state.marks() == {}
        assert {h: lab.boot_id(h) for h in lab.clusters[cluster]} == boots
    finally:
        state.release_lock("other-run-4711")


def test_a_second_run_with_the_same_run_id_is_refused(lab, tmp_path):
    """Issue 10 case 2: a lock belongs to one run (its token), not to the run id a user sets.
    A first run holds the lock under run id "same-run-4711"; a second ansible-playbook started
    with the same run id is refused and changes nothing."""
    cluster = sorted(lab.clusters)[-1]
    state = ms.ClusterState(lab.state_dir_of(cluster), cluster)
    first = ms.default_holder("same-run-4711", {"controller": "awx-node-2", "user": "ops", "pid": 4242})
    state.acquire_lock(first, shared=True)
    try:
        boots = {h: lab.boot_id(h) for h in lab.clusters[cluster]}
        placement = lab.placement()
        rc, output, report = run_maintenance(lab, tmp_path, rolling_maintenance_clusters=[cluster],
                                             rolling_maintenance_run_id="same-run-4711", rolling_maintenance_force=True)
        assert rc != 0, output[-6000:]
        assert "same run id" in output and "pid 4242" in output, output[-6000:]
        assert "rolling_maintenance_force_unlock: [%s]" % cluster in output
        assert report["run"]["status"] == "refused"
        # Nothing changed: the first run still holds its lock, no host marked, moved or rebooted.
        assert list(state.runs()) == [first["token"]] and state.lock() is None
        assert state.marks() == {}
        assert lab.placement() == placement
        assert {h: lab.boot_id(h) for h in lab.clusters[cluster]} == boots
    finally:
        state.release_lock("same-run-4711", token=first["token"])


def test_a_preflight_failure_after_the_locks_releases_them(lab, tmp_path):
    """Issue 10 case 10: the plan fails after the locks are taken (a memory overcommit of 0 is
    refused by the planner, which runs after lock.yml): every lock of the run is released and
    the report says so."""
    cluster = sorted(lab.clusters)[-1]
    state = ms.ClusterState(lab.state_dir_of(cluster), cluster)
    assert not state.live_tokens()
    placement = lab.placement()
    rc, output, report = run_maintenance(lab, tmp_path, rolling_maintenance_clusters=[cluster],
                                         rolling_maintenance_force=True, rolling_maintenance_memory_overcommit=0)
    try:
        assert rc != 0, output[-6000:]
        assert "overcommit ratios must be positive" in output, output[-6000:]
        assert not state.live_tokens(), "the run left its lock held: %s %s" % (state.lock(), state.runs())
        assert report["run"]["status"] == "failed"
        assert "%s: released" % cluster in report["run"]["message"], report["run"]["message"]
        history = [json.loads(line) for line in open(os.path.join(state.path, store.HISTORY_FILE))]
        run_id = report["run"]["run_id"]
        assert [h["event"] for h in history if run_id in (h.get("by"), (h.get("holder") or {}).get("run_id"))
                and h["event"] in ("locked", "unlocked", "lock_broken")][-2:] == ["locked", "unlocked"]
        assert state.marks() == {}
        assert lab.placement() == placement
    finally:
        if any(r["holder"]["run_id"] == (report or {}).get("run", {}).get("run_id") for r in state.runs().values()):
            state.release_lock("operator", force=True)


def test_a_host_that_does_not_see_the_shared_state_is_refused(lab, tmp_path):
    """Issue 10 case 3: one host of the cluster cannot read the cluster's state directory (an
    ACL denies its user the identity file, as a missing or foreign mount would hide it): the run
    is refused before any lock or mark, naming the host and the path."""
    cluster = sorted(lab.clusters)[-1]
    host = lab.clusters[cluster][1]
    state = ms.ClusterState(lab.state_dir_of(cluster), cluster)
    state.init_identity(created_by="lab test")          # as a first run would have done
    identity_file = os.path.join(state.path, store.IDENTITY_FILE)
    before = {"state": state_files(lab), "placement": lab.placement(),
              "boots": {h: lab.boot_id(h) for h in lab.clusters[cluster]}}
    subprocess.run(["setfacl", "-m", "u:%s:0" % lab.hosts[host].user, identity_file], check=True)
    try:
        rc, output, report = run_maintenance(lab, tmp_path, rolling_maintenance_clusters=[cluster],
                                             rolling_maintenance_force=True)
    finally:
        subprocess.run(["setfacl", "-x", "u:%s" % lab.hosts[host].user, identity_file], check=True)
    assert rc != 0, output[-6000:]
    assert report["run"]["status"] == "refused"
    message = report["run"]["message"]
    assert "%s: cannot read the state file %s" % (host, identity_file) in message, message
    after = {"state": state_files(lab), "placement": lab.placement(),
             "boots": {h: lab.boot_id(h) for h in lab.clusters[cluster]}}
    assert after == before


def test_failure_leaves_the_host_marked_and_a_rerun_resumes(lab, tmp_path):
    cluster = sorted(lab.clusters)[-1]
    state = ms.ClusterState(lab.state_dir_of(cluster), cluster)
    try:
        _failure_and_resume(lab, tmp_path, cluster, state)
    finally:
        # What an operator would do after a failed test: nothing of the test stays marked.
        for host in state.marks():
            state.unmark("operator", host, force=True)
        state.release_lock("operator", force=True)


def _failure_and_resume(lab, tmp_path, cluster, state):
    first, second = lab.clusters[cluster][0], lab.clusters[cluster][1]
    home = {g: h for g, h in lab.placement().items() if lab.hosts[lab.guests[g]].cluster == cluster}
    boots = {h: lab.boot_id(h) for h in lab.clusters[cluster]}

    # Run 1: the patch step fails on the first host (after its drain). The notification
    # command appends "<event> <JSON payload>" lines to a file.
    notified = tmp_path / "notified.log"
    rc, output, report = run_maintenance(
        lab, tmp_path, rolling_maintenance_hosts=[first, second], rolling_maintenance_force=True,
        rolling_maintenance_new_window=True,
        rolling_maintenance_notify_command="sh -c 'printf \"%%s \" \"$1\" >> %s; cat >> %s; echo >> %s' notify"
                                           % ((notified,) * 3),
        rolling_maintenance_patch_command="{{ 'false' if inventory_hostname == '%s' else lab_patch_command }}" % first)
    assert rc != 0, output[-6000:]
    notes = [line.split(" ", 1) for line in notified.read_text().splitlines() if line.strip()]
    assert [event for event, _payload in notes] == ["run_start", "failure", "run_end"]
    failure = json.loads(notes[1][1])
    assert failure["host"] == first and failure["phase"] == "patch" and failure["run_id"]
    hosts = report["hosts"]
    assert hosts[first]["status"] == "failed" and hosts[first]["failed_phase"] == "patch"
    assert hosts[second]["status"] == "skipped" and "cluster stopped" in hosts[second]["reason"]
    assert report["clusters"][cluster]["status"] == "stopped"
    assert not state.live_tokens()                       # released
    marks = state.marks()
    assert list(marks) == [first] and marks[first]["phase"] == "drained"   # stays marked
    assert {h: lab.boot_id(h) for h in lab.clusters[cluster]} == boots     # nobody rebooted
    placement = lab.placement()
    assert all(placement[g] not in (None, first) for g in home)            # all running, none on it
    assert all(report["guests"][g]["location"] == placement[g] for g in home)  # the report knows
    window = state.window()["name"]

    # A run killed during its canary left the collection's canary running on a host in service:
    # no reader counts it as a guest, and the next canary removes it.
    leave_a_crashed_runs_canary(lab, second, proves=lab.clusters[cluster][-1])

    # Run 2: resume. The marked host is finished from its phase; guests go back home.
    rc, output, report = run_maintenance(lab, tmp_path, rolling_maintenance_hosts=[first],
                                         rolling_maintenance_move_back=True)
    assert rc == 0, output[-6000:]
    # The canary cost no customer anything: it was the collection's own guest, onto the host and
    # back; customer guests moved only in the drain and the move back; no canary is left anywhere.
    canaries = [m for m in report["migrations"] if m["purpose"] == "canary"]
    assert [(m["guest"], m["destination"], m["status"]) for m in canaries] == [
        ("virtfleet-canary-" + first, first, "ok"), ("virtfleet-canary-" + first, canaries[0]["source"], "ok")], canaries
    assert canaries[0]["source"] != first
    assert {m["purpose"] for m in report["migrations"] if m["guest"] in lab.guests} <= {"drain", "move_back"}
    assert canary_domains(lab) == []
    assert not any(g.startswith(owned_canary.CANARY_PREFIX) for g in report["guests"])
    assert report["hosts"][first]["status"] == "done"
    assert report["hosts"][first]["resumed_phase"] == "drained"
    assert report["hosts"][first]["boot_id_before"] == boots[first]
    assert lab.boot_id(first) != boots[first] and lab.boot_id(second) == boots[second]
    assert not state.live_tokens() and state.marks() == {}
    assert state.window()["name"] == window and first in state.window()["hosts_done"]
    assert all(lab.where(g) == h for g, h in home.items())
    # The run's last play recorded where the cluster's guests run now (guest_records: what a later
    # recovery of a dead host restarts from); run 1 had recorded them where its drain left them.
    records = GuestRecords(lab.state_dir_of(cluster), cluster).read_all()
    assert {g: records[g]["host"] for g in home} == home
    moved_back = [m for m in report["migrations"] if m["purpose"] == "move_back"]
    assert all(m["status"] == "ok" for m in moved_back)
    assert sorted(m["guest"] for m in moved_back) == sorted(g for g, h in home.items() if h == first)


def test_canary_without_a_candidate_keeps_the_host_marked(lab, tmp_path):
    """No guest can serve as canary (here: rolling_maintenance_canary_guest names no guest): the
    rebooted host is not put back in service unproven - it stays marked, the run fails saying
    which peers were asked and why none qualified. Fixing the name and re-running resumes it."""
    cluster = sorted(lab.clusters)[0]
    state = ms.ClusterState(lab.state_dir_of(cluster), cluster)
    try:
        _canary_without_a_candidate(lab, tmp_path, cluster, state)
    finally:
        for host in state.marks():
            state.unmark("operator", host, force=True)
        state.release_lock("operator", force=True)


def _canary_without_a_candidate(lab, tmp_path, cluster, state):
    host, peers = lab.clusters[cluster][0], lab.clusters[cluster][1:]
    home = {g: h for g, h in lab.placement().items() if lab.hosts[lab.guests[g]].cluster == cluster}
    boot_before = lab.boot_id(host)
    began = time.time()

    rc, output, report = run_maintenance(lab, tmp_path, rolling_maintenance_hosts=[host], rolling_maintenance_force=True,
                                         rolling_maintenance_new_window=True, rolling_maintenance_canary_guest="no-such-guest")
    assert rc != 0, output[-6000:]
    assert "No canary for %s" % host in output, output[-6000:]
    assert "no-such-guest" in output and "rolling_maintenance_canary: false" in output
    assert all(peer in output for peer in peers)
    assert report["hosts"][host]["status"] == "failed" and report["hosts"][host]["failed_phase"] == "canary"
    marks = state.marks()
    assert list(marks) == [host] and marks[host]["phase"] == "rebooted"   # stays out of service
    assert not state.live_tokens()
    boot_after = lab.boot_id(host)
    assert boot_after != boot_before                                       # it was rebooted...
    placement = lab.placement()
    assert all(placement[g] in peers for g in home)                        # ...and took no guest back

    # The operator fixes the canary's name and re-runs: the host resumes from its phase (no
    # second reboot), the canary proves it, it is unmarked, the guests go home.
    canary = sorted(home)[0]
    rc, output, report = run_maintenance(lab, tmp_path, rolling_maintenance_hosts=[host], rolling_maintenance_canary_guest=canary,
                                         rolling_maintenance_move_back=True)
    assert rc == 0, output[-6000:]
    assert report["hosts"][host]["status"] == "done" and report["hosts"][host]["resumed_phase"] == "rebooted"
    assert lab.boot_id(host) == boot_after
    canaries = [m for m in report["migrations"] if m["purpose"] == "canary"]
    assert [(m["guest"], m["destination"], m["status"]) for m in canaries] == [(canary, host, "ok"), (canary, placement[canary], "ok")]
    assert state.marks() == {} and not state.live_tokens()
    assert all(lab.where(g) == h for g, h in home.items())
    for guest in home:  # every guest kept running across both runs
        beats = lab.heartbeat_report(guest, began, time.time())
        assert beats["restarts"] == 0 and beats["max_gap_s"] < 2.0, (guest, beats)
