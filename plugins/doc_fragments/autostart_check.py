# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options of the check that a host is safe to reboot which ask its peers about autostart
definitions (host_empty, and host_reboot, which makes the same check first), documented once:
plugins/module_utils/host_empty.py's ARGUMENT_SPEC.
"""

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
options:
  peers:
    description:
      - The other hosts of the cluster, asked (only when the host has inactive autostart
        definitions) whether they run the guest of such a definition.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Inventory name of the peer.
        type: str
        required: true
      uri:
        description: libvirt connection URI of the peer.
        type: str
        required: true
  autostart_elsewhere:
    description:
      - What to do with inactive autostart definitions whose guest runs elsewhere, or may (a peer
        could not be asked) - C(refuse) fails naming them; C(disable) turns their autostart off
        (the definitions stay) and goes on.
    type: str
    choices: [refuse, disable]
    default: refuse
"""
