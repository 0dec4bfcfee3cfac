"""Live migration and host drain against the real lab (session libvirtds, TCG Linux guests
printing a heartbeat that the lab timestamps in host time).

Every test leaves the lab as it found it: guests it moved are moved back home.
"""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import libvirt_connection
from ansible_collections.virtfleet.cluster.plugins.module_utils import drain
from ansible_collections.virtfleet.cluster.plugins.module_utils import migration
from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_state as ms
from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import Guest
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_watchdog import human_bytes

pytestmark = pytest.mark.lab

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The lab runs a dozen TCG guests on a couple of cores: figures are generous on purpose.
# Without a migration the heartbeat comes every ~0.15 s, gaps up to ~1 s are scheduling noise.
MAX_HEARTBEAT_GAP_S = 3.0
MAX_DOWNTIME_MS = 3000


def host_uri(lab, host):
    return lab.hosts[host].libvirt_uri


def home_of(lab, guest):
    return lab.guests[guest]


def cluster_hosts(lab, cluster, in_maintenance=()):
    return [{"name": h, "uri": host_uri(lab, h), "in_maintenance": h in in_maintenance}
            for h in sorted(lab.clusters[cluster])]


def guests_on(lab, host):
    return sorted(g for g in lab.guests if lab.where(g) == host)


def beats_between(lab, guest, start, end):
    return [(b[0], b[1]) for b in lab.heartbeats(guest) if start <= b[0] <= end]


def heartbeat_report(lab, guest, start, end):
    """(largest gap in host time, heartbeats lost) over [start, end]."""
    beats = beats_between(lab, guest, start, end)
    assert len(beats) >= 2, "no heartbeat from %s between %s and %s" % (guest, start, end)
    gaps = [b[0] - a[0] for a, b in zip(beats, beats[1:])]
    lost = sum(b[1] - a[1] - 1 for a, b in zip(beats, beats[1:]) if b[1] > a[1])
    return max(gaps), lost


def move_home(lab, cluster):
    """Put every guest of the cluster back on its home host (parallel, like a drain)."""
    moves = []
    for guest in sorted(lab.guests):
        home = home_of(lab, guest)
        if home not in lab.clusters[cluster]:
            continue
        now = lab.where(guest)
        assert now is not None, "%s runs nowhere: the lab is damaged" % guest
        if now != home:
            moves.append({"guest": guest, "source": now, "destination": home})

    def migrate_one(move):
        return migration.migrate_guest(move["guest"], host_uri(lab, move["source"]),
                                       host_uri(lab, move["destination"]),
                                       source_name=move["source"], dest_name=move["destination"])
    outcomes = drain.run_moves(moves, migrate_one, max_parallel=2, max_incoming_per_destination=2)
    failed = [o for o in outcomes if o["status"] != "migrated"]
    assert not failed, "could not restore the lab: %s" % failed


@pytest.fixture
def cluster_a(lab):
    name = sorted(lab.clusters)[0]
    move_home(lab, name)
    yield name
    move_home(lab, name)


@pytest.fixture
def cluster_b(lab):
    name = sorted(lab.clusters)[-1]
    move_home(lab, name)
    yield name
    move_home(lab, name)


def test_live_migration_keeps_the_heartbeat_and_reports_downtime(lab, cluster_a):
    source, destination = sorted(lab.clusters[cluster_a])[:2]
    guest = guests_on(lab, source)[0]
    samples = []
    started = time.time()
    result = migration.migrate_guest(guest, host_uri(lab, source), host_uri(lab, destination),
                                     migration.MigrationOptions(max_downtime_ms=300),
                                     progress=samples.append, source_name=source,
                                     dest_name=destination)
    ended = time.time()
    time.sleep(2)  # let the heartbeat go on after the switch-over

    assert lab.where(guest) == destination
    assert migration.locate_guest(guest, {source: host_uri(lab, source)})[source] == "absent"
    gap, lost = heartbeat_report(lab, guest, started - 1, ended + 2)
    print("\n%s %s -> %s: downtime %s ms, libvirt total %s ms, setup %s ms, %s iterations, "
          "%s transferred, wall %.2f s; largest heartbeat gap %.3f s, %d lost"
          % (guest, source, destination, result["downtime_ms"], result["total_time_ms"],
             result["setup_time_ms"], result["memory_iterations"],
             human_bytes(result["memory_transferred_bytes"]), ended - started, gap, lost))
    assert result["downtime_ms"] is not None and 0 <= result["downtime_ms"] < MAX_DOWNTIME_MS
    assert result["total_time_ms"] > 0 and result["memory_iterations"] >= 1
    assert lost == 0
    assert gap < MAX_HEARTBEAT_GAP_S
    # Progress went from "starting" to "completed" (a fast one may show nothing in between).
    assert samples[0].phase == "starting" and samples[-1].phase == "completed"
    assert str(samples[-1]) == "%s -> %s: done" % (guest, destination)


def run_evacuate(lab, host, tmp_path, *extra):
    """Runs playbooks/evacuate_host.yml; returns (process, drain report saved by the play)."""
    report = tmp_path / ("drain-%d.json" % time.monotonic_ns())
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    command = ["ansible-playbook", os.path.join(REPO, "playbooks", "evacuate_host.yml"),
               "-i", str(lab.inventory), "-e", "evacuate_host=%s" % host,
               "-e", "evacuate_max_incoming=2", "-e", "evacuate_result_file=%s" % report]
    proc = subprocess.run(command + list(extra), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(report.read_text())


def test_drain_through_ansible_check_plan_matches_the_real_run(lab, cluster_a, tmp_path):
    source = sorted(lab.clusters[cluster_a])[0]
    before = guests_on(lab, source)
    assert len(before) >= 2
    _proc, planned = run_evacuate(lab, source, tmp_path, "--check")
    assert planned["changed"] and planned["check_mode"]
    assert guests_on(lab, source) == before  # check mode moved nothing

    started = time.time()
    state = ms.ClusterState(lab.state_dir_of(cluster_a), cluster_a)
    state.init_identity()  # done once per cluster (the rolling role's preflight does it too)
    try:
        proc, done = run_evacuate(lab, source, tmp_path)
        # The emptied host stays marked, so no placement (a rebalance, a rolling run's drain)
        # puts guests back on it, and the play says how to unmark it once repaired.
        mark = state.marks()[source]
        assert "evacuate_host.yml" in mark["reason"]
        assert "state=unmark run_id=operator host=%s" % source in " ".join(proc.stdout.split())
    finally:
        state.unmark("operator", source, force=True)
    elapsed = time.time() - started

    # Same plan, and the guests are where it said.
    assert done["plan"]["moves"] == planned["plan"]["moves"]
    for move in done["plan"]["moves"]:
        assert lab.where(move["guest"]) == move["destination"], move
    assert sorted(m["guest"] for m in done["plan"]["moves"]) == before
    assert done["remaining_guests"] == [] and guests_on(lab, source) == []
    # Live progress was printed while it ran: the progress stream's last sample of each guest
    # ("done"; the percentages before it only when a poll fell inside a short migration), then
    # the summary line.
    for move in done["plan"]["moves"]:
        assert "%s drain: %s -> %s: done" % (source, move["guest"], move["destination"]) in proc.stdout
        assert "%s drain: %s -> %s: migrated, downtime" % (source, move["guest"], move["destination"]) in proc.stdout
    # In parallel: the migrations overlapped in time.
    spans = sorted((m["started_s"], m["ended_s"]) for m in done["migrations"])
    assert spans[1][0] < spans[0][1], spans
    print("\ndrain of %s via ansible-playbook: %d guests in %.1f s (module %s s); %s"
          % (source, len(before), elapsed, done["elapsed_s"], "; ".join(
              "%s -> %s downtime %s ms" % (m["guest"], m["destination"],
                                           m["result"]["downtime_ms"])
              for m in done["migrations"])))


def test_drain_that_cannot_fit_is_refused_with_nothing_moved(lab, cluster_a):
    source = sorted(lab.clusters[cluster_a])[0]
    before = dict((g, lab.where(g)) for g in lab.guests)
    hosts = cluster_hosts(lab, cluster_a)
    on_source = guests_on(lab, source)

    # Overcommit ratio so small that no host has room for a 128 MiB guest.
    with pytest.raises(drain.DrainError) as refused:
        drain.drain_host(source, hosts, drain.DrainOptions(memory_overcommit=0.01, memory_reserve_mib=0))
    message = refused.value.message
    assert message.startswith("refusing to drain %s, nothing was moved" % source)
    assert "MiB short" in message and all(g in message for g in on_source)

    # Every other host in maintenance.
    others = [h for h in lab.clusters[cluster_a] if h != source]
    with pytest.raises(drain.DrainError) as refused:
        drain.drain_host(source, cluster_hosts(lab, cluster_a, in_maintenance=others))
    assert "in maintenance" in refused.value.message
    assert refused.value.result["plan"]["excluded_in_maintenance"] == sorted(others)

    # Check mode refuses the same way.
    with pytest.raises(drain.DrainError):
        drain.drain_host(source, cluster_hosts(lab, cluster_a, in_maintenance=others),
                         check_mode=True)
    assert dict((g, lab.where(g)) for g in lab.guests) == before


def test_migration_aborted_by_timeout_leaves_the_guest_running_on_its_source(lab, cluster_a):
    source, destination = sorted(lab.clusters[cluster_a])[:2]
    guest = guests_on(lab, source)[0]
    started = time.time()
    # 1 MiB/s cannot move a booted Linux guest in 10 s: the timeout fires mid-transfer.
    with pytest.raises(migration.MigrationError) as failed:
        migration.migrate_guest(guest, host_uri(lab, source), host_uri(lab, destination),
                                migration.MigrationOptions(bandwidth_mib=1, timeout=10),
                                source_name=source, dest_name=destination)
    ended = time.time()
    error = failed.value
    print("\n" + error.message)
    assert error.reason == "timeout" and error.location == "source"
    assert error.running_on == source
    assert error.message.startswith("%s still running on %s: migration to %s aborted"
                                    % (guest, source, destination))
    time.sleep(2)
    assert lab.where(guest) == source
    where = migration.locate_guest(guest, {source: host_uri(lab, source),
                                           destination: host_uri(lab, destination)})
    assert where == {source: "running", destination: "absent"}
    gap, lost = heartbeat_report(lab, guest, started - 1, ended + 2)
    assert lost == 0 and gap < MAX_HEARTBEAT_GAP_S


def test_destination_dying_mid_migration_leaves_the_guest_running_on_its_source(lab, cluster_b):
    hosts = sorted(lab.clusters[cluster_b])
    source, destination = hosts[0], hosts[-1]
    # Empty the destination first: its "reboot" kills whatever it runs.
    drain.drain_host(destination, cluster_hosts(lab, cluster_b, in_maintenance=[source]),
                     drain.DrainOptions(max_incoming_per_destination=2))
    assert guests_on(lab, destination) == []
    guest = guests_on(lab, source)[0]

    transferring = threading.Event()

    def progress(sample):
        if sample.phase == "precopy" and sample.data_total:
            transferring.set()

    outcome = {}

    def migrate():
        try:
            outcome["result"] = migration.migrate_guest(
                guest, host_uri(lab, source), host_uri(lab, destination),
                migration.MigrationOptions(bandwidth_mib=2), progress=progress,
                source_name=source, dest_name=destination)
        except migration.MigrationError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=migrate)
    started = time.time()
    worker.start()
    assert transferring.wait(120), "the migration never started transferring"
    lab.reboot(destination)  # kills the destination daemon and its incoming QEMU
    worker.join(300)
    ended = time.time()
    assert not worker.is_alive()
    assert "error" in outcome, "migration succeeded although the destination was rebooted"
    error = outcome["error"]
    print("\n" + error.message)
    assert error.location == "source" and error.running_on == source
    assert error.message.startswith("%s still running on %s" % (guest, source))
    time.sleep(2)
    assert lab.where(guest) == source
    gap, lost = heartbeat_report(lab, guest, started - 1, ended + 2)
    assert lost == 0 and gap < MAX_HEARTBEAT_GAP_S


def test_stalled_migration_is_aborted_by_iterations_and_the_guest_keeps_running(lab, cluster_a):
    """A guest rewriting 24 MiB in a loop, a 10 MiB/s link and a 10 ms downtime target: the
    migration can never converge. The watchdog counts passes without a new low of the
    remaining data and aborts; the guest goes on running on its source."""
    source, destination = sorted(lab.clusters[cluster_a])[:2]
    guest = "vf-stall-probe"
    lab.add_guest(guest, source, workload="dirty", dirty_mib=24)
    try:
        samples = []
        started = time.time()
        with pytest.raises(migration.MigrationError) as failed:
            migration.migrate_guest(guest, host_uri(lab, source), host_uri(lab, destination),
                                    migration.MigrationOptions(bandwidth_mib=10, max_downtime_ms=10,
                                                               stall_iterations=2),
                                    progress=samples.append, source_name=source,
                                    dest_name=destination)
        ended = time.time()
        error = failed.value
        print("\n%s (after %.1f s, dirty rate %s/s)" % (
            error.message, ended - started,
            human_bytes(max(s.dirty_rate_bps or 0 for s in samples))))
        assert error.reason == "stalled" and error.location == "source"
        assert error.message.startswith("%s still running on %s: migration to %s aborted after 2"
                                        " iterations without progress" % (guest, source, destination))
        assert "enable auto_converge" in error.message
        time.sleep(2)
        assert lab.where(guest) == source
        gap, lost = heartbeat_report(lab, guest, started - 1, ended + 2)
        assert lost == 0 and gap < MAX_HEARTBEAT_GAP_S
    finally:
        lab.remove_guest(guest)


def test_same_host_uuid_is_refused_with_a_clear_reason(lab):
    """Two daemons with one host UUID (cloned hosts) cannot migrate to each other; pointing the
    destination at the source's own daemon shows the same refusal without breaking the lab."""
    host = sorted(lab.hosts)[0]
    guest = guests_on(lab, host)[0]
    with pytest.raises(migration.MigrationError) as refused:
        migration.migrate_guest(guest, host_uri(lab, host), host_uri(lab, host),
                                source_name=host, dest_name="%s-clone" % host)
    error = refused.value
    assert error.reason == "same-host-uuid" and error.running_on == host
    assert "report the same host UUID" in error.message and "machine-id" in error.message
    assert lab.where(guest) == host


def test_cpu_check_asks_each_destination_and_names_missing_features(lab, cluster_a):
    """The planner's CPU predicate is the destination's own compareHypervisorCPU: the lab
    guests' CPU passes; a CPU model the host cannot provide is refused with the features."""
    source, destination = sorted(lab.clusters[cluster_a])[:2]
    view = drain.gather_cluster(source, [drain.ClusterHost(h["name"], h["uri"])
                                         for h in cluster_hosts(lab, cluster_a)], drain.DrainOptions())
    try:
        guest = [g for g in view.guests if g.host == source][0]
        target = [c for c in view.capacities if c.name == destination][0]
        assert guest.cpu["xml"] and view.cpu_check(guest, target) is None
        alien = Guest("alien", 128, 1, source, cpu=dict(
            guest.cpu, xml="<cpu mode='custom' match='exact'><model fallback='forbid'>"
                           "Icelake-Server</model></cpu>"))
        refusal = view.cpu_check(alien, target)
        assert refusal and "avx512" in refusal
    finally:
        view.close()


def test_unmovable_guests_are_left_or_shut_down_cleanly_never_forced(lab, cluster_a):
    source = sorted(lab.clusters[cluster_a])[0]
    movable, pinned = guests_on(lab, source)[:2]
    hosts = cluster_hosts(lab, cluster_a)

    # Default policy: refuse before moving anything.
    with pytest.raises(drain.DrainError) as refused:
        drain.drain_host(source, hosts, drain.DrainOptions(unmovable_guests=[pinned]))
    assert "%s cannot live-migrate (declared unmovable)" % pinned in refused.value.message
    assert lab.where(movable) == source

    # leave: the others move, the pinned guest keeps running; the host is not empty and says so.
    result = drain.drain_host(source, hosts, drain.DrainOptions(unmovable_guests=[pinned],
                                                                unmovable="leave"))
    assert result["left"] == [pinned] and result["remaining_guests"] == [pinned]
    assert lab.where(pinned) == source and lab.where(movable) != source

    # shutdown: a clean ACPI request only. This lab guest ignores it, so the drain fails after
    # the timeout and the guest is still running: nothing was forced off.
    with pytest.raises(drain.DrainError) as failed:
        drain.drain_host(source, hosts, drain.DrainOptions(unmovable_guests=[pinned],
                                                           unmovable="shutdown", shutdown_timeout=5))
    print("\n" + failed.value.message)
    shutdown = failed.value.result["shutdown"]
    if shutdown[0]["ok"]:  # a guest that honours ACPI stopped cleanly: start it again
        lab.up()
    else:
        assert "not forced" in shutdown[0]["error"]
        assert "do not reboot it" in failed.value.message
        assert lab.where(pinned) == source


def test_migration_keeps_autostart_and_persistence_on_the_destination(lab, cluster_a):
    """Issue 10 case 5: libvirt does not carry autostart over a migration; migrate_guest sets
    it on the destination, the guest stays persistent there and its source definition is gone
    (so nothing on the source starts a second copy at boot). The guest keeps beating."""
    import libvirt  # pylint: disable=import-outside-toplevel

    source, destination = sorted(lab.clusters[cluster_a])[:2]
    guest = guests_on(lab, source)[0]

    def admin_state(host):
        """(autostart, persistent) of the guest's definition on host, None if not defined."""
        conn = libvirt_connection.open_connection(host_uri(lab, host))
        try:
            try:
                dom = conn.lookupByName(guest)
            except libvirt.libvirtError:
                return None
            return bool(dom.autostart()), bool(dom.isPersistent())
        finally:
            conn.close()

    def set_autostart(host, flag):
        conn = libvirt_connection.open_connection(host_uri(lab, host))
        try:
            conn.lookupByName(guest).setAutostart(int(flag))
        finally:
            conn.close()

    started = time.time()
    try:
        set_autostart(source, True)
        assert admin_state(source) == (True, True)
        result = migration.migrate_guest(guest, host_uri(lab, source), host_uri(lab, destination),
                                         source_name=source, dest_name=destination)
        ended = time.time()
        assert lab.where(guest) == destination
        assert result["autostart"] is True and result["persistent"] is True
        assert not result.get("warnings"), result.get("warnings")
        assert admin_state(destination) == (True, True)
        assert admin_state(source) is None  # undefined there: no second copy at its boot
        time.sleep(2)
        beats = lab.heartbeat_report(guest, started - 1, ended + 2)
        print("\n%s %s -> %s with autostart: downtime %s ms; heartbeat %s"
              % (guest, source, destination, result["downtime_ms"], beats))
        assert beats["lost"] == 0 and beats["restarts"] == 0
        assert beats["max_gap_s"] < MAX_HEARTBEAT_GAP_S
    finally:
        # Autostart off wherever the guest is defined; cluster_a then moves it home.
        for host in lab.clusters[cluster_a]:
            if admin_state(host):
                set_autostart(host, False)
