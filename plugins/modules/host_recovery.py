#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_recovery
short_description: Declare a host dead, then restart its guests on the other hosts of its cluster
version_added: "0.1.0"
description:
  - O(state=probe) asks the host's libvirt (O(uri)) and SSH (O(address), O(ssh_port); the SSH
    banner, not only the TCP handshake) up to O(retries) times, O(delay) seconds apart. The host
    is declared dead (C(dead=true)) only when every probe found both failing; one answer from
    either declares it alive, and the task fails unless O(fail_when_alive=false).
  - O(state=restart) restarts the guests last seen on O(host) (their O(records), from
    M(virtfleet.cluster.guest_records)) on the O(peers). First it reads every peer; a peer that
    cannot be read refuses the run (it might run one of the guests), and a guest already running
    on a peer is never started again. Then the plan - HA priority (O(priorities), highest first,
    0 = never restarted), capacity and anti-affinity through the placement planner; guests that do
    not fit are listed. Then each guest is defined and started on its peer. A start refused because
    the guest's lease is held (it still runs somewhere, so the host is not fenced) stops the recovery
    there and says so.
  - Nothing is restarted unless a fence is confirmed (O(fence)); see C(docs/ha.md).
  - "Runs on the controller (C(delegate_to: localhost)): it reaches every host by URI."
author:
  - virtfleet maintainers (@virtfleet)
requirements:
  - libvirt-python on the controller
extends_documentation_fragment:
  - virtfleet.cluster.attributes
attributes:
  check_mode:
    support: full
    details: O(state=probe) runs as usual (it only reads); O(state=restart) returns the plan and starts nothing.
  diff_mode:
    support: none
    details: Nothing to diff.
options:
  state:
    description: C(probe) decides whether the host is dead; C(restart) restarts its guests elsewhere.
    type: str
    choices: [probe, restart]
    default: restart
  host:
    description: Name of the host that died.
    type: str
    required: true
  uri:
    description: The host's libvirt URI (O(state=probe)).
    type: str
  address:
    description: The host's SSH address (O(state=probe)).
    type: str
  ssh_port:
    description: The host's SSH port.
    type: int
    default: 22
  retries:
    description: How many probes at most (O(state=probe)).
    type: int
    default: 3
  delay:
    description: Seconds between probes (O(state=probe)); a host is dead after about O(retries) x O(delay) seconds of silence.
    type: float
    default: 10
  timeout:
    description: Seconds each probe waits for libvirt and for the SSH banner.
    type: float
    default: 5
  fail_when_alive:
    description: With O(state=probe), fail when the host answered.
    type: bool
    default: true
  records:
    description: The guest records (M(virtfleet.cluster.guest_records) C(records)); those last seen on O(host) are restarted.
    type: list
    elements: dict
    default: []
  peers:
    description: The other hosts of the cluster, C({name, uri, in_maintenance}); hosts in maintenance are never destinations.
    type: list
    elements: dict
    default: []
  fence:
    description:
      - What proves the host cannot still run its guests. C(hook) - a power-fence hook ran and
        O(fence_confirmed) says whether it confirmed the host is off. C(leases) - sanlock or
        virtlockd leases on the shared storage refuse a second start while the first copy lives.
        C(none) refuses every restart.
    type: str
    choices: [hook, leases, none]
    default: none
  fence_confirmed:
    description: The power-fence hook confirmed that the host is off.
    type: bool
    default: false
  priorities:
    description: HA priority per guest name (higher first; 0 = never restarted).
    type: dict
    default: {}
  default_priority:
    description: HA priority of guests not in O(priorities).
    type: int
    default: 1
  anti_affinity_groups:
    description: Group name -> guest names that must not share a host.
    type: dict
    default: {}
  memory_overcommit:
    description: Memory overcommit ratio of the peers.
    type: float
    default: 1.0
  memory_reserve_mib:
    description: Memory each peer keeps for itself.
    type: int
    default: 512
  username:
    description: libvirt SASL user name for every host.
    type: str
  password:
    description: libvirt SASL password for every host.
    type: str
seealso:
  - module: virtfleet.cluster.guest_records
"""

EXAMPLES = r"""
- name: Is hv-a1 dead? (libvirt and SSH silent for 3 probes, 10 s apart)
  virtfleet.cluster.host_recovery:
    state: probe
    host: hv-a1
    uri: "{{ hostvars['hv-a1'].virtfleet_libvirt_uri }}"
    address: "{{ hostvars['hv-a1'].ansible_host }}"
  delegate_to: localhost

- name: Restart its guests on the other hosts
  virtfleet.cluster.host_recovery:
    host: hv-a1
    records: "{{ records.records }}"
    peers: [{name: hv-a2, uri: "qemu+ssh://hv-a2/system"}, {name: hv-a3, uri: "qemu+ssh://hv-a3/system"}]
    fence: leases
    priorities: {db1: 10, batch7: 0}
  delegate_to: localhost
"""

RETURN = r"""
dead:
  description: The host is dead (O(state=probe)).
  returned: state=probe
  type: bool
reason:
  description: Why it is, or is not, declared dead.
  returned: state=probe
  type: str
probes:
  description: Each probe (C(libvirt_ok), C(libvirt_error), C(ssh_ok), C(ssh_error), C(time)).
  returned: state=probe
  type: list
  elements: dict
plan:
  description: C(restart) (guest, host, priority), C(already_running), C(unplaced), C(not_restarted).
  returned: state=restart
  type: dict
restarted:
  description: Guests started (would be, in check mode), each with the host it now runs on.
  returned: state=restart
  type: list
  elements: dict
already_running:
  description: Guests found running on a peer, never started again.
  returned: state=restart
  type: list
  elements: dict
unplaced:
  description: Guests that do not fit on the peers, with why.
  returned: state=restart
  type: list
  elements: dict
start_failures:
  description: Guests whose start failed for another reason than a lease (C(guest), C(host), C(error)).
  returned: state=restart
  type: list
  elements: dict
lease_held:
  description: The start refused by a held lease that stopped the recovery (null when none).
  returned: state=restart
  type: dict
placement:
  description: Guest -> host it runs on now, for every guest restarted or already running.
  returned: state=restart
  type: dict
msg:
  description: Each guest and where it runs now, or why not.
  returned: always
  type: str
"""

from typing import Any, Dict

from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
    CREDENTIALS_ARGUMENT_SPEC, connector)
from ansible_collections.virtfleet.cluster.plugins.module_utils.recovery_run import probe_host, recover

ARGUMENT_SPEC: Dict[str, Any] = dict(
    CREDENTIALS_ARGUMENT_SPEC,
    state=dict(type="str", default="restart", choices=["probe", "restart"]),
    host=dict(type="str", required=True),
    uri=dict(type="str"),
    address=dict(type="str"),
    ssh_port=dict(type="int", default=22),
    retries=dict(type="int", default=3),
    delay=dict(type="float", default=10),
    timeout=dict(type="float", default=5),
    fail_when_alive=dict(type="bool", default=True),
    records=dict(type="list", elements="dict", default=[]),
    peers=dict(type="list", elements="dict", default=[]),
    fence=dict(type="str", default="none", choices=["hook", "leases", "none"]),
    fence_confirmed=dict(type="bool", default=False),
    priorities=dict(type="dict", default={}),
    default_priority=dict(type="int", default=1),
    anti_affinity_groups=dict(type="dict", default={}),
    memory_overcommit=dict(type="float", default=1.0),
    memory_reserve_mib=dict(type="int", default=512),
)


def work(params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    if params["state"] == "probe":
        if not params["uri"] or not params["address"]:
            raise VirtfleetError("state=probe needs uri and address of host %s" % params["host"])
        verdict = probe_host(params["uri"], params["address"], params["ssh_port"], params["retries"],
                             params["delay"], params["timeout"])
        verdict["msg"] = "%s is %s: %s" % (params["host"], "dead" if verdict["dead"] else "ALIVE", verdict["reason"])
        if not verdict["dead"] and params["fail_when_alive"]:
            verdict["msg"] += "; its guests are not restarted elsewhere (they may still run there)"
            verdict["failed"] = True
        return dict(verdict, changed=False)
    open_peer = connector(params)
    result = recover(params, check_mode, connect=open_peer)
    result["failed"] = result.pop("failed_recovery")
    return result


def main():
    run_module(ARGUMENT_SPEC, work)


if __name__ == "__main__":
    main()
