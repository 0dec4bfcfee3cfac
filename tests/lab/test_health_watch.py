"""health_watch.yml on the real lab (issue 13, part 1): a host whose corrected memory errors
climb is marked and emptied live while every guest's heartbeat goes on; a second host of the
same cluster crossing the same threshold in the same run waits (max_unavailable 1) and is
reported; --check changes nothing.

The signal is injected as the kernel would show it: EDAC counters under each host's health
root (virtfleet_health_root in inventories/lab/group_vars), read by host_health over SSH as the
host's own user. The test puts the lab back: health roots removed, the clusters' shared state
(marks, samples, identity) restored, guests on their home hosts (fixture lab_restored).
"""
import json
import os
import shutil
import subprocess
import time

import pytest
import yaml

from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_state as ms
from test_faults import REPO, ansible_env, guests_on
# The fixture health_lab builds on (guests home, the clusters' shared state put back).
from test_faults import lab_restored  # noqa: F401 pylint: disable=unused-import

pytestmark = pytest.mark.lab

# The bound for the heartbeat of a guest moved live off a failing host.
MAX_HEARTBEAT_GAP_S = 2.0


def health_root(lab, host):
    """The host's health root as the lab inventory templates it (virtfleet_health_root)."""
    group_vars = yaml.safe_load(open(os.path.join(lab.inventory, "group_vars", "region_%s.yml" % lab.name)))
    template = group_vars["virtfleet_health_root"]
    assert template == "{{ lab_state_dir }}/hosts/{{ inventory_hostname }}/health", template
    return os.path.join(lab.state_dir, "hosts", host, "health")


def set_memory_errors(lab, host, corrected, uncorrected=0):
    """Write the host's EDAC counters (one memory controller), world-readable for its user."""
    mc = os.path.join(health_root(lab, host), "sys", "devices", "system", "edac", "mc", "mc0")
    os.makedirs(mc, mode=0o755, exist_ok=True)
    for name, value in (("ce_count", corrected), ("ue_count", uncorrected)):
        with open(os.path.join(mc, name), "w") as handle:
            handle.write("%d\n" % value)
        os.chmod(os.path.join(mc, name), 0o644)


def run_health_watch(lab, tmp_path, *extra):
    report = tmp_path / ("health-%d.json" % time.monotonic_ns())
    notified = tmp_path / "notified.txt"
    variables = {
        "health_watch_result_file": str(report),
        "evacuate_max_incoming": 2,
        "rolling_maintenance_notify_command":
            "sh -c 'printf \"%%s \" \"$1\" >> %s; cat >> %s; echo >> %s' notify" % (notified, notified, notified),
    }
    command = ["ansible-playbook", "-i", lab.inventory, os.path.join(REPO, "playbooks", "health_watch.yml"),
               "-e", json.dumps(variables)] + list(extra)
    started = time.monotonic()
    proc = subprocess.run(command, cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=600,
                          check=False)
    (tmp_path / ("ansible-%d.log" % time.monotonic_ns())).write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    print("\nhealth_watch.yml %s: %.1f s" % (" ".join(extra) or "run", time.monotonic() - started))
    return proc, json.loads(report.read_text())


@pytest.fixture
def health_lab(lab_restored):
    lab = lab_restored
    cluster = sorted(lab.clusters)[0]
    # The samples and marks need a state directory with the cluster's identity (the rolling
    # role's preflight gives it one; lab_restored puts back what was there before).
    ms.ClusterState(lab.state_dir_of(cluster), cluster).init_identity()
    yield lab, cluster
    for host in lab.clusters[cluster]:
        shutil.rmtree(health_root(lab, host), ignore_errors=True)


def test_failing_host_is_emptied_live_and_a_second_one_waits(health_lab, tmp_path):
    lab, cluster = health_lab
    first, second, spare = sorted(lab.clusters[cluster])[:3]
    for host in (first, second):
        set_memory_errors(lab, host, corrected=0)

    # 1. Baseline: counters seen for the first time give no rate, so nothing crosses.
    _proc, report = run_health_watch(lab, tmp_path)
    assert report["drain"] == [] and report["waiting"] == [], report["msg"]
    assert "memory_corrected" not in report["hosts"][first]["not_checked"]
    assert "memory_corrected" in report["hosts"][spare]["not_checked"]  # no EDAC there: not checked, not healthy
    samples = os.path.join(lab.state_dir_of(cluster), "health")
    # Each host's sample (rates) and when it last answered (health_watch_recover_after).
    assert sorted(os.listdir(samples)) == sorted("%s.%s" % (h, kind) for h in lab.clusters[cluster] for kind in ("json", "seen"))

    # 2. Both hosts' corrected errors climb by 5000 (far above 50 per hour).
    for host in (first, second):
        set_memory_errors(lab, host, corrected=5000)
    placement = lab.placement()
    proc, planned = run_health_watch(lab, tmp_path, "--check")
    assert planned["check_mode"] and planned["drain"] == [first] and planned["waiting"] == [second]
    assert lab.placement() == placement  # the dry run moved nothing
    assert first not in ms.ClusterState(lab.state_dir_of(cluster), cluster).marks()  # and marked nothing
    assert "%s: would be marked and drained" % first in " ".join(proc.stdout.split())

    moved = guests_on(lab, first)
    assert moved
    started = time.time()
    proc, report = run_health_watch(lab, tmp_path)
    ended = time.time()
    time.sleep(2)  # heartbeats after the last switch-over

    # The first host is marked with the signal as reason and emptied, its guests on the spare
    # host only: the second failing host is no destination.
    assert report["drain"] == [first], report["msg"]
    entry = report["hosts"][first]
    assert entry["marked"] and entry["drained"], entry
    assert entry["crossed"][0]["signal"] == "memory_corrected" and entry["crossed"][0]["rate_per_hour"] > 50
    mark = ms.ClusterState(lab.state_dir_of(cluster), cluster).marks()[first]
    assert "health_watch.yml" in mark["reason"] and "corrected memory errors" in mark["reason"]
    assert guests_on(lab, first) == []
    assert {lab.where(g) for g in moved} == {spare}
    for guest in moved:
        beats = lab.heartbeat_report(guest, started - 1, ended + 2)
        print("%s: largest heartbeat gap %.3f s, %d lost (%d beats)"
              % (guest, beats["max_gap_s"], beats["lost"], beats["count"]))
        assert beats["count"] >= 2 and beats["lost"] == 0 and beats["restarts"] == 0, (guest, beats)
        assert beats["max_gap_s"] < MAX_HEARTBEAT_GAP_S, (guest, beats)

    # The second host waits, and the report says why; it is neither marked nor touched.
    assert report["waiting"] == [second]
    assert report["hosts"][second]["action"] == "waiting"
    assert "max_unavailable 1" in report["hosts"][second]["why"] and first in report["hosts"][second]["why"]
    assert second not in ms.ClusterState(lab.state_dir_of(cluster), cluster).marks()
    assert guests_on(lab, second) == sorted(g for g, home in lab.guests.items() if home == second)
    assert "%s: WAITING" % second in " ".join(proc.stdout.split())

    # One notification per host, through the rolling maintenance role's hook.
    notified = [line.split(" ", 1) for line in (tmp_path / "notified.txt").read_text().splitlines() if line.strip()]
    events = {json.loads(payload)["host"]: event for event, payload in notified if not json.loads(payload)["dry_run"]}
    assert events == {first: "health_drain", second: "health_waiting"}, notified
