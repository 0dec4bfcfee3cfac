# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The report of a rolling maintenance run, built from its events.

``build_report(events)`` replays the events (``run_events`` describes their types) through one
handler per event type and returns a JSON-able dict: ``run``, ``totals``, ``plan``,
``clusters``, ``hosts``, ``guests``, ``migrations``, ``locks`` and ``census``.
``report_rendering`` turns it into HTML, Markdown and an SVG timeline.

Pure Python, no Ansible import.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Dict, Iterable, List, Optional, Tuple

from ansible_collections.virtfleet.cluster.plugins.module_utils.canary import CANARY_PREFIX

Event = Dict[str, Any]
Record = Dict[str, Any]

MIGRATION_FIELDS = ("guest", "source", "destination", "purpose", "started", "ended", "time_ms", "downtime_ms",
                    "status", "message", "where")
LOCK_FIELDS = ("ts", "cluster", "state", "holder", "message")


def max_concurrent(intervals: Iterable[Tuple[float, float]]) -> int:
    """Largest number of [start, end) intervals open at the same instant."""
    points = []
    for start, end in intervals:
        points.append((start, 1))
        points.append((end, -1))
    # Ends sort before starts at the same instant: a host unmarked at t and the next marked
    # at t were not in maintenance together.
    points.sort(key=lambda point: (point[0], point[1]))
    best = current = 0
    for _instant, delta in points:
        current += delta
        best = max(best, current)
    return best


def account_for_guests(census: Optional[Event], stopped_allowed: Collection[str] = ()) -> Optional[Record]:
    """Every guest running at the start of the run, found again at its end (or None without a
    census): ``missing`` lists those running nowhere, with why; guests the policy allowed to
    stop (rolling_maintenance_stop_allowed_guests) are listed apart, not as lost."""
    if not census:
        return None
    start, end = census.get("start") or {}, census.get("end") or {}
    unasked = sorted(census.get("unasked") or [])
    missing, stopped = [], []
    for guest in sorted(start):
        if guest in end:
            continue
        if guest in stopped_allowed:
            stopped.append(guest)
            continue
        why = ("not found: %s could not be asked at the end" % ", ".join(unasked) if unasked
               else "runs on no host of the run's clusters")
        missing.append({"guest": guest, "started_on": start[guest], "why": why})
    return {"started": len(start), "running": sum(1 for g in start if g in end), "missing": missing,
            "stopped_allowed": stopped, "unasked": unasked}


def _new_run() -> Record:
    return {"run_id": None, "started": None, "ended": None, "status": "running", "dry_run": False, "message": None,
            "options": {}}


def _customer(migration: Record) -> bool:
    """A migration of a customer's guest, not of the collection's own canary (module_utils/canary;
    a customer guest the operator named as canary is a customer's)."""
    return not (migration.get("purpose") == "canary" and str(migration.get("guest") or "").startswith(CANARY_PREFIX))


def _new_guest(name: str, cluster: Optional[str]) -> Record:
    return {"name": name, "cluster": cluster, "migrations": 0, "failed_migrations": 0, "total_downtime_ms": 0,
            "worst_downtime_ms": 0, "location": None}


@dataclass
class ReportBuilder:
    """What the events said so far; ``HANDLERS`` maps each event type to the method that
    records it, ``report()`` derives statuses and totals once every event is in."""

    run: Record = field(default_factory=_new_run)
    clusters: Dict[str, Record] = field(default_factory=dict)
    hosts: Dict[str, Record] = field(default_factory=dict)
    plan: Optional[Record] = None
    migrations: List[Record] = field(default_factory=list)
    locations: Dict[str, str] = field(default_factory=dict)
    locks: List[Record] = field(default_factory=list)
    open_phases: Dict[Tuple[Optional[str], Any], float] = field(default_factory=dict)
    census: Optional[Event] = None
    stopped_allowed: List[str] = field(default_factory=list)
    last_ts: float = 0

    def host(self, cluster: Optional[str], host: Optional[str]) -> Record:
        return self.hosts.setdefault(host, {
            "name": host, "cluster": cluster, "status": "planned", "wave": None,
            "start": None, "end": None, "phases": [], "migrations": [], "reason": None,
            "message": None, "boot_id_before": None, "boot_id_after": None, "rebooted": None,
            "failed_phase": None, "resumed_phase": None,
        })

    def add(self, event: Event) -> None:
        self.run["run_id"] = self.run["run_id"] or event.get("run_id")
        handler = HANDLERS.get(event.get("type"))
        if handler:
            handler(self, event)

    # ------------------------------------------------------------------- one handler per event type
    def on_run_start(self, event: Event) -> None:
        self.run.update(started=event.get("ts"), dry_run=bool(event.get("dry_run")), options=event.get("options") or {})
        for name, members in (event.get("clusters") or {}).items():
            self.clusters.setdefault(name, {"name": name, "max_unavailable": None, "status": "planned",
                                            "hosts": list(members), "reason": None})

    def on_plan(self, event: Event) -> None:
        capacity = event.get("capacity") or {}
        self.plan = {"waves": event.get("waves") or [], "slot_order": event.get("slot_order") or {},
                     "skipped": event.get("skipped") or {},
                     "drain_plans": event.get("drain_plans") or {},
                     "capacity_ok": capacity.get("ok"), "capacity_problems": capacity.get("problems") or []}
        for name, info in (event.get("clusters") or {}).items():
            entry = self.clusters.setdefault(name, {"name": name, "status": "planned", "hosts": [], "reason": None})
            entry["max_unavailable"] = info.get("max_unavailable")
            entry["hosts"] = list(info.get("hosts") or entry["hosts"])
            for member in entry["hosts"]:
                self.host(name, member)
        for index, wave in enumerate(self.plan["waves"]):
            for member in wave:
                if member in self.hosts:
                    self.hosts[member]["wave"] = index + 1
        for member, reason in self.plan["skipped"].items():
            if member in self.hosts:
                self.hosts[member].update(status="skipped", reason=reason)

    def on_host_start(self, event: Event) -> None:
        entry = self.host(event.get("cluster"), event.get("host"))
        entry.update(status="in_maintenance", start=event.get("ts"), resumed_phase=event.get("resumed_phase"))
        if event.get("wave"):
            entry["wave"] = event["wave"]

    def on_phase(self, event: Event) -> None:
        entry = self.host(event.get("cluster"), event.get("host"))
        phase, state, ts = event.get("phase"), event.get("state"), event.get("ts")
        key = (event.get("host"), phase)
        if str(phase).startswith("shutdown ") and state == "end":
            self.stopped_allowed.append(phase.split(" ", 1)[1])
        if state == "start":
            self.open_phases[key] = ts
            return
        # An end event may carry its own start (one event per phase).
        start = self.open_phases.pop(key, ts)
        if event.get("start") is not None:
            start = event["start"]
        entry["phases"].append({"phase": phase, "start": start, "end": ts, "state": state,
                                "details": event.get("details")})

    def on_migration(self, event: Event) -> None:
        record = {name: event.get(name) for name in MIGRATION_FIELDS}
        record["cluster"] = event.get("cluster")
        record["host"] = event.get("host")
        record["started"] = record["started"] or event.get("ts")
        record["ended"] = record["ended"] or event.get("ts")
        self.migrations.append(record)
        if record["host"]:
            self.host(record["cluster"], record["host"])["migrations"].append(record)
        if record["status"] == "ok" and record["destination"] and _customer(record):
            self.locations[record["guest"]] = record["destination"]

    def on_host_done(self, event: Event) -> None:
        self.host(event.get("cluster"), event.get("host")).update(
            status="done", end=event.get("ts"), boot_id_before=event.get("boot_id_before"),
            boot_id_after=event.get("boot_id_after"), rebooted=event.get("rebooted"))

    def on_host_skipped(self, event: Event) -> None:
        self.host(event.get("cluster"), event.get("host")).update(status="skipped", reason=event.get("reason"))

    def on_host_failed(self, event: Event) -> None:
        entry = self.host(event.get("cluster"), event.get("host"))
        entry.update(status="failed", failed_phase=event.get("phase"), message=event.get("message"))
        entry["failed_at"] = event.get("ts")

    def on_cluster_stopped(self, event: Event) -> None:
        cluster = event.get("cluster")
        entry = self.clusters.setdefault(cluster, {"name": cluster, "status": "planned", "hosts": [], "reason": None,
                                                   "max_unavailable": None})
        entry.update(status="stopped", reason=event.get("reason"))

    def on_guest_locations(self, event: Event) -> None:
        self.locations.update(event.get("locations") or {})

    def on_census(self, event: Event) -> None:
        self.census = event

    def on_lock(self, event: Event) -> None:
        self.locks.append({name: event.get(name) for name in LOCK_FIELDS})

    def on_run_end(self, event: Event) -> None:
        self.run.update(ended=event.get("ts"), status=event.get("status") or "ok", message=event.get("message"))

    # ------------------------------------------------------------------- once every event is in
    def report(self, events: List[Event]) -> Record:
        self.last_ts = max([event.get("ts", 0) for event in events] or [0])
        if self.run["ended"] is None:
            self.run["ended"] = self.last_ts
        if self.run["started"] is None and events:
            self.run["started"] = events[0].get("ts")
        self._close_hosts()
        self._settle_clusters()
        guests = self._guests()
        totals = self._totals()
        if self.run["status"] == "running" and any(h["status"] == "failed" for h in self.hosts.values()):
            self.run["status"] = "failed"
        accounted = self._account_for_guests()
        return {"run": self.run, "totals": totals, "plan": self.plan, "clusters": self.clusters, "hosts": self.hosts,
                "guests": guests, "migrations": self.migrations, "locks": self.locks, "census": accounted}

    def _close_hosts(self) -> None:
        # Phases still open when the log ends (a crash): show them up to the last event.
        for (host, phase), start in self.open_phases.items():
            entry = self.hosts.get(host)
            if entry:
                entry["phases"].append({"phase": phase, "start": start, "end": self.last_ts, "state": "unfinished",
                                        "details": None})
        for entry in self.hosts.values():
            if entry["start"] is not None and entry["end"] is None:
                # Failed or interrupted hosts stay marked: in maintenance until the end of the log.
                entry["end_open"] = True
            entry["phases"].sort(key=lambda phase: phase["start"] or 0)

    def _settle_clusters(self) -> None:
        for entry in self.clusters.values():
            members = [self.hosts[h] for h in entry["hosts"] if h in self.hosts]
            statuses = {member["status"] for member in members}
            if entry["status"] != "stopped":
                if "failed" in statuses:
                    entry["status"] = "failed"
                elif self.run["dry_run"]:
                    entry["status"] = "dry_run"
                elif members and statuses <= {"done", "skipped"}:
                    entry["status"] = "done"
                elif "in_maintenance" in statuses or "done" in statuses:
                    entry["status"] = "incomplete"
            intervals = [(m["start"], m["end"] if m["end"] is not None else self.last_ts)
                         for m in members if m["start"] is not None]
            entry["max_in_maintenance"] = max_concurrent(intervals)
            # Each cluster goes on its own clock: when its first host went in, when its last came out.
            entry["started"] = min((start for start, _end in intervals), default=None)
            entry["ended"] = max((end for _start, end in intervals), default=None)

    def _guests(self) -> Dict[str, Record]:
        """Customer guests only: the collection's canary is destroyed after its proof."""
        guests: Dict[str, Record] = {}
        for record in filter(_customer, self.migrations):
            guest = guests.setdefault(record["guest"], _new_guest(record["guest"], record["cluster"]))
            if record["status"] == "ok":
                guest["migrations"] += 1
                downtime = record["downtime_ms"] or 0
                guest["total_downtime_ms"] += downtime
                guest["worst_downtime_ms"] = max(guest["worst_downtime_ms"], downtime)
            elif record["status"] != "skipped":  # failed, not_started
                guest["failed_migrations"] += 1
        for name, host in self.locations.items():
            guest = guests.setdefault(name, _new_guest(name, None))
            guest["location"] = host
            if guest["cluster"] is None and host in self.hosts:
                guest["cluster"] = self.hosts[host]["cluster"]
        return guests

    def _totals(self) -> Record:
        hosts, migrations, run = self.hosts.values(), self.migrations, self.run
        ok_migrations = [m for m in migrations if m["status"] == "ok"]
        # Guest downtime is what customers' guests had: the collection's own canary is none.
        customers = [m for m in ok_migrations if _customer(m)]
        worst = max(customers, key=lambda m: m["downtime_ms"] or 0, default=None)
        return {
            "hosts_planned": len(self.hosts),
            "hosts_patched": sum(1 for h in hosts if h["status"] == "done"),
            "hosts_skipped": sum(1 for h in hosts if h["status"] == "skipped"),
            "hosts_failed": sum(1 for h in hosts if h["status"] == "failed"),
            "hosts_rebooted": sum(1 for h in hosts if h["rebooted"]),
            "guests_moved": len({m["guest"] for m in ok_migrations if m["purpose"] in ("drain", None)}),
            "migrations": len(ok_migrations),
            "failed_migrations": sum(1 for m in migrations if m["status"] not in ("ok", "skipped")),
            "skipped_migrations": sum(1 for m in migrations if m["status"] == "skipped"),
            "total_downtime_ms": sum(m["downtime_ms"] or 0 for m in customers),
            "worst_downtime_ms": (worst["downtime_ms"] or 0) if worst else 0,
            "worst_downtime_guest": worst["guest"] if worst else None,
            "total_migration_time_ms": sum(m["time_ms"] or 0 for m in ok_migrations),
            "duration_s": round((run["ended"] or 0) - (run["started"] or 0), 1) if run["started"] else 0,
        }

    def _account_for_guests(self) -> Optional[Record]:
        accounted = account_for_guests(self.census, self.stopped_allowed)
        if accounted and accounted["missing"]:
            # The worst failure is a green run that lost a guest: whatever the hosts did, fail.
            self.run["status"] = "failed"
            lost = "guests unaccounted for at the end of the run: %s" % ", ".join(
                "%s (ran on %s at the start; %s)" % (m["guest"], m["started_on"], m["why"]) for m in accounted["missing"])
            self.run["message"] = "%s; %s" % (self.run["message"], lost) if self.run["message"] else lost
        return accounted


HANDLERS: Dict[str, Callable[[ReportBuilder, Event], None]] = {
    "run_start": ReportBuilder.on_run_start,
    "plan": ReportBuilder.on_plan,
    "host_start": ReportBuilder.on_host_start,
    "phase": ReportBuilder.on_phase,
    "migration": ReportBuilder.on_migration,
    "host_done": ReportBuilder.on_host_done,
    "host_skipped": ReportBuilder.on_host_skipped,
    "host_failed": ReportBuilder.on_host_failed,
    "cluster_stopped": ReportBuilder.on_cluster_stopped,
    "guest_locations": ReportBuilder.on_guest_locations,
    "census": ReportBuilder.on_census,
    "lock": ReportBuilder.on_lock,
    "run_end": ReportBuilder.on_run_end,
}


def build_report(events: List[Event]) -> Record:
    """The report (a JSON-able dict) of a run, from its events."""
    builder = ReportBuilder()
    for event in events:
        builder.add(event)
    return builder.report(events)
