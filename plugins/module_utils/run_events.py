# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The event log of a rolling maintenance run.

The run appends one JSON line per event to ``<reports dir>/<run id>/events.jsonl`` as it goes,
so a run that fails half way still has everything that happened up to the failure; the report
(``run_report.build_report``, written by ``report_rendering.write_report``) is rebuilt from the
events at the end, on failure, or by hand at any time.

Event types (every event has ``ts`` (epoch seconds), ``type``, and ``cluster``/``host`` when
about one):

=================  ==========================================================================
run_start          ``dry_run``, ``clusters``, ``hosts``, ``options``
plan               ``waves`` (list of host lists), ``skipped`` (host -> reason),
                   ``clusters`` (name -> {max_unavailable, hosts}), ``drain_plans`` (dry run)
host_start         a host enters maintenance (marked): ``wave``, ``resumed_phase``
phase              ``phase`` (drain, patch, reboot, verify, canary),
                   ``state`` (start/end/failed/skipped), ``details``; an end event may carry
                   ``start`` (then no start event is needed)
migration          ``guest``, ``source``, ``destination``, ``purpose`` (drain, canary,
                   move_back, rebalance), ``started``, ``ended``, ``time_ms``, ``downtime_ms``,
                   ``status`` (ok/failed/skipped: a move-back that would not fit), ``message``,
                   ``where`` (a failed one: where the guest is, e.g. ``hv-1 (paused)``)
host_done          ``boot_id_before``, ``boot_id_after``, ``rebooted``
host_skipped       ``reason``
host_failed        ``phase``, ``message``
cluster_stopped    ``reason``: later hosts of the cluster were not started
guest_locations    ``locations`` (guest -> host), a snapshot
census             ``start`` and ``end`` (guest -> host running it at the start and at the end
                   of the run), ``unasked`` (hosts that could not be asked at the end): a guest
                   that ran at the start and runs nowhere at the end fails the run, named
lock               ``state`` (acquired/released/refused), ``holder``
run_end            ``status`` (ok/failed/dry_run/refused), ``message``
=================  ==========================================================================

Pure Python, no Ansible import.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List

EVENTS_FILE = "events.jsonl"

# The options of a task that records events besides its own work (maintenance_state's ``report``).
REPORT_OPTIONS: Dict[str, Any] = dict(
    directory=dict(type="path", required=True),
    run_id=dict(type="str"),
    events=dict(type="list", elements="dict", default=[]),
)

# The ``report`` option of an action that records the events of its own outcome (host_drain,
# host_canary): where, and what every one of its events carries (``about``: cluster, host).
TASK_REPORT_SPEC: Dict[str, Any] = dict(type="dict", options=dict(
    directory=dict(type="path", required=True),
    run_id=dict(type="str"),
    about=dict(type="dict", default={}),
))

Event = Dict[str, Any]


def append_event(directory: str, event: Event) -> Event:
    """Append one event (a dict) to the run's event log; returns the event as written."""
    os.makedirs(directory, exist_ok=True)
    event = dict(event)
    event.setdefault("ts", time.time())
    line = (json.dumps(event, sort_keys=True, default=str) + "\n").encode("utf-8")
    fd = os.open(os.path.join(directory, EVENTS_FILE), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        # One write() with O_APPEND: events of hosts acting in parallel never interleave.
        os.write(fd, line)
    finally:
        os.close(fd)
    return event


def load_events(directory: str) -> List[Event]:
    """The run's events in time order; a missing log is an empty run."""
    events = []
    try:
        with open(os.path.join(directory, EVENTS_FILE), "r", encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    events.append(json.loads(line))
                except ValueError:
                    # A line torn by a crash mid-write must not cost the whole report.
                    continue
    except FileNotFoundError:
        pass
    events.sort(key=lambda event: event.get("ts", 0))
    return events


def drain_events(outcome: Dict[str, Any], began: float) -> List[Event]:
    """A host_drain outcome as events: one migration event per guest it moved (or tried to),
    one phase event per guest it shut down, and the drain phase's end (or failure).
    ``began``: when the drain task started (the phase's start)."""
    events: List[Event] = []
    moves_began = float(outcome.get("moves_began") or began)  # what started_s/ended_s count from
    for move in outcome.get("migrations") or []:
        stats = move.get("result") or {}
        migrated = move.get("status") == "migrated"
        events.append({
            "type": "migration", "purpose": "drain", "guest": move.get("guest"), "source": move.get("source"),
            "destination": move.get("destination") if migrated else move.get("running_on"),
            "where": move.get("where") or move.get("running_on"),
            "started": moves_began + float(move.get("started_s") or 0),
            "ended": moves_began + float(move.get("ended_s") or 0),
            "time_ms": stats.get("total_time_ms"), "downtime_ms": stats.get("downtime_ms"),
            "status": "ok" if migrated else move.get("status"), "message": move.get("error")})
    for stop in outcome.get("shutdown") or []:
        events.append({"type": "phase", "phase": "shutdown %s" % stop.get("guest"),
                       "state": "end" if stop.get("ok") else "failed", "details": stop})
    events.append({"type": "phase", "phase": "drain", "start": began,
                   "state": "failed" if outcome.get("failed") else "end",
                   "details": {"msg": outcome.get("msg") or "", "locations": outcome.get("locations") or {},
                               "where": outcome.get("where") or {},
                               "reserved": (outcome.get("plan") or {}).get("reserved") or {}}})
    return events


def canary_events(outcome: Dict[str, Any], began: float) -> List[Event]:
    """A host_canary outcome as events: the canary phase's start (when it migrated at all), its
    migrations (already events), and the phase's end (or failure) with what was chosen."""
    migrations = outcome.get("migrations") or []
    events: List[Event] = []
    if migrations:
        events.append({"type": "phase", "phase": "canary", "state": "start", "ts": began})
    events.extend(dict(migration) for migration in migrations)
    events.append({"type": "phase", "phase": "canary", "state": "failed" if outcome.get("failed") else "end",
                   "start": began,
                   "details": {"canary": outcome.get("canary"), "owned": outcome.get("owned"), "peer": outcome.get("peer"),
                               "msg": outcome.get("msg") or "", "leftovers_removed": outcome.get("leftovers_removed") or [],
                               "passed_over": outcome.get("passed_over") or []}})
    return events
