#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: rebalance_plan
short_description: Plan live migrations that even out memory load across a cluster
description:
  - Builds the cluster's capacity from M(virtfleet.cluster.hypervisor_facts) results and runs
    the collection's rebalance planner (C(cluster_plans.plan_rebalance)) - while the spread between
    the most and the least loaded host (allocated guest memory / host memory) exceeds
    O(threshold), move the guest that narrows it most from the most loaded host to the least
    loaded host that can take it.
  - Hosts in maintenance (O(marked)) neither give nor take guests; guests that cannot
    live-migrate stay. Capacity comes from the collection's one facts conversion (running
    guests, the larger of current and maximum memory), as for the drain and the capacity proof.
  - Pure computation on the controller; moves nothing (the playbook C(playbooks/rebalance.yml)
    runs the moves with M(virtfleet.cluster.guest_migrate)).
version_added: 0.1.0
author:
  - virtfleet maintainers (@virtfleet)
extends_documentation_fragment:
  - virtfleet.cluster.attributes
  - virtfleet.cluster.attributes.info_module
options:
  facts:
    description: Host name to the C(hypervisor) result of M(virtfleet.cluster.hypervisor_facts), for every host of the cluster.
    type: dict
    required: true
  cluster:
    description: Name of the cluster (in messages).
    type: str
    default: cluster
  marked:
    description: Hosts in maintenance.
    type: list
    elements: str
    default: []
  threshold:
    description: Spread of memory load (a fraction, 0.10 = ten percentage points) below which nothing moves.
    type: float
    default: 0.10
  max_moves:
    description: At most this many moves (0 - no limit).
    type: int
    default: 0
  unmovable_guests:
    description: Guests that must stay where they are.
    type: list
    elements: str
    default: []
  anti_affinity_groups:
    description: Anti-affinity group name to guest names.
    type: dict
    default: {}
  copy_storage:
    description:
      - Whether the migrations copy local disks. Without it a guest with local disks stays
        where it is (the hypervisor facts know local disks when read with C(shared_storage_path)).
    type: bool
    default: false
  policy:
    description: Placement policy fields (C(memory_overcommit), C(cpu_overcommit), C(memory_reserve_mib), C(respect_free_memory)).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Plan the moves that even out cluster kvm-prod
  virtfleet.cluster.rebalance_plan:
    cluster: kvm-prod
    facts: "{{ facts_by_host }}"
    threshold: 0.15
  delegate_to: localhost
  register: rebalance
"""

RETURN = r"""
moves:
  description: Moves in the order to run them - C(guest), C(source), C(destination), C(memory_mib), C(vcpus).
  returned: always
  type: list
  elements: dict
loads_before:
  description: Host to memory load (allocated / total) now.
  returned: always
  type: dict
loads_after:
  description: Host to memory load once the moves are done.
  returned: always
  type: dict
spread_before:
  description: Most minus least loaded host, now.
  returned: always
  type: float
spread_after:
  description: Most minus least loaded host after the moves.
  returned: always
  type: float
"""

import dataclasses

from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.capacity import (
    CLUSTER_PLAN_ARGUMENT_SPEC, PlanError, cluster_plan_inputs)
from ansible_collections.virtfleet.cluster.plugins.module_utils.cluster_plans import (
    memory_loads, plan_rebalance)

ARGUMENT_SPEC = dict(CLUSTER_PLAN_ARGUMENT_SPEC,
                     threshold=dict(type="float", default=0.10),
                     max_moves=dict(type="int", default=0))


def _spread(loads, marked):
    values = [v for h, v in loads.items() if h not in marked]
    return round(max(values) - min(values), 4) if values else 0.0


def plan(params, _check_mode):
    """The module's work: pure computation, the same in check mode."""
    try:
        policy, hosts, guests = cluster_plan_inputs(params)
        moves = plan_rebalance(hosts, guests, policy, threshold=params["threshold"],
                               max_moves=params["max_moves"] or None)
    except (ValueError, KeyError, TypeError) as exc:
        raise PlanError("cannot plan the rebalance of %s: %s" % (params["cluster"], exc)) from exc
    before = memory_loads(hosts, guests)
    where = {m.guest: m.destination for m in moves}
    after = memory_loads(hosts, [dataclasses.replace(g, host=where.get(g.name, g.host)) for g in guests])
    return dict(changed=False, moves=[dataclasses.asdict(m) for m in moves],
                loads_before={h: round(v, 4) for h, v in before.items()},
                loads_after={h: round(v, 4) for h, v in after.items()},
                spread_before=_spread(before, params["marked"]),
                spread_after=_spread(after, params["marked"]))


def main():
    run_module(ARGUMENT_SPEC, plan, needs_libvirt=False)


if __name__ == "__main__":
    main()
