#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_reboot
short_description: Reboot a hypervisor host only when it runs no guest, and say its boot ids
version_added: "0.1.0"
description:
  - Asks the host's own libvirt daemon at O(uri), right before the reboot, whether the host is
    safe to reboot, as M(virtfleet.cluster.host_empty) does - no guest active on it (running,
    paused, arriving), no inactive autostart definition that would start a second copy of a
    guest of O(peers) at boot. When it is not, fails naming them and reboots nothing.
  - Then reboots the host exactly as M(ansible.builtin.reboot) does, with its options, and waits
    until the host's boot id changed and O(test_command) succeeds.
  - Returns the boot id before and after the reboot (the answers of O(boot_time_command)), so
    no extra task has to read them.
  - When O(reboot_command), O(boot_time_command) and O(test_command) are all given, the
    distribution is not asked (M(ansible.builtin.reboot) runs the setup module for its default
    commands).
  - "The check runs on the controller (an action plugin) with the host's C(virtfleet_libvirt_uri);
    the reboot over the host's connection. Run it on the host to reboot, without C(delegate_to);
    it needs C(become) where rebooting needs root. Without libvirt-python on the controller the
    check runs on the host (module M(virtfleet.cluster.host_empty))."
author:
  - virtfleet maintainers (@virtfleet)
requirements:
  - libvirt-python on the controller
extends_documentation_fragment:
  - virtfleet.cluster.attributes
  - virtfleet.cluster.attributes.actiongroup_libvirt
  - virtfleet.cluster.libvirt_connection
  - virtfleet.cluster.autostart_check
attributes:
  check_mode:
    support: full
    details: Makes the check and refuses the same way; reboots nothing and says it would.
  diff_mode:
    support: none
    details: Nothing to diff.
  action:
    support: full
    description: Indicates this has a corresponding action plugin, so some parts of the task run on the controller.
    details: The check runs on the controller, the reboot over the host's connection.
options:
  host:
    description: Name of the host in messages (default the inventory name).
    type: str
  reboot_command:
    description: As in M(ansible.builtin.reboot) - the command that reboots the host.
    type: str
  boot_time_command:
    description:
      - As in M(ansible.builtin.reboot) - the command whose answer changes with every boot. Its
        answers before and after are RV(boot_id_before) and RV(boot_id_after).
      - M(ansible.builtin.reboot) reads C(/proc/sys/kernel/random/boot_id) by default.
    type: str
  test_command:
    description: As in M(ansible.builtin.reboot) - the command that must succeed once the host is back.
    type: str
  reboot_timeout:
    description: As in M(ansible.builtin.reboot) - seconds to wait for the host to come back and pass O(test_command).
    type: int
    default: 600
  connect_timeout:
    description: As in M(ansible.builtin.reboot) - seconds to wait for a connection before trying again.
    type: int
  pre_reboot_delay:
    description: As in M(ansible.builtin.reboot) - seconds to wait before rebooting.
    type: int
    default: 0
  post_reboot_delay:
    description: As in M(ansible.builtin.reboot) - seconds to wait after the reboot command before checking.
    type: int
    default: 0
  msg:
    description: As in M(ansible.builtin.reboot) - the message shown to logged-in users.
    type: str
  search_paths:
    description: As in M(ansible.builtin.reboot) - where to look for the default shutdown command.
    type: list
    elements: str
notes:
  - Credentials in URIs (O(uri) and O(peers[].uri)) are masked in the output, as in M(virtfleet.cluster.hypervisor_facts).
seealso:
  - module: virtfleet.cluster.host_empty
  - module: ansible.builtin.reboot
"""

EXAMPLES = r"""
- name: Reboot the host, which runs no guest (asked right before)
  virtfleet.cluster.host_reboot:
    uri: "{{ virtfleet_libvirt_uri }}"
    peers:
      - {name: hv-a2, uri: "qemu+tcp://127.0.1.12/session"}
      - {name: hv-a3, uri: "qemu+tcp://127.0.1.13/session"}
    reboot_timeout: 900
  become: true
  register: reboot

- name: Say which boot it is now
  ansible.builtin.debug:
    msg: "{{ inventory_hostname }}: boot {{ reboot.boot_id_before }} -> {{ reboot.boot_id_after }} in {{ reboot.elapsed }} s"
"""

RETURN = r"""
rebooted:
  description: Whether the host was rebooted.
  returned: always
  type: bool
elapsed:
  description: Seconds from the reboot command until the host passed O(test_command).
  returned: always
  type: int
boot_id_before:
  description: The answer of O(boot_time_command) before the reboot; null when the reboot did not start.
  returned: always
  type: str
boot_id_after:
  description: The answer of O(boot_time_command) once the host was back; null unless it was rebooted.
  returned: always
  type: str
guests:
  description: Guests active on the host (C(name), C(uuid), C(state)), when it was not safe to reboot. Empty otherwise.
  returned: when the host was asked
  type: list
  elements: dict
autostart_elsewhere:
  description: Inactive autostart definitions whose guest is active on a peer (C(name), C(uuid), C(running_on)).
  returned: when the host was asked
  type: list
  elements: dict
autostart_unknown:
  description: Inactive autostart definitions for which a peer could not be asked (C(name), C(uuid), C(unasked)).
  returned: when the host was asked
  type: list
  elements: dict
autostart_disabled:
  description: Definitions whose autostart was turned off (or would be, in check mode) with O(autostart_elsewhere=disable).
  returned: when the host was asked
  type: list
  elements: str
msg:
  description: What was found, and what was done.
  returned: always
  type: str
"""
