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

Nothing here imports Ansible, so it runs under plain pytest.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time
import xml.etree.ElementTree as ET

from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
    VIR_DOMAIN_JOB_CANCELLED, VIR_DOMAIN_JOB_FAILED, VIR_DOMAIN_JOB_NONE,
    VIR_DOMAIN_JOB_STATS_COMPLETED, VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_POSTCOPY,
    VIR_DOMAIN_PAUSED_POSTCOPY_FAILED, VIR_DOMAIN_RUNNING, VIR_ERR_NO_DOMAIN, VIR_MIGRATE_AUTO_CONVERGE,
    VIR_MIGRATE_LIVE, VIR_MIGRATE_NON_SHARED_DISK, VIR_MIGRATE_PARALLEL, VIR_MIGRATE_PEER2PEER,
    VIR_MIGRATE_PERSIST_DEST, VIR_MIGRATE_POSTCOPY, VIR_MIGRATE_UNDEFINE_SOURCE, GUEST_STATES, host_label,
    libvirt, libvirt_message, open_connection, redact_uri, state_name)

MIB = 1024 * 1024
GIB = 1024 * MIB


# Nova and KubeVirt give a migration 800 s per GiB of guest memory before giving up.
DEFAULT_TIMEOUT_PER_GIB = 800
# ... but never less than this: the first migration after a daemon starts takes seconds of
# setup alone (lab-facts: ~5 s instead of <1 s), and small guests would get absurd timeouts.
DEFAULT_MIN_TIMEOUT = 120
# Memory iterations without a new low of data_remaining before the migration counts as stalled.
DEFAULT_STALL_ITERATIONS = 10
DEFAULT_POLL_INTERVAL = 0.5
# How long to wait for migrateToURI3 to return once abortJob() was sent.
ABORT_GRACE_SECONDS = 60


class MigrationError(Exception):
    """A migration did not complete. Says where the guest is now and why.

    ``running_on`` is the host name now running the guest (``None`` when nobody runs it,
    which the message then says loudly); ``location`` is one of ``source``, ``destination``,
    ``both``, ``nowhere``, ``unknown``, or ``source (paused)`` / ``destination (paused)``
    (another not-running state in the brackets if so) when one host holds the guest active
    but not running: ``paused_on`` then names that host and the message says how to resume
    it. ``moved`` tells whether the guest ended on the destination anyway.
    """

    def __init__(self, message, guest=None, source=None, destination=None, reason=None,
                 location="unknown", running_on=None, last_progress=None, paused_on=None):
        super(MigrationError, self).__init__(message)
        self.message = message
        self.guest = guest
        self.source = source
        self.destination = destination
        self.reason = reason
        self.location = location
        self.running_on = running_on
        self.paused_on = paused_on
        self.last_progress = last_progress

    @property
    def moved(self):
        return self.location.startswith("destination")

    @property
    def where(self):
        """Where the guest is, for people: the host running it, ``hv-1 (paused)``,
        ``hv-1 and hv-2 (active on both)``, ``NOWHERE`` or ``unknown``."""
        if self.running_on:
            return self.running_on
        if self.paused_on:
            return "%s (%s)" % (self.paused_on, self.location.partition("(")[2].rstrip(")") or "paused")
        if self.location == "both":
            return "%s and %s (active on both)" % (self.source, self.destination)
        return "NOWHERE" if self.location == "nowhere" else "unknown"

    def as_dict(self):
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


# --------------------------------------------------------------------------- options


class MigrationOptions(object):
    """How to migrate. Defaults are the safe, common choice (Nova's flags, no post-copy)."""

    FIELDS = {
        # name: default
        "live": True,
        "peer2peer": True,
        "persist_dest": True,
        "undefine_source": True,
        "max_downtime_ms": None,          # None: leave QEMU's default (300 ms)
        "bandwidth_mib": None,            # MiB/s; None: libvirt/QEMU default
        "auto_converge": False,
        "auto_converge_initial": None,    # % of vCPU throttling to start with
        "auto_converge_increment": None,  # % added each time it does not converge
        "postcopy": False,                # opt-in only: post-copy cannot be aborted
        "postcopy_after_iterations": 2,
        "parallel_connections": None,     # multifd connections (VIR_MIGRATE_PARALLEL)
        "copy_storage": False,            # storage not shared: copy disks (NON_SHARED_DISK)
        "migrate_disks": None,            # target names (vda, ...) to copy; None: all
        "migrate_uri": None,              # which network carries the memory stream
        "timeout": None,                  # seconds; None: scaled by memory (and copied disks)
        "timeout_per_gib": DEFAULT_TIMEOUT_PER_GIB,
        "min_timeout": DEFAULT_MIN_TIMEOUT,
        "stall_iterations": DEFAULT_STALL_ITERATIONS,
        "poll_interval": DEFAULT_POLL_INTERVAL,
    }

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(self.FIELDS)
        if unknown:
            raise ValueError("unknown migration option(s): %s" % ", ".join(sorted(unknown)))
        for name, default in self.FIELDS.items():
            value = kwargs.get(name)
            setattr(self, name, default if value is None else value)
        self.validate()

    @classmethod
    def from_params(cls, params):
        """Build from a dict that may hold other keys too (e.g. module parameters)."""
        return cls(**dict((k, v) for k, v in params.items() if k in cls.FIELDS))

    def as_dict(self):
        return dict((name, getattr(self, name)) for name in self.FIELDS)

    # Value types, checked here because host_drain passes its free-form `migration` dict
    # without an argument spec: a string such as "100" must be refused clearly, not crash.
    _INTEGERS = ("max_downtime_ms", "bandwidth_mib", "auto_converge_initial",
                 "auto_converge_increment", "postcopy_after_iterations", "parallel_connections",
                 "timeout", "timeout_per_gib", "min_timeout", "stall_iterations")
    _BOOLEANS = ("live", "peer2peer", "persist_dest", "undefine_source", "auto_converge",
                 "postcopy", "copy_storage")

    def _type_problems(self):
        problems = []
        for name in self._INTEGERS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                problems.append("%s must be a whole number (got %r)" % (name, value))
        for name in self._BOOLEANS:
            if not isinstance(getattr(self, name), bool):
                problems.append("%s must be true or false (got %r)" % (name, getattr(self, name)))
        if isinstance(self.poll_interval, bool) or not isinstance(self.poll_interval, (int, float)):
            problems.append("poll_interval must be a number (got %r)" % (self.poll_interval,))
        if self.migrate_uri is not None and not isinstance(self.migrate_uri, str):
            problems.append("migrate_uri must be a string")
        if self.migrate_disks is not None and not (
                isinstance(self.migrate_disks, (list, tuple))
                and all(isinstance(disk, str) for disk in self.migrate_disks)):
            problems.append("migrate_disks must be a list of disk target names")
        return problems

    def validate(self):
        problems = self._type_problems()
        if problems:
            raise ValueError("invalid migration options: " + "; ".join(problems))
        if not self.peer2peer:
            # migrateToURI3 without PEER2PEER needs a destination *connection* from the client
            # (managed direct migration); this module only drives the peer-to-peer kind.
            problems.append("peer2peer must stay enabled: only peer-to-peer migration is driven")
        if self.undefine_source and not self.persist_dest:
            problems.append("undefine_source without persist_dest would leave the guest defined"
                            " nowhere once it stops")
        for name in ("max_downtime_ms", "bandwidth_mib", "parallel_connections", "timeout",
                     "stall_iterations", "postcopy_after_iterations"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append("%s must be at least 1 (got %r)" % (name, value))
        for name in ("auto_converge_initial", "auto_converge_increment"):
            value = getattr(self, name)
            if value is not None:
                if not self.auto_converge:
                    problems.append("%s needs auto_converge" % name)
                elif not 0 < value <= 100:
                    problems.append("%s is a percentage in 1..100 (got %r)" % (name, value))
        if self.migrate_disks and not self.copy_storage:
            problems.append("migrate_disks needs copy_storage")
        if self.poll_interval <= 0:
            problems.append("poll_interval must be positive")
        if problems:
            raise ValueError("invalid migration options: " + "; ".join(problems))


def migration_flags_and_params(options, source_persistent=True):
    """Map options to the ``(flags, params)`` pair of ``migrateToURI3``. Pure.

    A transient guest (``source_persistent`` False) stays transient: PERSIST_DEST would
    define it on the destination, and there is no source definition to undefine."""
    flags = 0
    params = {}
    if options.live:
        flags |= VIR_MIGRATE_LIVE
    if options.peer2peer:
        flags |= VIR_MIGRATE_PEER2PEER
    if options.persist_dest and source_persistent:
        flags |= VIR_MIGRATE_PERSIST_DEST
    if options.undefine_source and source_persistent:
        flags |= VIR_MIGRATE_UNDEFINE_SOURCE
    if options.bandwidth_mib:
        params["bandwidth"] = int(options.bandwidth_mib)
    if options.auto_converge:
        flags |= VIR_MIGRATE_AUTO_CONVERGE
        if options.auto_converge_initial is not None:
            params["auto_converge.initial"] = int(options.auto_converge_initial)
        if options.auto_converge_increment is not None:
            params["auto_converge.increment"] = int(options.auto_converge_increment)
    if options.postcopy:
        # The flag only *allows* post-copy; the switch is migrateStartPostCopy(), sent by the
        # monitor after postcopy_after_iterations iterations (or on a stall / timeout).
        flags |= VIR_MIGRATE_POSTCOPY
    if options.parallel_connections:
        flags |= VIR_MIGRATE_PARALLEL
        params["parallel.connections"] = int(options.parallel_connections)
    if options.copy_storage:
        flags |= VIR_MIGRATE_NON_SHARED_DISK
        if options.migrate_disks:
            params["migrate_disks"] = list(options.migrate_disks)
    if options.migrate_uri:
        params["migrate_uri"] = options.migrate_uri
    return flags, params


def completion_timeout(memory_bytes, options=None, disk_bytes=0):
    """Seconds a migration may take before it is aborted.

    An explicit ``options.timeout`` wins; otherwise ``timeout_per_gib`` seconds per GiB of
    memory (plus copied disks, as Nova counts them), at least ``min_timeout``.
    """
    options = options or MigrationOptions()
    if options.timeout:
        return float(options.timeout)
    gib = (memory_bytes + (disk_bytes or 0)) / float(GIB)
    return max(float(options.min_timeout), options.timeout_per_gib * gib)


# --------------------------------------------------------------------------- watchdog


class StallDetector(object):
    """Stall = ``limit`` memory iterations passed without a new low of ``data_remaining``.

    This is how vdsm tells a migration that will never converge (the guest dirties memory as
    fast as it is sent) from a slow one that still makes progress: a new low-water mark of the
    remaining data resets the count, whatever the wall clock says.

    Which samples count: only the first one seen of each pass (memory iteration). Within a
    pass, data_remaining falls towards 0 as the pass's pages are sent and jumps back up when
    the next pass syncs the dirty bitmap; where a sample happens to land near the end of a
    pass is chance. On the lab a never-converging guest showed end-of-pass values from 6 MiB
    down to 20 KiB (and exactly 0 at a boundary): such a low can never be beaten again, so a
    slowly converging migration would be aborted. The start of a pass is the dirty set the
    guest produced during the previous pass - the quantity that must shrink for the migration
    to converge. Samples without counters (job still in setup) or with 0 remaining (a real 0
    ends the migration anyway) are ignored. Pure: feed it job statistics dicts.
    """

    def __init__(self, limit=DEFAULT_STALL_ITERATIONS):
        if limit < 1:
            raise ValueError("stall limit must be at least 1")
        self.limit = limit
        self.low_mark = None
        self.low_mark_iteration = None
        self.iteration = None

    @property
    def iterations_without_progress(self):
        if self.iteration is None or self.low_mark_iteration is None:
            return 0
        return self.iteration - self.low_mark_iteration

    def observe(self, stats):
        """Feed one ``jobStats()`` sample; return True once the migration is stalled."""
        iteration = stats.get("memory_iteration")
        remaining = stats.get("data_remaining")
        if iteration is None or not remaining or not stats.get("data_total"):
            return self.stalled
        if self.iteration is not None and iteration <= self.iteration:
            return self.stalled  # later in a pass already seen: not comparable, see above
        self.iteration = iteration
        if self.low_mark is None or remaining < self.low_mark:
            self.low_mark = remaining
            self.low_mark_iteration = iteration
        return self.stalled

    @property
    def stalled(self):
        return self.iterations_without_progress >= self.limit


# --------------------------------------------------------------------------- progress


class MigrationProgress(object):
    """One progress sample of one migration, as given to progress callbacks."""

    __slots__ = ("guest", "source", "destination", "phase", "data_total", "data_processed",
                 "data_remaining", "memory_iteration", "dirty_rate_bps", "transfer_bps",
                 "elapsed")

    def __init__(self, guest, source, destination, phase, stats=None, elapsed=0.0):
        stats = stats or {}
        self.guest = guest
        self.source = source
        self.destination = destination
        self.phase = phase
        self.data_total = stats.get("data_total")
        self.data_processed = stats.get("data_processed")
        self.data_remaining = stats.get("data_remaining")
        self.memory_iteration = stats.get("memory_iteration")
        self.dirty_rate_bps = dirty_rate_bytes(stats)
        self.transfer_bps = stats.get("memory_bps")
        self.elapsed = elapsed

    @property
    def percent(self):
        """Share of the guest's data not left to send (drops back when memory is re-dirtied)."""
        if not self.data_total or self.data_remaining is None:
            return 100 if self.phase == "completed" else 0
        return max(0, min(100, int(100 * (1 - float(self.data_remaining) / self.data_total))))

    def as_dict(self):
        data = dict((name, getattr(self, name)) for name in self.__slots__)
        data["percent"] = self.percent
        return data

    def __str__(self):
        text = "%s -> %s: " % (self.guest, self.destination)
        if self.phase == "completed":
            return text + "done"
        if self.phase in ("setup", "starting") or not self.data_total:
            text += self.phase
        else:
            text += "%d%% of %s" % (self.percent, human_bytes(self.data_total))
            if self.memory_iteration and self.memory_iteration > 1:
                text += ", pass %d" % self.memory_iteration
            if self.phase not in ("precopy",):
                text += " (%s)" % self.phase
        return text


def dirty_rate_bytes(stats):
    """QEMU reports the dirty rate in pages/s; callers want bytes/s."""
    rate = stats.get("memory_dirty_rate")
    if rate is None:
        return None
    return rate * (stats.get("memory_page_size") or 4096)


def human_bytes(value):
    if value is None:
        return "?"
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if value >= size:
            number = value / float(size)
            return ("%d %s" % (number, unit)) if number == int(number) else ("%.1f %s" % (number, unit))
    return "%d B" % value


def completed_stats_summary(stats):
    """The figures worth reporting from ``jobStats(COMPLETED)``: times in ms, sizes in bytes."""
    stats = stats or {}
    return {
        "downtime_ms": stats.get("downtime"),
        "total_time_ms": stats.get("time_elapsed"),
        "setup_time_ms": stats.get("setup_time"),
        "memory_transferred_bytes": stats.get("memory_processed", stats.get("data_processed")),
        "data_total_bytes": stats.get("data_total"),
        "memory_iterations": stats.get("memory_iteration"),
        "dirty_rate_bps": dirty_rate_bytes(stats),
        "transfer_bps": stats.get("memory_bps"),
        "disk_transferred_bytes": stats.get("disk_processed"),
        "auto_converge_throttle": stats.get("auto_converge_throttle"),
    }


# --------------------------------------------------------------------------- libvirt glue


def host_uuid(conn):
    caps = ET.fromstring(conn.getCapabilities())
    node = caps.find("./host/uuid")
    return node.text.strip() if node is not None and node.text else None


def _lookup(conn, uuid):
    """The guest on that connection, or None when the host doesn't know it."""
    try:
        return conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == VIR_ERR_NO_DOMAIN:
            return None
        raise


def _guest_state(conn, uuid):
    """``(active, state, reason)`` of the guest on one host; ``(False, None, None)`` if absent.
    Raises libvirtError when the host cannot be asked."""
    dom = _lookup(conn, uuid)
    if dom is None:
        return False, None, None
    state, reason = dom.state()
    return bool(dom.isActive()), state, reason


def _disk_bytes(dom, targets=None):
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


def locate_guest(guest, uris, connect=None):
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


def _suggestion(options, reason):
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


def _hint_for(text):
    for needle, hint in ERROR_HINTS:
        if needle in text:
            return hint
    return None


def migrate_guest(guest, source_uri, dest_uri, options=None, progress=None,
                  source_name=None, dest_name=None, dest_peer_uri=None, connect=None,
                  cancel_event=None):
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
    options = options or MigrationOptions()
    connect = connect or open_connection
    source_name = source_name or host_label(source_uri)
    dest_name = dest_name or host_label(dest_uri)

    def fail(message, reason, location="unknown", running_on=None, last=None, paused_on=None):
        return MigrationError(message, guest=guest, source=source_name, destination=dest_name,
                              reason=reason, location=location, running_on=running_on,
                              last_progress=last, paused_on=paused_on)

    try:
        src_conn = connect(source_uri)
    except Exception as exc:
        raise fail("%s not migrated: cannot connect to source %s: %s"
                   % (guest, source_name, libvirt_message(exc)), "source-unreachable")
    dst_conn = None
    try:
        try:
            dst_conn = connect(dest_uri)
        except Exception as exc:
            raise fail("%s still on %s: not migrated, cannot connect to destination %s: %s"
                       % (guest, source_name, dest_name, libvirt_message(exc)),
                       "destination-unreachable", "source", source_name)
        # For the commands the messages give (virsh -c <uri> ...): the controller's URIs,
        # passwords hidden.
        shown_uris = (redact_uri(source_uri), redact_uri(dest_uri))
        return _migrate(guest, src_conn, dst_conn, dest_peer_uri or dest_uri, options,
                        progress, source_name, dest_name, fail, cancel_event, shown_uris)
    finally:
        for conn in (dst_conn, src_conn):
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass


def _migrate(guest, src_conn, dst_conn, peer_uri, options, progress, source_name, dest_name,
             fail, cancel_event, shown_uris=None):
    def untouched(what, exc):
        return fail("%s not migrated, left untouched on %s: %s failed: %s"
                    % (guest, source_name, what, libvirt_message(exc)),
                    "preflight-error", "source", source_name)

    def ask(what, call, *args):
        """A libvirt call before the job starts: the guest is untouched and still where it
        was, so any error is a MigrationError saying so, never a traceback."""
        try:
            return call(*args)
        except Exception as exc:
            raise untouched(what, exc)

    try:
        dom = src_conn.lookupByName(guest)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != VIR_ERR_NO_DOMAIN:
            raise untouched("looking it up on %s" % source_name, exc)
        raise fail("%s not migrated: not found on %s: %s"
                   % (guest, source_name, libvirt_message(exc)), "not-found", "unknown")
    uuid = ask("reading its UUID on %s" % source_name, dom.UUIDString)
    state, _reason = ask("reading its state on %s" % source_name, dom.state)
    if not ask("reading its state on %s" % source_name, dom.isActive):
        raise fail("%s not migrated: it is not running on %s (live migration moves running"
                   " guests only)" % (guest, source_name), "not-running", "unknown")
    was_running = state == VIR_DOMAIN_RUNNING
    # Admin state to keep: libvirt does not carry autostart over, and PERSIST_DEST would make
    # a transient guest persistent.
    persistent = bool(ask("reading whether it is persistent on %s" % source_name,
                          dom.isPersistent))
    autostart = persistent and bool(ask("reading its autostart flag on %s" % source_name,
                                        dom.autostart))

    # libvirt refuses to migrate between hosts with the same host UUID (cloned machines);
    # say so before starting instead of relaying "Attempt to migrate guest to the same host".
    src_host_uuid = ask("asking %s for its host UUID" % source_name, host_uuid, src_conn)
    dst_host_uuid = ask("asking %s for its host UUID" % dest_name, host_uuid, dst_conn)
    if src_host_uuid and src_host_uuid == dst_host_uuid:
        raise fail("%s still running on %s: not migrated, %s and %s report the same host UUID"
                   " %s and libvirt refuses to migrate between them (cloned host? set"
                   " host_uuid_source = \"machine-id\" or a distinct host_uuid in libvirtd.conf)"
                   % (guest, source_name, source_name, dest_name, src_host_uuid),
                   "same-host-uuid", "source", source_name)
    already = ask("looking for it on %s" % dest_name, _lookup, dst_conn, uuid)
    if already is not None and ask("reading its state on %s" % dest_name, already.isActive):
        raise fail("%s is already running on %s too; refusing to migrate (resolve by hand)"
                   % (guest, dest_name), "already-on-destination", "both", None)

    flags, params = ask("mapping the migration options", migration_flags_and_params, options,
                        persistent)
    memory_bytes = ask("reading its memory size on %s" % source_name, dom.maxMemory) * 1024
    disk_bytes = ask("reading its disk sizes on %s" % source_name, _disk_bytes, dom,
                     options.migrate_disks) if options.copy_storage else 0
    timeout = completion_timeout(memory_bytes, options, disk_bytes)

    outcome = {}

    def run_migration():
        try:
            # The returned domain belongs to the destination's connection which peer-to-peer
            # mode does not give us; we look the guest up on the destination ourselves.
            dom.migrateToURI3(peer_uri, params, flags)
            outcome["ok"] = True
        except Exception as exc:  # reported by the calling thread
            outcome["error"] = exc

    worker = threading.Thread(target=run_migration, name="migrate-%s" % guest)
    worker.daemon = True
    started = time.monotonic()
    worker.start()

    stall = StallDetector(options.stall_iterations)
    downtime_set = not options.max_downtime_ms
    postcopy_started = False
    abort_reason = None
    last = MigrationProgress(guest, source_name, dest_name, "starting")
    if progress:
        progress(last)

    while worker.is_alive():
        worker.join(options.poll_interval)
        if not worker.is_alive():
            break
        elapsed = time.monotonic() - started
        try:
            stats = dom.jobStats()
        except Exception:
            stats = {}  # the job may be finishing; the worker's outcome decides
        job_running = stats.get("type", VIR_DOMAIN_JOB_NONE) != VIR_DOMAIN_JOB_NONE
        if job_running and not downtime_set:
            try:
                dom.migrateSetMaxDowntime(int(options.max_downtime_ms), 0)
                downtime_set = True
            except Exception:
                pass  # the job is not there yet: retry next sample
        if job_running:
            phase = "postcopy" if postcopy_started else (
                "precopy" if stats.get("data_total") else "setup")
            last = MigrationProgress(guest, source_name, dest_name, phase, stats, elapsed)
            if progress:
                progress(last)
        if postcopy_started:
            continue  # cannot be aborted any more: wait for the end, whatever it takes
        iteration = stats.get("memory_iteration") or 0
        stalled = job_running and stall.observe(stats)
        timed_out = elapsed > timeout
        cancelled = cancel_event is not None and cancel_event.is_set()
        want_postcopy = options.postcopy and job_running and (
            iteration >= options.postcopy_after_iterations or stalled or timed_out)
        if want_postcopy and not cancelled:
            try:
                dom.migrateStartPostCopy(0)
                postcopy_started = True
                continue
            except Exception:
                pass  # too early or not possible: fall through to the watchdogs
        if stalled:
            abort_reason = ("stalled", "aborted after %d iterations without progress"
                            " (each pass starts again with about %s to send)"
                            % (stall.iterations_without_progress, human_bytes(stall.low_mark)))
        elif timed_out:
            abort_reason = ("timeout", "aborted after the %d s timeout (%s of guest memory)"
                            % (timeout, human_bytes(memory_bytes)))
        elif cancelled:
            abort_reason = ("cancelled", "cancelled")
        if abort_reason:
            try:
                dom.abortJob()
            except Exception:
                pass  # the job may have just ended; the outcome below tells
            worker.join(ABORT_GRACE_SECONDS)
            break

    elapsed = time.monotonic() - started
    if worker.is_alive():
        # abortJob did not end migrateToURI3 in time: say so rather than guess.
        raise fail("%s: migration to %s did not end %d s after abortJob(); check both hosts"
                   " by hand (the guest was not stopped)"
                   % (guest, dest_name, ABORT_GRACE_SECONDS), "abort-hung", "unknown", None, last)

    if outcome.get("ok"):
        result = _verify_success(guest, uuid, src_conn, dst_conn, options, flags, elapsed,
                                 postcopy_started, was_running, source_name, dest_name, fail,
                                 last, progress, shown_uris)
        _keep_admin_state(guest, uuid, src_conn, dst_conn, autostart, flags, source_name,
                          dest_name, shown_uris, result)
        return result

    if abort_reason:
        reason, why = abort_reason
        why = "migration to %s %s" % (dest_name, why)
    else:
        reason = "failed"
        exc = outcome.get("error")
        text = libvirt_message(exc) if exc is not None else "unknown error"
        if "same host" in text:
            reason = "same-host-uuid"
        hint = _hint_for(text)
        if hint:
            text += " (%s)" % hint
        why = "migration to %s failed: %s" % (dest_name, text)
    raise _recover(guest, uuid, src_conn, dst_conn, was_running, postcopy_started,
                   source_name, dest_name, reason, why + _suggestion(options, reason), fail,
                   last, shown_uris)


def _verify_success(guest, uuid, src_conn, dst_conn, options, flags, elapsed, postcopy_used,
                    was_running, source_name, dest_name, fail, last, progress, shown_uris=None):
    """migrateToURI3 returned: check the guest runs on the destination and not on the source,
    then read the completed job statistics."""
    try:
        dst_active, dst_state, _dst_reason = _guest_state(dst_conn, uuid)
        src_active, src_state, _src_reason = _guest_state(src_conn, uuid)
    except Exception as exc:
        raise fail("%s: migration to %s reported success but its location could not be"
                   " verified: %s" % (guest, dest_name, libvirt_message(exc)),
                   "unverified", "unknown", None, last)
    if src_active and dst_active:
        raise fail("%s is active on both %s and %s after migration; resolve by hand before"
                   " anything reboots" % (guest, source_name, dest_name), "both-active",
                   "both", None, last)
    if not src_active and not dst_active:
        raise fail("%s is running NOWHERE: migration to %s reported success but the guest is"
                   " not active there" % (guest, dest_name), "not-on-destination", "nowhere",
                   None, last)
    if not dst_active and src_state == VIR_DOMAIN_RUNNING:
        raise fail("%s still running on %s: migration to %s reported success but the guest is"
                   " not active there" % (guest, source_name, dest_name), "not-on-destination",
                   "source", source_name, last)
    if not dst_active or (was_running and dst_state != VIR_DOMAIN_RUNNING):
        # One side holds it active but not running (paused, mostly): resume it where that is
        # known to be safe, else name it as paused, where, and how to resume it. The job
        # completed, post-copy included, so the destination holds the whole guest; a source
        # copy paused by post-copy is still refused by its pause reason.
        reason, what = (("not-on-destination", "is not active there") if not dst_active
                        else ("not-running-on-destination", "is not running there"))
        raise _recover(guest, uuid, src_conn, dst_conn, was_running, False,
                       source_name, dest_name, reason,
                       "migration to %s reported success but the guest %s" % (dest_name, what),
                       fail, last, shown_uris)

    raw = {}
    # On the lab (libvirt 9.0) the completed statistics are readable on the destination after
    # UNDEFINE_SOURCE; without UNDEFINE_SOURCE the source still holds them too.
    for conn in (dst_conn, src_conn):
        try:
            dom = _lookup(conn, uuid)
            if dom is not None:
                raw = dom.jobStats(VIR_DOMAIN_JOB_STATS_COMPLETED) or {}
        except Exception:
            raw = {}
        if raw.get("downtime") is not None:
            break
    result = {
        "guest": guest,
        "source": source_name,
        "destination": dest_name,
        "changed": True,
        "flags": flags,
        "elapsed_s": round(elapsed, 3),
        "postcopy_used": postcopy_used,
    }
    result.update(completed_stats_summary(raw))
    result["raw"] = raw
    if progress:
        progress(MigrationProgress(guest, source_name, dest_name, "completed", raw, elapsed))
    return result


def _recover(guest, uuid, src_conn, dst_conn, was_running, postcopy_started, source_name,
             dest_name, reason, why, fail, last, shown_uris=None):
    """After a failed or aborted migration: find the guest, resume it on the source if the
    failure left it paused there and ``may_resume_on_source`` says no copy can run on the
    destination, and build the error that says where it is. A guest left paused is named as
    paused, with its host and the commands to check and resume it."""
    def state_on(conn):
        try:
            return _guest_state(conn, uuid), None
        except Exception as exc:
            return None, libvirt_message(exc)  # host unreachable: unknown

    src, src_error = state_on(src_conn)
    dst, dst_error = state_on(dst_conn)
    # Only libvirt's own job result on the source can stand in for a destination that
    # cannot be asked.
    source_job = _completed_job(src_conn, uuid) if dst is None else None
    allowed, resume_why = may_resume_on_source(src, dst, was_running, postcopy_started,
                                               source_job, source_name, dest_name, dst_error)
    resumed = False
    if allowed:
        # Left paused by the failed switch-over (Nova's recover step, Proxmox's `cont`), and
        # the destination has no copy: the source one is the guest. Resume it.
        try:
            src_conn.lookupByUUIDString(uuid).resume()
            resumed = True
        except Exception as exc:
            why += "; resuming it on %s failed: %s" % (source_name, libvirt_message(exc))
        src, src_error = state_on(src_conn)

    src_active, dst_active = bool(src and src[0]), bool(dst and dst[0])
    src_running = src_active and src[1] == VIR_DOMAIN_RUNNING
    dst_running = dst_active and dst[1] == VIR_DOMAIN_RUNNING
    if src_running and not dst_active:
        resumed_text = (" (resumed after the failure left it paused: %s)" % resume_why
                        if resumed else "")
        return fail("%s still running on %s%s: %s" % (guest, source_name, resumed_text, why),
                    reason, "source", source_name, last)
    if dst_running and not src_active:
        return fail("%s now running on %s although the migration reported an error: %s"
                    % (guest, dest_name, why), reason, "destination", dest_name, last)
    if src_active and dst_active:
        return fail("%s is active on both %s (%s) and %s (%s): %s; resolve by hand"
                    % (guest, source_name, state_name(src[1]), dest_name, state_name(dst[1]),
                       why), reason, "both", None, last)
    src_uri, dst_uri = shown_uris or ("<libvirt URI of %s>" % source_name,
                                      "<libvirt URI of %s>" % dest_name)
    if src_active:
        if not allowed:
            why += "; not resumed: %s" % resume_why
        hint = _held_hint(guest, src[1], was_running, source_name, src_uri, dest_name, dst_uri)
        return fail("%s: %s.%s" % (_held_text(guest, source_name, src[1]), why, hint), reason,
                    _held_location("source", src[1]), None, last, paused_on=source_name)
    if dst_active:
        if postcopy_started:
            why += (" - post-copy failed, neither host holds the whole guest: do not resume"
                    " either copy by hand")
            hint = ""
        else:
            hint = _held_hint(guest, dst[1], was_running, dest_name, dst_uri, source_name,
                              src_uri)
        return fail("%s: %s.%s" % (_held_text(guest, dest_name, dst[1]), why, hint), reason,
                    _held_location("destination", dst[1]), None, last, paused_on=dest_name)
    unknown = ["%s (%s)" % (name, error)
               for name, st, error in ((source_name, src, src_error), (dest_name, dst, dst_error))
               if st is None]
    if unknown:
        return fail("%s: location unknown, %s could not be asked: %s"
                    % (guest, " and ".join(unknown), why), reason, "unknown", None, last)
    return fail("%s is running NOWHERE (neither %s nor %s has it active): %s"
                % (guest, source_name, dest_name, why), reason, "nowhere", None, last)


def _held_location(side, state):
    """``source (paused)``: the side holding the guest active but not running, and how."""
    return "%s (%s)" % (side, state_name(state))


def _held_text(guest, host, state):
    if state == VIR_DOMAIN_PAUSED:
        return "%s is PAUSED on %s" % (guest, host)
    return "%s is on %s but not running (%s)" % (guest, host, state_name(state))


def _held_hint(guest, state, was_running, host, host_uri, other, other_uri):
    """The commands that check the other host and resume the guest where it is paused."""
    if state != VIR_DOMAIN_PAUSED or not was_running:
        return " Check it with `virsh -c %s domstate --reason %s`." % (host_uri, guest)
    return (" First check that %s does not run it: `virsh -c %s list --all`; once it shows no"
            " running %s, resume it on %s: `virsh -c %s resume %s`."
            % (other, other_uri, guest, host, host_uri, guest))


def _completed_job(conn, uuid):
    """libvirt's result of the guest's last job on that host (``jobStats(COMPLETED)``), or
    None when it cannot be read. libvirt 9.0 keeps no result of a failed outgoing migration
    (qemuMigrationSrcConfirmPhase clears it), so there this gives type 0 (none)."""
    try:
        dom = _lookup(conn, uuid)
        return (dom.jobStats(VIR_DOMAIN_JOB_STATS_COMPLETED) or {}) if dom is not None else None
    except Exception:
        return None


def may_resume_on_source(source_state, dest_state, was_running, postcopy_started,
                         source_job=None, source_name="the source", dest_name="the destination",
                         dest_error=None):
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


def _keep_admin_state(guest, uuid, src_conn, dst_conn, autostart, flags, source_name, dest_name,
                      shown_uris, result):
    """After a verified migration: the guest keeps its autostart flag (libvirt does not carry
    it over), and a definition left on the source (undefine_source off) loses it, or it would
    start a second copy when the source boots. Adds ``persistent``, ``autostart``,
    ``source_autostart_disabled`` and, when something could not be done, ``warnings`` (with
    the command that does it) to ``result``. Never fails the migration: the guest runs."""
    src_uri, dst_uri = shown_uris or ("<libvirt URI of %s>" % source_name,
                                      "<libvirt URI of %s>" % dest_name)
    warnings = []
    try:
        persistent = bool(_lookup(dst_conn, uuid).isPersistent())
    except Exception:
        persistent = bool(flags & VIR_MIGRATE_PERSIST_DEST)
    result["persistent"] = persistent
    result["autostart"] = False
    result["source_autostart_disabled"] = False
    if not autostart:
        return
    if not persistent:
        warnings.append("%s had autostart on %s but runs transient on %s (persist_dest is off),"
                        " so autostart could not follow it; define it there and run `virsh -c %s"
                        " autostart %s` if it must start with %s"
                        % (guest, source_name, dest_name, dst_uri, guest, dest_name))
    else:
        try:
            _lookup(dst_conn, uuid).setAutostart(1)
            result["autostart"] = True
        except Exception as exc:
            warnings.append("%s runs on %s without the autostart it had on %s: setting it failed:"
                            " %s; run `virsh -c %s autostart %s`"
                            % (guest, dest_name, source_name, libvirt_message(exc), dst_uri, guest))
    if not flags & VIR_MIGRATE_UNDEFINE_SOURCE:
        try:
            left = _lookup(src_conn, uuid)
            if left is not None and not left.isActive():
                left.setAutostart(0)
                result["source_autostart_disabled"] = True
        except Exception as exc:
            warnings.append("the definition of %s left on %s keeps autostart and would start a"
                            " second copy when %s boots: disabling it failed: %s; run `virsh -c"
                            " %s autostart --disable %s`"
                            % (guest, source_name, source_name, libvirt_message(exc), src_uri,
                               guest))
    if warnings:
        result["warnings"] = warnings
