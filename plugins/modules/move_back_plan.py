#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: move_back_plan
short_description: Plan the live migrations that send guests back home after a maintenance, where they fit
description:
  - Decides which guests go back to the host they ran on before a maintenance window moved them
    (O(origins)), and in which order, with the collection's placement planner
    (C(cluster_plans.plan_move_back)).
  - A guest goes home only when its home host answered (is in O(facts)), is not in maintenance
    (O(marked)), the guest can live-migrate, and the home host can take it at that point of the
    sequence - memory with overcommit and reserve, the host's reported free memory, vCPUs with
    overcommit, and anti-affinity (O(anti_affinity_groups)). Run one after the other in the
    order returned, the moves never overfill a host.
  - Every other guest that is away from home stays where it runs and is listed in RV(skipped)
    with the reason.
  - Capacity comes from the collection's one facts conversion (running guests, the larger of
    current and maximum memory), as for the drain and the capacity proof.
  - Pure computation on the controller; moves nothing (the role C(rolling_maintenance) runs the
    moves with M(virtfleet.cluster.guest_migrate)).
version_added: 0.1.0
author:
  - virtfleet maintainers (@virtfleet)
extends_documentation_fragment:
  - virtfleet.cluster.attributes
  - virtfleet.cluster.attributes.info_module
options:
  facts:
    description:
      - Host name to the C(hypervisor) result of M(virtfleet.cluster.hypervisor_facts), for every
        host of the cluster that answered. Where every guest runs now.
    type: dict
    required: true
  origins:
    description: Guest name to the host it ran on before the maintenance (its home).
    type: dict
    required: true
  cluster:
    description: Name of the cluster (in messages).
    type: str
    default: cluster
  marked:
    description: Hosts in maintenance; they receive no guest.
    type: list
    elements: str
    default: []
  unmovable_guests:
    description: Guests that must stay where they are.
    type: list
    elements: str
    default: []
  anti_affinity_groups:
    description: Anti-affinity group name to guest names (no two of a group on one host).
    type: dict
    default: {}
  copy_storage:
    description: Whether the migrations copy local disks. Without it a guest with local disks stays.
    type: bool
    default: false
  policy:
    description: Placement policy fields (C(memory_overcommit), C(cpu_overcommit), C(memory_reserve_mib), C(respect_free_memory), C(order)).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Plan which guests go back home
  virtfleet.cluster.move_back_plan:
    cluster: kvm-prod
    facts: "{{ facts_by_host }}"
    origins: "{{ window.guest_origins }}"
    marked: "{{ state.marks | list }}"
    policy:
      memory_reserve_mib: 1024
  delegate_to: localhost
  register: move_back

- name: Say which guests stay where they are
  ansible.builtin.debug:
    msg: "{{ item.guest }} stays on {{ item.source }}: {{ item.reason }}"
  loop: "{{ move_back.skipped }}"
"""

RETURN = r"""
moves:
  description: Moves in the order to run them (one after the other).
  returned: always
  type: list
  elements: dict
  contains:
    guest:
      description: Guest name.
      type: str
    source:
      description: Host it runs on now.
      type: str
    destination:
      description: Its home host.
      type: str
    memory_mib:
      description: Memory the planner reserved for it.
      type: int
    vcpus:
      description: Its vCPUs.
      type: int
skipped:
  description: Guests away from home that stay where they run, by guest name.
  returned: always
  type: list
  elements: dict
  contains:
    guest:
      description: Guest name.
      type: str
    source:
      description: Host it runs on now (and stays on).
      type: str
    destination:
      description: Its home host.
      type: str
    reason:
      description: Why it does not go home (home host not read, in maintenance, guest cannot move, does not fit and why).
      type: str
"""

from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.capacity import (
    CLUSTER_PLAN_ARGUMENT_SPEC, PlanError, cluster_plan_inputs)
from ansible_collections.virtfleet.cluster.plugins.module_utils.cluster_plans import plan_move_back

ARGUMENT_SPEC = dict(CLUSTER_PLAN_ARGUMENT_SPEC, origins=dict(type="dict", required=True))


def plan(params, _check_mode):
    """The module's work: pure computation, the same in check mode."""
    try:
        origins = {str(guest): home for guest, home in params["origins"].items()}
        if not all(isinstance(home, str) for home in origins.values()):
            raise ValueError("origins must map each guest name to a host name")
        policy, hosts, guests = cluster_plan_inputs(params)
        move_back = plan_move_back(hosts, guests, origins, policy, params["marked"])
    except (ValueError, KeyError, TypeError) as exc:
        raise PlanError("cannot plan the move-back of cluster %s: %s" % (params["cluster"], exc)) from exc
    return dict(changed=False, **move_back.to_dict())


def main():
    run_module(ARGUMENT_SPEC, plan, needs_libvirt=False)


if __name__ == "__main__":
    main()
