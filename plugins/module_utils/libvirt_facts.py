# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reads hypervisor and guest facts from a libvirt connection.

The XML parsers (`parse_capabilities`, `parse_domain_capabilities`, `parse_domain`) are pure
and tested on recorded documents; `gather_hypervisor_facts` is the glue that asks a daemon.
`read_hosts` reads several hosts at once (the drain's cluster view and cluster_homogeneity both
use it). `LibvirtCpuOracle` lets the pure `homogeneity` module use libvirt's own CPU baseline
and comparison (`baselineHypervisorCPU` / `compareHypervisorCPU`).

Connections come from `libvirt_connection.open_connection`; every URI shown goes through
`redact_uri`.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.virtfleet.cluster.plugins.module_utils import canary
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
    LibvirtHostError, libvirt, libvirt_message, open_connection, redact_uri, state_name)


def version_string(number: int) -> str:
    """libvirt encodes versions as major * 1,000,000 + minor * 1,000 + release."""
    return "%d.%d.%d" % (number // 1000000, (number // 1000) % 1000, number % 1000)


# --- pure XML parsing -------------------------------------------------------------------------

def _text(node, path, default=None):
    found = node.find(path) if node is not None else None
    return found.text.strip() if found is not None and found.text else default


def _kib_to_mib(value: Optional[str], unit: str = "KiB") -> Optional[int]:
    if value is None:
        return None
    factors = {"b": 1, "bytes": 1, "kb": 1000, "k": 1024, "kib": 1024, "mb": 10 ** 6, "m": 1024 ** 2,
               "mib": 1024 ** 2, "gb": 10 ** 9, "g": 1024 ** 3, "gib": 1024 ** 3, "tb": 10 ** 12,
               "t": 1024 ** 4, "tib": 1024 ** 4}
    return int(int(value) * factors.get(unit.lower(), 1024) // (1024 ** 2))


def parse_capabilities(xml: str) -> dict:
    """Host UUID, architecture, host CPU (as the capabilities XML describes it) and machine types.

    machine_types: domain type -> sorted machine names (aliases like `pc` and `q35` included),
    for guests of the host's own architecture.
    """
    root = ET.fromstring(xml)
    host = root.find("host")
    cpu = host.find("cpu") if host is not None else None
    arch = _text(cpu, "arch")
    machine_types: Dict[str, set] = {}
    for guest in root.findall("guest"):
        arch_node = guest.find("arch")
        if arch_node is None or arch_node.get("name") != arch:
            continue
        common = {m.text.strip() for m in arch_node.findall("machine") if m.text}
        for domain in arch_node.findall("domain"):
            names = set(common) | {m.text.strip() for m in domain.findall("machine") if m.text}
            machine_types.setdefault(domain.get("type"), set()).update(names)
    return {
        "host_uuid": _text(host, "uuid"),
        "arch": arch,
        "host_cpu": {
            "model": _text(cpu, "model"),
            "vendor": _text(cpu, "vendor"),
            "features": sorted(f.get("name") for f in cpu.findall("feature")) if cpu is not None else [],
        },
        "machine_types": {dom: sorted(names) for dom, names in machine_types.items()},
    }


def host_model_cpu_xml(model: Optional[str], vendor: Optional[str], features: Iterable[tuple]) -> str:
    """A `<cpu>` document that libvirt's baseline/compare APIs accept, from host-model data.

    features: (policy, name) pairs as the domain capabilities list them. A guest-style CPU
    (mode/match) keeps the `disable` policies; libvirt then refuses an `<arch>` element, the
    architecture goes to the API call instead.
    """
    cpu = ET.Element("cpu", {"mode": "custom", "match": "exact"})
    if model:
        ET.SubElement(cpu, "model", {"fallback": "forbid"}).text = model
    if vendor:
        ET.SubElement(cpu, "vendor").text = vendor
    for policy, name in features:
        ET.SubElement(cpu, "feature", {"policy": policy, "name": name})
    return ET.tostring(cpu, encoding="unicode")


def parse_domain_capabilities(xml: str) -> dict:
    """The host-model CPU of a domain-capabilities document (what libvirt's host-model gives a
    guest on this host), plus virttype, arch, default machine and usable named models."""
    root = ET.fromstring(xml)
    arch = _text(root, "arch")
    host_model = None
    usable_models = []
    for mode in root.findall("cpu/mode"):
        if mode.get("name") == "host-model" and mode.get("supported") == "yes":
            features = [(f.get("policy", "require"), f.get("name")) for f in mode.findall("feature")]
            model = _text(mode, "model")
            vendor = _text(mode, "vendor")
            host_model = {
                "model": model,
                "vendor": vendor,
                "features": sorted(name for policy, name in features if policy == "require"),
                "disabled_features": sorted(name for policy, name in features if policy == "disable"),
                "xml": host_model_cpu_xml(model, vendor, features),
            }
        elif mode.get("name") == "custom":
            usable_models = sorted(m.text.strip() for m in mode.findall("model")
                                   if m.get("usable") == "yes" and m.text)
    return {
        "virttype": _text(root, "domain"),
        "arch": arch,
        "machine": _text(root, "machine"),
        "emulator": _text(root, "path"),
        "host_model": host_model,
        "usable_models": usable_models,
    }


def _is_under(path: str, directory: str) -> bool:
    path = os.path.normpath(path)
    directory = os.path.normpath(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def parse_domain(xml: str, shared_storage_path: Optional[str] = None) -> dict:
    """Guest facts from its XML: type, memory, vCPUs, CPU mode/model, disks and what stops it
    from live-migrating.

    A disk is shared when it is a network disk (rbd, iscsi, nbd, ...) or its path lies under
    `shared_storage_path`; local otherwise; unknown (None) when no shared path is given.
    """
    root = ET.fromstring(xml)
    memory = root.find("currentMemory")
    if memory is None:
        memory = root.find("memory")
    max_memory = root.find("memory")
    vcpu = root.find("vcpu")
    vcpus = int(vcpu.get("current") or vcpu.text) if vcpu is not None else None
    cpu = root.find("cpu")
    disks = []
    for disk in root.findall("devices/disk"):
        source = disk.find("source")
        disk_type = disk.get("type")
        path = None
        if source is not None:
            path = (source.get("file") or source.get("dev") or source.get("dir")
                    or source.get("name") or source.get("volume"))
        if path is None and disk_type != "network":
            continue  # an empty CD-ROM drive: nothing to find on the destination
        if disk_type == "network":
            shared = True
        elif shared_storage_path:
            shared = _is_under(path, shared_storage_path)
        else:
            shared = None
        disks.append({
            "target": disk.find("target").get("dev") if disk.find("target") is not None else None,
            "device": disk.get("device", "disk"),
            "type": disk_type,
            "path": path if disk_type != "network" else "%s:%s" % (source.get("protocol"), path),
            "readonly": disk.find("readonly") is not None,
            "shared": shared,
        })
    blockers = []
    hostdevs = root.findall("devices/hostdev")
    if hostdevs:
        blockers.append("host device passthrough (%d hostdev)" % len(hostdevs))
    if root.find("devices/filesystem") is not None:
        blockers.append("host directory shared into the guest (filesystem passthrough)")
    notes = []
    local = [d["path"] for d in disks if d["shared"] is False]
    if local:
        notes.append("local disks need block migration: %s" % ", ".join(local))
    cpu_mode = cpu.get("mode", "custom") if cpu is not None else None
    # A custom CPU model is the one kind a destination can be asked about beforehand
    # (compareHypervisorCPU); host-model/host-passthrough depend on where the guest started.
    cpu_xml = (ET.tostring(cpu, encoding="unicode").strip()
               if cpu is not None and cpu_mode == "custom" and cpu.find("model") is not None else None)
    os_type = root.find("os/type")
    if cpu_mode == "host-passthrough":
        notes.append("host-passthrough CPU: only migrates to hosts with an identical CPU")
    return {
        "name": _text(root, "name"),
        "uuid": _text(root, "uuid"),
        "domain_type": root.get("type"),
        "memory_mib": _kib_to_mib(memory.text.strip(), memory.get("unit", "KiB")) if memory is not None else None,
        "max_memory_mib": (_kib_to_mib(max_memory.text.strip(), max_memory.get("unit", "KiB"))
                           if max_memory is not None else None),
        "vcpus": vcpus,
        "arch": os_type.get("arch") if os_type is not None else None,
        "machine": os_type.get("machine") if os_type is not None else None,
        "cpu_mode": cpu_mode,
        "cpu_model": _text(cpu, "model"),
        "cpu_xml": cpu_xml,
        "disks": disks,
        "local_disks": bool(local),
        "migration_blockers": blockers,
        "migration_notes": notes,
        "movable": not blockers,
        # The collection's own canary (module_utils/canary): never a customer guest.
        "owned_canary": canary.xml_is_canary(root),
    }


def parse_storage_pool(xml: str) -> dict:
    root = ET.fromstring(xml)
    return {"name": _text(root, "name"), "type": root.get("type"), "path": _text(root, "target/path")}


# --- gathering --------------------------------------------------------------------------------

def reported_hypervisor(driver: str, kvm_usable: bool) -> str:
    """The hypervisor name the topology would use for what libvirt reports."""
    driver = (driver or "").lower()
    if driver == "qemu":
        return "kvm" if kvm_usable else "qemu"
    if driver in ("xen", "libxl"):
        return "xen"
    return driver


def _domain_capabilities(conn, arch, virttype):
    try:
        return conn.getDomainCapabilities(None, arch, None, virttype, 0), None
    except libvirt.libvirtError as exc:
        return None, str(exc)


def gather_hypervisor_facts(uri: str, shared_storage_path: Optional[str] = None,
                            username: Optional[str] = None, password: Optional[str] = None,
                            conn=None, include_guests: bool = True) -> dict:
    """Facts of the host behind `uri` (see the hypervisor_facts module's RETURN for the keys).

    Pass an open `conn` to reuse it; otherwise one is opened and closed here.
    """
    own = conn is None
    if own:
        conn = open_connection(uri, username, password)
    shown = redact_uri(uri)
    try:
        try:
            return _gather(conn, shown, shared_storage_path, include_guests)
        except libvirt.libvirtError as exc:
            raise LibvirtHostError("reading facts from %s failed: %s" % (shown, exc))
    finally:
        if own:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass


def _gather(conn, shown_uri, shared_storage_path, include_guests):
    driver = conn.getType()
    caps = parse_capabilities(conn.getCapabilities())
    arch = caps["arch"]
    node = conn.getInfo()  # [model, memory MiB, cpus, MHz, nodes, sockets, cores, threads]
    facts = {
        "uri": shown_uri,
        "hostname": conn.getHostname(),
        "driver": driver,
        "hypervisor_version": version_string(conn.getVersion()),
        "libvirt_version": version_string(conn.getLibVersion()),
        "host_uuid": caps["host_uuid"],
        "arch": arch,
        "host_cpu": caps["host_cpu"],
        "memory_total_mib": int(node[1]),
        "memory_free_mib": int(conn.getFreeMemory() // (1024 * 1024)),
        "cpus": int(node[2]),
        "machine_types_by_domain": caps["machine_types"],
    }

    kvm_usable = False
    kvm_error = None
    cpu = None
    if driver == "QEMU":
        kvm_caps, kvm_error = _domain_capabilities(conn, arch, "kvm")
        kvm_usable = kvm_caps is not None
        # host-model is what a guest of the kind this host runs would get: KVM's view of the
        # physical CPU when KVM works, else what TCG emulates.
        domcaps_xml = kvm_caps
        if domcaps_xml is None:
            domcaps_xml, _tcg_error = _domain_capabilities(conn, arch, "qemu")
        if domcaps_xml is not None:
            domcaps = parse_domain_capabilities(domcaps_xml)
            cpu = dict(domcaps["host_model"] or {}, virttype=domcaps["virttype"],
                       default_machine=domcaps["machine"], usable_models=domcaps["usable_models"])
    facts["kvm_usable"] = kvm_usable
    facts["kvm_error"] = None if kvm_usable else kvm_error
    facts["cpu"] = cpu
    facts["hypervisor"] = reported_hypervisor(driver, kvm_usable)
    domain_type = "kvm" if kvm_usable else "qemu"
    machines = caps["machine_types"].get(domain_type) or caps["machine_types"].get(driver.lower()) or []
    facts["machine_types"] = sorted(machines)

    pools = []
    try:
        for pool in conn.listAllStoragePools(0):
            info = parse_storage_pool(pool.XMLDesc(0))
            info["active"] = bool(pool.isActive())
            pools.append(info)
    except libvirt.libvirtError:
        pass  # drivers without a storage backend (test driver variants, some remotes)
    facts["storage_pools"] = pools
    if shared_storage_path:
        matching = [p["name"] for p in pools if p["path"] and os.path.normpath(p["path"]) == os.path.normpath(shared_storage_path)]
        facts["shared_storage"] = {"path": shared_storage_path, "pools": matching}

    if include_guests:
        guests = [_guest_facts(dom, shared_storage_path) for dom in conn.listAllDomains(0)]
        guests.sort(key=lambda g: g["name"])
        # A canary the collection owns is no customer guest: not drained, not counted in
        # capacity or accounting; named apart so a run can remove one a crashed run left.
        facts["canaries"] = [g["name"] for g in guests if g.get("owned_canary")]
        guests = [g for g in guests if not g.get("owned_canary")]
        facts["guests"] = guests
        running = [g for g in guests if g["active"]]
        facts["guest_count"] = len(guests)
        facts["running_guest_count"] = len(running)
        facts["memory_allocated_mib"] = sum(g["memory_mib"] or 0 for g in running)
        facts["vcpus_running"] = sum(g["vcpus"] or 0 for g in running)
    return facts


def _guest_facts(dom, shared_storage_path):
    try:
        guest = parse_domain(dom.XMLDesc(0), shared_storage_path)
    except libvirt.libvirtError as exc:
        # A transient guest can vanish between listing and reading it.
        return {"name": dom.name(), "error": str(exc), "active": False, "memory_mib": 0, "vcpus": 0,
                "state": "gone", "persistent": False, "autostart": False, "movable": False,
                "migration_blockers": ["vanished while being read"], "migration_notes": [], "disks": [],
                # A vanished canary is no guest either (its metadata can no longer be read).
                "owned_canary": dom.name().startswith(canary.CANARY_PREFIX)}
    state, _reason = dom.state()
    guest["state"] = state_name(state)
    guest["active"] = bool(dom.isActive())
    guest["persistent"] = bool(dom.isPersistent())
    try:
        guest["autostart"] = bool(dom.autostart()) if guest["persistent"] else False
    except libvirt.libvirtError:
        guest["autostart"] = False
    if guest["active"]:
        info = dom.info()  # [state, max KiB, used KiB, vcpus, cpu time]
        guest["memory_mib"] = int(info[2] // 1024)
        guest["vcpus"] = int(info[3])
    return guest


# --- reading several hosts -------------------------------------------------------------------

# Hosts are independent: a slow or dead one (each open is bounded by the opener's timeout) must
# not hold up the others, and a large cluster must not open all its daemons at once.
MAX_PARALLEL_READS = 8


@dataclass
class HostReading:
    """What reading one host gave: its open connection and facts, or why it could not be read."""
    name: str
    connection: Any = None
    facts: Optional[dict] = None
    error: Optional[str] = None

    def close(self) -> None:
        """Closes the connection, best effort (the facts are already read)."""
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:  # pylint: disable=broad-except  # a dead daemon cannot be closed politely
                pass
            self.connection = None


def read_host(name: str, uri: str, shared_storage_path: Optional[str] = None,
              connect: Callable[[str], Any] = open_connection) -> HostReading:
    """Opens ``uri`` and reads its facts; the connection stays open for the caller (CPU
    comparison, migrations). Any failure becomes the reading's error text, connection closed."""
    try:
        conn = connect(uri)
    except Exception as exc:  # pylint: disable=broad-except  # reported per host, the others go on
        return HostReading(name, error=libvirt_message(exc))
    reading = HostReading(name, conn)
    try:
        reading.facts = gather_hypervisor_facts(uri, shared_storage_path, conn=conn)
    except Exception as exc:  # pylint: disable=broad-except  # reported per host, the others go on
        reading.close()
        reading.error = libvirt_message(exc)
    return reading


def read_hosts(hosts: Sequence[Tuple[str, str, Optional[str]]], connect: Callable[[str], Any] = open_connection,
               max_parallel: int = MAX_PARALLEL_READS) -> Dict[str, HostReading]:
    """Reads every ``(name, uri, shared_storage_path)`` at most ``max_parallel`` at a time;
    returns name -> HostReading in the order given. The caller closes the connections."""
    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=min(max_parallel, len(hosts))) as pool:
        readings = list(pool.map(lambda host: read_host(*host, connect=connect), hosts))
    return {reading.name: reading for reading in readings}


class LibvirtCpuOracle:
    """CPU baseline and comparison through libvirt, for `homogeneity.compare_cluster`.

    `connections`: host name -> open read-write connection of that host. The baseline is
    computed by any one daemon (it only needs libvirt's CPU map and that daemon's QEMU); the
    comparison of a CPU against a host runs on that host's own daemon.
    """

    def __init__(self, connections: Mapping[str, object]):
        self.connections = dict(connections)

    def _any(self):
        if not self.connections:
            raise LibvirtHostError("no libvirt connection to compute a CPU baseline with")
        return self.connections[sorted(self.connections)[0]]

    def baseline(self, cpu_xmls: List[str], arch: Optional[str], virttype: Optional[str]) -> str:
        """Raises ValueError with libvirt's reason when no common CPU exists."""
        flags = libvirt.VIR_CONNECT_BASELINE_CPU_MIGRATABLE
        try:
            return self._any().baselineHypervisorCPU(None, arch, None, virttype, list(cpu_xmls), flags)
        except libvirt.libvirtError as exc:
            raise ValueError(str(exc))

    def compare(self, host: str, cpu_xml: str, arch: Optional[str], virttype: Optional[str]) -> Optional[str]:
        """None when `host` can run `cpu_xml`, else libvirt's reason (it names missing features)."""
        conn = self.connections[host]
        try:
            result = conn.compareHypervisorCPU(None, arch, None, virttype, cpu_xml,
                                               libvirt.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE)
        except libvirt.libvirtError as exc:
            return str(exc)
        if result == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
            return "incompatible"
        return None
