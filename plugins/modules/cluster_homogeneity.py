#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cluster_homogeneity
short_description: Check that the hosts of a cluster can live-migrate guests between each other
version_added: "0.1.0"
description:
  - Reads every host of one cluster through libvirt (the same facts as
    M(virtfleet.cluster.hypervisor_facts)), builds an attribute x host table and fails naming
    the odd host, the attribute and why the difference breaks live migration.
  - "Compared: declared hypervisor (the topology's) and the one libvirt reports, architecture,
    KVM usable on all hosts or none, CPU vendor, a CPU model every host can run (libvirt's
    C(baselineHypervisorCPU) over the hosts' host-model CPUs, checked on each host with
    C(compareHypervisorCPU)), libvirt and QEMU versions within O(version_skew), a common machine
    type, distinct host UUIDs and the same primary storage."
  - The reference value of an attribute is the one most hosts share; on a tie every host is
    named.
  - Hosts whose hypervisor the collection cannot query (C(hyperv), C(vsphere), ...) are compared by
    their declared type (and storage) only.
  - "Runs on the controller (C(delegate_to: localhost), once per cluster); only reads."
author:
  - virtfleet maintainers (@virtfleet)
requirements:
  - libvirt-python on the controller
extends_documentation_fragment:
  - virtfleet.cluster.attributes
  - virtfleet.cluster.attributes.info_module
  - virtfleet.cluster.libvirt_connection.credentials
options:
  hosts:
    description: The hosts of one cluster.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Host name (inventory name).
        type: str
        required: true
      uri:
        description:
          - libvirt URI of the host (its C(virtfleet_libvirt_uri)). Required for hypervisors the
            collection queries (kvm, qemu, xen, lxc) unless O(hosts[].facts) is given.
        type: str
      hypervisor:
        description: Hypervisor the topology declares for the host (C(virtfleet_hypervisor)).
        type: str
      storage:
        description: "The cluster's primary storage as the topology declares it (C(virtfleet_storage)): C(name), C(type), C(path)."
        type: dict
      facts:
        description:
          - Facts already gathered by M(virtfleet.cluster.hypervisor_facts) (its C(hypervisor)
            result). When given, the host is not contacted. Its CPU still enters the baseline;
            the baseline is not double-checked on its daemon then (libvirt's baseline is built to
            run on every CPU it was given).
        type: dict
  version_skew:
    description:
      - How far libvirt and QEMU versions may differ, per component. C(exact) - identical,
        C(patch) - same major.minor, C(minor) - same major, C(major) - any.
    type: dict
    default: {libvirt: minor, qemu: minor}
    suboptions:
      libvirt:
        description: Allowed libvirt skew.
        type: str
        choices: [exact, patch, minor, major]
        default: minor
      qemu:
        description: Allowed QEMU skew.
        type: str
        choices: [exact, patch, minor, major]
        default: minor
  cpu_comparison:
    description:
      - C(libvirt) computes the baseline with libvirt and checks it on every host's own daemon.
        C(features) compares model names and feature sets in Python (stricter, it knows no model
        hierarchy); used automatically when no host could be contacted.
    type: str
    choices: [libvirt, features]
    default: libvirt
  storage_must_match:
    description: Whether different declared primary storage fails the check.
    type: bool
    default: true
  fail_on_mismatch:
    description:
      - Fail the task when the cluster is not homogeneous. With V(false) the result carries
        C(ok=false) and the findings, for reports.
    type: bool
    default: true
  return_facts:
    description: Also return each host's gathered facts (large).
    type: bool
    default: false
seealso:
  - module: virtfleet.cluster.hypervisor_facts
"""

EXAMPLES = r"""
# Every cluster of a topology inventory, with a readable table: the collection's playbook
#   ansible-playbook -i inventories/lab virtfleet.cluster.assert_homogeneity

- name: Describe the hosts of cluster lab-a (topology inventory variables)
  ansible.builtin.set_fact:
    lab_a_hosts: >-
      {{ lab_a_hosts | default([]) + [{
           'name': item,
           'uri': hostvars[item].virtfleet_libvirt_uri,
           'hypervisor': hostvars[item].virtfleet_hypervisor,
           'storage': hostvars[item].virtfleet_storage}] }}
  loop: "{{ groups['cluster_lab_a'] }}"
  run_once: true

- name: Check that lab-a's hosts can live-migrate guests between each other
  virtfleet.cluster.cluster_homogeneity:
    hosts: "{{ lab_a_hosts }}"
  delegate_to: localhost
  run_once: true

- name: Explicit hosts, relaxed version policy, report only
  virtfleet.cluster.cluster_homogeneity:
    hosts:
      - {name: hv1, uri: "qemu+ssh://root@hv1/system", hypervisor: kvm, storage: {name: nfs1, type: shared, path: /srv/nfs1}}
      - {name: hv2, uri: "qemu+ssh://root@hv2/system", hypervisor: kvm, storage: {name: nfs1, type: shared, path: /srv/nfs1}}
    version_skew: {libvirt: major, qemu: minor}
    fail_on_mismatch: false
  delegate_to: localhost
  register: homogeneity

- name: Print the table
  ansible.builtin.debug:
    msg: "{{ homogeneity.table_lines + (homogeneity.errors | map(attribute='message') | list) }}"
"""

RETURN = r"""
ok:
  description: Whether the cluster passed (no error findings).
  returned: always
  type: bool
hosts:
  description: Host names, in the order given (the table's columns).
  returned: always
  type: list
  elements: str
table:
  description: Attribute -> host -> value.
  returned: always
  type: dict
  sample: {arch: {hv-a1: x86_64, hv-a2: x86_64}, kvm: {hv-a1: "yes", hv-a2: "yes"}}
table_lines:
  description: The table as aligned text; odd values are marked C(!) (error) or C(~) (warning).
  returned: always
  type: list
  elements: str
errors:
  description:
    - Findings that break live migration. Each has C(attribute), C(hosts) (the odd ones),
      C(reference) (majority value or null on a tie), C(values), C(why), C(detail) and C(message).
  returned: always
  type: list
  elements: dict
advisories:
  description:
    - Warning-level findings, same keys as RV(errors) - differences that restrict some guests
      only (host-model CPU, machine types not on every host).
  returned: always
  type: list
  elements: dict
odd_hosts:
  description: Host -> attributes on which it is odd (errors only).
  returned: always
  type: dict
baseline_cpu:
  description:
    - The CPU model every host can run - C(model), C(vendor), C(features), C(xml), C(virttype),
      C(arch), C(vendor_neutral) (true when vendors differ and only a vendor-less baseline
      exists, which still fails the check). Null without CPU facts or without any baseline.
  returned: always
  type: dict
common_machine_types:
  description: Machine types every queried host supports.
  returned: always
  type: list
  elements: str
host_facts:
  description: Host -> gathered facts.
  returned: when O(return_facts) is true
  type: dict
unanswered:
  description:
    - Host -> why its facts could not be read (its libvirt did not answer, say). Such a host is also an
      error of attribute C(facts) in RV(errors); the other hosts are compared all the same.
  returned: always
  type: dict
  sample: {hv-a3: "unable to connect to server at 127.0.1.13:16509: Connection refused"}
"""

from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.homogeneity import (
    FeatureSetCpuOracle, HomogeneityError, HostInput, compare_cluster, hosts_to_query)
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
    CREDENTIALS_ARGUMENT_SPEC, HAS_LIBVIRT, connector)
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_facts import HostReading, LibvirtCpuOracle, read_hosts

SKEW_CHOICES = ["exact", "patch", "minor", "major"]
ARGUMENT_SPEC = dict(
    CREDENTIALS_ARGUMENT_SPEC,
    hosts=dict(type="list", elements="dict", required=True, options=dict(
        name=dict(type="str", required=True),
        uri=dict(type="str"),
        hypervisor=dict(type="str"),
        storage=dict(type="dict"),
        facts=dict(type="dict"),
    )),
    version_skew=dict(type="dict", default={"libvirt": "minor", "qemu": "minor"}, options=dict(
        libvirt=dict(type="str", default="minor", choices=SKEW_CHOICES),
        qemu=dict(type="str", default="minor", choices=SKEW_CHOICES),
    )),
    cpu_comparison=dict(type="str", default="libvirt", choices=["libvirt", "features"]),
    storage_must_match=dict(type="bool", default=True),
    fail_on_mismatch=dict(type="bool", default=True),
    return_facts=dict(type="bool", default=False),
)


class _PartialLibvirtOracle(LibvirtCpuOracle):
    """libvirt baseline; hosts given as precomputed facts have no connection to double-check
    the baseline on. The feature-set comparison cannot judge a libvirt model either (it knows
    no model hierarchy), so such hosts get no verdict rather than a false refusal."""

    def compare(self, host, cpu_xml, arch, virttype):
        if host not in self.connections:
            return None
        return LibvirtCpuOracle.compare(self, host, cpu_xml, arch, virttype)


def _cpu_oracle(inputs, connections, cpu_comparison):
    if cpu_comparison == "libvirt" and connections:
        return _PartialLibvirtOracle(connections)
    return FeatureSetCpuOracle({h.name: h.facts["cpu"]["xml"] for h in inputs
                                if h.facts and h.facts.get("cpu") and h.facts["cpu"].get("xml")})


def compare(params, _check_mode):
    """The module's work: reads the hosts to query (through the drain's reader, several at
    once), compares the cluster, fails on a mismatch unless told to report only."""
    to_query = hosts_to_query(params["hosts"])
    if to_query and not HAS_LIBVIRT:
        raise HomogeneityError("the libvirt Python bindings (libvirt-python) are missing on the controller")
    readings = read_hosts([(host["name"], host["uri"], (host.get("storage") or {}).get("path")) for host in to_query],
                          connector(params))
    try:
        inputs = []
        for host in params["hosts"]:
            reading = readings.get(host["name"]) or HostReading(host["name"])  # not queried: nothing read
            facts = host["facts"] if host.get("facts") is not None else reading.facts
            inputs.append(HostInput(host["name"], host.get("hypervisor"), host.get("storage"), facts, reading.error))
        connections = {name: reading.connection for name, reading in readings.items() if reading.connection is not None}
        report = compare_cluster(inputs, cpu_oracle=_cpu_oracle(inputs, connections, params["cpu_comparison"]),
                                 version_skew=params["version_skew"], storage_must_match=params["storage_must_match"])
    finally:
        for reading in readings.values():
            reading.close()
    result = dict(changed=False, **report.to_dict())
    result["unanswered"] = {name: reading.error or "not read" for name, reading in readings.items() if reading.facts is None}
    if params["return_facts"]:
        result["host_facts"] = {h.name: h.facts for h in inputs if h.facts is not None}
    if not report.ok and params["fail_on_mismatch"]:
        raise HomogeneityError("cluster is not homogeneous for live migration: "
                               + " | ".join(f.message for f in report.errors), result)
    return result


def main():
    # Hosts given as facts or of a hypervisor the collection cannot query need no libvirt.
    run_module(ARGUMENT_SPEC, compare, needs_libvirt=False)


if __name__ == "__main__":
    main()
