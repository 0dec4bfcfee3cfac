# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restarting the guests of a dead host on the other hosts of its cluster: the pure decisions.

* ``dead_host_verdict``: a host is dead only when every probe, over the whole configured
  time, found both its libvirt and its SSH failing. One answer from either means it is alive
  (maybe cut off, maybe overloaded): its guests may still run, so nothing is restarted.
* ``fence_refusal``: nothing starts unless something proves the dead host cannot still run its
  guests: a power-fence hook that confirmed the host is off, or disk leases (sanlock,
  virtlockd) that refuse a second start while the first copy lives.
* ``plan_restarts``: which guest starts where. A guest already running on any peer is never
  started again; the others go by HA priority (highest first; 0 = never restarted), then
  largest first, through the placement planner (capacity, overcommit, anti-affinity, hosts in
  maintenance); the ones that do not fit are listed with why.
* ``lease_refusal``: a start refused because the guest's lease is held elsewhere (the guest
  still runs somewhere): the recovery stops there and says so.

Pure Python, no Ansible or libvirt import.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from ansible_collections.virtfleet.cluster.plugins.module_utils.capacity import anti_affinity_group
from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import (
    Guest, HostCapacity, PlacementPolicy, plan_drain)

FENCE_METHODS = ("hook", "leases", "none")
# What libvirt and QEMU say when a guest's disk or lease is held by another process or host.
LEASE_REFUSAL_MARKERS = ("lockspace resource", "resource busy", "failed to get \"write\" lock",
                         "failed to acquire lock", "is another process using the image")


def dead_host_verdict(probes: Sequence[Mapping[str, Any]]) -> Tuple[bool, str]:
    """(dead, why) from the probes of one host, oldest first. Each probe:
    ``{"libvirt_ok": bool, "ssh_ok": bool, "libvirt_error": str, "ssh_error": str}``."""
    if not probes:
        return False, "the host was not probed"
    for index, probe in enumerate(probes, 1):
        answered = [what for what in ("libvirt", "ssh") if probe.get(what + "_ok")]
        if answered:
            return False, ("its %s answered (probe %d of %d): the host is alive, maybe cut off or overloaded, and "
                           "may still run its guests" % (" and ".join(answered), index, len(probes)))
    last = probes[-1]
    return True, ("neither libvirt nor SSH answered in %d probe(s) (last: libvirt: %s; ssh: %s)"
                  % (len(probes), last.get("libvirt_error") or "no answer", last.get("ssh_error") or "no answer"))


def fence_refusal(method: str, confirmed: bool) -> Optional[str]:
    """Why guests may not be restarted yet (None when they may)."""
    if method not in FENCE_METHODS:
        return "unknown fence method %r (use one of %s)" % (method, ", ".join(FENCE_METHODS))
    if method == "hook" and not confirmed:
        return "the power-fence hook did not confirm that the host is off"
    if method == "none":
        return ("no fence is confirmed: nothing proves the host cannot still run its guests. Set "
                "recover_host_fence_tasks (a power-fence hook: IPMI, Redfish, a PDU) or, where sanlock or "
                "virtlockd leases on the shared storage protect every guest, recover_host_fence_by_leases: true")
    return None


def lease_refusal(message: str) -> bool:
    """True when a start failed because the guest's disk or lease is held elsewhere."""
    text = (message or "").lower()
    return any(marker in text for marker in LEASE_REFUSAL_MARKERS)


def priority_of(name: str, priorities: Mapping[str, int], default: int) -> int:
    return int(priorities.get(name, default))


def plan_restarts(dead_host: str, records: Iterable[Mapping[str, Any]], peers: Sequence[HostCapacity],
                  peer_guests: Sequence[Guest], running_on: Mapping[str, str],
                  priorities: Optional[Mapping[str, int]] = None, default_priority: int = 1,
                  anti_affinity_groups: Optional[Mapping[str, Iterable[str]]] = None,
                  policy: Optional[PlacementPolicy] = None) -> Dict[str, Any]:
    """The restart plan of the guests last seen on dead_host.

    records: the guest records (``guest_records``) of dead_host. peers: the other hosts of the
    cluster that answered; peer_guests: the guests running on them (capacity and
    anti-affinity). running_on: guest name -> peer already running it (checked on every peer
    first): never started again.
    """
    priorities = priorities or {}
    plan: Dict[str, Any] = {"restart": [], "already_running": [], "unplaced": [], "not_restarted": []}
    candidates = []
    for record in sorted(records, key=lambda r: r["name"]):
        name = record["name"]
        if name in running_on:
            plan["already_running"].append({"guest": name, "host": running_on[name]})
            continue
        priority = priority_of(name, priorities, default_priority)
        if priority <= 0:
            plan["not_restarted"].append({"guest": name, "reason": "HA priority %d: never restarted" % priority})
            continue
        candidates.append((priority, record))
    # Highest priority first, then largest first: with as_listed, the planner places them in this order.
    candidates.sort(key=lambda item: (-item[0], -int(item[1].get("memory_mib") or 0), item[1]["name"]))
    dead_guests = [Guest(name=record["name"], memory_mib=int(record.get("memory_mib") or 0),
                         vcpus=int(record.get("vcpus") or 1), host=dead_host,
                         anti_affinity_group=anti_affinity_group(record["name"], anti_affinity_groups))
                   for _priority, record in candidates]
    peer_guests = [Guest(name=g.name, memory_mib=g.memory_mib, vcpus=g.vcpus, host=g.host,
                         anti_affinity_group=anti_affinity_group(g.name, anti_affinity_groups))
                   for g in peer_guests]
    # The dead host takes part in the simulation as the drained source, never as a destination.
    needed = sum(g.memory_mib for g in dead_guests)
    source = HostCapacity(name=dead_host, memory_total_mib=needed + (1 << 20), cpus=1 << 16, in_maintenance=True)
    base = policy or PlacementPolicy()
    drain_policy = PlacementPolicy(memory_overcommit=base.memory_overcommit, cpu_overcommit=base.cpu_overcommit,
                                   memory_reserve_mib=base.memory_reserve_mib, order="as_listed",
                                   unmovable="fail", respect_free_memory=base.respect_free_memory)
    drained = plan_drain(dead_host, [source] + list(peers), peer_guests + dead_guests, drain_policy)
    priority_by_name = {record["name"]: priority for priority, record in candidates}
    plan["restart"] = [{"guest": move.guest, "host": move.destination, "priority": priority_by_name[move.guest],
                        "memory_mib": move.memory_mib} for move in drained.moves]
    plan["unplaced"] = [{"guest": item.guest, "priority": priority_by_name[item.guest], "memory_mib": item.memory_mib,
                         "reason": item.reason} for item in drained.unplaced]
    return plan


def recovery_message(host: str, result: Mapping[str, Any], check_mode: bool = False) -> str:
    """One line per outcome, naming each guest and where it runs now."""
    parts = []
    verb = "would restart" if check_mode else "restarted"
    if result.get("restarted"):
        parts.append("%s %s" % (verb, ", ".join("%s on %s" % (r["guest"], r["host"]) for r in result["restarted"])))
    if result.get("already_running"):
        parts.append("already running elsewhere (not started again): %s"
                     % ", ".join("%s on %s" % (r["guest"], r["host"]) for r in result["already_running"]))
    if result.get("unplaced"):
        parts.append("DO NOT FIT on the other hosts (not started): %s"
                     % "; ".join("%s (%s)" % (r["guest"], r["reason"]) for r in result["unplaced"]))
    if result.get("not_restarted"):
        parts.append("not restarted: %s" % ", ".join("%s (%s)" % (r["guest"], r["reason"]) for r in result["not_restarted"]))
    if result.get("start_failures"):
        parts.append("FAILED to start: %s" % "; ".join("%s on %s (%s)" % (r["guest"], r["host"], r["error"])
                                                       for r in result["start_failures"]))
    if result.get("lease_held"):
        held = result["lease_held"]
        parts.append("STOPPED: %s could not start on %s because its lease is held: it still runs somewhere "
                     "(is %s really dead? fence it), so no further guest was started (%s)"
                     % (held["guest"], held["host"], host, held["error"]))
    return "recovery of %s: %s" % (host, "; ".join(parts) if parts else "no guest was last seen on it")
