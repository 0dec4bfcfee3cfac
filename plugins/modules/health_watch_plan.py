#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: health_watch_plan
short_description: Decide which failing hypervisor hosts to empty now and which wait
version_added: "0.1.0"
description:
  - Given every host's M(virtfleet.cluster.host_health) result and maintenance mark, decides per host
    what C(playbooks/health_watch.yml) does - C(drain) (mark it in maintenance, then live-drain it),
    C(waiting), C(already_marked) (left alone), C(ok) (no threshold crossed), C(unreachable) or
    C(recover) (restart its guests elsewhere, see O(recover_after)).
  - A failing host is emptied only while its cluster has room under its C(max_unavailable); hosts
    marked in maintenance and hosts that did not answer count against it. The worst signal goes
    first (uncorrected memory errors, machine checks, disk health, read-only filesystem, libvirt,
    corrected memory errors, memory pressure, NIC errors), then the host name.
  - Failing, marked and unanswering hosts are listed per cluster in C(not_destinations) - a drain
    never sends guests there.
  - Pure computation on the controller.
author:
  - virtfleet maintainers (@virtfleet)
extends_documentation_fragment:
  - virtfleet.cluster.attributes
  - virtfleet.cluster.attributes.info_module
options:
  hosts:
    description: Every host checked.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Inventory name.
        type: str
        required: true
      cluster:
        description: Its cluster.
        type: str
        required: true
      max_unavailable:
        description: Its cluster's C(max_unavailable) (C(virtfleet_max_unavailable)).
        type: int
        default: 1
      reachable:
        description: False when the health check could not run on it.
        type: bool
        default: true
      health:
        description: Its M(virtfleet.cluster.host_health) result (C(failing), C(worst), C(crossed)); null when it did not run.
        type: dict
      marked:
        description: True when the host is marked in maintenance (by anybody).
        type: bool
        default: false
      mark_reason:
        description: The mark's reason, for the report.
        type: str
      locked_by:
        description:
          - Who holds its cluster's lock (a rolling maintenance run), when it is held. The failing
            hosts of a locked cluster wait - that run's drains would compete for the same free memory.
        type: str
      last_seen:
        description: When the host last answered a health check (epoch seconds; M(virtfleet.cluster.host_health)'s C(last_seen) read by a peer).
        type: float
  recover_after:
    description:
      - Seconds without an answered health check after which an unanswering host is handed to
        C(playbooks/recover_host.yml) (RV(recover)). C(0) never recovers (the default).
      - Only an unmarked host of an unlocked cluster whose last answered check is known, and one
        host per run, the longest silent first; the others say why in their decision.
    type: int
    default: 0
seealso:
  - module: virtfleet.cluster.host_health
"""

EXAMPLES = r"""
- name: Decide what to do with each host
  virtfleet.cluster.health_watch_plan:
    hosts:
      - {name: kvm-01, cluster: prod, health: "{{ hostvars['kvm-01'].health }}"}
      - {name: kvm-02, cluster: prod, health: "{{ hostvars['kvm-02'].health }}", marked: true}
  register: health_plan
"""

RETURN = r"""
hosts:
  description: Host name to its decision (C(action), C(cluster), C(why), C(signal) for failing hosts).
  returned: always
  type: dict
drain:
  description: Hosts to mark and drain now, in order.
  returned: always
  type: list
  elements: str
waiting:
  description: Failing hosts that wait for room under their cluster's C(max_unavailable).
  returned: always
  type: list
  elements: str
recover:
  description: The host to recover now (at most one), silent for O(recover_after) seconds or more.
  returned: always
  type: list
  elements: str
clusters:
  description: Per cluster C(max_unavailable), C(locked_by), C(out) (host to why it is out), C(drain), C(waiting), C(not_destinations).
  returned: always
  type: dict
"""

from typing import Any, Dict

from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.health_watch import plan_health_actions

ARGUMENT_SPEC: Dict[str, Any] = dict(
    hosts=dict(type="list", elements="dict", required=True, options=dict(
        name=dict(type="str", required=True),
        cluster=dict(type="str", required=True),
        max_unavailable=dict(type="int", default=1),
        reachable=dict(type="bool", default=True),
        health=dict(type="dict"),
        marked=dict(type="bool", default=False),
        mark_reason=dict(type="str"),
        locked_by=dict(type="str"),
        last_seen=dict(type="float"),
    )),
    recover_after=dict(type="int", default=0),
)


def work(params: Dict[str, Any], _check_mode: bool) -> Dict[str, Any]:
    return dict(plan_health_actions(params["hosts"], recover_after_s=params["recover_after"]), changed=False)


def main() -> None:
    run_module(ARGUMENT_SPEC, work, needs_libvirt=False)


if __name__ == "__main__":
    main()
