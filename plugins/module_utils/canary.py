# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The canary's decisions: which guest proves a rebooted host, on which peer, with what XML.

A rebooted host goes back into service only after a guest has live-migrated onto it and back.
By default that guest is one the collection owns (no customer pays for the proof): a transient
domain with firmware only (no disk, no network, a few tens of MiB), shaped like the cluster's
guests (domain type, architecture, machine type and CPU, so it needs what they need), started on
a healthy peer, migrated onto the host and back, then destroyed - a transient domain leaves no
definition behind. A customer guest serves only when the operator names one.

An owned canary is known by its name (``virtfleet-canary-<host>``) *and* by the collection's
metadata element in its XML (``CANARY_NAMESPACE``): a customer's guest that happens to have such
a name is never taken for a canary, and nothing but a canary is ever destroyed as one. Every
reader of a host's guests (facts, drain, host_empty, guest records) leaves canaries out: a
canary is never a customer guest, never moved by a drain, never counted in capacity.

Pure Python on facts (``libvirt_facts``) and plain data; the libvirt side is ``canary_run``.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

CANARY_PREFIX = "virtfleet-canary-"
CANARY_NAMESPACE = "https://virtfleet.dev/xmlns/libvirt/canary/1.0"
CANARY_METADATA_PREFIX = "virtfleet"
# Enough for SeaBIOS (the canary boots no OS) and small enough to fit beside any guest.
DEFAULT_MEMORY_MIB = 32
# virDomainMetadataType VIR_DOMAIN_METADATA_ELEMENT (libvirt not imported here).
_METADATA_ELEMENT = 2
# The metadata element reads <virtfleet:canary .../> in `virsh dumpxml`, not <ns0:canary/>.
ET.register_namespace(CANARY_METADATA_PREFIX, CANARY_NAMESPACE)


def canary_name(host: str) -> str:
    """The owned canary's name for proving ``host``: one per host, so a leftover says whose it was."""
    return CANARY_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "-", host)


def xml_is_canary(root: ET.Element) -> bool:
    """A parsed domain XML is an owned canary: its name and the collection's metadata element."""
    name = (root.findtext("name") or "").strip()
    return name.startswith(CANARY_PREFIX) and root.find("metadata/{%s}canary" % CANARY_NAMESPACE) is not None


def domain_is_canary(dom: Any) -> bool:
    """A libvirt domain object is an owned canary (see ``xml_is_canary``). The name is checked
    first so customer guests cost no metadata call; a domain gone meanwhile is no canary."""
    try:
        if not dom.name().startswith(CANARY_PREFIX):
            return False
        dom.metadata(_METADATA_ELEMENT, CANARY_NAMESPACE, 0)
        return True
    except Exception:  # pylint: disable=broad-except  # no such metadata, or the domain vanished
        return False


# --------------------------------------------------------------------------- the guest's shape

@dataclass(frozen=True)
class GuestShape:
    """What a canary copies from the cluster's guests so that it needs what they need."""
    domain_type: str
    arch: Optional[str] = None
    machine: Optional[str] = None
    cpu_xml: Optional[str] = None   # a custom CPU, verbatim
    cpu_mode: Optional[str] = None  # host-model / host-passthrough / maximum (no model to copy)


def cluster_shape(guests: Iterable[Mapping[str, Any]], host_facts: Optional[Mapping[str, Any]] = None) -> GuestShape:
    """The most common shape among the running guests (ties: the first in sorted order, so every
    run picks the same). With no running guest, the host's own kind: KVM when it works, else
    TCG, libvirt's default machine and CPU."""
    shapes = Counter()
    for guest in guests:
        if not guest.get("active") or not guest.get("domain_type"):
            continue
        shapes[GuestShape(guest["domain_type"], guest.get("arch"), guest.get("machine"), guest.get("cpu_xml"),
                          None if guest.get("cpu_xml") else guest.get("cpu_mode"))] += 1
    if shapes:
        best = max(shapes.values())
        return sorted((shape for shape, count in shapes.items() if count == best), key=repr)[0]
    facts = host_facts or {}
    return GuestShape("kvm" if facts.get("kvm_usable") else "qemu", facts.get("arch"))


def canary_domain_xml(name: str, shape: GuestShape, memory_mib: int = DEFAULT_MEMORY_MIB,
                      proves: Optional[str] = None, run_id: Optional[str] = None) -> str:
    """A firmware-only transient domain: no disk, no network, no console, one vCPU. It powers off
    for good (no restart on reboot or crash) and carries the collection's metadata element."""
    domain = ET.Element("domain", type=shape.domain_type)
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "description").text = (
        "virtfleet canary%s: firmware only, removed after the proof" % (" for %s" % proves if proves else ""))
    metadata = ET.SubElement(domain, "metadata")
    mark = ET.SubElement(metadata, "{%s}canary" % CANARY_NAMESPACE)
    if proves:
        mark.set("host", proves)
    if run_id:
        mark.set("run", str(run_id))
    ET.SubElement(domain, "memory", unit="MiB").text = str(int(memory_mib))
    ET.SubElement(domain, "vcpu").text = "1"
    os_type = ET.SubElement(ET.SubElement(domain, "os"), "type")
    os_type.text = "hvm"
    if shape.arch:
        os_type.set("arch", shape.arch)
    if shape.machine:
        os_type.set("machine", shape.machine)
    if shape.cpu_xml:
        domain.append(ET.fromstring(shape.cpu_xml))
    elif shape.cpu_mode:
        ET.SubElement(domain, "cpu", mode=shape.cpu_mode)
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        ET.SubElement(domain, event).text = "destroy"
    devices = ET.SubElement(domain, "devices")
    # libvirt adds a USB controller and a balloon by default: neither is needed to prove migration.
    ET.SubElement(devices, "controller", type="usb", model="none")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(domain, encoding="unicode")


# --------------------------------------------------------------------------- where it starts

def peers_in_service(host: str, members: Sequence[str], marks: Mapping[str, Mapping[str, Any]]) -> Tuple[List[str], List[str]]:
    """The other members of the cluster not marked in maintenance (marks read at canary time),
    and a line for each one passed over, saying whose mark it carries and why."""
    in_service, passed_over = [], []
    for name in members:
        if name == host:
            continue
        mark = marks.get(name)
        if mark is None:
            in_service.append(name)
            continue
        owner = (mark.get("owner") or {}).get("run_id") or "?"
        passed_over.append("%s: marked in maintenance (run %s, phase %s: %s)"
                           % (name, owner, mark.get("phase") or "?", mark.get("reason") or "no reason given"))
    return in_service, passed_over


def rank_peers(facts: Mapping[str, Optional[Mapping[str, Any]]], errors: Mapping[str, str]) -> Tuple[List[str], List[str]]:
    """The peers that may start the owned canary, in the order to try them: of the peers in
    service that answered, most free memory first (ties by name). Free memory is only an order,
    not a refusal: libvirt's figure leaves out reclaimable cache, so only starting the canary
    tells whether it fits (the next peer is tried when it does not). Returns (peers, lines for
    the peers that did not answer)."""
    passed_over = ["%s: its libvirt did not answer (%s)" % (name, why) for name, why in sorted(errors.items())]
    ranked = sorted((-((host_facts or {}).get("memory_free_mib") or 0), name) for name, host_facts in facts.items())
    return [name for _free, name in ranked], passed_over


def named_guest_source(guest: str, facts: Mapping[str, Optional[Mapping[str, Any]]], errors: Mapping[str, str],
                       unmovable: Sequence[str] = (), stop_allowed: Sequence[str] = ()) -> Tuple[Optional[str], List[str]]:
    """The host in service that runs the operator's canary ``guest`` in a way the drain would move
    it too (running, live-migratable, no local disk, allowed to move), or None; with a line per
    peer naming each guest passed over and why."""
    passed_over = ["%s: its libvirt did not answer (%s)" % (name, why) for name, why in sorted(errors.items())]
    found = None
    for host, host_facts in sorted(facts.items()):
        described = []
        for candidate in (host_facts or {}).get("guests") or []:
            reasons = _not_a_canary(candidate, guest, unmovable, stop_allowed)
            if not reasons and found is None:
                found = host
            described.append("%s (%s)" % (candidate["name"], "; ".join(reasons) or "the canary"))
        passed_over.append("%s: %s" % (host, ", ".join(described) if described else "runs no guest"))
    return found, passed_over


def _not_a_canary(candidate: Mapping[str, Any], guest: str, unmovable: Sequence[str], stop_allowed: Sequence[str]) -> List[str]:
    reasons = []
    if candidate.get("state") != "running":
        reasons.append(candidate.get("state") or "not running")
    if not candidate.get("movable"):
        reasons.append("cannot live-migrate: %s" % ", ".join(candidate.get("migration_blockers") or []))
    if candidate.get("local_disks", True):
        reasons.append("local disks")
    if candidate["name"] in unmovable:
        reasons.append("in rolling_maintenance_unmovable_guests")
    if candidate["name"] in stop_allowed:
        reasons.append("in rolling_maintenance_stop_allowed_guests")
    if candidate["name"] != guest:
        reasons.append("not %s" % guest)
    return reasons


def migration_record(guest: str, source: str, destination: str, started: float, ended: float,
                     outcome: Optional[Mapping[str, Any]] = None, error: Any = None) -> Dict[str, Any]:
    """One canary migration as the run's report takes it (event type ``migration``): from a
    successful ``migrate_guest`` outcome, or from its ``MigrationError``."""
    record = {"type": "migration", "purpose": "canary", "guest": guest, "source": source, "started": started,
              "ended": ended}
    if error is None:
        outcome = outcome or {}
        record.update(destination=destination, where=destination, status="ok", message=None,
                      time_ms=outcome.get("total_time_ms"), downtime_ms=outcome.get("downtime_ms"))
    else:
        record.update(destination=getattr(error, "running_on", None), where=getattr(error, "where", "unknown"),
                      status="failed", message=getattr(error, "message", str(error)), time_ms=None, downtime_ms=None)
    return record
