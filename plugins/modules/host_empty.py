#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_empty
short_description: Refuse to go on unless a hypervisor host is safe to reboot (no guest on it, none to start twice)
version_added: "0.1.0"
description:
  - Asks the host's own libvirt daemon at O(uri), at the moment the task runs, which guests are
    active on it - running, paused (a failed migration can leave one paused) or arriving (an
    incoming live migration) - and fails naming them when there is any. Run it immediately
    before a reboot - the drain that emptied the host may be minutes old, and any other actor
    (an operator's C(virsh migrate), a rebalance, another controller) may have placed a guest
    there since.
  - Also refuses inactive autostart definitions whose guest (same UUID) is active on one of
    O(peers) - the host would start a second copy of that guest, on the same disk, when it
    boots - and definitions for which a peer could not be asked. With
    O(autostart_elsewhere=disable) it turns their autostart off instead and returns their names.
  - "Runs on the controller (C(delegate_to: localhost)) with the host's C(virtfleet_libvirt_uri), or on
    the host itself with the default O(uri). O(username) and O(password) are used for the peers too."
author:
  - virtfleet maintainers (@virtfleet)
requirements:
  - libvirt-python on the machine that runs the module (the controller, or the host itself)
extends_documentation_fragment:
  - virtfleet.cluster.attributes
  - virtfleet.cluster.attributes.actiongroup_libvirt
  - virtfleet.cluster.libvirt_connection
  - virtfleet.cluster.autostart_check
attributes:
  check_mode:
    support: full
    details: Reads and refuses the same way; with O(autostart_elsewhere=disable) it reports the definitions it would change.
  diff_mode:
    support: none
    details: Nothing to diff.
options:
  host:
    description: Name of the host in messages (default the URI's host part).
    type: str
notes:
  - Credentials in URIs (O(uri) and O(peers[].uri)) are masked in the output, as in M(virtfleet.cluster.hypervisor_facts).
seealso:
  - module: virtfleet.cluster.host_drain
  - module: virtfleet.cluster.hypervisor_facts
"""

EXAMPLES = r"""
- name: Never reboot a host that runs a guest (asked right before the reboot)
  virtfleet.cluster.host_empty:
    uri: "{{ virtfleet_libvirt_uri }}"
    host: "{{ inventory_hostname }}"
  delegate_to: localhost

- name: Same check, turning off autostart of stale definitions whose guest runs elsewhere
  virtfleet.cluster.host_empty:
    uri: "{{ virtfleet_libvirt_uri }}"
    peers:
      - {name: hv-a2, uri: "qemu+tcp://127.0.1.12/session"}
      - {name: hv-a3, uri: "qemu+tcp://127.0.1.13/session"}
    autostart_elsewhere: disable
  delegate_to: localhost
  register: guard

- name: Say which definitions lost their autostart
  ansible.builtin.debug:
    msg: "autostart turned off: {{ guard.autostart_disabled | join(', ') or 'none' }}"
"""

RETURN = r"""
guests:
  description: Guests active on the host (C(name), C(uuid), C(state) such as C(running) or C(paused (migration))). Empty on success.
  returned: always
  type: list
  elements: dict
autostart_elsewhere:
  description: Inactive autostart definitions whose guest is active on a peer (C(name), C(uuid), C(running_on)).
  returned: always
  type: list
  elements: dict
autostart_unknown:
  description: Inactive autostart definitions for which a peer could not be asked (C(name), C(uuid), C(unasked)).
  returned: always
  type: list
  elements: dict
autostart_disabled:
  description: Definitions whose autostart was turned off (or would be, in check mode) with O(autostart_elsewhere=disable).
  returned: always
  type: list
  elements: str
msg:
  description: What was found.
  returned: always
  type: str
"""

from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.host_empty import ARGUMENT_SPEC, safe_to_reboot


def work(params, check_mode):
    """The module's work: the result, failed when the host is not safe to reboot."""
    failed, result = safe_to_reboot(params, check_mode)
    return dict(result, failed=failed)


def main():
    run_module(ARGUMENT_SPEC, work)


if __name__ == "__main__":
    main()
