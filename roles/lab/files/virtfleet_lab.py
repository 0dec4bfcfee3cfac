# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The virtfleet lab: real libvirt hosts on loopback addresses of this one machine.

Every host of a topology file becomes:

* an unprivileged user (``vf-<lab>-<host>``) with its own home and XDG directories,
* its own ``libvirtd --listen`` in session mode as that user, bound to the host's loopback
  address (16509 and migration ports 49152+ on that address), with its own host UUID,
* its own ``sshd`` on ``<address>:22`` that lets the lab key in as that user and sets the
  XDG variables, so ``qemu:///session`` inside an SSH session is that host's daemon,
* its own SSH key (``~/.ssh/id_ed25519`` of its user), authorized on the other hosts of its
  cluster, and ``~/.ssh/known_hosts`` with their host keys: the host-to-host path that a
  peer-to-peer migration over ``qemu+ssh://`` takes, set up as an operator sets it up,
* a boot id, a pending-updates marker and a reboot-required marker (simulated patching).

Each cluster gets a shared storage directory (its ``storage.path``) that every host of the
cluster can use; guests write a heartbeat line to a serial log there. A root "agent" process
per lab timestamps every heartbeat line in host wall time and carries out reboots that hosts
request (a host user cannot restart its own sshd).

The controller (root) reaches the hosts' sshd with the lab key and checks their host keys
through ``/etc/ssh/ssh_config.d/virtfleet-lab-<lab>.conf`` (removed by ``down``), so a host's
``qemu+ssh://<user>@<address>/session`` URI works from the controller and from its peers alike.
A topology chooses which URI its hosts declare (``lab_libvirt_transport``: ``tcp`` or ``ssh``);
the hosts offer both, and the lab program itself always uses TCP.

Everything a lab owns lives under its state directory (default
``/var/lib/virtfleet-lab/<lab name>``), is listed in ``<state>/lab.json`` and is removed by
``down``. Guest kernel and initramfs are built once and cached in the image directory
(default ``/var/cache/virtfleet-lab/images``), which ``down`` keeps.

Every guest holds a lease in its cluster's lockspace on the shared storage, and every host's
libvirt runs QEMU under the lock manager (virtlockd): the lease is held by the one host running
the guest, so a second start elsewhere is refused while the first copy lives (the fencing a
host-failure recovery relies on). A lease rather than a disk: libvirt 9 refuses to live-migrate a
guest whose file disk is on a filesystem it does not know as shared (the lab's storage is a
local directory), and the lease is what protects a disk anyway.

Subcommands (run as root): image, up, down, status, reboot HOST, patch HOST, poweroff HOST,
poweron HOST, freeze HOST, thaw HOST, agent (internal).
Output is human readable, or one JSON document with ``--json`` (what the Ansible role reads).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fcntl
import glob
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import yaml

ROLE_FILES = os.path.dirname(os.path.abspath(__file__))


def _put_collection_on_path() -> None:
    """Make ``ansible_collections.virtfleet.cluster`` importable: the lab reads topologies and
    opens libvirt connections with the collection's own code.

    The lab runs as a program (the role's command task, the lab tests, the command line), not
    as a module Ansible loads, so it finds the collection it belongs to: the directory holding
    ``ansible_collections`` when this file lies inside one (an installed collection, or the
    repository reached through its ``.collections`` link, as the role runs it), else the
    repository's ``.collections`` link (``make deps`` creates it), then ANSIBLE_COLLECTIONS_PATH.
    """
    collection_root = os.path.dirname(os.path.dirname(os.path.dirname(ROLE_FILES)))  # <root>/roles/lab/files
    parts = collection_root.split(os.sep)
    candidates = []
    if "ansible_collections" in parts:
        candidates.append(os.sep.join(parts[:len(parts) - 1 - parts[::-1].index("ansible_collections")]) or os.sep)
    candidates.append(os.path.join(collection_root, ".collections"))
    for entry in os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep):
        entry = entry.rstrip(os.sep)
        # Ansible accepts the directory holding ansible_collections as well as that directory itself.
        candidates.append(os.path.dirname(entry) if entry.endswith(os.sep + "ansible_collections") else entry)
    for path in reversed([path for path in candidates if path and os.path.isdir(path)]):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)


_put_collection_on_path()
try:
    from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
        HAS_LIBVIRT, LibvirtHostError, open_connection)
    from ansible_collections.virtfleet.cluster.plugins.module_utils.topology import TopologyError
    from ansible_collections.virtfleet.cluster.plugins.module_utils.topology_layout import topology_layout
except ImportError as import_error:
    raise SystemExit("virtfleet-lab: error: cannot import the virtfleet.cluster collection this program belongs to "
                     "(%s): run it from the repository after `make deps` (which links .collections), or set "
                     "ANSIBLE_COLLECTIONS_PATH to where the collection is installed" % import_error) from import_error

LAB_UUID_NAMESPACE = uuid.UUID("5d3c1c1e-6f0b-4a43-9a3e-1f4e7a0c2b71")
DEFAULT_STATE_ROOT = "/var/lib/virtfleet-lab"
DEFAULT_IMAGE_DIR = "/var/cache/virtfleet-lab/images"
LIBVIRT_PORT = 16509
SSH_PORT = 22
# How the controller's client reaches lab hosts over SSH (written at up, removed at down).
SSH_CLIENT_CONFIG_DIR = "/etc/ssh/ssh_config.d"
# The URI a lab host declares for each lab_libvirt_transport (the hosts serve both).
LAB_URI_FORMATS = {
    "tcp": "qemu+tcp://{address}/session",
    "ssh": "qemu+ssh://{user}@{address}/session",
}
HEARTBEAT_PREFIX = "virtfleet-heartbeat"
# How often the agent looks at the serial logs: the resolution of every heartbeat gap measured.
HEARTBEAT_POLL_S = 0.02
# A simulated reboot keeps the host down this long, so callers see a real outage.
REBOOT_DOWN_S = 1.0
# The longest a control/reboot-hold file keeps a rebooting host down (a test that died left it).
REBOOT_HOLD_LIMIT_S = 600.0
# After a host asks for a reboot, the agent waits this long so the asking SSH command returns.
REBOOT_GRACE_S = 1.0
# A guest kernel that has not printed its first heartbeat by then did not boot.
GUEST_BOOT_TIMEOUT_S = 120
KVM_PROBE_TIMEOUT_S = 10
REQUIRED_PROGRAMS = {
    "libvirtd": "libvirt-daemon",
    "qemu-system-x86_64": "qemu-system-x86",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "virsh": "libvirt-clients",
    "cpio": "cpio",
    "setfacl": "acl",
    "apt-get": "apt",
    "dpkg-deb": "dpkg",
}
BUSYBOX = "/bin/busybox"
FAKE_UPDATES = ("virtfleet-lab-kernel 6.1.999", "virtfleet-lab-libvirt 9.0.999")
# virtlockd's lockspace (one lease file per guest) on each cluster's shared storage.
LOCKSPACE_DIR_NAME = ".lockspace"
# Markers in <host dir>/control: a powered-off host stays down (no reboot, no `up` starts it)
# until `poweron`; a frozen host has its daemons stopped (SIGSTOP) until `thaw`.
POWERED_OFF_MARKER = "powered-off"
FROZEN_MARKER = "frozen"


class LabError(Exception):
    """A problem the operator can fix; the message says how."""


def log(message: str) -> None:
    print("virtfleet-lab: %s" % message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The lab description, from a topology file
# ---------------------------------------------------------------------------------------------

def _user_name(lab_name: str, host: str) -> str:
    user = "vf-%s-%s" % (lab_name, host)
    if len(user) > 32 or not re.match(r"^[a-z][a-z0-9-]*$", user):
        raise LabError("lab user name %r (vf-<lab name>-<host>) is not a valid Linux user name "
                       "(lowercase letters, digits and -, at most 32 characters): shorten the lab name "
                       "(lab_name in the topology vars) or the host name" % user)
    return user


def _short_name(host: str) -> str:
    """hv-a1 -> a1: guests are named after their home host without the hv- prefix."""
    return host[3:] if host.startswith("hv-") else host


def load_lab(topology_path: str) -> dict:
    """Read a topology file into the lab description (plain data, saved as lab.json at up).

    Lab settings are topology variables (top-level ``vars:`` or any level below):
    ``lab_name`` (required), ``lab_state_dir``, ``lab_image_dir``, ``lab_guests_per_host``,
    ``lab_guest_memory_mib``, ``lab_guest_workload`` (``heartbeat`` or ``dirty``),
    ``lab_guest_dirty_mib``, ``lab_libvirt_transport`` (``tcp`` or ``ssh``: which URI the
    hosts declare) and, per host, ``lab_kvm: false`` (its daemon gets no /dev/kvm).
    """
    try:
        with open(topology_path) as handle:
            document = yaml.safe_load(handle)
    except OSError as error:
        raise LabError("cannot read the lab topology %s: %s" % (topology_path, error.strerror))
    except yaml.YAMLError as error:
        raise LabError("the lab topology %s is not valid YAML: %s" % (topology_path, error))
    if not isinstance(document, dict):
        raise LabError("the lab topology %s is not a topology document (a mapping)" % topology_path)
    try:
        layout = topology_layout(document)
    except TopologyError as error:
        error.source = topology_path
        raise LabError(str(error))
    records = [(name, variables["virtfleet_cluster"], variables) for name, _c, _h, variables in layout.hosts()]
    if not records:
        raise LabError("the lab topology %s has no hosts" % topology_path)
    first = records[0][2]
    lab_name = first.get("lab_name")
    if not lab_name:
        raise LabError("the lab topology %s sets no lab_name: add `vars: {lab_name: <name>}` at its top level"
                       % topology_path)
    state_dir = first.get("lab_state_dir") or os.path.join(DEFAULT_STATE_ROOT, lab_name)
    lab = {
        "name": lab_name,
        "topology": os.path.abspath(topology_path),
        "state_dir": state_dir,
        "image_dir": first.get("lab_image_dir") or DEFAULT_IMAGE_DIR,
        "hosts": {},
        "clusters": {},
        "guests": {},
    }
    for host, cluster, variables in records:
        address = variables["ansible_host"]
        storage = variables.get("virtfleet_storage") or {}
        if not storage.get("path"):
            raise LabError("cluster %s of the lab has no storage path: add `storage: {name: ..., type: shared, "
                           "path: %s/storage/%s}`" % (cluster, state_dir, cluster))
        user = _user_name(lab_name, host)
        uri = variables.get("virtfleet_libvirt_uri")
        transport = variables.get("lab_libvirt_transport", "tcp")
        if transport not in LAB_URI_FORMATS:
            raise LabError("lab_libvirt_transport of %s is %r: use tcp (default) or ssh" % (host, transport))
        expected_uri = LAB_URI_FORMATS[transport].format(user=user, address=address)
        if uri != expected_uri:
            raise LabError("lab host %s must declare `libvirt_uri: %s` (its daemon is a session daemon on its "
                           "address, reached over %s as lab_libvirt_transport says), not %r"
                           % (host, expected_uri, transport, uri))
        lab["hosts"][host] = {
            "name": host,
            "address": address,
            "cluster": cluster,
            "libvirt_uri": uri,
            "user": user,
            "kvm": bool(variables.get("lab_kvm", True)),
            # How long a reboot keeps the host down (a slow hypervisor reboot, e.g. for bench/skew.py).
            "reboot_down_s": float(variables.get("lab_reboot_down_s", REBOOT_DOWN_S)),
            "dir": os.path.join(state_dir, "hosts", host),
            "host_uuid": str(uuid.uuid5(LAB_UUID_NAMESPACE, "%s/%s" % (lab_name, host))),
        }
        entry = lab["clusters"].setdefault(cluster, {
            "name": cluster, "hosts": [], "storage": storage["path"],
            "group": "vf-%s-%s" % (lab_name, cluster)})
        entry["hosts"].append(host)
        if len(entry["group"]) > 32:
            raise LabError("lab group name %r is longer than 32 characters: shorten the lab or cluster name"
                           % entry["group"])
        workload = variables.get("lab_guest_workload", "heartbeat")
        if workload not in ("heartbeat", "dirty"):
            raise LabError("lab_guest_workload of %s is %r: use heartbeat (default) or dirty" % (host, workload))
        for index in range(1, int(variables.get("lab_guests_per_host", 2)) + 1):
            guest = "%s-g%d" % (_short_name(host), index)
            lab["guests"][guest] = _guest_record(lab, guest, host, cluster, storage["path"],
                                                 int(variables.get("lab_guest_memory_mib", 128)), workload,
                                                 int(variables.get("lab_guest_dirty_mib", 48)))
    addresses = [h["address"] for h in lab["hosts"].values()]
    if len(set(addresses)) != len(addresses):
        raise LabError("two lab hosts share an address in %s: every lab host needs its own" % topology_path)
    for address in addresses:
        if not address.startswith("127.") or address in ("127.0.0.1",):
            raise LabError("lab host address %s is not a loopback address other than 127.0.0.1: the lab "
                           "listens on loopback only (use 127.0.1.N)" % address)
    return lab


def _guest_record(lab: dict, name: str, home: str, cluster: str, storage: str, memory_mib: int, workload: str,
                  dirty_mib: int, extra: bool = False) -> dict:
    if not re.match(r"^[a-z0-9][a-z0-9-]{0,40}$", name):
        raise LabError("guest name %r: use lowercase letters, digits and - (at most 41 characters)" % name)
    return {
        "name": name,
        "home": home,
        "cluster": cluster,
        "memory_mib": memory_mib,
        "workload": workload,
        "dirty_mib": dirty_mib,
        "uuid": str(uuid.uuid5(LAB_UUID_NAMESPACE, "%s/guest/%s" % (lab["name"], name))),
        "serial_log": os.path.join(storage, "%s.serial.log" % name),
        # Added by guest-add rather than by the topology: kept across `up`, removed by guest-remove.
        "extra": extra,
    }


def saved_lab(state_dir: str) -> dict | None:
    try:
        with open(os.path.join(state_dir, "lab.json")) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def _role_file(name: str) -> str:
    """A file of the lab role (roles/lab/files), such as the guest's init or the host tool."""
    with open(os.path.join(ROLE_FILES, name)) as handle:
        return handle.read()


def _write_if_changed(path: str, text: str, mode: int = 0o644) -> bool:
    try:
        with open(path) as handle:
            if handle.read() == text:
                return False
    except OSError:
        pass
    _write_atomic(path, text, mode)
    return True


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------

def _processes():
    """(pid, ppid, uid, state, command line) of every process, read from /proc."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                stat = handle.read()
            uid = os.stat("/proc/%s" % entry).st_uid
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        yield int(entry), int(fields[1]), uid, fields[0], cmdline


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open("/proc/%d/stat" % pid) as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _runs(pid: int | None, program: str) -> bool:
    """The recorded PID is alive and still that program (after a machine restart a stale PID
    file may name an unrelated process)."""
    return _alive(pid) and program in _cmdline(pid).split(" ", 1)[0]


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _process_tree(root_pid: int) -> list:
    children: dict[int, list] = {}
    for pid, ppid, _uid, _state, _cmd in _processes():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _kill(pids, sig=signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _user_pids(uid: int, program: str | None = None) -> list:
    """Live processes of a user (optionally only those whose command starts with program)."""
    return [pid for pid, _ppid, p_uid, state, cmd in _processes()
            if p_uid == uid and state != "Z" and (program is None or os.path.basename(cmd.split(" ", 1)[0])
                                                  .startswith(program))]


def _wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _port_open(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((address, port)) == 0


def _listener(address: str, port: int) -> str | None:
    """Who listens on address:port (as `ss` says), or None."""
    try:
        out = subprocess.run(["ss", "-Hltnp", "src", "%s:%d" % (address, port)], capture_output=True,
                             text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = "(ss unavailable)" if _port_open(address, port) else ""
    return out or None


# ---------------------------------------------------------------------------------------------
# Guest image: Debian cloud kernel + busybox initramfs printing a heartbeat
# ---------------------------------------------------------------------------------------------

def guest_init() -> str:
    """The guest's /init (roles/lab/files/guest-init), run by the kernel with busybox's shell.

    The file carries no shebang line because ansible-test's sanity check allows only standard
    interpreters in a collection's files; the guest has nothing but /bin/busybox.
    """
    return "#!/bin/busybox sh\n" + _role_file("guest-init")


def _kernel_package() -> str:
    """Name of the newest Debian cloud kernel package apt offers (the one linux-image-cloud-amd64 pulls)."""
    def depends():
        out = subprocess.run(["apt-cache", "depends", "linux-image-cloud-amd64"], capture_output=True, text=True, check=False)
        found = re.findall(r"Depends: (linux-image-[0-9][^\s]*-cloud-amd64)\b", out.stdout)
        return found[0] if found else None
    package = depends()
    if package is None:
        log("apt knows no linux-image-cloud-amd64 yet: running apt-get update")
        subprocess.run(["apt-get", "update", "-q"], check=False, stdout=subprocess.DEVNULL)
        package = depends()
    if package is None:
        raise LabError("apt offers no Debian cloud kernel (linux-image-cloud-amd64): check the Debian "
                       "sources in /etc/apt and run `apt-get update`")
    return package


def build_image(image_dir: str) -> dict:
    """Build (once) the guest kernel + initramfs; returns {kernel, initrd, kernel_package, changed}."""
    os.makedirs(image_dir, mode=0o755, exist_ok=True)
    os.chmod(image_dir, 0o755)
    manifest_path = os.path.join(image_dir, "image.json")
    init = guest_init()
    init_digest = uuid.uuid5(LAB_UUID_NAMESPACE, init).hex[:12]
    try:
        with open(manifest_path) as handle:
            manifest = json.load(handle)
        if (manifest.get("init_digest") == init_digest and os.path.exists(manifest["kernel"])
                and os.path.exists(manifest["initrd"])):
            return {**manifest, "changed": False}
    except (OSError, ValueError, KeyError):
        pass
    if not os.path.exists(BUSYBOX) or not _is_static(BUSYBOX):
        raise LabError("%s is missing or not static: install busybox-static (`make deps`)" % BUSYBOX)
    kernel = None
    for existing in sorted(glob.glob(os.path.join(image_dir, "vmlinuz-*"))):
        kernel = existing
    if kernel is None:
        package = _kernel_package()
        log("downloading the guest kernel %s (once; cached in %s)" % (package, image_dir))
        with tempfile.TemporaryDirectory(dir=image_dir) as work:
            os.chmod(work, 0o755)  # apt-get download drops privileges to _apt when it can
            result = subprocess.run(["apt-get", "download", "-q", package], cwd=work, capture_output=True, text=True, check=False)
            debs = glob.glob(os.path.join(work, "*.deb"))
            if result.returncode != 0 or not debs:
                raise LabError("`apt-get download %s` failed: %s" % (package, result.stderr.strip()[-500:]))
            subprocess.run(["dpkg-deb", "-x", debs[0], os.path.join(work, "root")], check=True)
            found = glob.glob(os.path.join(work, "root", "boot", "vmlinuz-*"))
            if not found:
                raise LabError("the package %s holds no /boot/vmlinuz-*" % package)
            kernel = os.path.join(image_dir, os.path.basename(found[0]))
            shutil.copyfile(found[0], kernel + ".tmp")
            os.chmod(kernel + ".tmp", 0o644)
            os.replace(kernel + ".tmp", kernel)
    initrd = os.path.join(image_dir, "initrd-%s.cpio" % init_digest)
    with tempfile.TemporaryDirectory(dir=image_dir) as work:
        root = os.path.join(work, "root")
        os.makedirs(os.path.join(root, "bin"))
        shutil.copy2(BUSYBOX, os.path.join(root, "bin", "busybox"))
        with open(os.path.join(root, "init"), "w") as handle:
            handle.write(init)
        os.chmod(os.path.join(root, "init"), 0o755)
        files = subprocess.run("find . | sort", shell=True, cwd=root, capture_output=True, check=True).stdout
        with open(initrd + ".tmp", "wb") as out:
            subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], input=files, cwd=root,
                           stdout=out, check=True)
        os.chmod(initrd + ".tmp", 0o644)
        os.replace(initrd + ".tmp", initrd)
    # Older initrds stay: running guests of a lab brought up before still need theirs to migrate.
    manifest = {"kernel": kernel, "initrd": initrd, "init_digest": init_digest,
                "kernel_version": os.path.basename(kernel)[len("vmlinuz-"):]}
    manifest["kvm_boots_linux"], manifest["kvm_probe"] = _probe_kvm(manifest)
    _write_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return {**manifest, "changed": True}


def _is_static(path: str) -> bool:
    """The guest has no libc: busybox must be the static build (ldd refuses static binaries)."""
    return subprocess.run(["ldd", path], capture_output=True, check=False).returncode != 0


def _probe_kvm(manifest: dict) -> tuple:
    """Does a Linux guest boot under KVM here? (lab-facts: it can hang right after decompression.)

    Boots the guest image once under KVM as root and waits for a heartbeat. The answer is cached
    in the image manifest, so this costs a few seconds once per machine.
    """
    if not os.path.exists("/dev/kvm"):
        return False, "no /dev/kvm"
    with tempfile.TemporaryDirectory() as work:
        serial = os.path.join(work, "serial.log")
        command = ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "qemu64,-svm", "-m", "128", "-display", "none",
                   "-nodefaults", "-no-user-config", "-kernel", manifest["kernel"], "-initrd", manifest["initrd"],
                   "-append", "console=ttyS0 quiet virtfleet.guest=kvm-probe", "-serial", "file:%s" % serial]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def booted():
            with contextlib.suppress(OSError), open(serial, "rb") as handle:
                return HEARTBEAT_PREFIX.encode() in handle.read()
            return False
        ok = _wait_until(lambda: booted() or process.poll() is not None, KVM_PROBE_TIMEOUT_S, 0.2) and booted()
        exited = process.poll() is not None
        process.kill()
        _stdout, stderr = process.communicate()
    if ok:
        return True, "a Linux guest booted under KVM"
    if exited:  # QEMU refused KVM outright: its last words say why
        reason = (stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        return False, "QEMU could not run a guest under KVM: %s" % reason
    return False, "a Linux guest hung under KVM (no heartbeat within %d s)" % KVM_PROBE_TIMEOUT_S


# ---------------------------------------------------------------------------------------------
# Users, directories, configuration
# ---------------------------------------------------------------------------------------------

def _ensure_group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", name], check=True)
        return grp.getgrnam(name).gr_gid


def _ensure_user(name: str, home: str, group: str) -> pwd.struct_passwd:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        # -p '*': no password, but not locked either (sshd refuses locked accounts without PAM).
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", home, "--shell", "/bin/sh",
                        "-p", "*", "-G", group, name], check=True)
        entry = pwd.getpwnam(name)
    if group not in [g.gr_name for g in grp.getgrall() if name in g.gr_mem]:
        subprocess.run(["usermod", "-a", "-G", group, name], check=True)
    return entry


def _mkdir(path: str, uid: int = 0, gid: int = 0, mode: int = 0o755) -> None:
    os.makedirs(path, exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _host_env(lab: dict, host: dict) -> dict:
    """Environment of the host's daemon and of every SSH session on it."""
    directory = host["dir"]
    return {
        "HOME": os.path.join(directory, "home"),
        "USER": host["user"],
        "LOGNAME": host["user"],
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "XDG_RUNTIME_DIR": os.path.join(directory, "run"),
        "XDG_CONFIG_HOME": os.path.join(directory, "config"),
        "XDG_DATA_HOME": os.path.join(directory, "data"),
        "XDG_CACHE_HOME": os.path.join(directory, "cache"),
        # Without a running daemon, a client must fail rather than spawn a private one.
        "LIBVIRT_AUTOSTART": "0",
        "LIBVIRT_DEFAULT_URI": "qemu:///session",
        "VIRTFLEET_LAB": lab["name"],
        "VIRTFLEET_LAB_HOST": host["name"],
        "VIRTFLEET_LAB_HOST_DIR": directory,
    }


def _libvirtd_conf(host: dict) -> str:
    return "\n".join([
        "# Written by the virtfleet lab for host %s." % host["name"],
        "listen_tls = 0",
        "listen_tcp = 1",
        'auth_tcp = "none"',
        'listen_addr = "%s"' % host["address"],
        # Distinct per host: libvirt refuses to migrate between hosts with the same UUID.
        'host_uuid = "%s"' % host["host_uuid"],
        'log_outputs = "3:file:%s"' % os.path.join(host["dir"], "log", "libvirtd.log"),
        "max_clients = 200",
        "max_workers = 40",
        "",
    ])


def _qemu_conf(host: dict) -> str:
    return "\n".join([
        "# Written by the virtfleet lab for host %s." % host["name"],
        # Disk leases through virtlockd (qemu-lockd.conf): a guest runs on one host at a time.
        'lock_manager = "lockd"',
        # Incoming migrations listen on the host's own address, so every host keeps 49152+.
        'migration_address = "%s"' % host["address"],
        'migration_host = "%s"' % host["address"],
        # QEMU's stdout/stderr to a plain file: no per-user virtlogd to track and stop.
        'stdio_handler = "file"',
        "",
    ])


def lockspace_dir(cluster: dict) -> str:
    return os.path.join(cluster["storage"], LOCKSPACE_DIR_NAME)


def _qemu_lockd_conf(lab: dict, host: dict) -> str:
    return "\n".join([
        "# Written by the virtfleet lab for host %s." % host["name"],
        # The lockspace every host of the cluster shares: each guest's <lease> (and the lease of
        # any disk a guest gets) lives there, so starting a guest another host runs is refused.
        "auto_disk_leases = 1",
        "require_lease_for_disks = 1",
        'file_lockspace_dir = "%s"' % lockspace_dir(lab["clusters"][host["cluster"]]),
        "",
    ])


def _sshd_config(lab: dict, host: dict) -> str:
    env = _host_env(lab, host)
    ssh_dir = os.path.join(host["dir"], "ssh")
    setenv = " ".join("%s=%s" % (key, env[key]) for key in (
        "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "LIBVIRT_AUTOSTART",
        "LIBVIRT_DEFAULT_URI", "VIRTFLEET_LAB", "VIRTFLEET_LAB_HOST", "VIRTFLEET_LAB_HOST_DIR"))
    return "\n".join([
        "# Written by the virtfleet lab for host %s: only the lab key, only its user, loopback only." % host["name"],
        "ListenAddress %s:%d" % (host["address"], SSH_PORT),
        "HostKey %s" % os.path.join(ssh_dir, "ssh_host_ed25519_key"),
        "PidFile %s" % os.path.join(ssh_dir, "sshd.pid"),
        "AuthorizedKeysFile %s" % os.path.join(ssh_dir, "authorized_keys"),
        "AllowUsers %s" % host["user"],
        "PermitRootLogin no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "MaxStartups 50:30:100",
        "MaxSessions 50",
        "SetEnv %s" % setenv,
        "Subsystem sftp internal-sftp",
        "",
    ])


def prepare(lab: dict, image: dict) -> None:
    """Users, groups, directories, keys and configuration files (idempotent)."""
    state = lab["state_dir"]
    _mkdir(os.path.dirname(state))
    _mkdir(state)
    for sub in ("bin", "ssh", "heartbeats", "log"):
        _mkdir(os.path.join(state, sub))
    # The commands a lab host offers over SSH (roles/lab/files/lab-host).
    _write_if_changed(os.path.join(state, "bin", "lab-host"), _role_file("lab-host"), 0o755)
    key = os.path.join(state, "ssh", "id_ed25519")
    if not os.path.exists(key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "virtfleet-lab-%s" % lab["name"],
                        "-f", key], check=True)
    with open(key + ".pub") as handle:
        public_key = handle.read()
    kvm_acl_wanted = os.path.exists("/dev/kvm")
    for cluster in lab["clusters"].values():
        gid = _ensure_group(cluster["group"])
        cluster["gid"] = gid
        # Shared primary storage: group-writable by every host user of the cluster.
        _mkdir(cluster["storage"], 0, gid, 0o2775)
        _mkdir(lockspace_dir(cluster), 0, gid, 0o2770)
    for host in lab["hosts"].values():
        cluster = lab["clusters"][host["cluster"]]
        directory = host["dir"]
        _mkdir(directory)
        entry = _ensure_user(host["user"], os.path.join(directory, "home"), cluster["group"])
        uid, gid = entry.pw_uid, entry.pw_gid
        host["uid"], host["gid"] = uid, gid
        for sub in ("home", "run", "config", "data", "cache", "log", "control",
                    "config/libvirt", "config/libvirt/qemu"):
            _mkdir(os.path.join(directory, sub), uid, gid, 0o700 if sub in ("home", "run") else 0o755)
        _write_if_changed(os.path.join(directory, "config", "libvirt", "libvirtd.conf"), _libvirtd_conf(host))
        _write_if_changed(os.path.join(directory, "config", "libvirt", "qemu.conf"), _qemu_conf(host))
        _write_if_changed(os.path.join(directory, "config", "libvirt", "qemu-lockd.conf"), _qemu_lockd_conf(lab, host))
        ssh_dir = os.path.join(directory, "ssh")
        _mkdir(ssh_dir)
        host_key = os.path.join(ssh_dir, "ssh_host_ed25519_key")
        if not os.path.exists(host_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key], check=True)
        _ensure_user_key(host)
        _write_if_changed(os.path.join(ssh_dir, "sshd_config"), _sshd_config(lab, host))
        boot_id = os.path.join(directory, "boot_id")
        if not os.path.exists(boot_id):
            _write_atomic(boot_id, str(uuid.uuid4()) + "\n")
            # A fresh host has updates waiting: `lab-host patch` (or virtfleet_lab.py patch) installs them.
            pending = os.path.join(directory, "control", "pending-updates")
            _write_atomic(pending, "".join(line + "\n" for line in FAKE_UPDATES))
            os.chown(pending, uid, gid)
        if kvm_acl_wanted:
            # lab_kvm: false leaves the daemon without /dev/kvm, like a host without virtualization.
            subprocess.run(["setfacl", "-m" if host["kvm"] else "-x",
                            ("u:%d:rw" % uid) if host["kvm"] else ("u:%d" % uid), "/dev/kvm"],
                           check=False, stderr=subprocess.DEVNULL)
    for host in lab["hosts"].values():
        _write_host_to_host_ssh(lab, host, public_key)
    _write_controller_ssh(lab)
    for guest in lab["guests"].values():
        _create_serial_log(lab, guest)
        _create_lease(lab, guest)
    lab["image"] = {key: image[key] for key in ("kernel", "initrd", "kernel_version", "kvm_boots_linux", "kvm_probe")}
    _write_atomic(os.path.join(state, "lab.json"), json.dumps(lab, indent=2, sort_keys=True) + "\n")
    _write_atomic(os.path.join(state, "inventory.yml"), static_inventory(lab))


# ---------------------------------------------------------------------------------------------
# SSH between the hosts and from the controller
# ---------------------------------------------------------------------------------------------
# A peer-to-peer migration over qemu+ssh:// is opened by the source host's daemon, as that
# daemon's user, with that user's own key and known_hosts: the controller's key is not there
# (and must not be). Each host user therefore gets what an operator gives root on every real
# hypervisor: a key, authorized on the peers of its cluster, and the peers' host keys.

def _user_ssh_dir(host: dict) -> str:
    return os.path.join(host["dir"], "home", ".ssh")


def _ensure_user_key(host: dict) -> None:
    """The host user's own key pair, ~/.ssh/id_ed25519 (made once, owned by the user)."""
    ssh_dir = _user_ssh_dir(host)
    _mkdir(ssh_dir, host["uid"], host["gid"], 0o700)
    key = os.path.join(ssh_dir, "id_ed25519")
    if not os.path.exists(key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "%s@%s" % (host["user"], host["name"]),
                        "-f", key], check=True)
    for path in (key, key + ".pub"):
        os.chown(path, host["uid"], host["gid"])


def _public_text(path: str) -> str:
    with open(path) as handle:
        return handle.read().strip()


def _host_key_line(host: dict) -> str:
    """The known_hosts line of a host's sshd (port 22, so the plain address names it)."""
    key_type, key = _public_text(os.path.join(host["dir"], "ssh", "ssh_host_ed25519_key.pub")).split()[:2]
    return "%s %s %s" % (host["address"], key_type, key)


def cluster_peers(lab: dict, host: dict) -> list:
    """The other hosts of the host's cluster: those it may send guests to and receive them from."""
    return [lab["hosts"][name] for name in lab["clusters"][host["cluster"]]["hosts"] if name != host["name"]]


def _write_host_to_host_ssh(lab: dict, host: dict, controller_key: str) -> None:
    """authorized_keys (the controller's lab key + the keys of the cluster's other host users)
    and the user's known_hosts (the host keys of those peers). Hosts of other clusters are not
    there: guests never move between clusters."""
    peers = cluster_peers(lab, host)
    authorized = [controller_key.strip()] + [_public_text(os.path.join(_user_ssh_dir(p), "id_ed25519.pub"))
                                             for p in peers]
    _write_if_changed(os.path.join(host["dir"], "ssh", "authorized_keys"), "\n".join(authorized) + "\n")
    known_hosts = os.path.join(_user_ssh_dir(host), "known_hosts")
    _write_if_changed(known_hosts, "".join(_host_key_line(p) + "\n" for p in peers))
    os.chown(known_hosts, host["uid"], host["gid"])


def ssh_client_config_path(lab: dict) -> str:
    return os.path.join(SSH_CLIENT_CONFIG_DIR, "virtfleet-lab-%s.conf" % lab["name"])


def _write_controller_ssh(lab: dict) -> None:
    """Root (the controller here) logs in to the lab hosts with the lab key and checks their
    host keys against <state>/ssh/known_hosts: a host's qemu+ssh:// URI then carries no keyfile
    and works unchanged from the controller and from its peers, as on a real estate where each
    side has its own key. Only root and only the lab's addresses: host users keep their own."""
    state_ssh = os.path.join(lab["state_dir"], "ssh")
    known_hosts = os.path.join(state_ssh, "known_hosts")
    _write_if_changed(known_hosts, "".join(_host_key_line(h) + "\n" for h in lab["hosts"].values()))
    if not os.path.isdir(SSH_CLIENT_CONFIG_DIR):
        raise LabError("%s does not exist: the lab needs an OpenSSH client that reads it (Debian's "
                       "openssh-client includes it from /etc/ssh/ssh_config)" % SSH_CLIENT_CONFIG_DIR)
    _write_if_changed(ssh_client_config_path(lab), "\n".join([
        "# Written by the virtfleet lab %s (roles/lab); removed by its `down`." % lab["name"],
        "Match localuser root host %s" % ",".join(h["address"] for h in lab["hosts"].values()),
        "    IdentityFile %s" % os.path.join(state_ssh, "id_ed25519"),
        "    UserKnownHostsFile %s" % known_hosts,
        "    StrictHostKeyChecking yes",
        "    BatchMode yes",
        ""]))


def _create_serial_log(lab: dict, guest: dict) -> None:
    """Created by root ahead of time, group-writable: whichever host runs the guest (its user
    differs per host) can append to the one serial log across migrations."""
    path = guest["serial_log"]
    if not os.path.exists(path):
        with open(path, "a"):
            pass
    os.chown(path, 0, lab["clusters"][guest["cluster"]]["gid"])
    os.chmod(path, 0o664)


def _lease_path(lab: dict, guest: dict) -> str:
    """virtlockd's file for the guest's lease (key = the guest's name)."""
    return os.path.join(lockspace_dir(lab["clusters"][guest["cluster"]]), guest["name"])


def _create_lease(lab: dict, guest: dict) -> None:
    """The guest's lease file, made by root ahead of time and group-writable: virtlockd creates
    a missing one mode 0600 for the user that first starts the guest, and the other hosts
    (other users) could then never take the lease after it."""
    path = _lease_path(lab, guest)
    if not os.path.exists(path):
        with open(path, "a"):
            pass
    os.chown(path, 0, lab["clusters"][guest["cluster"]]["gid"])
    os.chmod(path, 0o660)


def _remove_lease(lab: dict, guest: dict) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_lease_path(lab, guest))


def static_inventory(lab: dict) -> str:
    """A plain YAML inventory of the lab's hosts (usable without the topology inventory plugin)."""
    key = os.path.join(lab["state_dir"], "ssh", "id_ed25519")
    tool = os.path.join(lab["state_dir"], "bin", "lab-host")
    clusters = {}
    for cluster in lab["clusters"].values():
        clusters["cluster_%s" % cluster["name"]] = {"hosts": {
            name: {
                "ansible_host": lab["hosts"][name]["address"],
                "ansible_user": lab["hosts"][name]["user"],
                "virtfleet_cluster": cluster["name"],
                "virtfleet_libvirt_uri": lab["hosts"][name]["libvirt_uri"],
                "virtfleet_storage": {"name": "%s-primary" % cluster["name"], "type": "shared",
                                      "path": cluster["storage"]},
            } for name in cluster["hosts"]}}
    document = {"all": {
        "vars": {
            "ansible_ssh_private_key_file": key,
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                                       "-o IdentitiesOnly=yes -o LogLevel=ERROR",
            "ansible_python_interpreter": "/usr/bin/python3",
            "lab_reboot_command": "%s reboot" % tool,
            "lab_boot_time_command": "%s boot-id" % tool,
            "lab_test_command": "%s ready" % tool,
            "lab_patch_command": "%s patch" % tool,
            "lab_pending_updates_command": "%s pending-updates" % tool,
            "lab_reboot_required_command": "%s reboot-required" % tool,
        },
        "children": clusters}}
    return "# Written by the virtfleet lab from %s; do not edit.\n%s" % (
        lab["topology"], yaml.safe_dump(document, sort_keys=False))


# ---------------------------------------------------------------------------------------------
# Host daemons
# ---------------------------------------------------------------------------------------------

def _host_lock(host: dict):
    handle = open(os.path.join(host["dir"], ".lock"), "a")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def lab_uri(host: dict) -> str:
    """The URI the lab program itself uses for a host: TCP whatever the topology declares (one
    SSH login per call would only slow the lab down; the SSH path is the inventory's)."""
    return LAB_URI_FORMATS["tcp"].format(address=host["address"])


def _libvirt_answers(host: dict) -> bool:
    result = subprocess.run(["virsh", "-q", "-c", lab_uri(host), "uri"], capture_output=True,
                            env={**os.environ, "LIBVIRT_AUTOSTART": "0"}, timeout=30, check=False)
    return result.returncode == 0


def _check_ports_free(host: dict) -> None:
    """Before creating anything: the ports of a host whose daemons are not running must be free."""
    for port, what, pid_file, program in ((LIBVIRT_PORT, "libvirt", "libvirtd.pid", "libvirtd"),
                                          (SSH_PORT, "ssh", os.path.join("ssh", "sshd.pid"), "sshd")):
        if _runs(_read_pid(os.path.join(host["dir"], pid_file)), program):
            continue  # ours
        holder = _listener(host["address"], port)
        if holder:
            raise LabError("lab host %s: %s port %s:%d is already in use (%s). Another lab on the same "
                           "addresses? Bring it down (`make lab-down` or virtfleet_lab.py down --topology ...) "
                           "or give this lab other addresses" % (host["name"], what, host["address"], port, holder))


def start_host(lab: dict, host: dict) -> bool:
    """Start the host's libvirtd and sshd unless they run; True when something was started."""
    started = False
    directory = host["dir"]
    env = _host_env(lab, host)
    libvirtd_pid_path = os.path.join(directory, "libvirtd.pid")
    virtlockd_pid_path = os.path.join(directory, "virtlockd.pid")
    sshd_pid_path = os.path.join(directory, "ssh", "sshd.pid")
    libvirtd_pid = _read_pid(libvirtd_pid_path)
    sshd_pid = _read_pid(sshd_pid_path)
    if not _runs(libvirtd_pid, "libvirtd"):
        holder = _listener(host["address"], LIBVIRT_PORT)
        if holder:
            raise LabError("lab host %s: libvirt port %s:%d is already in use (%s) but not by this lab's "
                           "daemon. Another lab on the same addresses? Bring it down or give this lab other "
                           "addresses" % (host["name"], host["address"], LIBVIRT_PORT, holder))
        # libvirtd died but the host did not reboot: its guests (QEMU processes) live on, and the
        # new daemon reconnects to them through the runtime directory, as after a daemon restart
        # on a real host. Any other leftover process of the host user goes.
        guests = set(_user_pids(host["uid"], "qemu-system"))
        # A living guest's leases are held by the host's virtlockd: it stays with its guests.
        lockd_pid = _read_pid(virtlockd_pid_path)
        keep = guests | ({lockd_pid} if guests and _runs(lockd_pid, "virtlockd") else set())
        stale = [pid for pid in _user_pids(host["uid"]) if pid not in keep]
        if stale:
            _kill(stale)
            _wait_until(lambda: not (set(_user_pids(host["uid"])) - keep), 10)
        if not guests:  # nothing survives from before: start as after a boot, with an empty /run
            with contextlib.suppress(FileNotFoundError):
                for entry in os.listdir(env["XDG_RUNTIME_DIR"]):
                    shutil.rmtree(os.path.join(env["XDG_RUNTIME_DIR"], entry), ignore_errors=True)
        output = open(os.path.join(directory, "log", "libvirtd.out"), "ab")
        cluster_gid = lab["clusters"][host["cluster"]]["gid"]
        drop_privileges = ["setpriv", "--reuid=%d" % host["uid"], "--regid=%d" % host["gid"],
                           "--groups=%d,%d" % (host["gid"], cluster_gid), "--"]
        if not _runs(_read_pid(virtlockd_pid_path), "virtlockd"):
            # Started here, not left to libvirtd: the virtlockd libvirtd spawns exits after 120 s
            # idle (--timeout=120) and a new one does not know the lockspace libvirtd registered
            # at its start, so the next guest arriving on a host empty for two minutes was
            # refused ("Lockspace for path ... does not exist").
            lockd = subprocess.Popen(_in_own_uts(host, drop_privileges + ["virtlockd"]), env=env, cwd=env["HOME"],
                                     stdin=subprocess.DEVNULL, stdout=output, stderr=output, start_new_session=True)
            _write_atomic(virtlockd_pid_path, "%d\n" % lockd.pid)
            socket_path = os.path.join(env["XDG_RUNTIME_DIR"], "libvirt", "virtlockd-sock")
            if not _wait_until(lambda: os.path.exists(socket_path), 10, 0.05):
                raise LabError("lab host %s: virtlockd did not create %s (see %s)"
                               % (host["name"], socket_path, os.path.join(directory, "log", "libvirtd.out")))
        process = subprocess.Popen(_in_own_uts(host, drop_privileges + ["libvirtd", "--listen"]), env=env,
                                   cwd=env["HOME"], stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                   start_new_session=True)
        output.close()
        _write_atomic(libvirtd_pid_path, "%d\n" % process.pid)
        started = True
    if not _runs(sshd_pid, "sshd"):
        holder = _listener(host["address"], SSH_PORT)
        if holder:
            raise LabError("lab host %s: ssh port %s:%d is already in use (%s) but not by this lab's sshd" %
                           (host["name"], host["address"], SSH_PORT, holder))
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        subprocess.run(_in_own_uts(host, ["/usr/sbin/sshd", "-f", os.path.join(directory, "ssh", "sshd_config"),
                                          "-E", os.path.join(directory, "log", "sshd.log")]),
                       check=True, start_new_session=True)
        started = True
    return started


def _in_own_uts(host: dict, command: list) -> list:
    """Run command in a UTS namespace of its own named after the host, so `hostname` in an SSH
    session and libvirt's getHostname() tell the lab hosts apart, as on real machines."""
    return ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', host["name"]] + command


def wait_host_ready(host: dict, timeout: float = 60) -> None:
    def ready():
        return (_port_open(host["address"], SSH_PORT) and _port_open(host["address"], LIBVIRT_PORT)
                and _libvirt_answers(host))
    if not _wait_until(ready, timeout, 0.1):
        raise LabError("lab host %s did not come up within %d s: see %s/log/libvirtd.out, libvirtd.log, sshd.log"
                       % (host["name"], timeout, host["dir"]))


def stop_host(host: dict, timeout: float = 15) -> list:
    """Kill everything of the host (like pulling the plug): its sshd with every session, its libvirtd,
    its guests. Returns what is still alive afterwards (should be nothing)."""
    sshd_pid = _read_pid(os.path.join(host["dir"], "ssh", "sshd.pid"))
    libvirtd_pid = _read_pid(os.path.join(host["dir"], "libvirtd.pid"))
    doomed = []
    if _runs(sshd_pid, "sshd"):
        doomed += _process_tree(sshd_pid)
    if _runs(libvirtd_pid, "libvirtd"):
        doomed += _process_tree(libvirtd_pid)
    uid = host.get("uid")
    if uid is None:
        with contextlib.suppress(KeyError):
            uid = pwd.getpwnam(host["user"]).pw_uid
    for _unused in range(3):  # sessions may fork while we kill; the user's processes are all this host's
        _kill(doomed)
        if uid is not None:
            _kill(_user_pids(uid))
        doomed = [pid for pid in doomed if _alive(pid)]

    def survivors():
        return [pid for pid in doomed if _alive(pid)] + (_user_pids(uid) if uid is not None else [])
    if not _wait_until(lambda: not survivors(), timeout):
        _kill(survivors())
        _wait_until(lambda: not survivors(), 5)
    for path in (os.path.join(host["dir"], "ssh", "sshd.pid"), os.path.join(host["dir"], "libvirtd.pid")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return survivors()


def _cmdline(pid: int) -> str:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def reboot_host(lab: dict, host: dict, down_seconds: float = REBOOT_DOWN_S) -> dict:
    """Reboot a lab host: everything on it dies (guests included), it gets a new boot id, its
    runtime directory is emptied, and its daemons start again."""
    with _host_lock(host):
        if powered_off(host):
            raise LabError("host %s is powered off: `poweron %s` first" % (host["name"], host["name"]))
        old_boot = _read_text(os.path.join(host["dir"], "boot_id"))
        survivors = stop_host(host)
        if survivors:
            raise LabError("could not stop host %s for its reboot: processes %s survive" % (host["name"], survivors))
        time.sleep(down_seconds)
        wait_while_reboot_held(host)
        new_boot = str(uuid.uuid4())
        _write_atomic(os.path.join(host["dir"], "boot_id"), new_boot + "\n")
        for marker in ("reboot-required", "reboot-request", "reboot-required.pkgs"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(host["dir"], "control", marker))
        start_host(lab, host)
    wait_host_ready(host)
    return {"host": host["name"], "old_boot_id": old_boot, "boot_id": new_boot}


def _control(host: dict, marker: str) -> str:
    return os.path.join(host["dir"], "control", marker)


def powered_off(host: dict) -> bool:
    return os.path.exists(_control(host, POWERED_OFF_MARKER))


def power_off_host(host: dict) -> dict:
    """Pull the plug and keep it out: everything of the host dies (daemons, sessions, guests'
    QEMU, its virtlockd and with it the leases it held), and it stays down - neither a requested
    reboot nor `up` starts it - until `poweron`."""
    with _host_lock(host):
        _write_atomic(_control(host, POWERED_OFF_MARKER), "%s\n" % time.time())
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_control(host, FROZEN_MARKER))
        survivors = stop_host(host)
    if survivors:
        raise LabError("could not power off host %s: processes %s survive" % (host["name"], survivors))
    return {"host": host["name"], "powered_off": True}


def power_on_host(lab: dict, host: dict) -> dict:
    """Start a powered-off host as after a boot: new boot id, empty runtime dir, daemons up."""
    with _host_lock(host):
        if not powered_off(host):
            return {"host": host["name"], "changed": False}
        _write_atomic(os.path.join(host["dir"], "boot_id"), str(uuid.uuid4()) + "\n")
        os.unlink(_control(host, POWERED_OFF_MARKER))
        start_host(lab, host)
    wait_host_ready(host)
    return {"host": host["name"], "changed": True, "boot_id": _read_text(os.path.join(host["dir"], "boot_id"))}


def _daemon_pids(host: dict) -> list:
    """The host's daemons and sessions, without its guests: its sshd with every session, and its
    user's processes other than QEMU (libvirtd, virtlockd)."""
    pids = []
    sshd_pid = _read_pid(os.path.join(host["dir"], "ssh", "sshd.pid"))
    if _runs(sshd_pid, "sshd"):
        pids += _process_tree(sshd_pid)
    guests = set(_user_pids(host["uid"], "qemu-system"))
    return pids + [pid for pid in _user_pids(host["uid"]) if pid not in guests and pid not in pids]


def freeze_host(host: dict) -> dict:
    """Alive but unreachable (the split-brain case): SIGSTOP the host's daemons. Its guests keep
    running and its virtlockd keeps their leases; libvirt and SSH accept connections (the kernel
    does) but never answer."""
    with _host_lock(host):
        if powered_off(host):
            raise LabError("host %s is powered off: nothing to freeze" % host["name"])
        _write_atomic(_control(host, FROZEN_MARKER), "%s\n" % time.time())
        pids = _daemon_pids(host)
        _kill(pids, signal.SIGSTOP)
    return {"host": host["name"], "frozen": sorted(pids)}


def thaw_host(host: dict) -> dict:
    with _host_lock(host):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_control(host, FROZEN_MARKER))
        pids = _daemon_pids(host)
        _kill(pids, signal.SIGCONT)
    return {"host": host["name"], "thawed": sorted(pids)}


def wait_while_reboot_held(host: dict, poll: float = 0.2) -> float:
    """A file <host dir>/control/reboot-hold keeps a rebooting host down until it is removed (a
    test lets the host come back once it has seen what it waited for), at most
    REBOOT_HOLD_LIMIT_S. Returns the seconds it was held."""
    began = time.monotonic()
    while os.path.exists(_control(host, "reboot-hold")) and time.monotonic() - began < REBOOT_HOLD_LIMIT_S:
        time.sleep(poll)
    return time.monotonic() - began


def reboot_down_seconds(host: dict) -> float:
    """How long a requested reboot keeps the host down: <host dir>/control/reboot-down-s when
    present (set on a running lab, e.g. by a test), else the host's lab_reboot_down_s."""
    override = _read_text(_control(host, "reboot-down-s"))
    try:
        return float(override) if override else float(host.get("reboot_down_s", REBOOT_DOWN_S))
    except ValueError:
        return REBOOT_DOWN_S


def _read_text(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# Guests
# ---------------------------------------------------------------------------------------------

def guest_xml(lab: dict, guest: dict, virt_type: str) -> str:
    cmdline = "console=ttyS0 quiet virtfleet.guest=%s virtfleet.workload=%s virtfleet.dirty_mib=%d" % (
        guest["name"], guest["workload"], guest["dirty_mib"])
    return """<domain type='{virt_type}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <description>virtfleet lab {lab} guest, home host {home}</description>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <!-- qemu64 without svm: host/max CPUs crash QEMU here, and a named model keeps guests migratable -->
  <cpu mode='custom' match='exact'>
    <model fallback='allow'>qemu64</model>
    <feature policy='disable' name='svm'/>
  </cpu>
  <!-- ACPI and APIC: without them the guest kernel ticks at HZ even when idle, costly under TCG -->
  <features>
    <acpi/>
    <apic/>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <!-- virtlockd's lockspace <storage>/.lockspace: one host at a time runs the guest -->
    <lease>
      <lockspace>{lockspace}</lockspace>
      <key>{name}</key>
      <target path='{storage}'/>
    </lease>
    <serial type='file'>
      <source path='{serial}' append='on'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
""".format(virt_type=virt_type, name=guest["name"], uuid=guest["uuid"], lab=lab["name"], home=guest["home"],
           memory=guest["memory_mib"], kernel=lab["image"]["kernel"], initrd=lab["image"]["initrd"],
           cmdline=cmdline, serial=guest["serial_log"],
           storage=lab["clusters"][guest["cluster"]]["storage"], lockspace=LOCKSPACE_DIR_NAME)


def _virt_type(lab: dict, host: dict) -> str:
    return "kvm" if lab["image"]["kvm_boots_linux"] and host["kvm"] else "qemu"


def _connect(host: dict):
    """The collection's opener: a daemon that accepts but never answers (a host frozen or
    half-way through a reboot) fails the command in bounded time instead of hanging it."""
    try:
        return open_connection(lab_uri(host))
    except LibvirtHostError as error:
        raise LabError("lab host %s: %s" % (host["name"], error)) from error


def locate_guests(lab: dict) -> dict:
    """guest -> {host, state} for every lab guest defined on any reachable lab host."""
    found = {}
    for host in lab["hosts"].values():
        try:
            conn = _connect(host)
        except Exception:  # noqa: BLE001 - a host that is down holds no running guest
            continue
        try:
            for dom in conn.listAllDomains(0):
                name = dom.name()
                if name not in lab["guests"]:
                    continue
                active = dom.isActive() == 1
                # A running copy wins over an inactive definition left elsewhere.
                if active or name not in found:
                    found[name] = {"host": host["name"], "running": active}
        finally:
            conn.close()
    return found


def ensure_guests(lab: dict) -> list:
    """Start every guest that runs nowhere (on the host that holds its definition, else at home).

    Returns [(guest, start time)]. Hosts start their guests in parallel (QEMU start-up is slow)."""
    located = locate_guests(lab)
    per_host: dict[str, list] = {}
    for guest in lab["guests"].values():
        where = located.get(guest["name"])
        if where and where["running"]:
            continue
        target = where["host"] if where else guest["home"]
        if powered_off(lab["hosts"][target]):
            continue  # its host is down on purpose: the guest waits for poweron (or a recovery)
        per_host.setdefault(target, []).append(guest)

    def start_on(host_name):
        host = lab["hosts"][host_name]
        started = []
        conn = _connect(host)
        try:
            for guest in per_host[host_name]:
                dom = conn.defineXML(guest_xml(lab, guest, _virt_type(lab, host)))
                since = time.time()
                dom.create()
                started.append((guest["name"], since))
        finally:
            conn.close()
        return started
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(per_host))) as pool:
        return [item for started in pool.map(start_on, sorted(per_host)) for item in started]


# ---------------------------------------------------------------------------------------------
# Heartbeats
# ---------------------------------------------------------------------------------------------

def heartbeat_path(lab: dict, guest: str) -> str:
    return os.path.join(lab["state_dir"], "heartbeats", "%s.log" % guest)


def read_heartbeats(lab: dict, guest: str, since: float = 0.0) -> list:
    """[(host_time, seq, guest_boot)] as the agent timestamped them."""
    records = []
    with contextlib.suppress(FileNotFoundError), open(heartbeat_path(lab, guest)) as handle:
        for line in handle:
            parts = line.split()
            if len(parts) == 3 and float(parts[0]) >= since:
                records.append((float(parts[0]), int(parts[1]), parts[2]))
    return records


class HeartbeatFollower:
    """Follows the serial logs of the lab's guests and timestamps each heartbeat line on arrival.

    A serial log is followed by inode: a guest removed and added again under the same name has a
    new log, which is read from its start."""

    def __init__(self, lab: dict):
        self.lab = lab
        self.positions: dict[str, list] = {}  # guest -> [inode, offset]
        self.partial: dict[str, bytes] = {}
        self.outputs: dict[str, object] = {}

    def _offsets_path(self) -> str:
        return os.path.join(self.lab["state_dir"], "heartbeats", ".offsets.json")

    def resume(self):
        """Continue where the previous agent stopped (it saved its positions), so replacing the
        agent loses no heartbeat line; without them, old lines have no host time: skip them."""
        try:
            with open(self._offsets_path()) as handle:
                saved = json.load(handle)
        except (OSError, ValueError):
            saved = {}
        for guest in self.lab["guests"].values():
            with contextlib.suppress(OSError):
                info = os.stat(guest["serial_log"])
                position = saved.get(guest["name"])
                if not (isinstance(position, list) and position[0] == info.st_ino):
                    position = [info.st_ino, info.st_size]
                self.positions[guest["name"]] = position

    def save(self):
        _write_atomic(self._offsets_path(), json.dumps(self.positions))

    def _output(self, name: str):
        output = self.outputs.get(name)
        if output is not None and os.fstat(output.fileno()).st_nlink == 0:  # removed (guest-remove)
            output.close()
            output = None
        if output is None:
            output = self.outputs[name] = open(heartbeat_path(self.lab, name), "a", buffering=1)
        return output

    def poll(self, now: float) -> None:
        for guest in list(self.lab["guests"].values()):
            name = guest["name"]
            try:
                info = os.stat(guest["serial_log"])
            except OSError:
                continue
            inode, offset = self.positions.get(name, (info.st_ino, 0))
            if inode != info.st_ino or info.st_size < offset:  # a new or truncated log: from its start
                offset, self.partial[name] = 0, b""
            if info.st_size == offset:
                self.positions[name] = [info.st_ino, offset]
                continue
            with open(guest["serial_log"], "rb") as handle:
                handle.seek(offset)
                data = handle.read(info.st_size - offset)
            self.positions[name] = [info.st_ino, offset + len(data)]
            lines = (self.partial.get(name, b"") + data).split(b"\n")
            self.partial[name] = lines.pop()
            records = []
            for line in lines:
                parts = line.decode(errors="replace").strip().split()
                if len(parts) == 4 and parts[0] == HEARTBEAT_PREFIX and parts[1] == name and parts[3].isdigit():
                    records.append("%.3f %s %s\n" % (now, parts[3], parts[2]))
            if records:
                self._output(name).write("".join(records))


def run_agent(lab: dict) -> None:
    """The lab's root agent: heartbeat timestamps + reboots requested from inside hosts."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    follower = HeartbeatFollower(lab)
    follower.resume()
    rebooting: dict[str, threading.Thread] = {}

    def reboot_later(host):
        try:
            time.sleep(REBOOT_GRACE_S)
            result = reboot_host(lab, host, down_seconds=reboot_down_seconds(host))
            log("host %s rebooted on request: boot id %s" % (host["name"], result["boot_id"]))
        except Exception as error:  # noqa: BLE001 - the agent must outlive one failed reboot
            log("host %s: requested reboot failed: %s" % (host["name"], error))

    lab_json = os.path.join(lab["state_dir"], "lab.json")
    lab_json_mtime = _mtime(lab_json)
    next_request_check = 0.0
    while not stop.is_set():
        now = time.time()
        follower.poll(now)
        if now >= next_request_check:
            next_request_check = now + 0.2
            if _mtime(lab_json) != lab_json_mtime:  # guests added or removed (guest-add, guest-remove, up)
                lab_json_mtime = _mtime(lab_json)
                follower.lab["guests"] = (saved_lab(lab["state_dir"]) or lab)["guests"]
            for host in lab["hosts"].values():
                request = os.path.join(host["dir"], "control", "reboot-request")
                if os.path.exists(request) and powered_off(host):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(request)  # a dead host asks nothing: a request left behind is void
                    continue
                if os.path.exists(request) and not (rebooting.get(host["name"]) and
                                                    rebooting[host["name"]].is_alive()):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(request)
                    thread = threading.Thread(target=reboot_later, args=(host,), daemon=True)
                    rebooting[host["name"]] = thread
                    thread.start()
        stop.wait(HEARTBEAT_POLL_S)
    follower.poll(time.time())
    follower.save()


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _program_digest() -> str:
    with open(os.path.abspath(__file__), "rb") as handle:
        return uuid.uuid5(LAB_UUID_NAMESPACE, handle.read().decode(errors="replace")).hex[:12]


def ensure_agent(lab: dict) -> bool:
    """Start the agent unless it runs; replace it when this program changed since it started."""
    pid_path = os.path.join(lab["state_dir"], "agent.pid")
    pid = _read_pid(pid_path)
    running = _alive(pid) and "virtfleet_lab" in _cmdline(pid)
    if running and _read_text(pid_path).split()[1:] == [_program_digest()]:
        return False
    if running:
        _kill([pid], signal.SIGTERM)
        if not _wait_until(lambda: not _alive(pid), 10):
            _kill([pid])
    output = open(os.path.join(lab["state_dir"], "log", "agent.log"), "ab")
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "agent", "--state-dir",
                                lab["state_dir"]], stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                               start_new_session=True, cwd="/")
    output.close()
    _write_atomic(pid_path, "%d %s\n" % (process.pid, _program_digest()))
    return True


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab creates users and runs sshd: run it as root")


def check_prerequisites(lab: dict) -> list:
    missing = sorted({package for program, package in REQUIRED_PROGRAMS.items()
                      if not shutil.which(program) and not os.path.exists("/usr/sbin/" + program)})
    if not os.path.exists(BUSYBOX):
        missing.append("busybox-static")
    if missing:
        raise LabError("the lab needs Debian packages that are not installed: %s. Run `make deps` "
                       "(scripts/install-deps installs the bindep.txt lab packages)" % " ".join(missing))
    if not HAS_LIBVIRT:
        raise LabError("%s cannot import libvirt (libvirt-python): run the lab with the project's "
                       ".venv/bin/python (`make deps` creates it)" % sys.executable)
    notes = []
    if not os.path.exists("/dev/kvm"):
        notes.append("no /dev/kvm: every guest runs under TCG (software emulation)")
    return notes


def cmd_image(lab: dict, _args) -> dict:
    image = build_image(lab["image_dir"])
    return {"changed": image["changed"], "image": image}


def cmd_up(lab: dict, args) -> dict:
    began = time.monotonic()
    _require_root()
    notes = check_prerequisites(lab)
    other = saved_lab(lab["state_dir"])
    image = build_image(lab["image_dir"])
    os.makedirs(lab["state_dir"], exist_ok=True)
    with open(os.path.join(lab["state_dir"], ".lab-lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if other and set(other["hosts"]) - set(lab["hosts"]):
            raise LabError("the lab state %s holds hosts no longer in the topology (%s): bring the lab down "
                           "first" % (lab["state_dir"], ", ".join(sorted(set(other["hosts"]) - set(lab["hosts"])))))
        for name, guest in ((other or {}).get("guests") or {}).items():
            if guest.get("extra") and guest["home"] in lab["hosts"] and name not in lab["guests"]:
                lab["guests"][name] = guest
        for host in lab["hosts"].values():
            _check_ports_free(host)
        prepare(lab, image)
        changed = ensure_agent(lab)
        started_hosts = []
        down = [host["name"] for host in lab["hosts"].values() if powered_off(host)]
        for host in lab["hosts"].values():
            with _host_lock(host):
                if host["name"] not in down and start_host(lab, host):
                    started_hosts.append(host["name"])
        for host in lab["hosts"].values():
            if host["name"] not in down:
                wait_host_ready(host)
        started_guests = ensure_guests(lab)
        for name, since in started_guests:
            _wait_first_heartbeat(lab, name, since)
    changed = changed or bool(started_hosts or started_guests)
    result = status(lab)
    if down:
        notes.append("powered off (left down until poweron): %s" % ", ".join(down))
    result.update(changed=changed, started_hosts=started_hosts, started_guests=[g for g, _unused in started_guests],
                  seconds=round(time.monotonic() - began, 1), notes=notes)
    return result


def cmd_down(lab: dict, _args) -> dict:
    """Stop and remove everything of the lab, then check that nothing is left."""
    _require_root()
    recorded = saved_lab(lab["state_dir"]) or {}
    # The recorded lab knows what was created even if the topology changed since.
    hosts = {**lab["hosts"], **recorded.get("hosts", {})}
    clusters = {**lab["clusters"], **recorded.get("clusters", {})}
    changed = False
    agent_pid = _read_pid(os.path.join(lab["state_dir"], "agent.pid"))
    if _alive(agent_pid) and "virtfleet_lab" in _cmdline(agent_pid):
        _kill([agent_pid], signal.SIGTERM)
        if not _wait_until(lambda: not _alive(agent_pid), 5):
            _kill([agent_pid])
        changed = True
    problems = []
    lab_uids = set()
    for host in hosts.values():
        try:
            entry = pwd.getpwnam(host["user"])
        except KeyError:
            entry = None
        host = dict(host, uid=entry.pw_uid if entry else None)
        if entry:
            lab_uids.add(entry.pw_uid)
        if entry or os.path.isdir(host["dir"]):
            survivors = stop_host(host)
            if survivors:
                problems.append("host %s: processes %s survive" % (host["name"], survivors))
            changed = True
        if entry:
            if os.path.exists("/dev/kvm"):
                subprocess.run(["setfacl", "-x", "u:%d" % entry.pw_uid, "/dev/kvm"], check=False,
                               stderr=subprocess.DEVNULL)
            subprocess.run(["userdel", host["user"]], check=False, stderr=subprocess.DEVNULL)
            with contextlib.suppress(KeyError):
                pwd.getpwnam(host["user"])
                problems.append("user %s could not be removed" % host["user"])
    for cluster in clusters.values():
        with contextlib.suppress(KeyError):
            grp.getgrnam(cluster["group"])
            subprocess.run(["groupdel", cluster["group"]], check=False, stderr=subprocess.DEVNULL)
            changed = True
        # Storage outside the state dir: remove what the lab put there (and the dir if then empty).
        for guest in list(lab["guests"].values()) + list(recorded.get("guests", {}).values()):
            if guest["cluster"] == cluster["name"]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(guest["serial_log"])
        shutil.rmtree(lockspace_dir(cluster), ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(cluster["storage"])
    with contextlib.suppress(FileNotFoundError):
        os.unlink(ssh_client_config_path(lab))
        changed = True
    if os.path.isdir(lab["state_dir"]):
        shutil.rmtree(lab["state_dir"])
        changed = True
    with contextlib.suppress(OSError):  # the common parent, once no lab is left in it
        os.rmdir(os.path.dirname(lab["state_dir"]))
    _drop_empty_kvm_acl()
    # Nothing of the lab may be left: no process of its users, none started from its state dir
    # (its sshds). Listeners of other programs on the same addresses are not the lab's business.
    leftovers = ["%d (%s)" % (pid, cmd[:80]) for pid, _ppid, uid, state, cmd in _processes()
                 if state != "Z" and (uid in lab_uids or lab["state_dir"] + "/" in cmd)]
    if leftovers:
        problems.append("processes left: %s" % ", ".join(leftovers))
    if problems:
        raise LabError("lab %s is down but not clean: %s" % (lab["name"], "; ".join(problems)))
    return {"changed": changed, "lab": lab["name"], "state_dir": lab["state_dir"], "clean": True}


def _drop_empty_kvm_acl() -> None:
    """Once no lab user has an entry left, give /dev/kvm back its plain permissions (no ACL)."""
    if not os.path.exists("/dev/kvm"):
        return
    acl = subprocess.run(["getfacl", "-cp", "/dev/kvm"], capture_output=True, text=True, check=False).stdout
    if not re.search(r"^(user|group):[^:]+:", acl, re.M):
        subprocess.run(["setfacl", "-b", "/dev/kvm"], check=False)


def status(lab: dict) -> dict:
    recorded = saved_lab(lab["state_dir"])
    if recorded is None:
        return {"lab": lab["name"], "state_dir": lab["state_dir"], "up": False, "hosts": {}, "guests": {}}
    located = locate_guests(recorded)
    hosts = {}
    for name, host in recorded["hosts"].items():
        hosts[name] = {
            "address": host["address"],
            "cluster": host["cluster"],
            "libvirt_uri": host["libvirt_uri"],
            "user": host["user"],
            "accelerator": "kvm" if _virt_type(recorded, host) == "kvm" else "tcg",
            "kvm_device": host["kvm"] and os.path.exists("/dev/kvm"),
            "libvirtd_running": _runs(_read_pid(os.path.join(host["dir"], "libvirtd.pid")), "libvirtd"),
            "sshd_running": _runs(_read_pid(os.path.join(host["dir"], "ssh", "sshd.pid")), "sshd"),
            "boot_id": _read_text(os.path.join(host["dir"], "boot_id")),
            "pending_updates": _read_text(os.path.join(host["dir"], "control", "pending-updates")).splitlines(),
            "reboot_required": os.path.exists(os.path.join(host["dir"], "control", "reboot-required")),
            "powered_off": powered_off(host),
            "frozen": os.path.exists(_control(host, FROZEN_MARKER)),
        }
    guests = {}
    now = time.time()
    for name, guest in recorded["guests"].items():
        where = located.get(name, {})
        beats = _last_heartbeat(recorded, name)
        guests[name] = {"home": guest["home"], "host": where.get("host"), "running": where.get("running", False),
                        "last_heartbeat_age_s": round(now - beats[0], 2) if beats else None,
                        "last_seq": beats[1] if beats else None, "serial_log": guest["serial_log"]}
    agent_pid = _read_pid(os.path.join(recorded["state_dir"], "agent.pid"))
    accelerators = sorted({h["accelerator"] for h in hosts.values()})
    return {"lab": recorded["name"], "state_dir": recorded["state_dir"], "up": True,
            "inventory": os.path.join(recorded["state_dir"], "inventory.yml"),
            "ssh_key": os.path.join(recorded["state_dir"], "ssh", "id_ed25519"),
            "accelerator": "/".join(accelerators), "kvm_probe": recorded["image"]["kvm_probe"],
            "agent_running": _alive(agent_pid), "hosts": hosts, "guests": guests,
            "clusters": {c["name"]: c["hosts"] for c in recorded["clusters"].values()}}


def _last_heartbeat(lab: dict, guest: str):
    path = heartbeat_path(lab, guest)
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - 200))
            lines = handle.read().decode().strip().splitlines()
    except OSError:
        return None
    parts = lines[-1].split() if lines else []
    return (float(parts[0]), int(parts[1])) if len(parts) == 3 else None


def cmd_status(lab: dict, _args) -> dict:
    return status(lab)


def _recorded_host(lab: dict, name: str) -> tuple:
    recorded = saved_lab(lab["state_dir"])
    if recorded is None:
        raise LabError("lab %s is not up (no %s/lab.json): run lab up first" % (lab["name"], lab["state_dir"]))
    if name not in recorded["hosts"]:
        raise LabError("lab %s has no host %r; its hosts: %s" % (lab["name"], name, ", ".join(recorded["hosts"])))
    return recorded, recorded["hosts"][name]


def cmd_reboot(lab: dict, args) -> dict:
    _require_root()
    recorded, host = _recorded_host(lab, args.host)
    result = reboot_host(recorded, host)
    return {"changed": True, **result}


def cmd_poweroff(lab: dict, args) -> dict:
    _require_root()
    _recorded, host = _recorded_host(lab, args.host)
    return {"changed": True, **power_off_host(host)}


def cmd_poweron(lab: dict, args) -> dict:
    _require_root()
    recorded, host = _recorded_host(lab, args.host)
    return power_on_host(recorded, host)


def cmd_freeze(lab: dict, args) -> dict:
    _require_root()
    _recorded, host = _recorded_host(lab, args.host)
    return {"changed": True, **freeze_host(host)}


def cmd_thaw(lab: dict, args) -> dict:
    _require_root()
    _recorded, host = _recorded_host(lab, args.host)
    return {"changed": True, **thaw_host(host)}


def cmd_patch(lab: dict, args) -> dict:
    """Install the host's (simulated) pending updates: clears pending-updates, sets reboot-required."""
    _recorded, host = _recorded_host(lab, args.host)
    control = os.path.join(host["dir"], "control")
    pending = _read_text(os.path.join(control, "pending-updates")).splitlines()
    if not pending:
        return {"changed": False, "host": host["name"], "patched": []}
    _write_atomic(os.path.join(control, "reboot-required"), "*** System restart required ***\n")
    os.unlink(os.path.join(control, "pending-updates"))
    return {"changed": True, "host": host["name"], "patched": pending, "reboot_required": True}


def _wait_first_heartbeat(lab: dict, name: str, since: float) -> None:
    deadline = time.time() + GUEST_BOOT_TIMEOUT_S
    while not read_heartbeats(lab, name, since):
        if time.time() > deadline:
            raise LabError("guest %s started but printed no heartbeat within %d s: see %s and the QEMU log "
                           "under its host's cache dir"
                           % (name, GUEST_BOOT_TIMEOUT_S, lab["guests"][name]["serial_log"]))
        time.sleep(0.1)


def cmd_guest_add(lab: dict, args) -> dict:
    """Add a guest to a running lab (e.g. one with the dirty workload); kept until guest-remove or down."""
    _require_root()
    recorded, host = _recorded_host(lab, args.host)
    if args.name in recorded["guests"]:
        raise LabError("lab %s already has a guest %s" % (lab["name"], args.name))
    cluster = recorded["clusters"][host["cluster"]]
    guest = _guest_record(recorded, args.name, host["name"], cluster["name"], cluster["storage"], args.memory_mib,
                          args.workload, args.dirty_mib, extra=True)
    _create_serial_log(recorded, guest)
    _create_lease(recorded, guest)
    recorded["guests"][guest["name"]] = guest
    _write_atomic(os.path.join(recorded["state_dir"], "lab.json"), json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    conn = _connect(host)
    try:
        dom = conn.defineXML(guest_xml(recorded, guest, _virt_type(recorded, host)))
        since = time.time()
        dom.create()
    finally:
        conn.close()
    _wait_first_heartbeat(recorded, guest["name"], since)
    return {"changed": True, "guest": guest}


def cmd_guest_remove(lab: dict, args) -> dict:
    """Destroy and undefine a guest wherever it is, and forget it (serial log and heartbeats too)."""
    _require_root()
    recorded = saved_lab(lab["state_dir"])
    if recorded is None or args.name not in recorded["guests"]:
        return {"changed": False, "guest": args.name}
    located = locate_guests(recorded).get(args.name)
    if located:
        conn = _connect(recorded["hosts"][located["host"]])
        try:
            dom = conn.lookupByName(args.name)
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        finally:
            conn.close()
    guest = recorded["guests"].pop(args.name)
    _write_atomic(os.path.join(recorded["state_dir"], "lab.json"), json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    for path in (guest["serial_log"], heartbeat_path(recorded, args.name)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    _remove_lease(recorded, guest)
    return {"changed": True, "guest": args.name}


def _print_human(command: str, result: dict) -> None:
    if command == "status" or command == "up":
        if not result.get("up"):
            print("lab %s is down (state dir %s)" % (result["lab"], result["state_dir"]))
            return
        print("lab %s: state %s, accelerator %s (%s), agent %s" % (
            result["lab"], result["state_dir"], result["accelerator"], result["kvm_probe"],
            "running" if result["agent_running"] else "NOT running"))
        for name, host in result["hosts"].items():
            print("  host %-8s %-12s %-8s libvirtd=%s sshd=%s %s pending=%d reboot_required=%s uri=%s" % (
                name, host["address"], host["cluster"], "up" if host["libvirtd_running"] else "DOWN",
                "up" if host["sshd_running"] else "DOWN", host["accelerator"], len(host["pending_updates"]),
                host["reboot_required"], host["libvirt_uri"]))
        for name, guest in result["guests"].items():
            print("  guest %-7s on %-8s running=%s last heartbeat %ss ago (seq %s)" % (
                name, guest["host"] or "nowhere", guest["running"], guest["last_heartbeat_age_s"], guest["last_seq"]))
        print("  inventory (static): %s" % result["inventory"])
        if command == "up":
            print("up in %.1f s; started hosts: %s; started guests: %s" % (
                result["seconds"], ", ".join(result["started_hosts"]) or "none",
                ", ".join(result["started_guests"]) or "none"))
    else:
        print(json.dumps(result, indent=2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    default_topology = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                    "inventories", "lab", "topology.yml")
    for name, help_text in (("image", "build the cached guest kernel + initramfs"),
                            ("up", "bring the lab up (idempotent)"),
                            ("down", "stop the lab and remove all it created"),
                            ("status", "show hosts, guests, heartbeats"),
                            ("reboot", "reboot one lab host (waits until it is back)"),
                            ("patch", "install one host's simulated pending updates (sets reboot-required)"),
                            ("poweroff", "kill one host with its guests and keep it down until poweron"),
                            ("poweron", "boot a powered-off host again"),
                            ("freeze", "stop one host's daemons (SIGSTOP): alive, guests running, unreachable"),
                            ("thaw", "resume a frozen host's daemons (SIGCONT)"),
                            ("guest-add", "add a guest to the running lab (e.g. --workload dirty)"),
                            ("guest-remove", "destroy, undefine and forget a guest")):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--json", action="store_true", help="print one JSON document")
        command.add_argument("--topology", default=os.path.normpath(default_topology),
                             help="lab topology file (default: inventories/lab/topology.yml)")
        if name in ("reboot", "patch", "poweroff", "poweron", "freeze", "thaw"):
            command.add_argument("host")
        if name in ("guest-add", "guest-remove"):
            command.add_argument("name", help="guest name")
        if name == "guest-add":
            command.add_argument("--host", required=True, help="lab host that starts it")
            command.add_argument("--workload", choices=("heartbeat", "dirty"), default="heartbeat",
                                 help="dirty: also rewrite --dirty-mib MiB of memory in a loop")
            command.add_argument("--memory-mib", type=int, default=128)
            command.add_argument("--dirty-mib", type=int, default=48)
    agent = sub.add_parser("agent", help=argparse.SUPPRESS)
    agent.add_argument("--state-dir", required=True)
    agent.set_defaults(json=False)
    args = parser.parse_args(argv)
    try:
        if args.command == "agent":
            lab = saved_lab(args.state_dir)
            if lab is None:
                raise LabError("no lab recorded in %s" % args.state_dir)
            run_agent(lab)
            return 0
        lab = load_lab(args.topology)
        result = globals()["cmd_" + args.command.replace("-", "_")](lab, args)
    except LabError as error:
        if args.json:
            print(json.dumps({"failed": True, "msg": str(error)}))
        print("virtfleet-lab: error: %s" % error, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        _print_human(args.command, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
