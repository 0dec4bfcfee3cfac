"""The maintain play's slot wait (tasks/slot.yml) under host_pinned, without a lab: fake hosts
that are the controller itself (ansible_connection=local), each cluster's shared state in a
temporary directory, and a stand-in for host.yml that sleeps (the slow cluster longer) and then
gives its slot back as host.yml does - or fails as host.yml's rescue leaves it.

* Two clusters of two hosts, max_unavailable 1: the fast cluster's second host starts before
  the slow cluster's first host is done (no lockstep between clusters), and within a cluster
  the hosts go one after the other in the planned order.
* A failed host stops only its cluster: its waiting peer is skipped and reported ("cluster
  stopped"), the other cluster is maintained.
* The preflight refuses a run with fewer forks than hosts to maintain (the whole playbook on
  hosts of libvirt's test driver) and releases the locks it took.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_state as ms
from ansible_collections.virtfleet.cluster.plugins.module_utils import state_store as store

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
VENV_BIN = os.path.dirname(sys.executable)
TOKEN = "f" * 32
RUN_ID = "slot-test"
CLUSTERS = {"slow": ["s1", "s2"], "fast": ["f1", "f2"]}
# The stand-in for host.yml: mark, "work" (sleep), then done (which releases), or fail as the rescue does.
HOST_WORK = [
    {"name": "Start", "virtfleet.cluster.maintenance_report": {
        "directory": "{{ __rolling_maintenance_report_dir }}", "run_id": RUN_ID,
        "event": {"type": "host_start", "cluster": "{{ virtfleet_cluster }}", "host": "{{ inventory_hostname }}"}},
     "delegate_to": "localhost"},
    {"name": "Work", "ansible.builtin.command": "sleep {{ work_seconds }}", "changed_when": False},
    {"name": "Fail as host.yml's rescue leaves it", "when": "inventory_hostname in failing_hosts", "block": [
        {"name": "Stop the cluster", "virtfleet.cluster.maintenance_state": {
            "path": "{{ state_paths[virtfleet_cluster] }}", "cluster": "{{ virtfleet_cluster }}", "state": "stop_slot",
            "host": "{{ inventory_hostname }}", "run_id": RUN_ID, "token": TOKEN, "reason": "failed in phase patch"},
         "register": "stopped"},
        {"name": "Release the lock when no other host of the cluster works under it", "virtfleet.cluster.maintenance_state": {
            "path": "{{ state_paths[virtfleet_cluster] }}", "cluster": "{{ virtfleet_cluster }}", "state": "unlock",
            "run_id": RUN_ID, "token": TOKEN}, "when": "stopped.others_active | length == 0"},
        {"name": "Fail", "ansible.builtin.fail": {"msg": "simulated failure"}}]},
    # As host.yml does it: one host_done (recorded done, unmarked, slot given back), its event
    # stamped before the change, so it never reads later than the next host's start.
    {"name": "Done, back in service, reported", "virtfleet.cluster.maintenance_state": {
        "path": "{{ state_paths[virtfleet_cluster] }}", "cluster": "{{ virtfleet_cluster }}", "state": "host_done",
        "host": "{{ inventory_hostname }}", "run_id": RUN_ID, "token": TOKEN,
        "report": {"directory": "{{ __rolling_maintenance_report_dir }}", "run_id": RUN_ID, "events": [
            {"type": "host_done", "cluster": "{{ virtfleet_cluster }}", "host": "{{ inventory_hostname }}"}]}}},
]


def _run(tmp_path, work_seconds, failing_hosts=()):
    state_paths = {}
    for cluster in CLUSTERS:
        storage = tmp_path / cluster
        storage.mkdir()
        state = ms.ClusterState(store.state_dir(str(storage)), cluster)
        state.init_identity()
        state.acquire_lock(ms.default_holder(RUN_ID, {"token": TOKEN}))
        state.open_window(RUN_ID, token=TOKEN)
        state_paths[cluster] = str(storage)
    hosts = {name: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "virtfleet_cluster": cluster,
                    "work_seconds": work_seconds[cluster]}
             for cluster, members in CLUSTERS.items() for name in members}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    play_vars = {
        "state_paths": state_paths, "failing_hosts": list(failing_hosts),
        "__rolling_maintenance_clusters": {c: {"state_path": state_paths[c], "max_unavailable": 1} for c in CLUSTERS},
        "__rolling_maintenance_run_id": RUN_ID, "__rolling_maintenance_token": TOKEN,
        "__rolling_maintenance_state_identity": {},
        "__rolling_maintenance_plan": {"slot_order": {c: [[h] for h in members] for c, members in CLUSTERS.items()},
                                       "clusters": {c: {"out_of_service": []} for c in CLUSTERS}},
        "__rolling_maintenance_report_dir": str(report_dir),
        "rolling_maintenance_slot_wait_timeout": 120,
    }
    play = {"name": "maintain", "hosts": "all", "gather_facts": False, "strategy": "host_pinned", "vars": play_vars,
            "tasks": [{"name": "The role's slot wait", "ansible.builtin.include_role": {
                "name": "virtfleet.cluster.rolling_maintenance", "tasks_from": "slot"}}] + HOST_WORK}
    playbook = tmp_path / "maintain.yml"
    playbook.write_text(yaml.safe_dump([play], sort_keys=False))
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
               ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_STRATEGY", None)
    result = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"), str(playbook)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    events = [json.loads(line) for line in open(report_dir / "events.jsonl")] if (report_dir / "events.jsonl").exists() else []
    by_host = {}
    for event in events:
        by_host.setdefault(event["host"], {})[event["type"]] = event
    return result.returncode, result.stdout + result.stderr, by_host


def test_each_cluster_goes_on_its_own_clock(tmp_path):
    rc, output, hosts = _run(tmp_path, {"slow": 12, "fast": 1})
    assert rc == 0, output[-4000:]
    assert all("host_done" in hosts[h] for members in CLUSTERS.values() for h in members), hosts
    for first, second in CLUSTERS.values():  # one after the other, in the planned order
        assert hosts[first]["host_done"]["ts"] <= hosts[second]["host_start"]["ts"]
    # Lockstep waves would start f2 only after s1 is done.
    assert hosts["f2"]["host_done"]["ts"] < hosts["s1"]["host_done"]["ts"]


def test_a_failed_host_stops_only_its_cluster(tmp_path):
    rc, output, hosts = _run(tmp_path, {"slow": 1, "fast": 1}, failing_hosts=["s1"])
    assert rc != 0, output[-4000:]
    assert "host_done" not in hosts["s1"] and "host_start" not in hosts["s2"]
    skipped = hosts["s2"]["host_skipped"]["reason"]
    assert "cluster stopped" in skipped and "s1" in skipped and "patch" in skipped
    assert "host_done" in hosts["f1"] and "host_done" in hosts["f2"]


# --------------------------------------------------------------------------- forks
NODE = """<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads><active>2</active><mhz>2000</mhz><model>i686</model></cpu>
  <memory>8388608</memory>
</node>
"""


def test_preflight_refuses_fewer_forks_than_hosts_to_maintain_and_releases_its_locks(tmp_path):
    """playbooks/rolling_maintenance.yml on four fake hosts (libvirt's test driver, the
    controller itself): with --forks 2 the run is refused with the figure, before anything is
    marked, and the locks it took are released."""
    hosts = {}
    for cluster, members in {"ca": ["a1", "a2"], "cb": ["b1", "b2"]}.items():
        (tmp_path / cluster).mkdir()
        for name in members:
            (tmp_path / ("%s.xml" % name)).write_text(NODE)
            hosts[name] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                           "virtfleet_cluster": cluster, "virtfleet_libvirt_uri": "test://%s/%s.xml" % (tmp_path, name),
                           "virtfleet_storage": {"path": str(tmp_path / cluster)}}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    extra = {"rolling_maintenance_force": True, "rolling_maintenance_verify_migration_paths": False,
             "rolling_maintenance_verify_homogeneity": False, "rolling_maintenance_canary": False,
             "rolling_maintenance_pending_updates_command": "echo pkg", "rolling_maintenance_reboot_required_command": "echo yes",
             "rolling_maintenance_reports_dir": str(tmp_path / "reports")}
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
               ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    result = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"),
                             os.path.join(REPO, "playbooks", "rolling_maintenance.yml"), "--forks", "2", "-e", json.dumps(extra)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    assert "This run maintains 4 hosts and Ansible runs with 2 forks" in output and "--forks 4" in output, output[-4000:]
    assert "maintain, each cluster on its own clock" not in output       # the maintain play never ran
    for cluster in ("ca", "cb"):
        state = ms.ClusterState(store.state_dir(str(tmp_path / cluster)), cluster)
        assert state.lock() is None and state.marks() == {}
