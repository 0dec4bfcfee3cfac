"""Faults on the real lab: each one leaves every guest running somewhere, says clearly what
happened, and a re-run recovers.

Covered elsewhere and not repeated here (tests/lab/test_migrate_drain.py): the destination
host rebooting mid-migration, abort by timeout, a dirtying guest stalling without
auto-converge (no-progress watchdog), a drain refused when the cluster cannot take it.

Here:
* the destination's libvirt daemon alone killed mid-migration, then the same migration
  re-run once the daemon is back;
* the destination's daemon frozen (SIGSTOP) mid-migration: keepalive fails the migration with
  the guest on its source, a new connection gives up after its timeout, and once the daemon
  answers again the same migration completes;
* the same memory-dirtying guest behind the same bandwidth cap stalls without auto-converge
  and completes with it; post-copy as far as this machine allows (session daemons need
  vm.unprivileged_userfaultfd=1);
* through the rolling maintenance playbook: SSH to a host lost across its reboot (its
  cluster fails, the other cluster finishes, a re-run resumes and completes while a
  concurrent run against the same cluster is refused naming it), a cluster that cannot absorb
  a host (refused in preflight, nothing moved), a host whose libvirt is down at preflight
  (refused naming it).

Every test puts the lab back: guests on their home hosts, daemons up, the clusters'
maintenance state (lock, marks, window) as it was before the test.
"""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import libvirt_connection
from ansible_collections.virtfleet.cluster.plugins.module_utils import drain
from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_state as ms
from ansible_collections.virtfleet.cluster.plugins.module_utils import migration

pytestmark = pytest.mark.lab

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB_HOOKS = os.path.join(REPO, "roles", "rolling_maintenance", "examples", "lab_hooks.yml")
# A dozen TCG guests share two cores with everything else: heartbeat gaps of up to a second
# are scheduling noise; a guest that stopped would lose heartbeats (sequence numbers).
MAX_HEARTBEAT_GAP_S = 3.0


# --- helpers --------------------------------------------------------------------------------

def uri(lab, host):
    return lab.hosts[host].libvirt_uri


def guests_on(lab, host):
    return sorted(g for g, where in lab.placement().items() if where == host)


def host_dir(lab, host):
    return os.path.join(lab.state_dir, "hosts", host)


def read_pid(path):
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(path) as handle:
            return int(handle.read().split()[0])
    return None


def kill_libvirtd(lab, host):
    """SIGKILL the host's libvirt daemon only (its sshd and processes stay)."""
    pid = read_pid(os.path.join(host_dir(lab, host), "libvirtd.pid"))
    assert pid, "no libvirtd pid recorded for %s" % host
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline and os.path.exists("/proc/%d" % pid):
        time.sleep(0.05)
    assert migration.locate_guest("probe", {host: uri(lab, host)})[host].startswith("unreachable")


def no_lost_heartbeat(lab, guest, start, end):
    report = lab.heartbeat_report(guest, start, end)
    assert report["count"] >= 2, (guest, report)
    assert report["lost"] == 0 and report["restarts"] == 0, (guest, report)
    assert report["max_gap_s"] < MAX_HEARTBEAT_GAP_S, (guest, report)
    return report


def migrate_between(lab, moves, parallel=2):
    """Run moves [(guest, source, destination)] like a drain; all must succeed.

    One incoming migration per destination at a time: two guests started at once by a daemon
    a test has just restarted once deadlocked libvirtd 9.0 here (a forked child stuck on a lock
    before exec; a guest stayed paused at switchover on its source until the child was killed,
    then both migrations completed)."""
    def one(move):
        return migration.migrate_guest(move["guest"], uri(lab, move["source"]), uri(lab, move["destination"]),
                                       source_name=move["source"], dest_name=move["destination"])
    outcomes = drain.run_moves([{"guest": g, "source": s, "destination": d} for g, s, d in moves], one,
                               max_parallel=parallel, max_incoming_per_destination=1)
    failed = [o for o in outcomes if o["status"] != "migrated"]
    assert not failed, failed


def put_guests_home(lab):
    """Every guest back on the host it started on (daemons restarted, dead guests started)."""
    lab.up()
    moves = [(g, now, lab.guests[g]) for g, now in sorted(lab.placement().items())
             if now is not None and now != lab.guests[g]]
    if moves:
        migrate_between(lab, moves)
    assert lab.placement() == dict(lab.guests), lab.placement()


def evacuate(lab, host, to):
    """Move the host's guests to `to` (so a fault on `host` cannot touch a guest)."""
    migrate_between(lab, [(g, host, to) for g in guests_on(lab, host)])
    assert guests_on(lab, host) == []


@pytest.fixture
def lab_restored(shared_state_restored):
    """Guests home before and after; the clusters' maintenance state saved and put back."""
    lab = shared_state_restored
    put_guests_home(lab)
    yield lab
    put_guests_home(lab)


# --- migration faults -----------------------------------------------------------------------

def start_slow_migration(lab):
    """Empty the last host of the last cluster, then migrate a guest of its first host onto it
    at 2 MiB/s in a thread, slow enough to break the destination in the middle of the transfer
    (a destination that runs nothing can be broken without touching a guest). Returns once
    memory is being transferred: guest, source, destination, the thread and its outcome
    (``result`` or ``error``, and ``seconds``)."""
    source, bystander, destination = sorted(lab.clusters[sorted(lab.clusters)[-1]])
    evacuate(lab, destination, bystander)
    guest = guests_on(lab, source)[0]
    transferring = threading.Event()
    outcome = {}

    def progress(sample):
        if sample.phase == "precopy" and sample.data_total:
            transferring.set()

    def migrate():
        began = time.monotonic()
        try:
            outcome["result"] = migration.migrate_guest(guest, uri(lab, source), uri(lab, destination),
                                                        migration.MigrationOptions(bandwidth_mib=2), progress=progress,
                                                        source_name=source, dest_name=destination)
        except migration.MigrationError as error:
            outcome["error"] = error
        outcome["seconds"] = time.monotonic() - began

    worker = threading.Thread(target=migrate, daemon=True)
    worker.start()
    assert transferring.wait(120), "the migration never started transferring"
    return guest, source, destination, worker, outcome


def test_destination_daemon_killed_mid_migration_then_the_rerun_completes(lab_restored):
    lab = lab_restored
    started = time.time()
    guest, source, destination, worker, outcome = start_slow_migration(lab)
    kill_libvirtd(lab, destination)
    worker.join(300)
    ended = time.time()
    assert not worker.is_alive()
    assert "error" in outcome, "the migration succeeded although the destination daemon died"
    error = outcome["error"]
    print("\nfailure: %s" % error.message)
    assert error.location == "source" and error.running_on == source
    assert error.message.startswith("%s still running on %s: migration to %s failed: " % (guest, source, destination))
    time.sleep(2)
    assert lab.where(guest) == source
    no_lost_heartbeat(lab, guest, started - 1, ended + 2)

    # The operator brings the daemon back (the lab's `up`); the same migration, re-run, completes.
    lab.up()
    again = time.time()
    result = migration.migrate_guest(guest, uri(lab, source), uri(lab, destination),
                                     source_name=source, dest_name=destination)
    time.sleep(2)
    print("re-run: %s -> %s downtime %s ms" % (guest, destination, result["downtime_ms"]))
    assert lab.where(guest) == destination
    assert migration.locate_guest(guest, {source: uri(lab, source)})[source] == "absent"
    no_lost_heartbeat(lab, guest, started - 1, time.time())
    assert again > ended


def freeze_libvirtd(lab, host):
    """SIGSTOP the host's libvirt daemon: it keeps its sockets (connections are accepted by
    the kernel) but answers nothing, as a hung daemon or a frozen host would."""
    pid = read_pid(os.path.join(host_dir(lab, host), "libvirtd.pid"))
    assert pid, "no libvirtd pid recorded for %s" % host
    os.kill(pid, signal.SIGSTOP)
    return pid


def bounded(call, seconds):
    """call() in a thread; (result or exception, seconds taken); fails if it outlives `seconds`."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except Exception as error:  # the caller asserts on it
            outcome["value"] = error
    worker = threading.Thread(target=run, daemon=True)
    began = time.monotonic()
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "still waiting after %d s: a frozen daemon hangs the call" % seconds
    return outcome["value"], time.monotonic() - began


def test_frozen_destination_daemon_fails_the_migration_within_the_keepalive_bound(lab_restored):
    """A daemon that stops answering (not dead: its sockets stay open) must not hang anything:
    a migration to it fails once keepalive gives up and the guest keeps running on its source;
    a new connection to it is refused after open_connection's timeout; once it answers again
    the same migration completes."""
    lab = lab_restored
    started = time.time()
    guest, source, destination, worker, outcome = start_slow_migration(lab)
    pid = None
    try:
        pid = freeze_libvirtd(lab, destination)
        worker.join(240)
        assert not worker.is_alive(), "the migration still waits 240 s after its destination froze"
        opened, open_seconds = bounded(lambda: migration.locate_guest(
            guest, {destination: uri(lab, destination)},
            connect=lambda address: libvirt_connection.open_connection(address, timeout=10)), 60)
    finally:
        if pid:
            os.kill(pid, signal.SIGCONT)
    ended = time.time()
    assert "error" in outcome, "the migration succeeded although its destination froze"
    error = outcome["error"]
    print("\nfrozen destination: failed after %.0f s: %s" % (outcome["seconds"], error.message))
    print("opening a connection to it: %.0f s: %s" % (open_seconds, opened))
    assert error.running_on == source and error.location == "source", error.as_dict()
    # keepalive: 5 s x (6 + 1) on our side, the source daemon's own to its peer alike
    assert outcome["seconds"] < 120, outcome["seconds"]
    assert opened[destination].startswith("unreachable: cannot connect to")
    assert "no answer within 10 s" in opened[destination]
    assert 9 < open_seconds < 30, open_seconds
    time.sleep(2)
    assert lab.where(guest) == source
    no_lost_heartbeat(lab, guest, started - 1, ended + 2)

    # Answering again, the daemon takes the same migration.
    result = migration.migrate_guest(guest, uri(lab, source), uri(lab, destination),
                                     source_name=source, dest_name=destination)
    time.sleep(2)
    print("re-run: %s -> %s downtime %s ms" % (guest, destination, result["downtime_ms"]))
    assert lab.where(guest) == destination
    no_lost_heartbeat(lab, guest, started - 1, time.time())


@pytest.fixture
def dirty_guest(lab_restored):
    lab = lab_restored
    source, destination = sorted(lab.clusters[sorted(lab.clusters)[0]])[:2]
    name = "vf-faults-dirty"
    if name in (labprog_guests(lab)):
        lab.remove_guest(name)
    lab.add_guest(name, source, workload="dirty", dirty_mib=48)
    yield lab, name, source, destination
    lab.remove_guest(name)


def labprog_guests(lab):
    with open(os.path.join(lab.state_dir, "lab.json")) as handle:
        return json.load(handle)["guests"]


# Same link and the same downtime target for both arms: what changes is auto-converge only.
# 20 MiB/s is far below what the 48 MiB dirtying loop writes, even under TCG.
DIRTY_LINK = dict(bandwidth_mib=20, max_downtime_ms=300)
# Auto-converge throttles the guest's vCPUs (up to 99%) until the copy catches up: the guest
# runs slower for a while - its heartbeat comes late but none is lost - which is the point.
MAX_THROTTLED_GAP_S = 20.0


def test_dirtying_guest_stalls_without_auto_converge_and_completes_with_it(dirty_guest):
    lab, guest, source, destination = dirty_guest
    started = time.time()
    with pytest.raises(migration.MigrationError) as stalled:
        migration.migrate_guest(guest, uri(lab, source), uri(lab, destination),
                                migration.MigrationOptions(stall_iterations=2, **DIRTY_LINK),
                                source_name=source, dest_name=destination)
    error = stalled.value
    print("\nwithout auto-converge (%.0f s): %s" % (time.time() - started, error.message))
    assert error.reason == "stalled" and error.running_on == source
    assert "enable auto_converge" in error.message
    time.sleep(1)
    assert lab.where(guest) == source

    samples = []
    result = migration.migrate_guest(guest, uri(lab, source), uri(lab, destination),
                                     migration.MigrationOptions(auto_converge=True, auto_converge_initial=60,
                                                                auto_converge_increment=20, stall_iterations=30,
                                                                **DIRTY_LINK),
                                     progress=samples.append, source_name=source, dest_name=destination)
    time.sleep(2)
    print("with auto-converge: %s -> %s in %s ms, %s iterations, throttle %s%%, downtime %s ms"
          % (guest, destination, result["total_time_ms"], result["memory_iterations"],
             result["auto_converge_throttle"], result["downtime_ms"]))
    assert lab.where(guest) == destination
    assert result["flags"] & libvirt_connection.VIR_MIGRATE_AUTO_CONVERGE
    assert result["memory_iterations"] > 1  # it did have to converge
    report = lab.heartbeat_report(guest, started - 1, time.time())
    print("heartbeat over both arms: %s" % report)
    assert report["lost"] == 0 and report["restarts"] == 0, report
    assert report["max_gap_s"] < MAX_THROTTLED_GAP_S, report


def unprivileged_userfaultfd():
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/sys/vm/unprivileged_userfaultfd") as handle:
            return int(handle.read()) == 1
    return False


def test_postcopy_of_a_dirtying_guest_completes_or_is_refused_clearly_on_its_source(dirty_guest):
    """Post-copy needs userfaultfd in the destination QEMU. The lab's daemons run unprivileged
    (session mode): without vm.unprivileged_userfaultfd=1 QEMU refuses post-copy, and the
    refusal must keep the guest on its source with a message that says what to change."""
    lab, guest, source, destination = dirty_guest
    started = time.time()
    options = migration.MigrationOptions(postcopy=True, postcopy_after_iterations=2, stall_iterations=30, **DIRTY_LINK)
    if unprivileged_userfaultfd():
        result = migration.migrate_guest(guest, uri(lab, source), uri(lab, destination), options,
                                         source_name=source, dest_name=destination)
        print("\npost-copy: %s" % {k: result[k] for k in ("postcopy_used", "total_time_ms", "downtime_ms")})
        assert result["postcopy_used"] and lab.where(guest) == destination
    else:
        with pytest.raises(migration.MigrationError) as refused:
            migration.migrate_guest(guest, uri(lab, source), uri(lab, destination), options,
                                    source_name=source, dest_name=destination)
        error = refused.value
        print("\npost-copy on this machine (vm.unprivileged_userfaultfd=0): %s" % error.message)
        assert error.running_on == source and error.location == "source"
        assert "userfaultfd" in error.message
        time.sleep(1)
        assert lab.where(guest) == source
    no_lost_heartbeat(lab, guest, started - 1, time.time())


# --- rolling maintenance faults -------------------------------------------------------------

def rolling_command(lab, tmp_path, hosts, **overrides):
    """ansible-playbook of the rolling maintenance on some lab hosts, with the lab's hooks.

    The patch step is a no-op (the hosts keep their pending updates for the other tests), and
    forced: every host is planned whether an earlier test patched it or not; canary and
    homogeneity checks are off (covered by the rolling maintenance tests) so a run costs little
    more than its drains and reboots."""
    extra = {
        "rolling_maintenance_hosts": list(hosts),
        "rolling_maintenance_reports_dir": str(tmp_path / "reports"),
        "rolling_maintenance_patch_command": "true",
        "rolling_maintenance_force": True,
        "rolling_maintenance_canary": False,
        "rolling_maintenance_verify_homogeneity": False,
        "rolling_maintenance_reboot_timeout": 120,
    }
    extra.update(overrides)
    return ["ansible-playbook", "-i", lab.inventory, os.path.join(REPO, "playbooks", "rolling_maintenance.yml"),
            "-e", "@" + LAB_HOOKS, "-e", json.dumps(extra)]


def ansible_env():
    return dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                ANSIBLE_FORCE_COLOR="0",
                PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


def run_rolling(lab, tmp_path, hosts, **overrides):
    proc = subprocess.run(rolling_command(lab, tmp_path, hosts, **overrides), cwd=REPO, env=ansible_env(),
                          capture_output=True, text=True, timeout=900, check=False)
    # Kept beside the reports for whoever debugs a failure.
    with open(tmp_path / ("ansible-%d.log" % time.monotonic_ns()), "w") as handle:
        handle.write(proc.stdout + proc.stderr)
    return proc


def reports(tmp_path):
    """The event logs (events.jsonl) of the runs so far, oldest first."""
    found = []
    for directory in sorted((tmp_path / "reports").glob("*"), key=os.path.getmtime):
        log = directory / "events.jsonl"
        if log.exists():
            found.append([json.loads(line) for line in log.read_text().splitlines() if line.strip()])
    assert found, "no run report under %s" % (tmp_path / "reports")
    return found


def events(report, kind):
    return [e for e in report if e.get("type") == kind]


def output(proc):
    return proc.stdout[-6000:] + proc.stderr[-3000:]


class SshdKeptDown(object):
    """Keeps a lab host's sshd down from its next boot on: whenever the rebooted host's sshd
    shows up it is killed, as if the host came back without its network."""

    def __init__(self, lab, host):
        self.dir = host_dir(lab, host)
        self.boot = lab.boot_id(host)
        self.stop = threading.Event()
        self.kills = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            with contextlib.suppress(OSError):
                with open(os.path.join(self.dir, "boot_id")) as handle:
                    rebooted = handle.read().strip() != self.boot
                pid = read_pid(os.path.join(self.dir, "ssh", "sshd.pid"))
                if rebooted and pid and "sshd" in open("/proc/%d/cmdline" % pid).read():
                    os.kill(pid, signal.SIGKILL)
                    self.kills += 1
            self.stop.wait(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_exc):
        self.stop.set()
        self.thread.join(5)


def test_ssh_lost_across_a_reboot_fails_that_cluster_only_and_a_rerun_resumes_alone(lab_restored, tmp_path):
    """Run 1 maintains one host of each cluster side by side; the host of cluster A reboots but
    its sshd stays down past reboot_timeout: cluster A fails (host marked, lock released), the
    host of cluster B is done. Run 2, with SSH back, finishes A's host and skips B's (done in
    the window); a third run started meanwhile against cluster A is refused - two runs never
    maintain one cluster at once - and run 2 completes. (A lock held by a run that is not
    actually running is tested in test_rolling_maintenance.py.)"""
    lab = lab_restored
    cluster_a, cluster_b = sorted(lab.clusters)
    lost, other = sorted(lab.clusters[cluster_a])[0], sorted(lab.clusters[cluster_b])[0]
    boot_before = lab.boot_id(lost)

    with SshdKeptDown(lab, lost) as ssh_down:
        first = run_rolling(lab, tmp_path, [lost, other], rolling_maintenance_reboot_timeout=20)
    print("\nfirst run: rc %d, sshd of %s killed %d times" % (first.returncode, lost, ssh_down.kills))
    assert first.returncode != 0, output(first)
    assert ssh_down.kills >= 1, "the reboot never happened"
    report = reports(tmp_path)[-1]
    failed = events(report, "host_failed")
    assert [e["host"] for e in failed] == [lost], failed
    # It says where it stopped and why: the reboot did not come back within reboot_timeout
    # ("Timed out waiting for last boot time check (timeout=20)").
    assert failed[0]["phase"] == "reboot", failed
    assert re.search(r"timed out.*timeout=20", failed[0]["message"], re.I), failed
    # The other cluster was not stopped: its host was maintained in the same wave.
    assert other in [e["host"] for e in events(report, "host_done")], output(first)
    # No guest was lost: the drained host was empty before its reboot.
    assert lab.boot_id(lost) != boot_before
    assert None not in lab.placement().values(), lab.placement()
    state = ms.ClusterState(lab.state_dir_of(cluster_a), cluster_a)
    assert lost in state.marks(), "a host that failed stays marked in maintenance"
    assert not state.live_tokens(), "the failed run released its lock"

    # SSH is back (the operator fixed the network): the re-run resumes where it stopped. While
    # it holds the cluster's lock, a second launch of it (the same run id) is refused, naming it.
    lab.up()
    resume_dir, intruder_dir = tmp_path / "resume", tmp_path / "intruder"
    resume = subprocess.Popen(rolling_command(lab, resume_dir, [lost, other], rolling_maintenance_run_id="faults-resume"),
                              cwd=REPO, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and resume.poll() is None and not state.runs():
            time.sleep(0.2)
        assert [r["holder"]["run_id"] for r in state.runs().values()] == ["faults-resume"], "the re-run took no lock"
        intruder = run_rolling(lab, intruder_dir, [sorted(lab.clusters[cluster_a])[1]],
                               rolling_maintenance_run_id="faults-resume")
        resumed_output, _unused = resume.communicate(timeout=900)
    finally:
        if resume.poll() is None:
            resume.kill()
    assert intruder.returncode != 0, output(intruder)
    assert "cluster %s is locked by" % cluster_a in intruder.stdout and "same run id faults-resume" in intruder.stdout, \
        output(intruder)
    refused = reports(intruder_dir)[-1]
    assert events(refused, "run_end")[-1]["status"] == "refused" and events(refused, "host_start") == []

    assert resume.returncode == 0, resumed_output[-6000:]
    report = reports(resume_dir)[-1]
    assert [e["host"] for e in events(report, "host_done")] == [lost], resumed_output[-3000:]
    skipped = {e["host"]: e["reason"] for e in events(report, "host_skipped")}
    assert "already done" in skipped.get(other, ""), skipped
    assert state.marks() == {} and not state.live_tokens()
    assert None not in lab.placement().values()


def test_cluster_that_cannot_absorb_a_host_is_refused_in_preflight_with_nothing_moved(lab_restored, tmp_path):
    lab = lab_restored
    cluster = sorted(lab.clusters)[0]
    host = sorted(lab.clusters[cluster])[0]
    before = lab.placement()
    boot_before = lab.boot_id(host)
    # A reserve larger than any lab host's memory: no host can take a single guest.
    proc = run_rolling(lab, tmp_path, [host], rolling_maintenance_memory_reserve_mib=10 ** 8)
    print("\n" + "\n".join(line for line in proc.stdout.splitlines() if "capacity" in line.lower())[-1500:])
    assert proc.returncode != 0, output(proc)
    assert "The capacity proof failed; nothing was changed" in proc.stdout, output(proc)
    assert host in proc.stdout
    report = reports(tmp_path)[-1]
    assert events(report, "run_end")[-1]["status"] == "refused"
    assert events(report, "migration") == [] and events(report, "host_start") == []
    assert lab.placement() == before and lab.boot_id(host) == boot_before
    state = ms.ClusterState(lab.state_dir_of(cluster), cluster)
    assert not state.live_tokens() and state.marks() == {}


def test_host_with_libvirt_down_is_refused_in_preflight_naming_it(lab_restored, tmp_path):
    lab = lab_restored
    cluster = sorted(lab.clusters)[-1]
    down, bystander = sorted(lab.clusters[cluster])[-1], sorted(lab.clusters[cluster])[0]
    evacuate(lab, down, bystander)  # the daemon's restart must not touch a guest
    before = lab.placement()
    kill_libvirtd(lab, down)
    try:
        proc = run_rolling(lab, tmp_path, sorted(lab.clusters[cluster]))
    finally:
        lab.up()
    assert proc.returncode != 0, output(proc)
    message = re.search(r"Hosts of the run whose libvirt does not answer: ([^\n]*)", proc.stdout)
    assert message, output(proc)
    print("\n" + message.group(0)[:600])
    assert message.group(1).startswith(down + " ("), message.group(0)
    assert "Nothing was changed" in message.group(0)
    assert lab.placement() == before
    state = ms.ClusterState(lab.state_dir_of(cluster), cluster)
    assert not state.live_tokens() and state.marks() == {}
