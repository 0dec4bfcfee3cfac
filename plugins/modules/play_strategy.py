#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: play_strategy
short_description: Tell which strategy and serial setting the current play runs under
description:
  - Returns the strategy plugin and the C(serial) keyword of the play the task belongs to, as
    the controller resolved them (play keyword, else the configured default strategy such as
    E(ANSIBLE_STRATEGY)). No magic variable carries the strategy.
  - The role C(virtfleet.cluster.rolling_maintenance) uses it to refuse plays it does not
    support (see its C(tasks/refuse_unsupported_play.yml)).
  - Runs on the controller as an action plugin; it contacts no host.
version_added: 0.1.0
author:
  - virtfleet maintainers (@virtfleet)
options: {}
attributes:
  check_mode:
    support: full
    description: Reads the play only; the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes.
  platform:
    support: full
    platforms: all
    description: Runs on the controller.
"""

EXAMPLES = r"""
- name: Refuse anything but the linear strategy
  virtfleet.cluster.play_strategy:
  register: play

- name: Stop unless linear
  ansible.builtin.assert:
    that: play.strategy in ['linear', 'ansible.builtin.linear']
"""

RETURN = r"""
strategy:
  description: The play's strategy plugin name as given (for example C(linear), C(ansible.builtin.free)).
  returned: success
  type: str
  sample: linear
serial:
  description: The play's C(serial) keyword as a list (empty when the play has none).
  returned: success
  type: list
  elements: raw
  sample: [1, "50%"]
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    module.fail_json(msg="virtfleet.cluster.play_strategy runs as an action plugin on the controller; it cannot run as a module on a host.")


if __name__ == "__main__":
    main()
