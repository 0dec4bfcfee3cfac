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
phase              ``phase`` (drain, verify_empty, patch, reboot, verify, canary),
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
