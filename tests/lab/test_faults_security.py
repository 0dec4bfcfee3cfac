"""Secrets never leak: libvirt URIs carrying credentials (`user:password@host`) and
CloudStack-style secrets (`apikey=`, `secretkey=` query parameters) must not appear in module
output, in `-vvv` logs or in the rolling maintenance report - neither when things work nor in
error messages.

The lab's TCP daemons ignore the credentials and the query parameters (auth "none"), so the
same hosts are reached through URIs that carry secrets: a copy of the lab inventory whose
libvirt URIs carry them, plus one host that does not answer (its error messages are checked
too).

That the lab listens on loopback only is tested by tests/lab/test_lab.py
(test_lab_listens_on_loopback_only) for the daemons' listeners; the migration listeners
(ports 49152+, open only while a migration runs) are checked here.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest
import yaml

from ansible_collections.virtfleet.cluster.plugins.module_utils import migration

pytestmark = pytest.mark.lab

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASSWORD = "s3cret-Pw0rd"
API_KEY = "AKEY-7f9c2b1e"
SECRET_KEY = "SKEY-d41d8cd9"
SECRETS = (PASSWORD, API_KEY, SECRET_KEY)
SILENT_ADDRESS = "127.0.9.254"  # nothing listens there


def secret_uri(address):
    return "qemu+tcp://admin:%s@%s/session?apikey=%s&secretkey=%s" % (PASSWORD, address, API_KEY, SECRET_KEY)


def leaks(text):
    return [secret for secret in SECRETS if secret in text]


@pytest.fixture
def secret_inventory(lab, tmp_path):
    """The lab's inventory with secret-carrying URIs (same hosts, same group_vars)."""
    inventory = tmp_path / "inventory"
    shutil.copytree(os.path.join(lab.inventory, "group_vars"), inventory / "group_vars")
    document = yaml.safe_load(open(lab.topology).read())
    for region in document["regions"]:
        for zone in region["zones"]:
            for pod in zone["pods"]:
                for cluster in pod["clusters"]:
                    for host in cluster["hosts"]:
                        host["libvirt_uri"] = secret_uri(host["address"])
    (inventory / "topology.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    return str(inventory)


PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars:
    first: "{{ groups['%(cluster)s'] | sort | first }}"
    second: "{{ groups['%(cluster)s'] | sort | list | last }}"
  tasks:
    - name: Facts through a URI with secrets
      virtfleet.cluster.hypervisor_facts:
        uri: "{{ hostvars[first].virtfleet_libvirt_uri }}"
      register: facts

    - name: Facts of a host that does not answer
      virtfleet.cluster.hypervisor_facts:
        uri: "%(silent)s"
      register: silent_facts
      ignore_errors: true

    - name: Homogeneity of the cluster
      virtfleet.cluster.cluster_homogeneity:
        hosts:
          - {name: "{{ first }}", uri: "{{ hostvars[first].virtfleet_libvirt_uri }}"}
          - {name: "{{ second }}", uri: "{{ hostvars[second].virtfleet_libvirt_uri }}"}
        fail_on_mismatch: false

    - name: Drain plan (check mode) through URIs with secrets
      virtfleet.cluster.host_drain:
        host: "{{ first }}"
        hosts:
          - {name: "{{ first }}", uri: "{{ hostvars[first].virtfleet_libvirt_uri }}"}
          - {name: "{{ second }}", uri: "{{ hostvars[second].virtfleet_libvirt_uri }}"}
        memory_reserve_mib: 256
      check_mode: true

    - name: Drain into a host that does not answer (refused)
      virtfleet.cluster.host_drain:
        host: "{{ first }}"
        hosts:
          - {name: "{{ first }}", uri: "{{ hostvars[first].virtfleet_libvirt_uri }}"}
          - {name: silent, uri: "%(silent)s"}
        memory_reserve_mib: 256
      ignore_errors: true

    - name: Migrate a guest there and back through URIs with secrets
      virtfleet.cluster.guest_migrate:
        guest: "%(guest)s"
        source_uri: "{{ hostvars[item.0].virtfleet_libvirt_uri }}"
        dest_uri: "{{ hostvars[item.1].virtfleet_libvirt_uri }}"
      loop: [["{{ first }}", "{{ second }}"], ["{{ second }}", "{{ first }}"]]

    - name: Migrate to a host that does not answer
      virtfleet.cluster.guest_migrate:
        guest: "%(guest)s"
        source_uri: "{{ hostvars[first].virtfleet_libvirt_uri }}"
        dest_uri: "%(silent)s"
      ignore_errors: true
"""


def run(command, **kwargs):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False, **kwargs)


def test_secrets_in_libvirt_uris_never_reach_module_output_or_vvv_logs(lab, secret_inventory, tmp_path):
    cluster = sorted(lab.clusters)[0]
    first = sorted(lab.clusters[cluster])[0]
    guest = sorted(g for g, h in lab.placement().items() if h == first)[0]
    playbook = tmp_path / "secrets.yml"
    playbook.write_text(PLAYBOOK % {"cluster": "cluster_" + cluster.replace("-", "_"), "guest": guest,
                                    "silent": secret_uri(SILENT_ADDRESS)})
    proc = run(["ansible-playbook", "-vvv", "-i", secret_inventory, str(playbook)])
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-5000:]
    # The tasks really ran (and failed where they should) - the check below is not vacuous.
    assert re.search(r"localhost\s+: ok=\d+ .*failed=0 .*ignored=3", text), text[-2000:]
    assert "cannot connect to" in text and "127.0.9.254" in text  # the silent host's error is shown...
    assert lab.where(guest) == first
    found = leaks(text)
    where = [line for line in text.splitlines() if leaks(line)][:5]
    assert found == [], "secrets %s in the -vvv output, e.g.:\n%s" % (found, "\n".join(where))


def test_secrets_in_libvirt_uris_never_reach_the_rolling_maintenance_report(lab, secret_inventory, tmp_path):
    """A dry run reads every host, plans the drains (host_drain in check mode) and writes the
    report; the report and the -vvv log must not hold a secret."""
    reports = tmp_path / "reports"
    cluster = sorted(lab.clusters)[0]
    proc = run(["ansible-playbook", "-vvv", "-i", secret_inventory,
                os.path.join(REPO, "playbooks", "rolling_maintenance.yml"),
                "-e", "@" + os.path.join(REPO, "roles", "rolling_maintenance", "examples", "lab_hooks.yml"),
                "-e", json.dumps({"rolling_maintenance_dry_run": True,
                                  # One cluster keeps it short; every code path runs for it.
                                  "rolling_maintenance_clusters": [cluster],
                                  "rolling_maintenance_reports_dir": str(reports)})])
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-5000:]
    files = [os.path.join(d, f) for d, _s, names in os.walk(reports) for f in names]
    assert any(f.endswith("report.json") for f in files), files
    for path in files:
        with open(path, errors="replace") as handle:
            content = handle.read()
        assert leaks(content) == [], "secrets in %s" % path
    hosts_in_report = open([f for f in files if f.endswith("report.json")][0]).read()
    assert all(name in hosts_in_report for name in lab.clusters[cluster])  # the report is about these hosts
    found = leaks(text)
    where = [line for line in text.splitlines() if leaks(line)][:5]
    assert found == [], "secrets %s in the -vvv output, e.g.:\n%s" % (found, "\n".join(where))


def test_migration_streams_listen_on_loopback_only(lab):
    """While a migration runs, the destination QEMU listens for the memory stream: on the lab
    host's loopback address only (the lab's qemu.conf migration_address)."""
    cluster = sorted(lab.clusters)[-1]
    source, destination = sorted(lab.clusters[cluster])[:2]
    guest = sorted(g for g, h in lab.placement().items() if h == source)[0]
    seen = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=False).stdout
            seen.extend(line.split()[3] for line in out.splitlines()
                        if re.search(r":(4915[2-9]|491[6-9]\d|49[2-9]\d\d)\s", line))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for src, dst in ((source, destination), (destination, source)):
            migration.migrate_guest(guest, lab.hosts[src].libvirt_uri, lab.hosts[dst].libvirt_uri,
                                    migration.MigrationOptions(bandwidth_mib=32), source_name=src, dest_name=dst)
    finally:
        done.set()
        watcher.join(5)
    mine = {lab.hosts[source].address, lab.hosts[destination].address}
    ours = [address for address in seen if address.rsplit(":", 1)[0] in mine]
    assert ours, "no migration listener seen on %s: the check saw nothing" % sorted(mine)
    assert all(address.startswith("127.") for address in seen), sorted(set(seen))
    assert lab.where(guest) == source
