# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options of one live migration, documented once.

They are plugins/module_utils/migration_options.py's MIGRATION_OPTIONS_SPEC: guest_migrate's own
options (this fragment) and the suboptions of host_drain's O(migration) (documented in host_drain,
since a fragment cannot extend a nested option). A unit test keeps the fragment, the spec and
host_drain's suboptions in step.
"""

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
options:
  max_downtime_ms:
    description:
      - Longest pause of the guest accepted at switch-over, in milliseconds, set with
        C(migrateSetMaxDowntime) once the job runs. Unset keeps QEMU's default (300 ms).
    type: int
  bandwidth_mib:
    description: Bandwidth cap of the migration stream in MiB/s (libvirt's C(bandwidth)).
    type: int
  auto_converge:
    description: Let QEMU throttle the guest's vCPUs when memory is dirtied faster than it is sent.
    type: bool
    default: false
  auto_converge_initial:
    description: Initial vCPU throttling in percent (needs O(auto_converge)).
    type: int
  auto_converge_increment:
    description: Throttling added each time the migration still does not converge, in percent.
    type: int
  postcopy:
    description:
      - Allow switching to post-copy after O(postcopy_after_iterations) memory passes, or
        instead of aborting on a stall or timeout. Opt-in only; see the description for why a
        post-copy migration cannot be aborted.
    type: bool
    default: false
  postcopy_after_iterations:
    description: Memory passes of pre-copy before switching to post-copy (with O(postcopy)).
    type: int
    default: 2
  parallel_connections:
    description: Number of parallel connections (QEMU multifd) carrying the memory.
    type: int
  persist_dest:
    description: Define the guest persistently on the destination (persistent guests only; a transient guest stays transient).
    type: bool
    default: true
  undefine_source:
    description: Remove the guest's definition from the source once it runs on the destination (persistent guests only).
    type: bool
    default: true
  copy_storage:
    description: Copy the guest's disks too, for storage that is not shared between the hosts.
    type: bool
    default: false
  migrate_disks:
    description: Disk targets (C(vda), ...) to copy with O(copy_storage); all when unset.
    type: list
    elements: str
  migrate_uri:
    description: Where the memory stream goes (for example C(tcp://10.0.0.2)), to use a migration network.
    type: str
  timeout:
    description: Seconds before the migration is aborted. Unset - scaled by memory (see O(timeout_per_gib)).
    type: int
  timeout_per_gib:
    description: Seconds allowed per GiB of guest memory (and copied disk) when O(timeout) is unset.
    type: int
    default: 800
  min_timeout:
    description: Lower bound of the scaled timeout, in seconds.
    type: int
    default: 120
  stall_iterations:
    description:
      - Memory passes without a new low of the remaining data after which the migration counts
        as stalled and is aborted (or switched to post-copy with O(postcopy)). The data left at
        the start of each pass is compared - what the guest dirtied during the previous pass.
        Wall-clock time without change is deliberately not a criterion - slow but progressing
        migrations continue.
    type: int
    default: 10
"""
