#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: guest_records
short_description: Keep each guest's definition in the cluster's shared state, with the host it last ran on
version_added: "0.1.0"
description:
  - O(state=refresh) reads the running guests of the host at O(uri) (their persistent libvirt
    definition) and records each one in C(<storage path>/.virtfleet/guests/<guest>.json) as last
    seen on O(host). A record is rewritten (atomically) only when its definition or its host
    changed. Inactive definitions are not recorded - a stale copy left on a host that came back
    must not claim the guest.
  - O(state=query) returns the records, all of them or those last seen on O(last_host).
  - Run it on a host of the cluster (the one that mounts the shared storage), like
    M(virtfleet.cluster.maintenance_state). C(playbooks/recover_host.yml) reads the records to
    restart the guests of a dead host elsewhere.
author:
  - virtfleet maintainers (@virtfleet)
requirements:
  - libvirt-python on the host for O(state=refresh)
extends_documentation_fragment:
  - virtfleet.cluster.attributes
  - virtfleet.cluster.attributes.actiongroup_libvirt
  - virtfleet.cluster.libvirt_connection
attributes:
  check_mode:
    support: full
    details: O(state=refresh) reports which records it would write; writes nothing.
  diff_mode:
    support: none
    details: Nothing to diff.
options:
  path:
    description: The cluster's shared primary storage path (C(virtfleet_storage.path)); the records live in its C(.virtfleet/guests).
    type: path
    required: true
  cluster:
    description: Name of the cluster, for messages.
    type: str
    required: true
  state:
    description: C(refresh) records the running guests of O(uri); C(query) returns records.
    type: str
    choices: [refresh, query]
    default: refresh
  host:
    description: The host whose guests are recorded (O(state=refresh)); usually C(inventory_hostname).
    type: str
  last_host:
    description: With O(state=query), only the records of guests last seen on this host.
    type: str
seealso:
  - module: virtfleet.cluster.host_recovery
"""

EXAMPLES = r"""
- name: Record the guests this host runs
  virtfleet.cluster.guest_records:
    path: "{{ virtfleet_storage.path }}"
    cluster: "{{ virtfleet_cluster }}"
    host: "{{ inventory_hostname }}"

- name: The guests last seen on hv-a1
  virtfleet.cluster.guest_records:
    path: "{{ virtfleet_storage.path }}"
    cluster: "{{ virtfleet_cluster }}"
    state: query
    last_host: hv-a1
  register: records
"""

RETURN = r"""
written:
  description: Guests whose record was written (or would be, in check mode).
  returned: state=refresh
  type: list
  elements: str
unchanged:
  description: Guests whose record was already up to date.
  returned: state=refresh
  type: list
  elements: str
records:
  description: The records (C(name), C(uuid), C(host), C(xml), C(memory_mib), C(vcpus), C(seen), C(seen_iso)).
  returned: state=query
  type: list
  elements: dict
msg:
  description: What happened.
  returned: always
  type: str
"""

from typing import Any, Dict

from ansible_collections.virtfleet.cluster.plugins.module_utils import canary
from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.guest_records import GuestRecords
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
    CONNECTION_ARGUMENT_SPEC, LibvirtHostError, connector, libvirt, libvirt_message)
from ansible_collections.virtfleet.cluster.plugins.module_utils.state_store import StateError, state_dir

ARGUMENT_SPEC: Dict[str, Any] = dict(
    CONNECTION_ARGUMENT_SPEC,
    path=dict(type="path", required=True),
    cluster=dict(type="str", required=True),
    state=dict(type="str", default="refresh", choices=["refresh", "query"]),
    host=dict(type="str"),
    last_host=dict(type="str"),
)
VIR_DOMAIN_XML_INACTIVE = 2


def running_definitions(conn) -> list:
    """The persistent definition of every running guest (the live one for a transient guest)."""
    definitions = []
    for dom in conn.listAllDomains(0):
        # The collection's canary is no guest to restart after a host failure.
        if dom.isActive() != 1 or canary.domain_is_canary(dom):
            continue
        definitions.append(dom.XMLDesc(VIR_DOMAIN_XML_INACTIVE if dom.isPersistent() == 1 else 0))
    return definitions


def work(params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    store = GuestRecords(state_dir(params["path"]), params["cluster"], check_mode)
    if params["state"] == "query":
        records = list(store.read_all().values())
        if params["last_host"]:
            records = [record for record in records if record.get("host") == params["last_host"]]
        return {"changed": False, "records": records,
                "msg": "%d guest record(s)%s" % (len(records), " last seen on %s" % params["last_host"]
                                                 if params["last_host"] else "")}
    if not params["host"]:
        raise StateError("state=refresh needs host (the name the guests are recorded under)")
    conn = connector(params)(params["uri"])
    try:
        definitions = running_definitions(conn)
    except libvirt.libvirtError as exc:
        raise LibvirtHostError("reading the guests of %s failed: %s" % (params["host"], libvirt_message(exc)))
    finally:
        conn.close()
    outcome = store.update(params["host"], definitions)
    return dict(outcome, changed=bool(outcome["written"]),
                msg="%s: %d guest record(s) %s, %d unchanged" % (
                    params["host"], len(outcome["written"]), "to write" if check_mode else "written",
                    len(outcome["unchanged"])))


def main():
    run_module(ARGUMENT_SPEC, work, needs_libvirt=False)


if __name__ == "__main__":
    main()
