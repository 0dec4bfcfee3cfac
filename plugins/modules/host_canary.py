#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_canary
short_description: Prove a host takes and gives guests - a canary live-migrates onto it and back
version_added: "0.1.0"
description:
  - Live-migrates a canary from a peer of the cluster onto the host O(host) and back, with the
    run's migration options (the migration code of M(virtfleet.cluster.guest_migrate)). The
    rolling maintenance runs it before a rebooted host goes back into service.
  - By default the canary is a guest the collection owns, so no customer guest is paused for
    the proof - a transient domain named C(virtfleet-canary-<host>) with firmware only (no disk,
    no network, O(memory_mib) of memory, one vCPU) and the domain type, machine type and CPU of
    the cluster's running guests (it needs what they need). It is started on a peer in service,
    the one with the most free memory first and, if that one refuses it (no room, say), the next,
    migrated, then destroyed wherever it is - also after a failure; a transient domain leaves no
    definition behind.
  - Canaries that a crashed run left on the hosts it reads (O(host) and the peers in service)
    are removed first. A canary is known by its name and the collection's metadata element in
    its XML; the collection's readers of guests (facts, drains, host_empty, guest records) leave
    it out, so it is never moved, counted or recorded as a customer guest.
  - With O(guest) the operator's guest serves instead, from the peer in service that runs it,
    when the drain would move it too (running, live-migratable, no local disk, not in
    O(unmovable_guests) or O(stop_allowed_guests)).
  - Peers marked in maintenance are never used - those of O(marks), or with O(shared_state) those
    the cluster's shared state names when the move turn is given.
  - With O(shared_state), the whole proof runs in the cluster's move turn, so that two hosts proven at
    once never pick the same canary and no drain plans meanwhile; the turn is given back when the canary
    is over, also when it failed. Without libvirt-python on the controller the module runs on the host,
    in the turn.
  - With O(report), the canary's events are recorded once it is over - the C(canary) phase's start (when
    it migrated at all), its migrations (RV(migrations)), and the phase's end or failure with the canary,
    the peer and the peers passed over.
  - Fails closed - when no canary can be had, or a migration fails, the task fails with
    RV(passed_over) or the migration's message, and the host is not proven.
  - "Runs on the controller (an action plugin) with the hosts' libvirt URIs; needs libvirt-python
    there. Without O(shared_state) it may be delegated (C(delegate_to: localhost)); with
    O(shared_state), run it on the host to prove, without C(delegate_to)."
author:
  - virtfleet maintainers (@virtfleet)
requirements:
  - libvirt-python on the controller
extends_documentation_fragment:
  - virtfleet.cluster.attributes
  - virtfleet.cluster.migration_options
  - virtfleet.cluster.shared_state
  - virtfleet.cluster.task_report
attributes:
  check_mode:
    support: full
    details: Says which canary would migrate from which peer; starts, moves and removes nothing.
  diff_mode:
    support: none
    details: Nothing to diff.
options:
  host:
    description: Name of the host to prove.
    type: str
    required: true
  uri:
    description: libvirt URI the controller uses to reach O(host). Secrets in it are masked in output.
    type: str
    required: true
  peers:
    description:
      - The other hosts of the cluster, as C(name) and C(uri). The canary starts on (or is taken
        from) one of those not in O(marks).
    type: list
    elements: dict
    required: true
  marks:
    description:
      - The cluster's maintenance marks (host name -> mark), as C(maintenance_state read) returns them.
      - Ignored with O(shared_state), which reads them when the move turn is given.
    type: dict
    default: {}
  guest:
    description: The operator's guest to use as canary. Empty - a canary the collection owns.
    type: str
    default: ""
  memory_mib:
    description: Memory of an owned canary in MiB (firmware only; 32 is plenty).
    type: int
    default: 32
  unmovable_guests:
    description: Guests never to move (a named O(guest) among them cannot serve).
    type: list
    elements: str
    default: []
  stop_allowed_guests:
    description: Guests the run may stop instead of moving (a named O(guest) among them cannot serve).
    type: list
    elements: str
    default: []
  shared_storage_path:
    description: The cluster's shared storage, to tell a named O(guest)'s local disks from shared ones.
    type: str
  run_id:
    description: The run, written into an owned canary's metadata (who started it).
    type: str
seealso:
  - module: virtfleet.cluster.guest_migrate
"""

EXAMPLES = r"""
- name: Prove hv-2 after its reboot with an owned canary
  virtfleet.cluster.host_canary:
    host: hv-2
    uri: "{{ hostvars['hv-2'].virtfleet_libvirt_uri }}"
    peers:
      - {name: hv-1, uri: "{{ hostvars['hv-1'].virtfleet_libvirt_uri }}"}
      - {name: hv-3, uri: "{{ hostvars['hv-3'].virtfleet_libvirt_uri }}"}
    max_downtime_ms: 300
  delegate_to: localhost
"""

RETURN = r"""
canary:
  description: The canary's name (C(virtfleet-canary-<host>) when owned).
  returned: when one could be chosen
  type: str
owned:
  description: Whether the canary was the collection's own (no O(guest) named).
  returned: always
  type: bool
peer:
  description: The peer the canary started on (or ran on) and came back to.
  returned: when one could be chosen
  type: str
migrations:
  description:
    - The canary's migrations onto the host and back, as the run's report takes them (C(type)
      migration, C(purpose) canary, C(guest), C(source), C(destination), C(where), C(started),
      C(ended), C(time_ms), C(downtime_ms), C(status), C(message)). A failed one ends the list.
  returned: always
  type: list
  elements: dict
leftovers_removed:
  description: Canaries of earlier runs found (and removed, unless in check mode), as C(<name> on <host>).
  returned: always
  type: list
  elements: str
passed_over:
  description: The peers not used, each with why (marked, not answering, not enough memory, the guests that do not qualify).
  returned: when one could be chosen, or when none could
  type: list
  elements: str
reason:
  description: Failure kind - C(no-canary), C(canary-not-started), C(migration-failed) or C(host-unreachable).
  returned: failure
  type: str
msg:
  description: What happened.
  returned: always
  type: str
"""

from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.host_canary_task import ARGUMENT_SPEC, run


def main():
    run_module(ARGUMENT_SPEC, run)


if __name__ == "__main__":
    main()
