"""The lab itself: real libvirt hosts over SSH and TCP, live migration with a continuous
heartbeat, reboots and simulated patching, the dirtying workload, and a clean lab_down.

The last test takes the lab down and up again through the playbooks, so it stays last in this
file (the lab is up again afterwards for the test files that follow).
"""
import importlib.util
import json
import os
import re
import subprocess
import sys
import time

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("virtfleet_lab", os.path.join(REPO, "roles", "lab", "files",
                                                                             "virtfleet_lab.py"))
labprog = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(labprog)
# A dozen TCG guests share two cores with everything else: heartbeats come every ~0.1-0.2 s,
# and scheduling alone makes gaps of up to about a second.
MAX_MIGRATION_GAP_S = 3.0


def ansible_env():
    bin_dir = os.path.dirname(sys.executable)
    return dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))


def run_ansible(*args, timeout=600):
    return subprocess.run(list(args), cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=timeout, check=False)


def virsh(uri, *args, check=True):
    result = subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, LIBVIRT_AUTOSTART="0"), check=False)
    if check:
        assert result.returncode == 0, "virsh -c %s %s: %s" % (uri, " ".join(args), result.stderr)
    return result


# -- the lab program's reading of topologies (no lab needed) ------------------------------------

def test_default_lab_description():
    lab = labprog.load_lab(os.path.join(REPO, "inventories", "lab", "topology.yml"))
    assert lab["name"] == "lab" and lab["state_dir"] == "/var/lib/virtfleet-lab/lab"
    assert {c: h["hosts"] for c, h in lab["clusters"].items()} == {
        "lab-a": ["hv-a1", "hv-a2", "hv-a3"], "lab-b": ["hv-b1", "hv-b2", "hv-b3"]}
    assert lab["hosts"]["hv-b2"]["address"] == "127.0.1.22"
    assert lab["hosts"]["hv-b2"]["libvirt_uri"] == "qemu+tcp://127.0.1.22/session"
    assert lab["hosts"]["hv-b2"]["user"] == "vf-lab-hv-b2"
    assert len({h["host_uuid"] for h in lab["hosts"].values()}) == 6
    assert sorted(lab["guests"]) == sorted("%s-g%d" % (h[3:], n) for h in lab["hosts"] for n in (1, 2))
    assert lab["guests"]["a3-g2"]["home"] == "hv-a3"
    assert lab["guests"]["a3-g2"]["serial_log"] == "/var/lib/virtfleet-lab/lab/storage/lab-a/a3-g2.serial.log"
    assert all(g["memory_mib"] == 128 and g["workload"] == "heartbeat" for g in lab["guests"].values())


def test_other_labs_do_not_collide_with_the_default_one():
    labs = [labprog.load_lab(os.path.join(REPO, "inventories", name, "topology.yml"))
            for name in ("lab", "lab-dev", "lab-hetero")]
    for kind in ("address", "user", "dir"):
        values = [h[kind] for lab in labs for h in lab["hosts"].values()]
        assert len(values) == len(set(values)), kind
    assert len({lab["state_dir"] for lab in labs}) == 3
    hetero = labs[2]["hosts"]
    assert [name for name, h in sorted(hetero.items()) if not h["kvm"]] == ["hv-a3"]


def _topology_variant(tmp_path, edit):
    with open(os.path.join(REPO, "inventories", "lab", "topology.yml")) as handle:
        document = yaml.safe_load(handle)
    edit(document)
    path = tmp_path / "topology.yml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def _first_host(document):
    return document["regions"][0]["zones"][0]["pods"][0]["clusters"][0]["hosts"][0]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["vars"].pop("lab_name"), "sets no lab_name"),
    (lambda d: _first_host(d).update(address="192.0.2.10", libvirt_uri="qemu+tcp://192.0.2.10/session"),
     "not a loopback address"),
    (lambda d: _first_host(d).update(libvirt_uri="qemu+ssh://root@127.0.1.11/system"),
     "must declare `libvirt_uri: qemu+tcp://127.0.1.11/session`"),
    (lambda d: d["vars"].update(lab_name="a-lab-name-far-too-long-for-users"), "not a valid Linux user name"),
    (lambda d: d["vars"].update(lab_guest_workload="mine"), "use heartbeat (default) or dirty"),
    (lambda d: _first_host(d).update(address="127.0.1.12", libvirt_uri="qemu+tcp://127.0.1.12/session"),
     "share an address"),
])
def test_bad_lab_topologies_are_refused_with_the_fix(tmp_path, edit, message):
    with pytest.raises(labprog.LabError, match=re.escape(message)):
        labprog.load_lab(_topology_variant(tmp_path, edit))


def test_guest_definition_is_migratable_and_logs_to_shared_storage():
    lab = labprog.load_lab(os.path.join(REPO, "inventories", "lab", "topology.yml"))
    lab["image"] = {"kernel": "/k", "initrd": "/i"}
    xml = labprog.guest_xml(lab, lab["guests"]["b1-g2"], "qemu")
    assert "<domain type='qemu'>" in xml and "<memory unit='MiB'>128</memory>" in xml
    assert "<model fallback='allow'>qemu64</model>" in xml and "<feature policy='disable' name='svm'/>" in xml
    assert "<source path='/var/lib/virtfleet-lab/lab/storage/lab-b/b1-g2.serial.log' append='on'/>" in xml
    assert "virtfleet.guest=b1-g2" in xml


def test_heartbeat_follower_timestamps_complete_lines_and_follows_a_new_log(tmp_path):
    serial = tmp_path / "g1.serial.log"
    serial.write_bytes(b"[    0.1] kernel noise\nvirtfleet-heartbeat g1 b00t 0\nvirtfleet-heartbeat g1 b00t 1\nvirtf")
    (tmp_path / "heartbeats").mkdir()
    lab = {"state_dir": str(tmp_path), "guests": {"g1": {"name": "g1", "serial_log": str(serial)}}}
    follower = labprog.HeartbeatFollower(lab)
    follower.poll(100.0)
    with open(serial, "ab") as handle:
        handle.write(b"leet-heartbeat g1 b00t 2\n")
    follower.poll(100.5)
    assert [(t, seq) for t, seq, _unused in labprog.read_heartbeats(lab, "g1")] == [(100.0, 0), (100.0, 1), (100.5, 2)]
    serial.unlink()  # guest removed and added again: a new log, read from its start
    serial.write_bytes(b"virtfleet-heartbeat g1 n3w 0\n")
    follower.poll(200.0)
    assert labprog.read_heartbeats(lab, "g1", since=150) == [(200.0, 0, "n3w")]


# -- the running lab -------------------------------------------------------------------------

@pytest.mark.lab
def test_every_host_answers_over_ssh_and_libvirt_with_its_own_identity(lab):
    uuids = {}
    for name, host in sorted(lab.hosts.items()):
        # Inside an SSH session the host looks like a real hypervisor: its own hostname, and
        # qemu:///session is its own daemon (with its own guests).
        out = lab.ssh(name, "hostname; virsh uri; virsh hostname; virsh list --name").stdout.split()
        assert out[:3] == [name, "qemu:///session", name], out
        assert set(out[3:]) == {g for g, where in lab.placement().items() if where == name}
        # From the controller, over TCP on the host's own address.
        assert virsh(host.libvirt_uri, "hostname").stdout.strip() == name
        capabilities = virsh(host.libvirt_uri, "capabilities").stdout
        uuids[name] = re.search(r"<uuid>([^<]+)</uuid>", capabilities).group(1)
    assert len(set(uuids.values())) == len(uuids), "host UUIDs are not distinct: %s" % uuids


@pytest.mark.lab
def test_lab_listens_on_loopback_only(lab):
    users = {h.user for h in lab.hosts.values()}
    recorded = json.load(open(os.path.join(lab.state_dir, "lab.json")))
    sshd_pids = set()
    for host in recorded["hosts"].values():
        with open(os.path.join(host["dir"], "ssh", "sshd.pid")) as handle:
            sshd_pids.add(handle.read().split()[0])
    listeners = subprocess.run(["ss", "-Hltnup"], capture_output=True, text=True, check=True).stdout.splitlines()
    seen = set()
    for line in listeners:
        local = line.split()[4]
        for pid in re.findall(r"pid=(\d+)", line):
            try:
                owner = subprocess.run(["ps", "-o", "user=", "-p", pid], capture_output=True, text=True, check=False).stdout.strip()
            except OSError:
                continue
            if owner in users or pid in sshd_pids:
                assert local.startswith("127."), "lab process %s (%s) listens on %s" % (pid, owner, local)
                seen.add(local)
    for host in lab.hosts.values():
        assert "%s:16509" % host.address in seen and "%s:22" % host.address in seen, seen


@pytest.mark.lab
def test_ansible_reaches_every_host_through_the_lab_inventory(lab):
    result = run_ansible("ansible", "-i", lab.inventory, "all", "-m", "ansible.builtin.command",
                         "-a", "virsh -q hostname")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    for name in lab.hosts:
        assert re.search(r"^%s \| CHANGED \| rc=0 >>\n%s$" % (name, name), result.stdout, re.M), result.stdout


@pytest.mark.lab
def test_live_migration_with_plain_libvirt_keeps_the_heartbeat(lab):
    cluster = sorted(lab.clusters)[0]
    # Wherever earlier tests left the guests: the first host of the cluster running one.
    placement = lab.placement()
    source = next(h for h in sorted(lab.clusters[cluster]) if h in placement.values())
    destination = next(h for h in sorted(lab.clusters[cluster]) if h != source)
    guest = sorted(g for g, where in placement.items() if where == source)[0]
    start = time.time()
    time.sleep(1.0)
    for src, dst in ((source, destination), (destination, source)):  # there and back: the lab as it was
        virsh(lab.hosts[src].libvirt_uri, "migrate", "--live", "--p2p", "--persistent", "--undefinesource",
              guest, lab.hosts[dst].libvirt_uri)
        assert lab.where(guest) == dst
        completed = virsh(lab.hosts[dst].libvirt_uri, "domjobinfo", guest, "--completed").stdout
        print("%s %s -> %s: %s" % (guest, src, dst, " ".join(
            line.split(":", 1)[1].strip() for line in completed.splitlines()
            if line.startswith(("Time elapsed:", "Downtime:")))))
        time.sleep(1.0)
    end = time.time()
    report = lab.heartbeat_report(guest, start, end)
    print("heartbeat over two migrations: %s" % report)
    assert report["count"] >= 10
    assert report["lost"] == 0 and report["restarts"] == 0, report  # the guest never stopped or rebooted
    assert report["max_gap_s"] < MAX_MIGRATION_GAP_S, report


@pytest.mark.lab
def test_reboot_changes_the_boot_id_once_and_the_daemon_answers_again(lab):
    host = sorted(lab.clusters[sorted(lab.clusters)[-1]])[-1]
    guests = sorted(g for g, where in lab.placement().items() if where == host)
    before = lab.ssh(host, "%s boot-id" % lab.host_tool).stdout.strip()
    new_boot = lab.reboot(host)
    assert new_boot != before
    assert lab.ssh(host, "%s boot-id" % lab.host_tool).stdout.strip() == new_boot
    assert virsh(lab.hosts[host].libvirt_uri, "hostname").stdout.strip() == host
    # As on a real reboot, the guests that ran there are gone (defined, shut off).
    listed = virsh(lab.hosts[host].libvirt_uri, "list", "--all").stdout
    for guest in guests:
        assert lab.where(guest) is None
        assert re.search(r"%s\s+shut off" % re.escape(guest), listed), listed
    started = lab.up()["started_guests"]
    assert sorted(started) == guests


@pytest.mark.lab
def test_ansible_patches_and_reboots_a_lab_host_with_the_inventory_commands(lab, tmp_path):
    host = sorted(lab.clusters[sorted(lab.clusters)[0]])[-1]
    playbook = tmp_path / "patch_reboot.yml"
    playbook.write_text("""
- hosts: %s
  gather_facts: false
  tasks:
    - {command: "{{ lab_pending_updates_command }}", register: pending_before}
    - {command: "{{ lab_boot_time_command }}", register: boot_before}
    - {command: "{{ lab_patch_command }}"}
    - {command: "{{ lab_reboot_required_command }}", register: required_before}
    - ansible.builtin.reboot:
        reboot_command: "{{ lab_reboot_command }}"
        boot_time_command: "{{ lab_boot_time_command }}"
        test_command: "{{ lab_test_command }}"
    - {command: "{{ lab_pending_updates_command }}", register: pending_after}
    - {command: "{{ lab_reboot_required_command }}", register: required_after}
    - {command: "{{ lab_boot_time_command }}", register: boot_after}
    - ansible.builtin.copy:
        dest: "%s"
        content: "{{ {'pending_before': pending_before.stdout_lines, 'required_before': required_before.stdout,
                      'pending_after': pending_after.stdout_lines, 'required_after': required_after.stdout,
                      'boot_changed': boot_before.stdout != boot_after.stdout} | to_json }}"
      delegate_to: localhost
""" % (host, tmp_path / "result.json"))
    result = run_ansible("ansible-playbook", "-i", lab.inventory, str(playbook))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    found = json.loads((tmp_path / "result.json").read_text())
    assert found == {"pending_before": found["pending_before"], "required_before": "yes",
                     "pending_after": [], "required_after": "no", "boot_changed": True}
    assert found["pending_before"], "a fresh lab host has pending updates"


@pytest.mark.lab
def test_dirty_workload_guest_dirties_memory_and_keeps_its_heartbeat(lab):
    host = sorted(lab.clusters[sorted(lab.clusters)[0]])[0]
    name = "dirty-test"
    lab.add_guest(name, host, workload="dirty", dirty_mib=32)
    try:
        uri = lab.hosts[host].libvirt_uri
        time.sleep(3)  # the workload starts after the first heartbeat
        virsh(uri, "domdirtyrate-calc", name, "--seconds", "2")
        rate = 0
        for _unused in range(50):
            stats = virsh(uri, "domstats", name, "--dirtyrate").stdout
            if "calc_status=2" in stats:  # measured
                rate = int(re.search(r"megabytes_per_second=(\d+)", stats).group(1))
                break
            time.sleep(0.2)
        print("dirty rate of %s: %d MB/s" % (name, rate))
        assert rate >= 1
        assert len(lab.heartbeats(name, time.time() - 2)) >= 3
    finally:
        lab.remove_guest(name)
    assert lab.where(name) is None


def _lab_residue(lab):
    """Everything of the lab that would still be on the machine after lab_down."""
    users = {h.user for h in lab.hosts.values()}
    residue = []
    passwd = open("/etc/passwd").read()
    residue += ["user %s" % u for u in users if re.search(r"^%s:" % re.escape(u), passwd, re.M)]
    group = open("/etc/group").read()
    residue += ["group vf-%s-%s" % (lab.name, c) for c in lab.clusters
                if re.search(r"^vf-%s-%s:" % (re.escape(lab.name), re.escape(c)), group, re.M)]
    processes = subprocess.run(["ps", "-eo", "pid=,user:32=,args="], capture_output=True, text=True, check=False).stdout
    residue += ["process %s" % line.strip() for line in processes.splitlines()
                if line.split()[1] in users or lab.state_dir in line]
    listeners = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=False).stdout
    residue += ["listener %s" % line for line in listeners.splitlines()
                if any(" %s:" % h.address in line for h in lab.hosts.values())]
    residue += ["mount %s" % line for line in open("/proc/mounts").read().splitlines() if lab.state_dir in line]
    if os.path.exists(lab.state_dir):
        residue.append("state dir %s" % lab.state_dir)
    if os.path.exists("/dev/kvm"):
        acl = subprocess.run(["getfacl", "-cp", "/dev/kvm"], capture_output=True, text=True, check=False).stdout
        residue += ["/dev/kvm ACL %s" % line for line in acl.splitlines() if any(u in line for u in users)]
    return residue


@pytest.mark.lab
def test_lab_down_leaves_nothing_and_lab_up_comes_back_via_the_playbooks(lab):
    """Last test of the file: down, check for residue, up again (timed), up once more (no change)."""
    topology = "lab_topology=%s" % lab.topology
    down = run_ansible("ansible-playbook", "playbooks/lab_down.yml", "-e", topology)
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-2000:]
    assert _lab_residue(lab) == []
    began = time.monotonic()
    up = run_ansible("ansible-playbook", "playbooks/lab_up.yml", "-e", topology)
    seconds = time.monotonic() - began
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-2000:]
    print("lab_up.yml after lab_down.yml: %.1f s" % seconds)
    assert all(lab.placement().values()), lab.placement()
    again = run_ansible("ansible-playbook", "playbooks/lab_up.yml", "-e", topology)
    assert again.returncode == 0 and re.search(r"localhost\s+: ok=\d+\s+changed=0 ", again.stdout), again.stdout
