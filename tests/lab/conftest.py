"""The `lab` session fixture: the embedded libvirt lab, up for the whole test session.

The default lab is inventories/lab/topology.yml; VIRTFLEET_LAB_TOPOLOGY=<file> runs the lab
tests against another lab (e.g. inventories/lab-dev/topology.yml while someone else uses the
default one). The lab is brought up idempotently (a lab already up is reused; under CI=true it
is brought down first, so CI always starts from a new lab) and brought down at the end of the
session unless VIRTFLEET_LAB_KEEP=1.

Before each test that uses `lab`, guests that died (a test rebooted their host) are started
again, so every lab test begins with all guests running.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import state_store as store

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB_PROGRAM = os.path.join(REPO, "roles", "lab", "files", "virtfleet_lab.py")
DEFAULT_TOPOLOGY = os.path.join(REPO, "inventories", "lab", "topology.yml")
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
               "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]


def _load_lab_program():
    """The lab program as a module: the fixture reads the lab with the same code that built it."""
    spec = importlib.util.spec_from_file_location("virtfleet_lab", LAB_PROGRAM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


labprog = _load_lab_program()


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str
    cluster: str
    libvirt_uri: str  # how the controller reaches the host's libvirtd
    user: str  # the host's SSH login (its daemon runs as this user)


class Lab:
    """What lab tests can rely on (docs/design.md, "What lab tests can rely on")."""

    def __init__(self, topology: str):
        self.topology = topology
        self.inventory = os.path.dirname(topology)
        description = labprog.load_lab(topology)
        self.name = description["name"]
        self.state_dir = description["state_dir"]
        self.ssh_key = os.path.join(self.state_dir, "ssh", "id_ed25519")
        self.host_tool = os.path.join(self.state_dir, "bin", "lab-host")
        self.hosts = {name: LabHost(name, h["address"], h["cluster"], h["libvirt_uri"], h["user"])
                      for name, h in description["hosts"].items()}
        self.clusters = {name: list(c["hosts"]) for name, c in description["clusters"].items()}
        # guest -> the host it started on (its home); extra guests (add_guest) are added here
        self.guests = {name: g["home"] for name, g in description["guests"].items()}
        self.last_up = None

    # -- running the lab program -------------------------------------------------------------
    def run(self, *args, timeout=600) -> dict:
        """Run a lab program subcommand and return its JSON result (fails the test on error)."""
        result = subprocess.run([sys.executable, LAB_PROGRAM, *args, "--json", "--topology", self.topology],
                                capture_output=True, text=True, timeout=timeout, check=False)
        try:
            document = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            document = {"failed": True, "msg": "no JSON from the lab program"}
        if result.returncode != 0:
            pytest.fail("lab %s failed: %s\n%s" % (args[0], document.get("msg"), result.stderr[-3000:]))
        return document

    def up(self) -> dict:
        """Bring the lab up (idempotent: starts only what is not running, e.g. guests that died)."""
        self.last_up = self.run("up")
        return self.last_up

    @property
    def accelerator(self) -> str:
        """"tcg" or "kvm": how the lab's guests run (KVM only where a Linux guest boots under it)."""
        return (self.last_up or self.status())["accelerator"]

    def down(self) -> dict:
        return self.run("down")

    def status(self) -> dict:
        return self.run("status")

    def _recorded(self) -> dict:
        recorded = labprog.saved_lab(self.state_dir)
        assert recorded is not None, "lab %s is not up" % self.name
        return recorded

    # -- where things are ----------------------------------------------------------------------
    def storage_of(self, cluster: str) -> str:
        """The cluster's shared storage path, as the lab that is up recorded it."""
        return self._recorded()["clusters"][cluster]["storage"]

    def state_dir_of(self, cluster: str) -> str:
        """The cluster's shared maintenance-state directory (on its shared storage)."""
        return store.state_dir(self.storage_of(cluster))

    def where(self, guest: str) -> str | None:
        """The host now running the guest, or None when it runs nowhere."""
        found = labprog.locate_guests(self._recorded()).get(guest)
        return found["host"] if found and found["running"] else None

    def placement(self) -> dict:
        """guest -> host running it (None when it runs nowhere), for every guest, in one sweep."""
        found = labprog.locate_guests(self._recorded())
        return {g: (found[g]["host"] if g in found and found[g]["running"] else None) for g in self.guests}

    def heartbeats(self, guest: str, since: float = 0.0) -> list:
        """[(host_time, seq)] of the guest's heartbeats as the lab's monitor timestamped them."""
        return [(t, seq) for t, seq, _boot in labprog.read_heartbeats(self._recorded(), guest, since)]

    def heartbeat_report(self, guest: str, start: float, end: float) -> dict:
        """Largest gap in host time, heartbeats lost (missing sequence numbers) and count over [start, end]."""
        beats = [b for b in self.heartbeats(guest) if start <= b[0] <= end]
        gaps = [b[0] - a[0] for a, b in zip(beats, beats[1:])]
        lost = sum(max(0, b[1] - a[1] - 1) for a, b in zip(beats, beats[1:]))
        restarts = sum(1 for a, b in zip(beats, beats[1:]) if b[1] <= a[1])
        return {"count": len(beats), "max_gap_s": max(gaps) if gaps else None, "lost": lost, "restarts": restarts}

    # -- host operations -----------------------------------------------------------------------
    def reboot(self, host: str) -> str:
        """Reboot a lab host as a real reboot would (its guests die); returns the new boot id once
        its daemons answer again."""
        return self.run("reboot", host)["boot_id"]

    def boot_id(self, host: str) -> str:
        return labprog._read_text(os.path.join(self._recorded()["hosts"][host]["dir"], "boot_id"))

    def ssh(self, host: str, command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a shell command on a lab host over its sshd, as its user (qemu:///session is its daemon)."""
        info = self.hosts[host]
        result = subprocess.run(["ssh", "-i", self.ssh_key, *SSH_OPTIONS, "%s@%s" % (info.user, info.address),
                                 command], capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            pytest.fail("ssh %s %r failed (%d): %s" % (host, command, result.returncode, result.stderr.strip()))
        return result

    # -- extra guests --------------------------------------------------------------------------
    def add_guest(self, name: str, host: str, workload: str = "heartbeat", memory_mib: int = 128,
                  dirty_mib: int = 48) -> dict:
        """Start one more guest on a host (workload "dirty" rewrites dirty_mib MiB in a loop)."""
        result = self.run("guest-add", name, "--host", host, "--workload", workload,
                          "--memory-mib", str(memory_mib), "--dirty-mib", str(dirty_mib))
        self.guests[name] = host
        return result

    def remove_guest(self, name: str) -> None:
        self.run("guest-remove", name)
        self.guests.pop(name, None)


def _lab_topology() -> str:
    return os.path.abspath(os.environ.get("VIRTFLEET_LAB_TOPOLOGY") or DEFAULT_TOPOLOGY)


@pytest.fixture(scope="session")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (it creates users and runs sshd): run the lab tests as root")
    the_lab = Lab(_lab_topology())
    began = time.monotonic()
    if os.environ.get("CI") == "true":
        # CI starts from nothing: a lab whose processes were ended from outside (the session
        # before stopped with it up) leaves its state behind, which `up` would reuse.
        the_lab.down()
    result = the_lab.up()
    print("\nlab %s up in %.1f s (accelerator %s; started hosts %s)" % (
        the_lab.name, time.monotonic() - began, result.get("accelerator"), result.get("started_hosts")))
    yield the_lab
    if os.environ.get("VIRTFLEET_LAB_KEEP") == "1":
        print("\nVIRTFLEET_LAB_KEEP=1: lab %s left up (state %s)" % (the_lab.name, the_lab.state_dir))
        return
    the_lab.down()


@pytest.fixture(autouse=True)
def _all_lab_guests_running(request):
    """Every test using `lab` starts with every guest running (one a reboot killed is restarted)."""
    if "lab" in request.fixturenames:
        the_lab = request.getfixturevalue("lab")
        if os.path.exists(os.path.join(the_lab.state_dir, "lab.json")) and None in the_lab.placement().values():
            the_lab.up()
    yield


@pytest.fixture
def shared_state_restored(lab, tmp_path_factory):
    """Every cluster's shared maintenance state saved before the test and put back after it, so
    what a test's runs leave (an open window, hosts done in it, marks, slots) cannot make a later
    test's hosts "already done". Copied with owners and modes: the hosts' own users write it."""
    backup = tmp_path_factory.mktemp("maintenance-state")
    saved = {}
    for index, cluster in enumerate(sorted(lab.clusters)):
        path = lab.state_dir_of(cluster)
        saved[path] = None
        if os.path.isdir(path):
            saved[path] = str(backup / str(index))
            subprocess.run(["cp", "-a", path, saved[path]], check=True)
    yield lab
    for path, copy in saved.items():
        shutil.rmtree(path, ignore_errors=True)
        if copy:
            subprocess.run(["cp", "-a", copy, path], check=True)
