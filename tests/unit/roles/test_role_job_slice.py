"""An AWX job slice of the rolling maintenance is refused, without a lab.

AWX's job slicing splits a template's hosts over several jobs and gives each job "a pared-down
version of the original inventory that only contains the hosts in that particular slice": every
slice_count-th host by name, groups holding only those. A slice would not see the rest of its
clusters (no destinations, no whole-cluster capacity proof), so the run refuses it before
anything happens, naming the missing hosts and the way to split the work instead.

The slice is built here the way AWX hands it to ansible-runner: an executable inventory script
printing the lab topology's `ansible-inventory --list` pared down to the slice's hosts, host
variables (virtfleet_cluster_hosts among them) kept as synced. The job runs the collection's
playbook under ansible-runner. A control runs the same set-up over the whole inventory with a
limit to one cluster (what the docs advise instead): it passes the check.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from .test_role_guards import REPO, VENV_BIN, _env

TOPOLOGY = os.path.join(REPO, "inventories", "lab", "topology.yml")
REFUSAL = "of its hosts;"
CHECK_TASK = "Refuse a cluster the inventory holds only part of"


def _inventory_list():
    result = subprocess.run([os.path.join(VENV_BIN, "ansible-inventory"), "-i", TOPOLOGY, "--list"],
                            cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def _slice(inventory, number, count):
    """The inventory of slice ``number`` of ``count``, as AWX composes it."""
    hostvars = inventory["_meta"]["hostvars"]
    kept = set(sorted(hostvars)[number - 1::count])
    sliced = {"_meta": {"hostvars": {name: hostvars[name] for name in kept}}}
    for group, data in inventory.items():
        if group == "_meta":
            continue
        sliced[group] = {key: value for key, value in data.items() if key != "hosts"}
        sliced[group]["hosts"] = [name for name in data.get("hosts", []) if name in kept]
    return sliced, sorted(kept)


def _inventory_script(path, data):
    path.write_text("#!%s\nimport json, sys\nprint(json.dumps(%r) if '--list' in sys.argv else '{}')\n"
                    % (sys.executable, data))
    path.chmod(0o755)
    return path


def test_an_awx_job_slice_is_refused_naming_the_missing_hosts_and_nothing_is_written(tmp_path):
    inventory = _inventory_list()
    members = {name: vars_["virtfleet_cluster_hosts"] for name, vars_ in inventory["_meta"]["hostvars"].items()}
    sliced, kept = _slice(inventory, 1, 2)
    assert 0 < len(kept) < len(members)

    private = tmp_path / "private"
    (private / "env").mkdir(parents=True)
    (private / "inventory").mkdir()
    _inventory_script(private / "inventory" / "hosts", sliced)
    reports = tmp_path / "reports"
    (private / "env" / "extravars").write_text(json.dumps({"rolling_maintenance_reports_dir": str(reports),
                                                           "rolling_maintenance_dry_run": True}))
    env = _env()
    env.pop("ANSIBLE_CONFIG")  # as in AWX: the project's ansible.cfg, found in the working directory
    result = subprocess.run(
        [os.path.join(VENV_BIN, "ansible-runner"), "run", str(private), "--ident", "slice-1",
         "--project-dir", REPO, "-p", "playbooks/rolling_maintenance.yml"],
        env=env, capture_output=True, text=True, timeout=300, check=False)
    output = result.stdout + result.stderr
    text = " ".join(output.split())

    assert result.returncode != 0, output[-4000:]
    assert (private / "artifacts" / "slice-1" / "status").read_text().strip() == "failed"
    # Each cluster of the slice is named with the hosts it lacks and the fix.
    for cluster in sorted({inventory["_meta"]["hostvars"][name]["virtfleet_cluster"] for name in kept}):
        whole = next(members[name] for name in kept if inventory["_meta"]["hostvars"][name]["virtfleet_cluster"] == cluster)
        absent = [name for name in whole if name not in kept]
        assert "Cluster %s: the inventory holds only %s %s" % (
            cluster, ", ".join(name for name in whole if name in kept), REFUSAL) in text, output[-4000:]
        assert "%s %s missing" % (", ".join(absent), "is" if len(absent) == 1 else "are") in text
    assert "job_slice_count to 1" in text and "Nothing was changed." in text
    # Refused before the run recorded anything or took a lock.
    assert not reports.exists()
    assert "Preflight (nothing changes before it passes)" not in output


def test_the_whole_inventory_with_a_limit_passes_the_check(tmp_path):
    """The control: a limit to one cluster over the whole inventory is what the docs advise."""
    reports = tmp_path / "reports"
    playbook = tmp_path / "setup.yml"
    playbook.write_text(json.dumps([{
        "name": "set-up only", "hosts": "all", "gather_facts": False,
        "tasks": [{"ansible.builtin.include_role": {"name": "virtfleet.cluster.rolling_maintenance",
                                                    "tasks_from": "setup"}}]}]))
    result = subprocess.run(
        [os.path.join(VENV_BIN, "ansible-playbook"), "-i", TOPOLOGY, str(playbook), "--limit", "cluster_lab_a",
         "-e", json.dumps({"rolling_maintenance_reports_dir": str(reports), "rolling_maintenance_dry_run": True})],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert CHECK_TASK in output and REFUSAL not in output
    assert reports.exists()  # the set-up went on to record the start of the run
