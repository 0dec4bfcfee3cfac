# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drive one live migration of a libvirt guest, watch it, and recover when it fails.

One migration = ``dom.migrateToURI3(dest, params, flags)`` in peer-to-peer mode (the source
daemon talks to the destination daemon itself), run in a worker thread while the calling
thread watches ``dom.jobStats()``: it reports progress, sets the maximum downtime once the job
exists (libvirt has no parameter for it), switches to post-copy when asked to, and aborts on a
stall or a timeout.

Safety rules, learnt from peers' bug trackers (see docs/migration.md):

* a guest is never stopped or destroyed here; a failed migration ends with ``abortJob()``
  and an error that says where the guest is now and why. A guest the failure left paused on
  the source is resumed there only when it is known that no copy runs on the destination
  (``may_resume_on_source``); otherwise it stays paused and the error says where, what could
  not be asked and the command that resumes it once checked;
* a guest keeps its admin state: only a persistent guest is defined on the destination, and
  its autostart flag (which libvirt does not carry over) goes with it;
* "no progress" is counted in memory iterations without a new low of ``data_remaining``
  (the vdsm way), never as wall-clock time without change (Nova removed that: it aborted
  migrations that were still converging);
* post-copy is opt-in only: once switched to post-copy neither host holds the whole guest, so
  the migration can no longer be aborted.

The run's state lives on a `MigrationRun`; the options are in ``migration_options``, the
watching loop and the stall detector in ``migration_watchdog``, where the guest is after a
failure and whether it may be resumed in ``migration_recovery``. Nothing here imports Ansible,
so it runs under plain pytest.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
    VIR_DOMAIN_RUNNING, VIR_DOMAIN_JOB_STATS_COMPLETED, VIR_ERR_NO_DOMAIN,
    VIR_MIGRATE_PERSIST_DEST, VIR_MIGRATE_UNDEFINE_SOURCE, GUEST_STATES, host_label, libvirt, libvirt_message,
    open_connection, redact_uri, state_name)
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_options import (
    MigrationOptions, completion_timeout, migration_flags_and_params)
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_recovery import (
    MigrationError, completed_job, guest_state, held_hint, held_location, held_text, hint_for, lookup_guest,
    may_resume_on_source, suggestion)
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_watchdog import (
    ABORT_GRACE_SECONDS, JobWatch, MigrationProgress, completed_stats_summary)

Progress = Callable[[MigrationProgress], None]


# --------------------------------------------------------------------------- libvirt glue


def host_uuid(conn) -> Optional[str]:
    caps = ET.fromstring(conn.getCapabilities())
    node = caps.find("./host/uuid")
    return node.text.strip() if node is not None and node.text else None


def _disk_bytes(dom, targets: Optional[Iterable[str]] = None) -> int:
    """Capacity of the guest's disks (all, or the named targets) for the storage-copy timeout."""
    total = 0
    try:
        root = ET.fromstring(dom.XMLDesc(0))
        for disk in root.findall("./devices/disk[@device='disk']"):
            target = disk.find("target")
            name = target.get("dev") if target is not None else None
            if name and (not targets or name in targets):
                total += dom.blockInfo(name)[0]
    except Exception:  # best effort: only widens a timeout
        pass
    return total


def locate_guest(guest: str, uris: Dict[str, str], connect=None) -> Dict[str, str]:
    """Where ``guest`` (name) is: ``{host name: state}`` over ``uris`` ({host name: URI}),
    state being ``running``, ``paused``..., ``defined`` (inactive), ``absent`` or
    ``unreachable: <why>``. Read-only; used for idempotency and check mode."""
    connect = connect or open_connection
    where = {}
    for name, uri in sorted(uris.items()):
        try:
            conn = connect(uri)
        except Exception as exc:
            where[name] = "unreachable: %s" % libvirt_message(exc)
            continue
        try:
            try:
                dom = conn.lookupByName(guest)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == VIR_ERR_NO_DOMAIN:
                    where[name] = "absent"
                    continue
                raise
            where[name] = GUEST_STATES.get(dom.state()[0], "unknown") if dom.isActive() else "defined"
        except Exception as exc:
            where[name] = "unreachable: %s" % libvirt_message(exc)
        finally:
            conn.close()
    return where


# --------------------------------------------------------------------------- one migration


def migrate_guest(guest: str, source_uri: str, dest_uri: str, options: Optional[MigrationOptions] = None,
                  progress: Optional[Progress] = None, source_name: Optional[str] = None,
                  dest_name: Optional[str] = None, dest_peer_uri: Optional[str] = None, connect=None,
                  cancel_event: Optional[threading.Event] = None) -> Dict[str, Any]:
    """Live-migrate ``guest`` (name) from ``source_uri`` to ``dest_uri``.

    ``source_uri``/``dest_uri`` are the controller's URIs for the two daemons;
    ``dest_peer_uri`` is the URI the *source daemon* uses to reach the destination (default:
    ``dest_uri``; differs when the controller and the hosts use different transports).
    ``progress(MigrationProgress)`` is called from the calling thread on every sample.
    ``cancel_event`` (a ``threading.Event``) aborts the migration like a timeout when set.

    Returns a dict: guest, source, destination, flags, elapsed_s, postcopy_used and the
    completed job statistics (``completed_stats_summary`` + ``raw``). Raises MigrationError,
    which says where the guest runs now; the guest is never stopped or destroyed.
    """
    connect = connect or open_connection
    # For the commands the messages give (virsh -c <uri> ...): the controller's URIs,
    # passwords hidden.
    run = MigrationRun(guest, options or MigrationOptions(), source_name or host_label(source_uri),
                       dest_name or host_label(dest_uri), progress, cancel_event,
                       shown_uris=(redact_uri(source_uri), redact_uri(dest_uri)))
    try:
        run.src_conn = connect(source_uri)
    except Exception as exc:
        raise run.fail("%s not migrated: cannot connect to source %s: %s"
                       % (guest, run.source_name, libvirt_message(exc)), "source-unreachable")
    try:
        try:
            run.dst_conn = connect(dest_uri)
        except Exception as exc:
            raise run.fail("%s still on %s: not migrated, cannot connect to destination %s: %s"
                           % (guest, run.source_name, run.dest_name, libvirt_message(exc)),
                           "destination-unreachable", "source", run.source_name)
        return run.migrate(dest_peer_uri or dest_uri)
    finally:
        run.close()


class MigrationRun:
    """One migration's state: the guest, both connections, the hosts' names, the options, the
    progress callback, the cancel event, and what the run learnt on the way (UUID, whether the
    guest was running, whether post-copy started, the last progress sample). Every failure it
    raises is a MigrationError naming where the guest is (``fail``)."""

    def __init__(self, guest: str, options: MigrationOptions, source_name: str, dest_name: str,
                 progress: Optional[Progress] = None, cancel_event: Optional[threading.Event] = None,
                 shown_uris: Tuple[Optional[str], Optional[str]] = (None, None)):
        self.guest = guest
        self.options = options
        self.source_name = source_name
        self.dest_name = dest_name
        self.progress = progress
        self.cancel_event = cancel_event
        self.src_uri = shown_uris[0] or "<libvirt URI of %s>" % source_name
        self.dst_uri = shown_uris[1] or "<libvirt URI of %s>" % dest_name
        self.src_conn = None
        self.dst_conn = None
        self.uuid: Optional[str] = None
        self.was_running = False
        self.autostart = False
        self.postcopy_started = False
        self.last: Optional[MigrationProgress] = None

    def fail(self, message: str, reason: str, location: str = "unknown", running_on: Optional[str] = None,
             paused_on: Optional[str] = None) -> MigrationError:
        return MigrationError(message, guest=self.guest, source=self.source_name, destination=self.dest_name,
                              reason=reason, location=location, running_on=running_on,
                              last_progress=self.last, paused_on=paused_on)

    def close(self) -> None:
        for conn in (self.dst_conn, self.src_conn):
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass

    def _report(self, sample: MigrationProgress) -> None:
        self.last = sample
        if self.progress:
            self.progress(sample)

    def _sample(self, phase: str, stats: Dict[str, Any], elapsed: float) -> None:
        self._report(MigrationProgress(self.guest, self.source_name, self.dest_name, phase, stats, elapsed))

    # ------------------------------------------------------------------ before the job

    def _untouched(self, what: str, exc: BaseException) -> MigrationError:
        return self.fail("%s not migrated, left untouched on %s: %s failed: %s"
                         % (self.guest, self.source_name, what, libvirt_message(exc)),
                         "preflight-error", "source", self.source_name)

    def _ask(self, what: str, call: Callable, *args):
        """A libvirt call before the job starts: the guest is untouched and still where it
        was, so any error is a MigrationError saying so, never a traceback."""
        try:
            return call(*args)
        except Exception as exc:
            raise self._untouched(what, exc)

    def _preflight(self):
        """Reads the guest and both hosts before anything starts; returns ``(dom, flags,
        params, timeout, memory_bytes)`` or raises with the guest untouched."""
        guest, source, dest, ask = self.guest, self.source_name, self.dest_name, self._ask
        try:
            dom = self.src_conn.lookupByName(guest)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != VIR_ERR_NO_DOMAIN:
                raise self._untouched("looking it up on %s" % source, exc)
            raise self.fail("%s not migrated: not found on %s: %s"
                            % (guest, source, libvirt_message(exc)), "not-found", "unknown")
        self.uuid = ask("reading its UUID on %s" % source, dom.UUIDString)
        state, _reason = ask("reading its state on %s" % source, dom.state)
        if not ask("reading its state on %s" % source, dom.isActive):
            raise self.fail("%s not migrated: it is not running on %s (live migration moves running"
                            " guests only)" % (guest, source), "not-running", "unknown")
        self.was_running = state == VIR_DOMAIN_RUNNING
        # Admin state to keep: libvirt does not carry autostart over, and PERSIST_DEST would make
        # a transient guest persistent.
        persistent = bool(ask("reading whether it is persistent on %s" % source, dom.isPersistent))
        self.autostart = persistent and bool(ask("reading its autostart flag on %s" % source, dom.autostart))

        # libvirt refuses to migrate between hosts with the same host UUID (cloned machines);
        # say so before starting instead of relaying "Attempt to migrate guest to the same host".
        src_host_uuid = ask("asking %s for its host UUID" % source, host_uuid, self.src_conn)
        dst_host_uuid = ask("asking %s for its host UUID" % dest, host_uuid, self.dst_conn)
        if src_host_uuid and src_host_uuid == dst_host_uuid:
            raise self.fail("%s still running on %s: not migrated, %s and %s report the same host UUID"
                            " %s and libvirt refuses to migrate between them (cloned host? set"
                            " host_uuid_source = \"machine-id\" or a distinct host_uuid in libvirtd.conf)"
                            % (guest, source, source, dest, src_host_uuid), "same-host-uuid", "source", source)
        already = ask("looking for it on %s" % dest, lookup_guest, self.dst_conn, self.uuid)
        if already is not None and ask("reading its state on %s" % dest, already.isActive):
            raise self.fail("%s is already running on %s too; refusing to migrate (resolve by hand)"
                            % (guest, dest), "already-on-destination", "both", None)

        options = self.options
        flags, params = ask("mapping the migration options", migration_flags_and_params, options, persistent)
        memory_bytes = ask("reading its memory size on %s" % source, dom.maxMemory) * 1024
        disk_bytes = ask("reading its disk sizes on %s" % source, _disk_bytes, dom,
                         options.migrate_disks) if options.copy_storage else 0
        return dom, flags, params, completion_timeout(memory_bytes, options, disk_bytes), memory_bytes

    # ------------------------------------------------------------------ the job

    def migrate(self, peer_uri: str) -> Dict[str, Any]:
        """Runs the migration on the open connections: pre-flight, the job in a worker thread
        watched from this one, then the verified result or the error saying where the guest is."""
        dom, flags, params, timeout, memory_bytes = self._preflight()
        outcome: Dict[str, Any] = {}

        def run_migration():
            try:
                # The returned domain belongs to the destination's connection which peer-to-peer
                # mode does not give us; we look the guest up on the destination ourselves.
                dom.migrateToURI3(peer_uri, params, flags)
                outcome["ok"] = True
            except Exception as exc:  # reported by the calling thread
                outcome["error"] = exc

        worker = threading.Thread(target=run_migration, name="migrate-%s" % self.guest)
        worker.daemon = True
        started = time.monotonic()
        worker.start()
        self._report(MigrationProgress(self.guest, self.source_name, self.dest_name, "starting"))
        watch = JobWatch(self.options, self._sample, self.cancel_event)
        abort_reason = watch.watch(dom, worker, started, timeout, memory_bytes)
        self.postcopy_started = watch.postcopy_started

        elapsed = time.monotonic() - started
        if worker.is_alive():
            # abortJob did not end migrateToURI3 in time: say so rather than guess.
            raise self.fail("%s: migration to %s did not end %d s after abortJob(); check both hosts"
                            " by hand (the guest was not stopped)"
                            % (self.guest, self.dest_name, ABORT_GRACE_SECONDS), "abort-hung", "unknown", None)

        if outcome.get("ok"):
            result = self._verify_success(flags, elapsed)
            self._keep_admin_state(flags, result)
            return result

        if abort_reason:
            reason, why = abort_reason
            why = "migration to %s %s" % (self.dest_name, why)
        else:
            reason = "failed"
            exc = outcome.get("error")
            text = libvirt_message(exc) if exc is not None else "unknown error"
            if "same host" in text:
                reason = "same-host-uuid"
            hint = hint_for(text)
            if hint:
                text += " (%s)" % hint
            why = "migration to %s failed: %s" % (self.dest_name, text)
        raise self._recover(reason, why + suggestion(self.options, reason), self.postcopy_started)

    # ------------------------------------------------------------------ after the job

    def _verify_success(self, flags: int, elapsed: float) -> Dict[str, Any]:
        """migrateToURI3 returned: check the guest runs on the destination and not on the source,
        then read the completed job statistics."""
        guest, source, dest, uuid = self.guest, self.source_name, self.dest_name, self.uuid
        try:
            dst_active, dst_state, _dst_reason = guest_state(self.dst_conn, uuid)
            src_active, src_state, _src_reason = guest_state(self.src_conn, uuid)
        except Exception as exc:
            raise self.fail("%s: migration to %s reported success but its location could not be"
                            " verified: %s" % (guest, dest, libvirt_message(exc)), "unverified", "unknown", None)
        if src_active and dst_active:
            raise self.fail("%s is active on both %s and %s after migration; resolve by hand before"
                            " anything reboots" % (guest, source, dest), "both-active", "both", None)
        if not src_active and not dst_active:
            raise self.fail("%s is running NOWHERE: migration to %s reported success but the guest is"
                            " not active there" % (guest, dest), "not-on-destination", "nowhere", None)
        if not dst_active and src_state == VIR_DOMAIN_RUNNING:
            raise self.fail("%s still running on %s: migration to %s reported success but the guest is"
                            " not active there" % (guest, source, dest), "not-on-destination", "source", source)
        if not dst_active or (self.was_running and dst_state != VIR_DOMAIN_RUNNING):
            # One side holds it active but not running (paused, mostly): resume it where that is
            # known to be safe, else name it as paused, where, and how to resume it. The job
            # completed, post-copy included, so the destination holds the whole guest; a source
            # copy paused by post-copy is still refused by its pause reason.
            reason, what = (("not-on-destination", "is not active there") if not dst_active
                            else ("not-running-on-destination", "is not running there"))
            raise self._recover(reason, "migration to %s reported success but the guest %s" % (dest, what), False)

        raw: Dict[str, Any] = {}
        # On the lab (libvirt 9.0) the completed statistics are readable on the destination after
        # UNDEFINE_SOURCE; without UNDEFINE_SOURCE the source still holds them too.
        for conn in (self.dst_conn, self.src_conn):
            try:
                dom = lookup_guest(conn, uuid)
                if dom is not None:
                    raw = dom.jobStats(VIR_DOMAIN_JOB_STATS_COMPLETED) or {}
            except Exception:
                raw = {}
            if raw.get("downtime") is not None:
                break
        result = {
            "guest": guest,
            "source": source,
            "destination": dest,
            "changed": True,
            "flags": flags,
            "elapsed_s": round(elapsed, 3),
            "postcopy_used": self.postcopy_started,
        }
        result.update(completed_stats_summary(raw))
        result["raw"] = raw
        if self.progress:
            self.progress(MigrationProgress(guest, source, dest, "completed", raw, elapsed))
        return result

    def _recover(self, reason: str, why: str, postcopy_started: bool) -> MigrationError:
        """After a failed or aborted migration: find the guest, resume it on the source if the
        failure left it paused there and ``may_resume_on_source`` says no copy can run on the
        destination, and build the error that says where it is. A guest left paused is named as
        paused, with its host and the commands to check and resume it."""
        guest, source, dest, uuid = self.guest, self.source_name, self.dest_name, self.uuid

        def state_on(conn):
            try:
                return guest_state(conn, uuid), None
            except Exception as exc:
                return None, libvirt_message(exc)  # host unreachable: unknown

        src, src_error = state_on(self.src_conn)
        dst, dst_error = state_on(self.dst_conn)
        # Only libvirt's own job result on the source can stand in for a destination that
        # cannot be asked.
        source_job = completed_job(self.src_conn, uuid) if dst is None else None
        allowed, resume_why = may_resume_on_source(src, dst, self.was_running, postcopy_started,
                                                   source_job, source, dest, dst_error)
        resumed = False
        if allowed:
            # Left paused by the failed switch-over (Nova's recover step, Proxmox's `cont`), and
            # the destination has no copy: the source one is the guest. Resume it.
            try:
                self.src_conn.lookupByUUIDString(uuid).resume()
                resumed = True
            except Exception as exc:
                why += "; resuming it on %s failed: %s" % (source, libvirt_message(exc))
            src, src_error = state_on(self.src_conn)

        src_active, dst_active = bool(src and src[0]), bool(dst and dst[0])
        src_running = src_active and src[1] == VIR_DOMAIN_RUNNING
        dst_running = dst_active and dst[1] == VIR_DOMAIN_RUNNING
        if src_running and not dst_active:
            resumed_text = " (resumed after the failure left it paused: %s)" % resume_why if resumed else ""
            return self.fail("%s still running on %s%s: %s" % (guest, source, resumed_text, why),
                             reason, "source", source)
        if dst_running and not src_active:
            return self.fail("%s now running on %s although the migration reported an error: %s"
                             % (guest, dest, why), reason, "destination", dest)
        if src_active and dst_active:
            return self.fail("%s is active on both %s (%s) and %s (%s): %s; resolve by hand"
                             % (guest, source, state_name(src[1]), dest, state_name(dst[1]), why),
                             reason, "both", None)
        if src_active:
            if not allowed:
                why += "; not resumed: %s" % resume_why
            hint = held_hint(guest, src[1], self.was_running, source, self.src_uri, dest, self.dst_uri)
            return self.fail("%s: %s.%s" % (held_text(guest, source, src[1]), why, hint), reason,
                             held_location("source", src[1]), None, paused_on=source)
        if dst_active:
            if postcopy_started:
                why += (" - post-copy failed, neither host holds the whole guest: do not resume"
                        " either copy by hand")
                hint = ""
            else:
                hint = held_hint(guest, dst[1], self.was_running, dest, self.dst_uri, source, self.src_uri)
            return self.fail("%s: %s.%s" % (held_text(guest, dest, dst[1]), why, hint), reason,
                             held_location("destination", dst[1]), None, paused_on=dest)
        unknown = ["%s (%s)" % (name, error)
                   for name, state, error in ((source, src, src_error), (dest, dst, dst_error))
                   if state is None]
        if unknown:
            return self.fail("%s: location unknown, %s could not be asked: %s"
                             % (guest, " and ".join(unknown), why), reason, "unknown", None)
        return self.fail("%s is running NOWHERE (neither %s nor %s has it active): %s"
                         % (guest, source, dest, why), reason, "nowhere", None)

    def _keep_admin_state(self, flags: int, result: Dict[str, Any]) -> None:
        """After a verified migration: the guest keeps its autostart flag (libvirt does not carry
        it over), and a definition left on the source (undefine_source off) loses it, or it would
        start a second copy when the source boots. Adds ``persistent``, ``autostart``,
        ``source_autostart_disabled`` and, when something could not be done, ``warnings`` (with
        the command that does it) to ``result``. Never fails the migration: the guest runs."""
        guest, source, dest, uuid = self.guest, self.source_name, self.dest_name, self.uuid
        warnings = []
        try:
            persistent = bool(lookup_guest(self.dst_conn, uuid).isPersistent())
        except Exception:
            persistent = bool(flags & VIR_MIGRATE_PERSIST_DEST)
        result["persistent"] = persistent
        result["autostart"] = False
        result["source_autostart_disabled"] = False
        if not self.autostart:
            return
        if not persistent:
            warnings.append("%s had autostart on %s but runs transient on %s (persist_dest is off),"
                            " so autostart could not follow it; define it there and run `virsh -c %s"
                            " autostart %s` if it must start with %s"
                            % (guest, source, dest, self.dst_uri, guest, dest))
        else:
            try:
                lookup_guest(self.dst_conn, uuid).setAutostart(1)
                result["autostart"] = True
            except Exception as exc:
                warnings.append("%s runs on %s without the autostart it had on %s: setting it failed:"
                                " %s; run `virsh -c %s autostart %s`"
                                % (guest, dest, source, libvirt_message(exc), self.dst_uri, guest))
        if not flags & VIR_MIGRATE_UNDEFINE_SOURCE:
            try:
                left = lookup_guest(self.src_conn, uuid)
                if left is not None and not left.isActive():
                    left.setAutostart(0)
                    result["source_autostart_disabled"] = True
            except Exception as exc:
                warnings.append("the definition of %s left on %s keeps autostart and would start a"
                                " second copy when %s boots: disabling it failed: %s; run `virsh -c"
                                " %s autostart --disable %s`"
                                % (guest, source, source, libvirt_message(exc), self.src_uri, guest))
        if warnings:
            result["warnings"] = warnings
