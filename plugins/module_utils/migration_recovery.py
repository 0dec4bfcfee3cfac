# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""After a failed migration: where the guest is (`MigrationError`; `guest_state` and
`completed_job` read it on one host), whether a guest left paused on the source may be resumed
there (`may_resume_on_source`, pure), and what the message tells the operator to check or change.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
    VIR_DOMAIN_JOB_CANCELLED, VIR_DOMAIN_JOB_FAILED, VIR_DOMAIN_JOB_STATS_COMPLETED, VIR_DOMAIN_PAUSED,
    VIR_DOMAIN_PAUSED_POSTCOPY, VIR_DOMAIN_PAUSED_POSTCOPY_FAILED, VIR_ERR_NO_DOMAIN, libvirt, state_name)
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_options import MigrationOptions
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_watchdog import MigrationProgress, human_bytes

# (active, virDomainState, reason) of a guest on one host, as the host answered.
GuestState = Tuple[bool, Optional[int], Optional[int]]


class MigrationError(VirtfleetError):
    """A migration did not complete. Says where the guest is now and why.

    ``running_on`` is the host name now running the guest (``None`` when nobody runs it,
    which the message then says loudly); ``location`` is one of ``source``, ``destination``,
    ``both``, ``nowhere``, ``unknown``, or ``source (paused)`` / ``destination (paused)``
    (another not-running state in the brackets if so) when one host holds the guest active
    but not running: ``paused_on`` then names that host and the message says how to resume
    it. ``moved`` tells whether the guest ended on the destination anyway. Its ``result`` is
    ``as_dict()``.
    """

    def __init__(self, message: str, guest: Optional[str] = None, source: Optional[str] = None,
                 destination: Optional[str] = None, reason: Optional[str] = None, location: str = "unknown",
                 running_on: Optional[str] = None, last_progress: Optional[MigrationProgress] = None,
                 paused_on: Optional[str] = None):
        self.message = message
        self.guest = guest
        self.source = source
        self.destination = destination
        self.reason = reason
        self.location = location
        self.running_on = running_on
        self.paused_on = paused_on
        self.last_progress = last_progress
        super().__init__(message, self.as_dict())

    @property
    def moved(self) -> bool:
        return self.location.startswith("destination")

    @property
    def where(self) -> str:
        """Where the guest is, for people: the host running it, ``hv-1 (paused)``,
        ``hv-1 and hv-2 (active on both)``, ``NOWHERE`` or ``unknown``."""
        if self.running_on:
            return self.running_on
        if self.paused_on:
            return "%s (%s)" % (self.paused_on, self.location.partition("(")[2].rstrip(")") or "paused")
        if self.location == "both":
            return "%s and %s (active on both)" % (self.source, self.destination)
        return "NOWHERE" if self.location == "nowhere" else "unknown"

    def as_dict(self) -> Dict[str, Any]:
        return {
            "guest": self.guest,
            "source": self.source,
            "destination": self.destination,
            "error": self.message,
            "reason": self.reason,
            "location": self.location,
            "running_on": self.running_on,
            "paused_on": self.paused_on,
            "where": self.where,
            "last_progress": self.last_progress.as_dict() if self.last_progress else None,
        }


def lookup_guest(conn, uuid: str):
    """The guest on that connection, or None when the host doesn't know it."""
    try:
        return conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == VIR_ERR_NO_DOMAIN:
            return None
        raise


def guest_state(conn, uuid: str) -> GuestState:
    """``(active, state, reason)`` of the guest on one host; ``(False, None, None)`` if absent.
    Raises libvirtError when the host cannot be asked."""
    dom = lookup_guest(conn, uuid)
    if dom is None:
        return False, None, None
    state, reason = dom.state()
    return bool(dom.isActive()), state, reason


def completed_job(conn, uuid: str) -> Optional[Dict[str, Any]]:
    """libvirt's result of the guest's last job on that host (``jobStats(COMPLETED)``), or
    None when it cannot be read. libvirt 9.0 keeps no result of a failed outgoing migration
    (qemuMigrationSrcConfirmPhase clears it), so there this gives type 0 (none)."""
    try:
        dom = lookup_guest(conn, uuid)
        return (dom.jobStats(VIR_DOMAIN_JOB_STATS_COMPLETED) or {}) if dom is not None else None
    except Exception:
        return None


def may_resume_on_source(source_state: Optional[GuestState], dest_state: Optional[GuestState], was_running: bool,
                         postcopy_started: bool, source_job: Optional[Dict[str, Any]] = None,
                         source_name: str = "the source", dest_name: str = "the destination",
                         dest_error: Optional[str] = None) -> Tuple[bool, str]:
    """Whether a guest a failed migration left paused on the source may be resumed there.
    Pure; returns ``(allowed, why)``.

    ``source_state``/``dest_state`` are ``(active, state, reason)`` as the host answered, or
    None when it could not be asked; ``source_job`` is libvirt's completed-job result on the
    source (``jobStats(COMPLETED)``) or None. Resuming is allowed only when it is KNOWN that
    no copy runs on the destination: it answered and has no active copy, or libvirt's job
    result on the source says the job failed or was cancelled while data was still to be
    sent (QEMU had not finished, so the destination never got the whole guest and cannot
    have started it). If the switch-over completed and the destination runs the guest,
    resuming the source would run two copies on one disk; a guest left paused is recoverable.
    """
    if source_state is None:
        return False, "%s could not be asked" % source_name
    active, state, reason = source_state
    if not active or state != VIR_DOMAIN_PAUSED:
        return False, "it is not paused on %s" % source_name
    if postcopy_started or reason in (VIR_DOMAIN_PAUSED_POSTCOPY,
                                      VIR_DOMAIN_PAUSED_POSTCOPY_FAILED):
        return False, ("the migration was in post-copy: the guest's memory is split between"
                       " %s and %s, so the copy on %s is not the whole guest"
                       % (source_name, dest_name, source_name))
    if not was_running:
        return False, "it was paused before the migration"
    if dest_state is not None:
        if dest_state[0]:
            return False, "there is an active copy on %s" % dest_name
        return True, "%s answered and has no active copy" % dest_name
    job = source_job or {}
    stopped = {VIR_DOMAIN_JOB_FAILED: "failed", VIR_DOMAIN_JOB_CANCELLED: "was cancelled"}.get(
        job.get("type"))
    if stopped and (job.get("data_remaining") or 0) > 0:
        return True, ("%s could not be asked, but libvirt's job result on %s says the migration"
                      " %s before the switch-over (%s still to send)"
                      % (dest_name, source_name, stopped, human_bytes(job["data_remaining"])))
    return False, ("%s could not be asked%s and libvirt's job result on %s does not show that"
                   " the migration stopped before the switch-over, so a copy may run on %s"
                   % (dest_name, " (%s)" % dest_error if dest_error else "", source_name,
                      dest_name))


# --------------------------------------------------------------------------- what messages say


def held_location(side: str, state: int) -> str:
    """``source (paused)``: the side holding the guest active but not running, and how."""
    return "%s (%s)" % (side, state_name(state))


def held_text(guest: str, host: str, state: int) -> str:
    if state == VIR_DOMAIN_PAUSED:
        return "%s is PAUSED on %s" % (guest, host)
    return "%s is on %s but not running (%s)" % (guest, host, state_name(state))


def held_hint(guest: str, state: int, was_running: bool, host: str, host_uri: str, other: str, other_uri: str) -> str:
    """The commands that check the other host and resume the guest where it is paused."""
    if state != VIR_DOMAIN_PAUSED or not was_running:
        return " Check it with `virsh -c %s domstate --reason %s`." % (host_uri, guest)
    return (" First check that %s does not run it: `virsh -c %s list --all`; once it shows no"
            " running %s, resume it on %s: `virsh -c %s resume %s`."
            % (other, other_uri, guest, host, host_uri, guest))


def suggestion(options: MigrationOptions, reason: str) -> str:
    """What the operator can change, for the error message."""
    if reason == "stalled":
        tips = []
        if not options.auto_converge:
            tips.append("enable auto_converge")
        if not options.postcopy:
            tips.append("allow post-copy")
        tips.append("raise max_downtime_ms" if options.max_downtime_ms else "set max_downtime_ms")
        if options.bandwidth_mib:
            tips.append("raise bandwidth_mib")
        return "; try: " + ", ".join(tips[:-1]) + (" or " if len(tips) > 1 else "") + tips[-1]
    if reason == "timeout":
        return "; raise timeout or timeout_per_gib, or use auto_converge / parallel_connections"
    return ""


# libvirt/QEMU errors that have a known cause, with what to do about it.
ERROR_HINTS = (
    ("same host", "both hosts report the same host UUID: set host_uuid_source = \"machine-id\""
                  " or a distinct host_uuid in libvirtd.conf"),
    ("Postcopy is not supported", "QEMU needs userfaultfd for post-copy: a system daemon, or"
                                  " vm.unprivileged_userfaultfd=1 for session daemons"),
    ("client socket is closed", "the connection between the daemons broke: did the destination"
                                " daemon or host go away?"),
    ("Connection refused", "is libvirtd listening on the destination for the URI the source"
                           " daemon uses (dest_migration_uri)?"),
)


def hint_for(text: str) -> Optional[str]:
    for needle, hint in ERROR_HINTS:
        if needle in text:
            return hint
    return None
