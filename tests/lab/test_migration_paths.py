"""Production transport on the lab: qemu+ssh from the controller and host to host (issue 16).

inventories/lab-ssh is the default lab reached through SSH URIs only
(``qemu+ssh://<host user>@<address>/session``): the controller logs in with the lab key, and in
a peer-to-peer migration the source host's daemon logs in to the destination with its own
user's key, checked against its own known_hosts. The session lab serves both transports, so
these tests drive it through that inventory:

* a rolling maintenance over SSH URIs (one host of a cluster, its guests moved back after)
  keeps every guest's heartbeat, and the destinations' sshd saw the source hosts' own keys
  (the host-to-host path was SSH);
* a key missing on one peer and a known-hosts entry missing on another: the preflight refuses
  before anything moves, naming each source, destination, URI and fix; evacuate_host.yml
  refuses too, before it marks the host.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import subprocess
import time
import types

import pytest
import yaml
from test_rolling_maintenance import VENV_BIN, _env, run_maintenance

from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_state as ms

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("virtfleet_lab", os.path.join(REPO, "roles", "lab", "files", "virtfleet_lab.py"))
labprog = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(labprog)
SSH_INVENTORY = os.path.join(REPO, "inventories", "lab-ssh")
# The lab runs a dozen TCG guests on two cores: a migration's pause is a fraction of a second,
# gaps up to ~1 s are scheduling noise (as in test_migrate_drain.py).
MAX_HEARTBEAT_GAP_S = 3.0

pytestmark = [pytest.mark.lab]


# -- the SSH variant of the default lab (no lab needed) ------------------------------------------

def test_the_ssh_inventory_is_the_default_lab_with_ssh_uris():
    default = labprog.load_lab(os.path.join(REPO, "inventories", "lab", "topology.yml"))
    over_ssh = labprog.load_lab(os.path.join(SSH_INVENTORY, "topology.yml"))
    assert over_ssh["state_dir"] == default["state_dir"] and over_ssh["clusters"] == default["clusters"]
    for name, host in default["hosts"].items():
        assert over_ssh["hosts"][name] == dict(host, libvirt_uri="qemu+ssh://%s@%s/session" % (host["user"], host["address"]))
    # Ansible logs in the same way (one group_vars file, linked).
    assert os.path.samefile(os.path.join(SSH_INVENTORY, "group_vars", "region_lab.yml"),
                            os.path.join(REPO, "inventories", "lab", "group_vars", "region_lab.yml"))


def test_a_uri_that_does_not_match_the_transport_is_refused(tmp_path):
    with open(os.path.join(SSH_INVENTORY, "topology.yml")) as handle:
        document = yaml.safe_load(handle)
    document["vars"]["lab_libvirt_transport"] = "tcp"
    path = tmp_path / "topology.yml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(labprog.LabError, match=re.escape("must declare `libvirt_uri: qemu+tcp://127.0.1.11/session`")):
        labprog.load_lab(str(path))
    document["vars"]["lab_libvirt_transport"] = "rdma"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(labprog.LabError, match="use tcp .default. or ssh"):
        labprog.load_lab(str(path))


# -- on the lab ----------------------------------------------------------------------------------

class SshLab:
    """The session lab as inventories/lab-ssh reaches it."""

    def __init__(self, lab):
        self.lab = lab
        self.inventory = SSH_INVENTORY
        self.recorded = labprog.saved_lab(lab.state_dir)
        self.hosts = self.recorded["hosts"]

    def user_key_fingerprint(self, host: str) -> str:
        public = os.path.join(self.hosts[host]["dir"], "home", ".ssh", "id_ed25519.pub")
        return subprocess.run(["ssh-keygen", "-lf", public], capture_output=True, text=True,
                              check=True).stdout.split()[1]

    def sshd_log(self, host: str) -> str:
        with open(os.path.join(self.hosts[host]["dir"], "log", "sshd.log")) as handle:
            return handle.read()

    @contextlib.contextmanager
    def without_line(self, path: str, pattern: str):
        """The file without its lines containing pattern, for the test's duration."""
        with open(path) as handle:
            original = handle.read()
        kept = [line for line in original.splitlines(True) if pattern not in line]
        assert len(kept) < len(original.splitlines()), "%s holds no line with %s" % (path, pattern)
        with open(path, "w") as handle:
            handle.write("".join(kept))
        try:
            yield
        finally:
            with open(path, "w") as handle:
                handle.write(original)


@pytest.fixture
def ssh_lab(lab):
    over_ssh = labprog.load_lab(os.path.join(SSH_INVENTORY, "topology.yml"))
    if over_ssh["state_dir"] != lab.state_dir:
        pytest.skip("inventories/lab-ssh reaches the default lab, not %s" % lab.topology)
    return SshLab(lab)


def _run(ssh_lab, tmp_path, cluster, **extra_vars):
    """playbooks/rolling_maintenance.yml on one cluster, through the SSH inventory."""
    extra = dict(extra_vars, rolling_maintenance_target=",".join(ssh_lab.lab.clusters[cluster]))
    return run_maintenance(types.SimpleNamespace(inventory=ssh_lab.inventory), tmp_path, **extra)


def test_rolling_maintenance_over_ssh_uris_keeps_every_heartbeat(ssh_lab, tmp_path):
    """One host of a cluster maintained over SSH URIs only, its guests moved back home after:
    peer-to-peer migrations from it (drain) and to it (canary, move-back), each a login of the
    source host's own key on the destination. Lean on purpose: one wave (CI budget)."""
    lab = ssh_lab.lab
    cluster = sorted(lab.clusters)[0]
    hosts = lab.clusters[cluster]
    maintained = hosts[0]
    home = {g: h for g, h in lab.placement().items() if lab.hosts[h].cluster == cluster}
    boots = {h: lab.boot_id(h) for h in hosts}
    logs_before = {h: len(ssh_lab.sshd_log(h)) for h in hosts}
    started = time.time()
    rc, output, report = _run(ssh_lab, tmp_path, cluster, rolling_maintenance_hosts=[maintained],
                              rolling_maintenance_force=True, rolling_maintenance_new_window=True,
                              rolling_maintenance_move_back=True)
    ended = time.time()
    assert rc == 0, output[-6000:]
    assert re.search(r"TASK \[[^]]*Preflight - migration paths - each host opens every peer's URI", output)
    assert report["hosts"][maintained]["status"] == "done"
    assert {h: lab.boot_id(h) != boots[h] for h in hosts} == {h: h == maintained for h in hosts}
    moves = [m for m in report["migrations"] if m["purpose"] in ("drain", "move_back")]
    assert all(m["status"] == "ok" for m in moves), moves
    assert sorted(m["guest"] for m in moves if m["purpose"] == "drain") == sorted(g for g, h in home.items()
                                                                                  if h == maintained)
    assert {m["source"] for m in moves if m["purpose"] == "move_back"} - {maintained}  # peers -> it too
    placement = lab.placement()
    assert {g: placement[g] for g in home} == home                   # every guest back home, running
    for guest in home:
        beats = lab.heartbeat_report(guest, started, ended)
        assert beats["restarts"] == 0 and beats["lost"] == 0, (guest, beats)
        assert beats["count"] > 0 and beats["max_gap_s"] < MAX_HEARTBEAT_GAP_S, (guest, beats)
    # Host to host over SSH: each destination's sshd let in the source host's own key.
    for move in moves:
        new_lines = ssh_lab.sshd_log(move["destination"])[logs_before[move["destination"]]:]
        assert "Accepted publickey for %s" % ssh_lab.hosts[move["destination"]]["user"] in new_lines
        assert ssh_lab.user_key_fingerprint(move["source"]) in new_lines, move
    print("rolling maintenance of %s over qemu+ssh: %.0f s, %d migrations" % (maintained, ended - started, len(moves)))


def test_a_key_or_known_hosts_entry_missing_on_a_peer_refuses_before_anything_moves(ssh_lab, tmp_path):
    lab = ssh_lab.lab
    cluster = sorted(lab.clusters)[0]
    first, second, third = lab.clusters[cluster][:3]
    hosts = ssh_lab.hosts
    authorized_keys = os.path.join(hosts[third]["dir"], "ssh", "authorized_keys")
    known_hosts = os.path.join(hosts[second]["dir"], "home", ".ssh", "known_hosts")
    with open(os.path.join(hosts[first]["dir"], "home", ".ssh", "id_ed25519.pub")) as handle:
        first_key = handle.read().split()[1]
    placement, boots = lab.placement(), {h: lab.boot_id(h) for h in lab.hosts}
    state = ms.ClusterState(lab.state_dir_of(cluster), cluster)
    began = time.time()
    # first's key is not authorized on third; second does not know third's host key.
    with ssh_lab.without_line(authorized_keys, first_key), ssh_lab.without_line(known_hosts, hosts[third]["address"] + " "):
        rc, output, report = _run(ssh_lab, tmp_path, cluster, rolling_maintenance_force=True)
        seconds = time.time() - began
        evacuation = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", SSH_INVENTORY,
                                     os.path.join(REPO, "playbooks", "evacuate_host.yml"), "-e", "evacuate_host=%s" % first],
                                    cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    # evacuate_host.yml refuses too, before it marks the host.
    assert evacuation.returncode != 0, evacuation.stdout[-4000:]
    evacuation_output = " ".join(evacuation.stdout.split())
    assert "Migration paths from %s that do not work" % first in evacuation_output
    assert "%s -> %s (" % (first, third) in evacuation_output and "Nothing was marked or moved." in evacuation_output
    assert rc != 0, output[-6000:]
    flat = " ".join(output.split())
    third_uri = "qemu+ssh://%s@%s/session" % (hosts[third]["user"], hosts[third]["address"])
    assert "A host-to-host migration path does not work; nothing was moved" in flat
    assert ("%s -> %s (%s, opened as %s on %s): Cannot recv data: %s@%s: Permission denied (publickey)."
            % (first, third, third_uri, hosts[first]["user"], first, hosts[third]["user"], hosts[third]["address"])) in flat
    assert "authorized_keys of %s on %s" % (hosts[third]["user"], third) in flat
    assert ("%s -> %s (%s, opened as %s on %s): Cannot recv data: Host key verification failed."
            % (second, third, third_uri, hosts[second]["user"], second)) in flat
    assert "%s on %s has no known_hosts entry for %s" % (hosts[second]["user"], second, hosts[third]["address"]) in flat
    assert "%s -> %s" % (first, second) not in flat and "%s -> %s" % (third, first) not in flat  # the working paths
    # Nothing moved, nobody rebooted, nothing left locked or marked.
    assert lab.placement() == placement and {h: lab.boot_id(h) for h in lab.hosts} == boots
    assert report["totals"]["migrations"] == 0 and report["run"]["status"] == "failed"
    assert not state.live_tokens() and state.marks() == {}
    print("refusal of a broken migration path: %.0f s (the whole playbook run)" % seconds)
    print([line for line in output.splitlines() if line.startswith("fatal:")][-1])
