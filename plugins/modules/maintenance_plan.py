#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: maintenance_plan
short_description: Plan a rolling maintenance run - hosts, waves and capacity proof
description:
  - Decides which hosts a rolling maintenance run maintains (hosts marked by somebody else are
    left as found, hosts done in the maintenance window are skipped, hosts that could not be
    asked at preflight are skipped, hosts left marked by the window are finished, hosts with
    nothing to patch are skipped unless O(force=true)).
  - Groups them into waves with the collection's wave planner (at most C(max_unavailable)
    hosts of a cluster per wave, clusters in parallel). Hosts left marked by the window go
    before every other host of their cluster, whatever O(order).
  - Hosts already out of service count against C(max_unavailable) - marked and not maintained
    by this run, or not answering at preflight (O(unreachable), and with O(facts) every member
    without facts), in or outside the run's hosts. A cluster whose limit they use up is not
    maintained (its hosts are skipped, naming the hosts out of service and why). None of them
    is a destination in the capacity proof.
  - A host recorded done in the open window and still marked by it (a run stopped between the
    two writes) is returned in RV(stale_marks) - not maintained again, not counted as out of
    service, a destination in the proof. The caller removes the mark (under the lock).
  - Proves, wave by wave, that the rest of each cluster can absorb the guests of the hosts of
    the wave, with the collection's placement planner (cumulative reservation). With O(facts),
    the capacity comes from the same conversion the drain uses (running guests, the larger of
    current and maximum memory, local disks movable only with O(copy_storage)), and each wave
    sees the guests and free memory where the earlier waves left them.
  - Pure computation; run it on the controller. Changes nothing, so check mode is the same run.
version_added: 0.1.0
author:
  - virtfleet maintainers (@virtfleet)
extends_documentation_fragment:
  - virtfleet.cluster.attributes
  - virtfleet.cluster.attributes.info_module
options:
  hosts:
    description:
      - The hosts of the run in the operator's order, each a dict with C(name), C(cluster),
        C(max_unavailable) (default 1), C(needs_patch) (bool, or null when unknown),
        C(reboot_required), C(mark) (its maintenance mark or null), C(window) (its cluster's
        maintenance window, default O(window)), C(done) (its record in the window or null),
        C(guests) (running guest count).
    type: list
    elements: dict
    required: true
  run_id:
    description: The run, to recognise its own marks.
    type: str
    required: true
  window:
    description: The maintenance window whose marks this run adopts.
    type: str
  force:
    description: Maintain hosts even when they have nothing to patch.
    type: bool
    default: false
  order:
    description: Order of hosts within a cluster (the wave planner's orderings).
    type: str
    default: given
    choices: [given, fewest_guests, most_guests, name]
  capacity:
    description:
      - Cluster name to C(hosts) (placement HostCapacity fields) and C(guests) (placement Guest
        fields), covering every host of the cluster. Omit to skip the capacity proof.
    type: dict
  facts:
    description:
      - Instead of O(capacity) - host name to the C(hypervisor) result of
        M(virtfleet.cluster.hypervisor_facts), for every host of the clusters (with O(members)).
    type: dict
  members:
    description: Cluster name to the names of all its hosts (also those not maintained). Required with O(facts).
    type: dict
  marked:
    description:
      - Hosts in maintenance, any owner (never destinations in the proof). With O(members),
        marked hosts this run does not maintain reduce their cluster's max_unavailable.
    type: list
    elements: str
    default: []
  unreachable:
    description:
      - Host name to why it could not be asked at preflight (its libvirt or its SSH did not
        answer), for any host of the clusters, in O(hosts) or only in O(members) (outside
        C(--limit)). Each counts against its cluster's C(max_unavailable), is not maintained and
        is never a destination. With O(facts), every member of O(members) without facts is
        added (its libvirt did not answer).
    type: dict
    default: {}
  states:
    description:
      - Cluster name to its shared maintenance state as M(virtfleet.cluster.maintenance_state)
        O(virtfleet.cluster.maintenance_state#module:state=read) returns it (C(marks), C(window)),
        read under the lock. Gives the marks and the done hosts of members outside O(hosts). A
        member recorded done in the open window and still marked by it is a stale mark
        (RV(stale_marks)), and its marks count as O(marked).
    type: dict
  unmovable_guests:
    description: With O(facts) - guests the operator declares unmovable.
    type: list
    elements: str
    default: []
  stop_allowed_guests:
    description: With O(facts) - guests that may be shut down when they cannot live-migrate.
    type: list
    elements: str
    default: []
  anti_affinity_groups:
    description: With O(facts) - anti-affinity group name to guest names.
    type: dict
    default: {}
  copy_storage:
    description:
      - With O(facts) - whether the drains copy local disks (C(copy_storage) of the run's
        migration options). Without it a running guest with local disks cannot move, as
        M(virtfleet.cluster.host_drain) decides; pass the same value the drains get.
    type: bool
    default: false
  policy:
    description: Placement policy fields (C(memory_overcommit), C(cpu_overcommit), C(memory_reserve_mib), ...).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Plan the run
  virtfleet.cluster.maintenance_plan:
    run_id: "{{ rolling_maintenance_run_id }}"
    hosts:
      - {name: kvm-01, cluster: prod, max_unavailable: 1, needs_patch: true}
      - {name: kvm-02, cluster: prod, max_unavailable: 1, needs_patch: false}
    capacity:
      prod:
        hosts:
          - {name: kvm-01, memory_total_mib: 65536, cpus: 32}
          - {name: kvm-02, memory_total_mib: 65536, cpus: 32}
        guests:
          - {name: web1, memory_mib: 4096, vcpus: 2, host: kvm-01}
  delegate_to: localhost
  run_once: true
  register: plan
"""

RETURN = r"""
waves:
  description: Waves in order, each C(index), C(hosts) and C(by_cluster).
  returned: always
  type: list
  elements: dict
wave_hosts:
  description: The hosts of each wave (list of lists).
  returned: always
  type: list
  elements: list
slot_order:
  description:
    - Per cluster, its rounds in planned order (the cluster's hosts of each wave). In a run each
      cluster walks its own rounds on its own clock, and a host takes a slot of its cluster once every
      host of the cluster's earlier rounds is done.
  returned: always
  type: dict
maintained:
  description: Hosts the run maintains.
  returned: always
  type: list
  elements: str
skipped:
  description: Host to the reason it is not maintained.
  returned: always
  type: dict
resumed:
  description: Hosts left marked by this maintenance window, to the phase they reached.
  returned: always
  type: dict
foreign_marked:
  description: Hosts marked by somebody else (never destinations).
  returned: always
  type: list
  elements: str
out_of_service:
  description:
    - Host to why it counts as out of service against its cluster's C(max_unavailable) (marked
      and not maintained by this run, or could not be asked at preflight), in or outside O(hosts).
  returned: always
  type: dict
not_answering:
  description: The hosts of the clusters that could not be asked at preflight (option O(unreachable) and members without facts), to why.
  returned: always
  type: dict
stale_marks:
  description:
    - Hosts recorded done in the open maintenance window and still marked by it. Not maintained
      and not out of service; the caller removes their marks (O(virtfleet.cluster.maintenance_state#module:state=unmark)).
  returned: always
  type: list
  elements: str
clusters:
  description:
    - Per cluster C(max_unavailable) (configured), C(max_unavailable_now) (less the hosts out of
      service), C(out_of_service) (names), C(out_of_service_reasons) (host to why),
      C(stale_marks), C(hosts), C(maintained).
  returned: always
  type: dict
capacity:
  description: The capacity proof (C(ok), C(problems), C(steps) with each drain plan), or null.
  returned: always
  type: dict
ok:
  description: False when the capacity proof failed.
  returned: always
  type: bool
"""

from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.capacity import PlanError
from ansible_collections.virtfleet.cluster.plugins.module_utils.maintenance_plan import (
    capacity_from_facts, plan_maintenance)

ARGUMENT_SPEC = dict(
    hosts=dict(type="list", elements="dict", required=True),
    run_id=dict(type="str", required=True),
    window=dict(type="str"),
    force=dict(type="bool", default=False),
    order=dict(type="str", default="given",
               choices=["given", "fewest_guests", "most_guests", "name"]),
    capacity=dict(type="dict"),
    policy=dict(type="dict", default={}),
    facts=dict(type="dict"),
    members=dict(type="dict"),
    marked=dict(type="list", elements="str", default=[]),
    unreachable=dict(type="dict", default={}),
    states=dict(type="dict"),
    unmovable_guests=dict(type="list", elements="str", default=[]),
    anti_affinity_groups=dict(type="dict", default={}),
    stop_allowed_guests=dict(type="list", elements="str", default=[]),
    copy_storage=dict(type="bool", default=False),
)


def plan(params, _check_mode):
    """The module's work: pure computation, the same in check mode."""
    try:
        capacity = params["capacity"]
        unreachable = dict(params["unreachable"] or {})
        if params["facts"] is not None:
            capacity = capacity_from_facts(params["members"], params["facts"], params["marked"],
                                           params["unmovable_guests"], params["anti_affinity_groups"],
                                           params["stop_allowed_guests"], params["copy_storage"])
            # A member without facts is a host whose libvirt did not answer: out of service.
            for names in params["members"].values():
                for name in names:
                    if name not in params["facts"]:
                        unreachable.setdefault(name, "its libvirt did not answer at preflight (no hypervisor facts)")
        result = plan_maintenance(params["hosts"], params["run_id"], window_name=params["window"],
                                  force=params["force"], order=params["order"],
                                  capacity=capacity, policy=params["policy"],
                                  members=params["members"], marked=params["marked"],
                                  unreachable=unreachable, states=params["states"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PlanError("cannot plan the maintenance: %s" % exc) from exc
    return dict(result, changed=False)


def main():
    run_module(ARGUMENT_SPEC, plan, needs_libvirt=False,
               mutually_exclusive=[("capacity", "facts")], required_together=[("facts", "members")])


if __name__ == "__main__":
    main()
