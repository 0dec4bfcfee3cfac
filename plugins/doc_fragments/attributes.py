# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The attributes every module documents, described once (as community.proxmox does).

A module extends ``virtfleet.cluster.attributes`` and sets only ``support`` (and ``details``
where its behaviour needs saying) of each attribute; the other fragments add attributes that
apply to some modules only.
"""

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check mode and return what it would change without changing anything.
  diff_mode:
    description: Returns details on what has changed (or would change in check mode) when in diff mode.
"""

    # Modules that only read or compute: the same in check mode, nothing to diff.
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details: The module changes nothing; check mode runs it the same way.
  diff_mode:
    support: N/A
    details: The module changes nothing.
"""

    FACTS = r"""
options: {}
attributes:
  facts:
    description: Returns an C(ansible_facts) dictionary that updates the host's facts.
"""

    ACTIONGROUP_LIBVIRT = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/virtfleet.cluster.libvirt) in C(module_defaults) to set its connection options once for a play.
    support: full
    membership:
      - virtfleet.cluster.libvirt
"""
