# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Watching a migration job: the loop that samples it (`JobWatch`), the stall detector, the
progress samples given to callers, and the figures of a completed job. The stall detector and
the figures are pure: fed with ``jobStats()`` dictionaries, no libvirt needed.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import VIR_DOMAIN_JOB_NONE
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_options import (
    DEFAULT_STALL_ITERATIONS, GIB, MIB, MigrationOptions)

# How long to wait for migrateToURI3 to return once abortJob() was sent.
ABORT_GRACE_SECONDS = 60


class StallDetector:
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

    def __init__(self, limit: int = DEFAULT_STALL_ITERATIONS):
        if limit < 1:
            raise ValueError("stall limit must be at least 1")
        self.limit = limit
        self.low_mark: Optional[int] = None
        self.low_mark_iteration: Optional[int] = None
        self.iteration: Optional[int] = None

    @property
    def iterations_without_progress(self) -> int:
        if self.iteration is None or self.low_mark_iteration is None:
            return 0
        return self.iteration - self.low_mark_iteration

    def observe(self, stats: Dict[str, Any]) -> bool:
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
    def stalled(self) -> bool:
        return self.iterations_without_progress >= self.limit


class MigrationProgress:
    """One progress sample of one migration, as given to progress callbacks."""

    __slots__ = ("guest", "source", "destination", "phase", "data_total", "data_processed",
                 "data_remaining", "memory_iteration", "dirty_rate_bps", "transfer_bps",
                 "elapsed")

    def __init__(self, guest: str, source: str, destination: str, phase: str,
                 stats: Optional[Dict[str, Any]] = None, elapsed: float = 0.0):
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
    def percent(self) -> int:
        """Share of the guest's data not left to send (drops back when memory is re-dirtied)."""
        if not self.data_total or self.data_remaining is None:
            return 100 if self.phase == "completed" else 0
        return max(0, min(100, int(100 * (1 - float(self.data_remaining) / self.data_total))))

    def as_dict(self) -> Dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__slots__}
        data["percent"] = self.percent
        return data

    def __str__(self) -> str:
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


def dirty_rate_bytes(stats: Dict[str, Any]) -> Optional[int]:
    """QEMU reports the dirty rate in pages/s; callers want bytes/s."""
    rate = stats.get("memory_dirty_rate")
    if rate is None:
        return None
    return rate * (stats.get("memory_page_size") or 4096)


def human_bytes(value: Optional[float]) -> str:
    if value is None:
        return "?"
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if value >= size:
            number = value / float(size)
            return ("%d %s" % (number, unit)) if number == int(number) else ("%.1f %s" % (number, unit))
    return "%d B" % value


def completed_stats_summary(stats: Optional[Dict[str, Any]]) -> Dict[str, Any]:
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


class JobWatch:
    """Watches one migration job from the calling thread while a worker thread runs
    ``migrateToURI3``: reports progress (``sample(phase, stats, elapsed)``), sets the maximum
    downtime once the job exists (libvirt has no parameter for it), switches to post-copy when
    the options allow it, and aborts the job on a stall, a timeout or the cancel event."""

    def __init__(self, options: MigrationOptions, sample: Callable[[str, Dict[str, Any], float], None],
                 cancel_event: Optional[threading.Event] = None):
        self.options = options
        self.sample = sample
        self.cancel_event = cancel_event
        self.postcopy_started = False

    def watch(self, dom, worker: threading.Thread, started: float, timeout: float,
              memory_bytes: int) -> Optional[Tuple[str, str]]:
        """Until the worker ends; returns ``(reason, why)`` when it aborted the job (the
        worker then had ABORT_GRACE_SECONDS to return)."""
        options = self.options
        stall = StallDetector(options.stall_iterations)
        downtime_set = not options.max_downtime_ms
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
                phase = "postcopy" if self.postcopy_started else (
                    "precopy" if stats.get("data_total") else "setup")
                self.sample(phase, stats, elapsed)
            if self.postcopy_started:
                continue  # cannot be aborted any more: wait for the end, whatever it takes
            iteration = stats.get("memory_iteration") or 0
            stalled = job_running and stall.observe(stats)
            timed_out = elapsed > timeout
            cancelled = self.cancel_event is not None and self.cancel_event.is_set()
            want_postcopy = options.postcopy and job_running and (
                iteration >= options.postcopy_after_iterations or stalled or timed_out)
            if want_postcopy and not cancelled:
                try:
                    dom.migrateStartPostCopy(0)
                    self.postcopy_started = True
                    continue
                except Exception:
                    pass  # too early or not possible: fall through to the watchdogs
            abort_reason = None
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
                return abort_reason
        return None
