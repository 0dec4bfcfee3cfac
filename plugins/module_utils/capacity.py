# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one conversion from hypervisor facts to the placement planner's input.

``libvirt_facts.gather_hypervisor_facts`` (the ``hypervisor`` result of the hypervisor_facts
module) describes a host and its guests; the planners of ``placement`` take ``HostCapacity``
and ``Guest``. Every planner of the collection gets its input from here - the preflight
capacity proof (``maintenance_plan``), the drain (``drain``), the rebalance
(``rebalance_plan``) and the move-back (``move_back_plan``) - so a proof never promises what a
later drain refuses:

* only running guests count (a shut-off guest does not care about a reboot);
* a guest reserves the larger of its current (balloon) and its maximum memory: the balloon
  can give the guest its maximum back at any time, on whichever host it runs then;
* a guest cannot move when the operator declares it unmovable, when its facts name a
  migration blocker (passthrough devices, host directories), or when it has local disks and
  the migration does not copy storage (``copy_storage``);
* its anti-affinity group is the first group (by name) that lists it.

Pure Python, no Ansible or libvirt import.
"""
from __future__ import annotations

from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import Guest, HostCapacity, PlacementPolicy


class PlanError(VirtfleetError):
    """A planner module could not plan from its input (maintenance_plan, rebalance_plan,
    move_back_plan): the message names the plan and what was wrong."""


def reserved_memory_mib(guest_facts: Mapping) -> int:
    """MiB a running guest takes on a host: max(current memory, maximum memory)."""
    return int(max(guest_facts.get("memory_mib") or 0, guest_facts.get("max_memory_mib") or 0))


def anti_affinity_group(name: str, anti_affinity_groups: Optional[Mapping[str, Iterable[str]]]) -> Optional[str]:
    """The first group, by group name, that lists the guest `name` (None when none does)."""
    for group, members in sorted((anti_affinity_groups or {}).items()):
        if name in (members or ()):
            return group
    return None


def unmovable_reason(guest_facts: Mapping, unmovable_guests: Iterable[str] = (),
                     copy_storage: bool = False) -> Optional[str]:
    """Why the guest cannot live-migrate, or None when it can."""
    if guest_facts["name"] in (unmovable_guests or ()):
        return "declared unmovable"
    blockers = guest_facts.get("migration_blockers") or []
    if blockers:
        return "; ".join(blockers)
    if guest_facts.get("movable") is False:
        return "the hypervisor facts say it cannot live-migrate"
    if guest_facts.get("local_disks") and not copy_storage:
        notes = "; ".join(guest_facts.get("migration_notes") or ()) or "disks outside the shared storage"
        return "local disks and copy_storage is off (%s)" % notes
    return None


def guest_from_facts(guest_facts: Mapping, host: str, unmovable_guests: Iterable[str] = (),
                     anti_affinity_groups: Optional[Mapping[str, Iterable[str]]] = None,
                     copy_storage: bool = False, stop_allowed_guests: Optional[Iterable[str]] = None) -> Guest:
    """One guest of the facts of `host` (see the module docstring for the rules).

    stop_allowed_guests: None leaves the guest's unmovable policy to the planner's policy (the
    drain decides with its own option); a list makes it ``shutdown`` for the guests it names
    and ``fail`` for the others (the preflight proof).
    """
    name = guest_facts["name"]
    why = unmovable_reason(guest_facts, unmovable_guests, copy_storage)
    policy = None
    if stop_allowed_guests is not None:
        policy = "shutdown" if name in stop_allowed_guests else "fail"
    return Guest(name=name, memory_mib=reserved_memory_mib(guest_facts),
                 vcpus=int(guest_facts.get("vcpus") or 1), host=host,
                 anti_affinity_group=anti_affinity_group(name, anti_affinity_groups),
                 movable=why is None, unmovable_reason=why, unmovable_policy=policy,
                 cpu={"xml": guest_facts.get("cpu_xml"), "arch": guest_facts.get("arch"),
                      "virttype": guest_facts.get("domain_type")})


def host_from_facts(name: str, facts: Mapping, in_maintenance: bool = False,
                    cluster: Optional[str] = None) -> HostCapacity:
    """The capacity of host `name` from its facts. ``cpu`` is the host's name: the drain's
    CPU check asks that host's libvirt."""
    free = facts.get("memory_free_mib")
    return HostCapacity(name=name, memory_total_mib=int(facts["memory_total_mib"]), cpus=int(facts["cpus"]),
                        memory_free_mib=None if free is None else int(free),
                        in_maintenance=bool(in_maintenance), cpu=name, cluster=cluster)


def running_guests(facts: Mapping) -> List[Mapping]:
    """The running guests of a host's facts; ValueError when the facts are not facts."""
    guests = facts.get("guests") or []
    if not isinstance(guests, list) or not all(isinstance(guest, Mapping) for guest in guests):
        raise ValueError("the guests of a host's facts must be a list of guest dicts (hypervisor_facts' "
                         "hypervisor.guests), not %r" % (guests,))
    return [guest for guest in guests if guest.get("active")]


def cluster_from_facts(facts_by_host: Mapping[str, Optional[Mapping]], members: Optional[Sequence[str]] = None,
                       marked: Iterable[str] = (), unmovable_guests: Iterable[str] = (),
                       anti_affinity_groups: Optional[Mapping[str, Iterable[str]]] = None,
                       copy_storage: bool = False, stop_allowed_guests: Optional[Iterable[str]] = None,
                       cluster: Optional[str] = None) -> Tuple[List[HostCapacity], List[Guest]]:
    """``(hosts, guests)`` of one cluster from host name -> facts.

    members: the cluster's host names (default: every host of `facts_by_host`, by name); a
    member without facts is left out (it cannot be a destination). marked: hosts in
    maintenance (never destinations). Only running guests are returned.
    """
    marked = set(marked or ())
    # Sets once per cluster: the guests' rules look names up in them for every guest.
    unmovable_guests = frozenset(unmovable_guests or ())
    if stop_allowed_guests is not None:
        stop_allowed_guests = frozenset(stop_allowed_guests)
    hosts: List[HostCapacity] = []
    guests: List[Guest] = []
    for name in (sorted(facts_by_host) if members is None else members):
        facts = facts_by_host.get(name)
        if not facts:
            continue
        if not isinstance(facts, Mapping):
            raise ValueError("the facts of host %s must be the hypervisor result of hypervisor_facts (a dict), not %r"
                             % (name, facts))
        hosts.append(host_from_facts(name, facts, name in marked, cluster))
        guests.extend(guest_from_facts(guest, name, unmovable_guests, anti_affinity_groups, copy_storage,
                                       stop_allowed_guests)
                      for guest in running_guests(facts))
    return hosts, guests


# The options of the cluster planners (rebalance_plan, move_back_plan): the cluster's facts and
# what constrains placement in it. Declared once; each module adds its own.
CLUSTER_PLAN_ARGUMENT_SPEC = dict(
    facts=dict(type="dict", required=True),
    cluster=dict(type="str", default="cluster"),
    marked=dict(type="list", elements="str", default=[]),
    unmovable_guests=dict(type="list", elements="str", default=[]),
    anti_affinity_groups=dict(type="dict", default={}),
    copy_storage=dict(type="bool", default=False),
    policy=dict(type="dict", default={}),
)


def cluster_plan_inputs(params: Mapping) -> Tuple[PlacementPolicy, List[HostCapacity], List[Guest]]:
    """``(policy, hosts, guests)`` from validated CLUSTER_PLAN_ARGUMENT_SPEC parameters; raises
    ValueError, KeyError or TypeError on bad input."""
    policy = PlacementPolicy(**params["policy"])
    hosts, guests = cluster_from_facts(params["facts"], sorted(params["facts"]), params["marked"],
                                       params["unmovable_guests"], params["anti_affinity_groups"],
                                       params["copy_storage"], cluster=params["cluster"])
    return policy, hosts, guests
