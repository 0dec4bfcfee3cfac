#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: hypervisor_facts
short_description: Read a libvirt host's hypervisor, CPU, capacity and guest facts
version_added: "0.1.0"
description:
  - Connects to the libvirt daemon at O(uri) and reports the hypervisor driver and version,
    the libvirt version, host UUID, architecture, the host CPU as libvirt's C(host-model) sees
    it (model, vendor, features and the raw C(<cpu>) XML, ready for CPU baseline and
    comparison), whether KVM is usable, memory, CPU count, supported machine types, storage
    pools and every guest (running and inactive) with state, memory, vCPUs, CPU mode/model,
    disks and what would stop it from live-migrating.
  - "Runs on the hypervisor host itself (O(uri) defaults to its own libvirt) or on the controller
    (C(delegate_to: localhost)) with the host's C(virtfleet_libvirt_uri); only reads, so check
    mode runs it the same way."
author:
  - virtfleet maintainers (@virtfleet)
requirements:
  - libvirt-python on the machine that runs the module (the host itself, or the controller)
extends_documentation_fragment:
  - virtfleet.cluster.attributes
  - virtfleet.cluster.attributes.info_module
  - virtfleet.cluster.attributes.facts
  - virtfleet.cluster.attributes.actiongroup_libvirt
  - virtfleet.cluster.libvirt_connection
attributes:
  facts:
    support: full
    details:
      - Sets the fact C(virtfleet_hypervisor_facts), the same facts it returns as C(hypervisor)
        (not C(virtfleet_hypervisor), which the topology inventory sets to the declared hypervisor type).
options:
  shared_storage_path:
    description:
      - Path of the cluster's shared primary storage (the topology's C(virtfleet_storage.path)).
        Guest disks under it are reported as shared, others as local (they would need block
        migration); storage pools targeting it are listed.
    type: str
  gather_guests:
    description: Whether to list guests (set to false on hosts with very many guests when only host facts are needed).
    type: bool
    default: true
notes:
  - KVM counts as usable when libvirt can produce domain capabilities for virttype C(kvm);
    C(kvm_error) then says why not (for example no access to C(/dev/kvm)).
  - The CPU reported under C(cpu) is the host-model of the virttype the host can run (KVM, else
    TCG); under TCG it is what QEMU emulates, not the physical CPU (that one is C(host_cpu)).
seealso:
  - module: virtfleet.cluster.cluster_homogeneity
"""

EXAMPLES = r"""
- name: Read the facts of each hypervisor on the hypervisor itself (its own qemu:///system)
  virtfleet.cluster.hypervisor_facts: {}
  become: true

- name: Read the facts of each hypervisor from the controller
  virtfleet.cluster.hypervisor_facts:
    uri: "{{ virtfleet_libvirt_uri }}"
    shared_storage_path: "{{ virtfleet_storage.path | default(omit) }}"
  delegate_to: localhost
  register: hv

- name: Show running guests
  ansible.builtin.debug:
    msg: "{{ hv.hypervisor.guests | selectattr('active') | map(attribute='name') | list }}"

- name: Set the connection once for every libvirt module of the play
  module_defaults:
    group/virtfleet.cluster.libvirt:
      uri: "{{ virtfleet_libvirt_uri }}"
      username: "{{ libvirt_sasl_user | default(omit) }}"
      password: "{{ libvirt_sasl_password | default(omit) }}"
  delegate_to: localhost
  block:
    - name: Read the host's facts
      virtfleet.cluster.hypervisor_facts:
        gather_guests: false

    - name: Check that the host runs no guest
      virtfleet.cluster.host_empty:
        host: "{{ inventory_hostname }}"

- name: Facts are also set as virtfleet_hypervisor_facts on the inventory host
  ansible.builtin.debug:
    msg: "{{ virtfleet_hypervisor_facts.libvirt_version }} / KVM usable: {{ virtfleet_hypervisor_facts.kvm_usable }}"
"""

RETURN = r"""
hypervisor:
  description: Facts of the host. The same dictionary is set as the fact C(virtfleet_hypervisor_facts).
  returned: success
  type: dict
  contains:
    uri:
      description: The URI, with any password masked.
      type: str
      sample: qemu+tcp://127.0.1.11/session
    hostname:
      description: Host name the daemon reports.
      type: str
    driver:
      description: libvirt driver (C(conn.getType())).
      type: str
      sample: QEMU
    hypervisor:
      description: Hypervisor as the topology names it (C(kvm), C(qemu) when KVM is not usable, C(xen), ...).
      type: str
      sample: kvm
    hypervisor_version:
      description: Version of the hypervisor (QEMU for the QEMU driver).
      type: str
      sample: 7.2.22
    libvirt_version:
      description: Version of the libvirt daemon.
      type: str
      sample: 9.0.0
    host_uuid:
      description: Host UUID from the capabilities; libvirt refuses to migrate between hosts sharing one.
      type: str
    arch:
      description: Host architecture.
      type: str
      sample: x86_64
    host_cpu:
      description: Host CPU as the capabilities XML describes it (model, vendor, features).
      type: dict
    cpu:
      description:
        - The host-model CPU from the domain capabilities - what a C(host-model) guest gets here.
          Keys C(model), C(vendor), C(features), C(disabled_features), C(xml) (a C(<cpu>) document
          for baselineHypervisorCPU/compareHypervisorCPU), C(virttype), C(default_machine),
          C(usable_models). Null when the driver has no domain capabilities.
      type: dict
    kvm_usable:
      description: Whether libvirt can run KVM guests on the host.
      type: bool
    kvm_error:
      description: Why KVM is not usable (libvirt's message), or null.
      type: str
    memory_total_mib:
      description: Host memory.
      type: int
    memory_free_mib:
      description: Free host memory as the host reports it.
      type: int
    cpus:
      description: Number of host CPUs.
      type: int
    machine_types:
      description: Machine types of the host architecture for the domain type the host runs (kvm, else qemu).
      type: list
      elements: str
      sample: [pc, pc-i440fx-7.2, pc-q35-7.2, q35]
    machine_types_by_domain:
      description: Machine types per domain type.
      type: dict
    storage_pools:
      description: Storage pools (name, type, path, active).
      type: list
      elements: dict
    shared_storage:
      description: O(shared_storage_path) and the names of pools targeting it.
      returned: when O(shared_storage_path) is given
      type: dict
    guests:
      description:
        - Every guest, running or not, sorted by name. Keys C(name), C(uuid), C(state), C(active),
          C(persistent), C(autostart), C(domain_type), C(arch), C(machine), C(memory_mib),
          C(max_memory_mib), C(vcpus), C(cpu_mode), C(cpu_model), C(cpu_xml) (the C(<cpu>) element
          of a custom-model guest, for compareHypervisorCPU on a destination; null otherwise), C(disks) (C(target), C(device), C(type), C(path), C(readonly),
          C(shared)), C(local_disks), C(movable), C(migration_blockers), C(migration_notes).
      returned: when O(gather_guests) is true
      type: list
      elements: dict
    guest_count:
      description: Number of guests (running or not).
      returned: when O(gather_guests) is true
      type: int
    running_guest_count:
      description: Number of running guests.
      returned: when O(gather_guests) is true
      type: int
    memory_allocated_mib:
      description: Memory of the running guests.
      returned: when O(gather_guests) is true
      type: int
    vcpus_running:
      description: vCPUs of the running guests.
      returned: when O(gather_guests) is true
      type: int
"""

from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import CONNECTION_ARGUMENT_SPEC
from ansible_collections.virtfleet.cluster.plugins.module_utils import libvirt_facts

ARGUMENT_SPEC = dict(
    CONNECTION_ARGUMENT_SPEC,
    shared_storage_path=dict(type="str"),
    gather_guests=dict(type="bool", default=True),
)


def run(params, _check_mode):
    """The module's work: only reads, the same in check mode."""
    facts = libvirt_facts.gather_hypervisor_facts(params["uri"], params["shared_storage_path"],
                                                  params["username"], params["password"],
                                                  include_guests=params["gather_guests"])
    return {"changed": False, "hypervisor": facts, "ansible_facts": {"virtfleet_hypervisor_facts": facts}}


def main():
    run_module(ARGUMENT_SPEC, run)


if __name__ == "__main__":
    main()
