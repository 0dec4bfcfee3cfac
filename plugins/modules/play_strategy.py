#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: play_strategy
short_description: Tell which strategy and serial setting the current play runs under, or refuse another
description:
  - Returns the strategy plugin and the C(serial) keyword of the play the task belongs to, as
    the controller resolved them (play keyword, else the configured default strategy such as
    E(ANSIBLE_STRATEGY)). No magic variable carries the strategy.
  - With O(strategy) or O(one_batch) it fails, saying why and how to fix the play, when the play
    runs under another strategy or in batches; a guard in one step.
  - The role C(virtfleet.cluster.rolling_maintenance) uses it to refuse plays it does not
    support (see its C(tasks/refuse_unsupported_play.yml)).
  - Runs on the controller as an action plugin; it contacts no host.
version_added: 0.1.0
author:
  - virtfleet maintainers (@virtfleet)
options:
  strategy:
    description:
      - Fail unless the play runs under this strategy (short name, for example C(linear) or
        C(host_pinned); C(linear) also accepts its C(debug) variant, and a C(ansible.builtin.)
        prefix is ignored).
      - Unset, any strategy is accepted.
    type: str
  one_batch:
    description: Fail when the play runs its hosts in several batches (the play keyword C(serial)).
    type: bool
    default: false
  strategy_reason:
    description: Why the caller needs O(strategy), added to the refusal.
    type: str
    default: ""
  batch_reason:
    description: Why the caller needs every host in one batch, added to the refusal.
    type: str
    default: ""
extends_documentation_fragment:
  - virtfleet.cluster.attributes
  - virtfleet.cluster.attributes.info_module
attributes:
  check_mode:
    details: Reads the play only; the same in check mode.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: all
    details: Runs on the controller.
"""

EXAMPLES = r"""
- name: Refuse anything but the linear strategy, all hosts in one batch (one step)
  virtfleet.cluster.play_strategy:
    strategy: linear
    one_batch: true
    strategy_reason: the run_once steps below are reliable only in a linear play

- name: Read the strategy
  virtfleet.cluster.play_strategy: {}
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

from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.play_shape import ARGUMENT_SPEC


def refuse(_params, _check_mode):
    """The action plugin (plugins/action/play_strategy.py) does the work; this file only
    documents it, and refuses when run as a module on a host."""
    raise VirtfleetError("virtfleet.cluster.play_strategy runs as an action plugin on the controller; it cannot run as a module on a host.")


def main():
    run_module(ARGUMENT_SPEC, refuse, needs_libvirt=False)


if __name__ == "__main__":
    main()
