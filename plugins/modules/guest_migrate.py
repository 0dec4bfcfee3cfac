#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: guest_migrate
short_description: Live-migrate one libvirt guest to another host, safely
version_added: "0.1.0"
description:
  - Moves a running guest from one libvirt host to another with a peer-to-peer live migration
    (C(virDomainMigrateToURI3)), watching the job while it runs.
  - Sets the maximum downtime once the job exists (libvirt has no parameter for it), reports
    progress, aborts a migration that stalls (O(stall_iterations) memory passes that each start
    with no less data to send than the best pass so far) or exceeds its timeout (by default scaled by the guest's
    memory, 800 s per GiB like Nova, at least O(min_timeout)).
  - On any failure the job is aborted and the task fails with a message saying which host runs
    the guest now and why. The module never stops or destroys a guest.
  - A guest the failure left paused on the source is resumed there only when it is known that
    no copy runs on the destination (the destination answered and has no active copy, or
    libvirt's job result on the source says the migration stopped before the switch-over).
    Otherwise it stays paused and the task fails saying where it is paused, which host could
    not be asked, and the C(virsh) commands that check the destination and resume the guest.
  - The guest keeps its admin state - a transient guest stays transient (O(persist_dest) and
    O(undefine_source) apply to persistent guests only) and a guest with autostart gets
    autostart on the destination (libvirt does not carry it over); a definition left on the
    source (O(undefine_source=false)) has its autostart turned off, or it would start a second
    copy when the source boots. What could not be done is returned in RV(warnings).
  - On success returns libvirt's completed job statistics (downtime, total and setup time,
    memory transferred, iterations, dirty rate) and has verified that the guest runs on the
    destination and no longer on the source.
  - Idempotent - a guest already running on the destination (and not on the source) is
    reported unchanged.
  - "Runs on the controller (C(delegate_to: localhost)) with the hosts' libvirt URIs; needs
    libvirt-python there."
  - "Post-copy (O(postcopy)) is off by default and only an explicit opt-in: once switched to
    post-copy the guest runs on the destination while its memory is still on the source;
    neither host holds the whole guest, so the migration B(cannot be aborted) and a network
    or host failure during that phase loses the guest."
  - The first migration after a libvirt daemon starts is slower (several seconds of setup on
    the lab); the timeout minimum accounts for it.
author:
  - virtfleet maintainers (@virtfleet)
requirements:
  - libvirt-python on the controller
extends_documentation_fragment:
  - virtfleet.cluster.attributes
  - virtfleet.cluster.migration_options
attributes:
  check_mode:
    support: full
    details: Reports where the guest is and whether it would be migrated; moves nothing.
  diff_mode:
    support: none
    details: Nothing to diff - the result says where the guests are.
options:
  guest:
    description: Name of the guest (libvirt domain) to migrate.
    type: str
    required: true
  source_uri:
    description:
      - libvirt URI the controller uses to reach the source host, for example
        C(qemu+ssh://root@hv-1/system).
      - The URI stays visible in output; a password embedded in it (C(user:password@host)) and the
        values of secret-looking query parameters (C(apikey=), C(secretkey=), C(*pass*),
        C(*token*)) are masked.
    type: str
    required: true
  dest_uri:
    description: libvirt URI the controller uses to reach the destination host. Its secrets are masked as in O(source_uri).
    type: str
    required: true
  dest_migration_uri:
    description:
      - URI the B(source daemon) uses to reach the destination daemon (peer-to-peer
        migration). Defaults to O(dest_uri); set it when the hosts reach each other
        differently from the controller (for example C(qemu+tls://hv-2.internal/system)).
        Its secrets are masked as in O(source_uri).
    type: str
  source_name:
    description: Name of the source host in messages. Defaults to the host part of O(source_uri).
    type: str
  dest_name:
    description: Name of the destination host in messages. Defaults to the host part of O(dest_uri).
    type: str
notes:
  - Only peer-to-peer migration is driven (the source daemon connects to the destination).
  - libvirt refuses to migrate between hosts reporting the same host UUID (cloned machines);
    the module says so - set C(host_uuid_source = "machine-id") in libvirtd.conf.
seealso:
  - module: virtfleet.cluster.host_drain
"""

EXAMPLES = r"""
- name: Move web-3 from hv-1 to hv-2
  virtfleet.cluster.guest_migrate:
    guest: web-3
    source_uri: "{{ hostvars['hv-1'].virtfleet_libvirt_uri }}"
    dest_uri: "{{ hostvars['hv-2'].virtfleet_libvirt_uri }}"
    source_name: hv-1
    dest_name: hv-2
    max_downtime_ms: 300
  delegate_to: localhost

- name: A busy database, with auto-converge and 4 parallel connections
  virtfleet.cluster.guest_migrate:
    guest: db-1
    source_uri: qemu+ssh://root@hv-1/system
    dest_uri: qemu+ssh://root@hv-2/system
    dest_migration_uri: qemu+tls://hv-2.migration.internal/system
    auto_converge: true
    parallel_connections: 4
    stall_iterations: 15
  delegate_to: localhost
"""

RETURN = r"""
changed:
  description: Whether the guest was moved.
  returned: always
  type: bool
guest:
  description: Guest name.
  returned: always
  type: str
source:
  description: Source host name.
  returned: always
  type: str
destination:
  description: Destination host name.
  returned: always
  type: str
location:
  description:
    - Where the guest is after the task, as host name -> state (C(running), C(paused), C(absent),
      C(defined), or C(unreachable) followed by why).
    - After a failed migration it is read again from both hosts (not the state read before the
      attempt); when that read fails it is not returned, and RV(where) says where the migration
      left the guest.
  returned: when the guest could be located
  type: dict
  sample: {"hv-1": "absent", "hv-2": "running"}
downtime_ms:
  description: Time the guest was paused at switch-over, in ms (libvirt's completed job statistics).
  returned: success, when migrated
  type: int
  sample: 19
total_time_ms:
  description: Duration of the migration job as libvirt measured it, in ms.
  returned: success, when migrated
  type: int
setup_time_ms:
  description: Setup part of the job, in ms.
  returned: success, when migrated
  type: int
memory_transferred_bytes:
  description: Memory data sent.
  returned: success, when migrated
  type: int
memory_iterations:
  description: Memory passes it took.
  returned: success, when migrated
  type: int
dirty_rate_bps:
  description: Last measured memory dirty rate in bytes/s.
  returned: success, when migrated
  type: int
elapsed_s:
  description: Wall-clock duration seen by the controller, connection and destination start included.
  returned: success, when migrated
  type: float
postcopy_used:
  description: Whether the migration switched to post-copy.
  returned: success, when migrated
  type: bool
persistent:
  description: Whether the guest is defined persistently on the destination (as it was on the source, with O(persist_dest)).
  returned: success, when migrated
  type: bool
autostart:
  description: Whether the guest has autostart on the destination (it had it on the source).
  returned: success, when migrated
  type: bool
warnings:
  description:
    - What could not be carried over (autostart), with the command that does it by hand; shown as
      task warnings.
  returned: success, when something could not be done
  type: list
  elements: str
raw:
  description: libvirt's completed job statistics as returned by C(jobStats(COMPLETED)).
  returned: success, when migrated
  type: dict
reason:
  description: Failure kind (C(stalled), C(timeout), C(failed), C(same-host-uuid), C(destination-unreachable), ...).
  returned: failure
  type: str
running_on:
  description: Host running the guest after a failure (null when nobody does - the message says so).
  returned: failure
  type: str
paused_on:
  description: Host holding the guest paused after a failure (null when it is not paused anywhere); the message says how to resume it.
  returned: failure
  type: str
where:
  description:
    - Where the guest is after a failure, in words - the host running it, V(hv-1 (paused\)),
      V(hv-1 and hv-2 (active on both\)), V(NOWHERE) or V(unknown).
  returned: failure
  type: str
  sample: hv-1 (paused)
msg:
  description: What happened; on failure, where the guest runs now and why.
  returned: always
  type: str
"""

from ansible_collections.virtfleet.cluster.plugins.module_utils import migration
from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import host_label
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_options import MIGRATION_OPTIONS_SPEC, MigrationOptions
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_recovery import MigrationError

# URIs are not no_log: run_module masks the secrets inside them, so they stay readable.
ARGUMENT_SPEC = dict(
    guest=dict(type="str", required=True),
    source_uri=dict(type="str", required=True),
    dest_uri=dict(type="str", required=True),
    dest_migration_uri=dict(type="str"),
    source_name=dict(type="str"),
    dest_name=dict(type="str"),
    **MIGRATION_OPTIONS_SPEC
)


def run(params, check_mode=False, progress=None):
    """The module's work on validated parameters: returns the result dict, or raises a
    VirtfleetError carrying the result fields of the failure."""
    source = params.get("source_name") or host_label(params["source_uri"])
    dest = params.get("dest_name") or host_label(params["dest_uri"])
    guest = params["guest"]
    uris = {source: params["source_uri"], dest: params["dest_uri"]}
    result = dict(changed=False, guest=guest, source=source, destination=dest)
    try:
        options = MigrationOptions.from_params(params)
    except ValueError as exc:
        raise VirtfleetError(str(exc), result) from exc

    where = migration.locate_guest(guest, uris)
    result["location"] = where
    if where.get(dest) == "running" and where.get(source) in ("absent", "defined"):
        result["msg"] = "%s already runs on %s" % (guest, dest)
        return result
    if check_mode:
        unreachable = [h for h, state in where.items() if state.startswith("unreachable")]
        if unreachable:
            raise VirtfleetError("%s: cannot check, %s" % (guest, "; ".join("%s %s" % (h, where[h]) for h in unreachable)),
                                 result)
        if where.get(source) not in ("running", "paused"):
            raise VirtfleetError("%s is not running on %s (%s)" % (guest, source, where.get(source)), result)
        result.update(changed=True, msg="would migrate %s from %s to %s" % (guest, source, dest))
        return result

    try:
        outcome = migration.migrate_guest(guest, params["source_uri"], params["dest_uri"], options,
                                          progress=progress, source_name=source, dest_name=dest,
                                          dest_peer_uri=params.get("dest_migration_uri"))
    except MigrationError as exc:
        result.update(reason=exc.reason, running_on=exc.running_on, paused_on=exc.paused_on, where=exc.where,
                      last_progress=exc.last_progress.as_dict() if exc.last_progress else None)
        # The location read before the attempt may be wrong now (paused, moved, on both):
        # read it again, or return none rather than a stale one.
        result.pop("location", None)
        after = _locate_after_failure(guest, uris)
        if after is not None:
            result["location"] = after
        raise VirtfleetError(exc.message, result) from exc
    result.update(outcome)
    result["location"] = {source: "absent" if options.undefine_source else "defined",
                          dest: "running"}
    result["msg"] = "%s migrated from %s to %s: downtime %s ms, %s ms in total" % (
        guest, source, dest, outcome.get("downtime_ms"), outcome.get("total_time_ms"))
    return result


def _locate_after_failure(guest, uris):
    """Where the guest is after a failed attempt (``locate_guest``: each host asked once, the
    connection bounded by the opener's timeout), or None when it could not be read: never
    raises, the failure being reported is the migration's."""
    try:
        return migration.locate_guest(guest, uris)
    except Exception:  # pylint: disable=broad-except
        return None


def main():
    run_module(ARGUMENT_SPEC, run)


if __name__ == "__main__":
    main()
