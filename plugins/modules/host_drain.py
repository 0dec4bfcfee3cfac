#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: host_drain
short_description: Empty a libvirt host by live-migrating its guests to the rest of its cluster
version_added: "0.1.0"
description:
  - Reads every host of the cluster (capacity, running guests), plans where each guest of
    O(host) goes with the collection's placement planner (capacity reserved cumulatively,
    overcommit ratios, anti-affinity groups, hosts in maintenance excluded, CPU compatibility
    asked to each destination's libvirt), and B(refuses before moving anything) when the
    cluster cannot absorb the host's guests, naming the guests and the shortfall.
  - Then live-migrates the guests, at most O(max_parallel) at once and at most
    O(max_incoming_per_destination) into one host, in plan order (largest first by default),
    with the same watchdogs as M(virtfleet.cluster.guest_migrate).
  - The first failed migration stops new starts; migrations already running finish; the
    result says where every guest is.
  - At the end the host itself is asked for its running guests - there must be none (except
    guests left on purpose with O(unmovable=leave)), otherwise the task fails. A host must
    never be rebooted with guests on it.
  - In check mode returns the full plan (guest -> destination, order) and touches nothing. The
    real run builds its plan with the same deterministic planner from the same facts, so an
    unchanged cluster gets the same plan.
  - With O(shared_state), in the cluster's move turn - the hosts marked in maintenance or holding a slot of
    the cluster are no destinations, and the moves other drains of the run have reserved and not finished
    are subtracted from their destinations (RV(plan.reserved)), so drains of one cluster run side by side
    without planning onto the same free memory. Once the plan is accepted, its moves are recorded as this
    host's reservation and the turn is given back - the next drain may plan. A refused plan gives the turn
    back too. The reservation is removed when the migrations are over.
  - With O(shared_state), the state is read again right before each migration starts. A migration whose
    destination was marked in maintenance since the plan, or that would start after the run lost the
    cluster's lock, does not start - the drain stops there, the guest still running on its source, and
    says why. In check mode, nothing is written (the plan respects the reservations). Without
    libvirt-python on the controller the module runs on the host without any of this (the caller holds
    the move turn).
  - With O(report), the drain's events are recorded once it is over - one C(migration) event per planned
    move (purpose C(drain), its times, downtime and status), one C(phase) event per guest shut down, and
    the C(drain) phase's end or failure with where the guests are and what was reserved.
  - The action plugin of the same name runs the drain on the controller and prints each
    guest's progress live (C(a1-g1 -> hv-a2 64% of 128 MiB)); this module file holds the
    documentation and runs the same code (plugins/module_utils/host_drain_task.py) without live
    display when executed directly.
author:
  - virtfleet maintainers (@virtfleet)
requirements:
  - libvirt-python on the controller
extends_documentation_fragment:
  - virtfleet.cluster.attributes
  - virtfleet.cluster.shared_state
  - virtfleet.cluster.task_report
attributes:
  check_mode:
    support: full
    details: Returns the plan (and fails the same way a real run would refuse).
  diff_mode:
    support: none
    details: Nothing to diff - the result says where the guests are.
  action:
    support: full
    description: Indicates this has a corresponding action plugin, so some parts of the task run on the controller.
    details: Runs the drain on the controller and prints live progress per guest.
options:
  host:
    description: Name of the host to drain; must be one of O(hosts).
    type: str
    required: true
  hosts:
    description:
      - Every host of the cluster, the drained one included.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Host name (as in the inventory).
        type: str
        required: true
      uri:
        description:
          - libvirt URI the controller uses for this host.
          - The URI stays visible in output; a password embedded in it (C(user:password@host)) and the
            values of secret-looking query parameters (C(apikey=), C(secretkey=), C(*pass*),
            C(*token*)) are masked.
        type: str
        required: true
      in_maintenance:
        description: The host is in maintenance - never a destination.
        type: bool
        default: false
      migration_uri:
        description:
          - URI the source daemon uses to reach this host (peer-to-peer); defaults to O(hosts[].uri).
            Its secrets are masked as in O(hosts[].uri).
        type: str
  max_parallel:
    description: Migrations running at once (outgoing from the drained host). vdsm's default is 2.
    type: int
    default: 2
  max_incoming_per_destination:
    description:
      - Migrations running at once into one destination host. Whatever else arrives there counts
        too, as the destination's libvirt lists it (a guest paused for an incoming migration).
      - With O(shared_state) (the action plugin on the controller), the drains of a run side by
        side keep the limit together through lock files on the controller, one per place.
      - A move waits for room up to 30 minutes, then fails with its guest still on the source.
    type: int
    default: 1
  order:
    description: Order in which guests are placed and started.
    type: str
    choices: [largest_first, smallest_first, as_listed]
    default: largest_first
  unmovable:
    description:
      - What to do with a running guest that cannot live-migrate (host device passthrough, local
        disks without C(copy_storage) in O(migration), listed in O(unmovable_guests)).
      - V(fail) refuses the drain before anything moves. V(shutdown) shuts it down cleanly
        (ACPI; never forced - the drain fails if it does not stop within O(shutdown_timeout)).
        V(leave) leaves it running and excludes it from the final check; the host must then
        not be rebooted.
    type: str
    choices: [fail, shutdown, leave]
    default: fail
  unmovable_guests:
    description: Guests the operator declares unmovable.
    type: list
    elements: str
    default: []
  stop_allowed_guests:
    description:
      - With O(unmovable=shutdown), the only guests that may be shut down. Any other guest that
        cannot live-migrate (for example one that became unmovable after the caller planned)
        refuses the drain before anything moves, as with O(unmovable=fail).
      - Not set, O(unmovable=shutdown) applies to every guest that cannot live-migrate.
    type: list
    elements: str
  anti_affinity_groups:
    description: Groups of guests that must not share a host, as group name -> list of guest names.
    type: dict
    default: {}
  memory_overcommit:
    description: Usable memory of a host = total x this - O(memory_reserve_mib).
    type: float
    default: 1.0
  cpu_overcommit:
    description: Usable vCPUs of a host = CPUs x this.
    type: float
    default: 4.0
  memory_reserve_mib:
    description: Memory kept for the host itself.
    type: int
    default: 512
  respect_free_memory:
    description: Also require the memory the destination reports free (minus the reserve).
    type: bool
    default: true
  cpu_check:
    description: Ask each destination's libvirt whether it can run each guest's CPU model (compareHypervisorCPU).
    type: bool
    default: true
  shared_storage_path:
    description: The cluster's shared storage directory; guest disks outside it are local (need C(copy_storage) in O(migration)).
    type: str
  shutdown_timeout:
    description: Seconds to wait for a clean shutdown with O(unmovable=shutdown).
    type: int
    default: 300
  migration:
    description:
      - Options of each migration, the options of M(virtfleet.cluster.guest_migrate) (documented
        there once; a documentation fragment cannot describe suboptions). Ansible checks their names
        and types before the drain starts.
    type: dict
    default: {}
    suboptions:
      max_downtime_ms:
        description: As O(virtfleet.cluster.guest_migrate#module:max_downtime_ms).
        type: int
      bandwidth_mib:
        description: As O(virtfleet.cluster.guest_migrate#module:bandwidth_mib).
        type: int
      auto_converge:
        description: As O(virtfleet.cluster.guest_migrate#module:auto_converge).
        type: bool
        default: false
      auto_converge_initial:
        description: As O(virtfleet.cluster.guest_migrate#module:auto_converge_initial).
        type: int
      auto_converge_increment:
        description: As O(virtfleet.cluster.guest_migrate#module:auto_converge_increment).
        type: int
      postcopy:
        description: As O(virtfleet.cluster.guest_migrate#module:postcopy).
        type: bool
        default: false
      postcopy_after_iterations:
        description: As O(virtfleet.cluster.guest_migrate#module:postcopy_after_iterations).
        type: int
        default: 2
      parallel_connections:
        description: As O(virtfleet.cluster.guest_migrate#module:parallel_connections).
        type: int
      persist_dest:
        description: As O(virtfleet.cluster.guest_migrate#module:persist_dest).
        type: bool
        default: true
      undefine_source:
        description: As O(virtfleet.cluster.guest_migrate#module:undefine_source).
        type: bool
        default: true
      copy_storage:
        description: As O(virtfleet.cluster.guest_migrate#module:copy_storage).
        type: bool
        default: false
      migrate_disks:
        description: As O(virtfleet.cluster.guest_migrate#module:migrate_disks).
        type: list
        elements: str
      migrate_uri:
        description: As O(virtfleet.cluster.guest_migrate#module:migrate_uri).
        type: str
      timeout:
        description: As O(virtfleet.cluster.guest_migrate#module:timeout).
        type: int
      timeout_per_gib:
        description: As O(virtfleet.cluster.guest_migrate#module:timeout_per_gib).
        type: int
        default: 800
      min_timeout:
        description: As O(virtfleet.cluster.guest_migrate#module:min_timeout).
        type: int
        default: 120
      stall_iterations:
        description: As O(virtfleet.cluster.guest_migrate#module:stall_iterations).
        type: int
        default: 10
seealso:
  - module: virtfleet.cluster.guest_migrate
  - module: virtfleet.cluster.hypervisor_facts
"""

EXAMPLES = r"""
- name: List the cluster's hosts with their libvirt URIs (from the topology inventory)
  ansible.builtin.set_fact:
    cluster_hosts: >-
      {{ cluster_hosts | default([]) + [{'name': item,
                                         'uri': hostvars[item].virtfleet_libvirt_uri}] }}
  loop: "{{ groups['cluster_' ~ virtfleet_cluster] }}"

- name: Drain this host into the rest of its cluster
  virtfleet.cluster.host_drain:
    host: "{{ inventory_hostname }}"
    hosts: "{{ cluster_hosts }}"
  delegate_to: localhost

- name: Same, written out, with tighter limits
  virtfleet.cluster.host_drain:
    host: hv-a1
    hosts:
      - {name: hv-a1, uri: "qemu+ssh://root@hv-a1/system"}
      - {name: hv-a2, uri: "qemu+ssh://root@hv-a2/system"}
      - {name: hv-a3, uri: "qemu+ssh://root@hv-a3/system", in_maintenance: true}
    max_parallel: 1
    anti_affinity_groups:
      web: [web-1, web-2]
    migration:
      max_downtime_ms: 300
      auto_converge: true
  delegate_to: localhost

- name: Show the plan only
  virtfleet.cluster.host_drain:
    host: hv-a1
    hosts: "{{ cluster_hosts }}"
  check_mode: true
  delegate_to: localhost
  register: plan
"""

RETURN = r"""
host:
  description: The drained host.
  returned: always
  type: str
plan:
  description: The placement plan.
  returned: always
  type: dict
  contains:
    ok:
      description: Whether every guest can be placed.
      type: bool
    moves:
      description: Planned moves in start order - guest, source, destination, memory_mib, vcpus, order.
      type: list
      elements: dict
      sample: [{"guest": "a1-g1", "source": "hv-a1", "destination": "hv-a2", "memory_mib": 128, "vcpus": 1, "order": 1}]
    unplaced:
      description: Guests no host can take, with the reason per candidate host.
      type: list
    unmovable:
      description: Guests that cannot live-migrate and the action taken (fail, shutdown, leave).
      type: list
    problems:
      description: Why the plan is not ok, one line each.
      type: list
    unreachable_hosts:
      description: Cluster hosts whose libvirt could not be read (left out of the plan), with why.
      type: dict
    excluded_in_maintenance:
      description: Hosts not used as destinations because they are in maintenance (or hold a slot, with O(shared_state)).
      type: list
    reserved:
      description:
        - Destination to what other drains in flight have reserved there and the plan subtracted (O(shared_state))
          - C(memory_mib), C(vcpus) and C(guests).
      type: dict
      sample: {"hv-a3": {"memory_mib": 256, "vcpus": 2, "guests": ["a1-g1", "a1-g2"]}}
migrations:
  description:
    - One entry per planned move - guest, source, destination, status (migrated, failed,
      not_started), running_on, where, start_index, started_s/ended_s (seconds from RV(moves_began)),
      result (the job statistics of M(virtfleet.cluster.guest_migrate)) or error.
    - C(running_on) is the host running the guest (null when nobody does); C(where) says where the
      guest is in words - the host running it, V(hv-1 (paused\)) for a guest a failed migration left
      paused there, V(hv-1 and hv-2 (active on both\)), V(NOWHERE) or V(unknown). A failed entry also
      has C(paused_on), the host holding the guest paused (null if none), C(location) and C(reason).
    - A migrated entry's result may carry C(warnings) (autostart not carried over, with the command
      that does it by hand); they are also shown as task warnings. It carries
      C(waited_for_incoming), the guests others were sending to its destination, when it waited
      for them (see O(max_incoming_per_destination)).
  returned: when not in check mode
  type: list
  elements: dict
locations:
  description:
    - Where each guest of the host is after the task (guest -> host running it; null if nobody
      runs it or it is not known - a guest left paused is null here, see RV(where)).
  returned: when not in check mode, or on refusal
  type: dict
where:
  description:
    - Where each guest of the host is after the task, in words (guest -> the host running it,
      V(hv-1 (paused\)), V(hv-1 and hv-2 (active on both\)), V(NOWHERE) or V(unknown)).
  returned: when migrations ran (not in check mode, not on refusal)
  type: dict
  sample: {"web-1": "hv-2", "db-1": "hv-1 (paused)"}
remaining_guests:
  description: Guests the host still runs at the end (only guests left on purpose may be here).
  returned: when the drain ran to the end
  type: list
shutdown:
  description: Guests shut down under O(unmovable=shutdown) and whether they stopped.
  returned: always
  type: list
left:
  description: Guests left running under O(unmovable=leave).
  returned: always
  type: list
would_migrate:
  description: Number of migrations the drain would run.
  returned: check mode
  type: int
moves_began:
  description: When the migrations began (epoch seconds); each migration's C(started_s) and C(ended_s) count from it.
  returned: when migrations were started
  type: float
elapsed_s:
  description: Duration of the drain on the controller.
  returned: when the drain ran to the end
  type: float
msg:
  description: Summary, or why the drain was refused or failed.
  returned: always
  type: str
"""

from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.host_drain_task import ARGUMENT_SPEC, run


def main():
    run_module(ARGUMENT_SPEC, run)


if __name__ == "__main__":
    main()
