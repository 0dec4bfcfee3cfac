# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Events of a rolling maintenance run and the report built from them.

The run appends one JSON line per event to ``<reports dir>/<run id>/events.jsonl`` as it goes,
so a run that fails half way still has everything that happened up to the failure; the report
(``report.json``, ``report.html`` with an inline SVG timeline, ``report.md`` + ``timeline.svg``)
is rebuilt from the events at the end, on failure, or by hand at any time.

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

import html
import json
import os
import time

EVENTS_FILE = "events.jsonl"
PHASE_COLOURS = {
    "maintenance": "#d9e2ef",
    "drain": "#4e79a7",
    "verify_empty": "#76b7b2",
    "patch": "#f28e2b",
    "reboot": "#e15759",
    "verify": "#59a14f",
    "canary": "#b07aa1",
    "move_back": "#9c755f",
}


# --------------------------------------------------------------------------- events
def append_event(directory, event):
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


def load_events(directory):
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
    events.sort(key=lambda e: e.get("ts", 0))
    return events


# --------------------------------------------------------------------------- model
def _host_entry(hosts, cluster, host):
    return hosts.setdefault(host, {
        "name": host, "cluster": cluster, "status": "planned", "wave": None,
        "start": None, "end": None, "phases": [], "migrations": [], "reason": None,
        "message": None, "boot_id_before": None, "boot_id_after": None, "rebooted": None,
        "failed_phase": None, "resumed_phase": None,
    })


def max_concurrent(intervals):
    """Largest number of [start, end) intervals open at the same instant."""
    points = []
    for start, end in intervals:
        points.append((start, 1))
        points.append((end, -1))
    # Ends sort before starts at the same instant: a host unmarked at t and the next marked
    # at t were not in maintenance together.
    points.sort(key=lambda p: (p[0], p[1]))
    best = current = 0
    for _instant, delta in points:
        current += delta
        best = max(best, current)
    return best


def build_report(events):
    """The report (a JSON-able dict) of a run, from its events."""
    run = {"run_id": None, "started": None, "ended": None, "status": "running",
           "dry_run": False, "message": None, "options": {}}
    clusters = {}
    hosts = {}
    plan = None
    migrations = []
    locations = {}
    locks = []
    open_phases = {}
    census = None
    stopped_allowed = []

    for event in events:
        kind = event.get("type")
        ts = event.get("ts")
        cluster = event.get("cluster")
        host = event.get("host")
        run["run_id"] = run["run_id"] or event.get("run_id")
        if kind == "run_start":
            run.update(started=ts, dry_run=bool(event.get("dry_run")),
                       options=event.get("options") or {})
            for name, members in (event.get("clusters") or {}).items():
                clusters.setdefault(name, {"name": name, "max_unavailable": None, "status": "planned",
                                           "hosts": list(members), "reason": None})
        elif kind == "plan":
            plan = {"waves": event.get("waves") or [], "skipped": event.get("skipped") or {},
                    "drain_plans": event.get("drain_plans") or {},
                    "capacity_ok": (event.get("capacity") or {}).get("ok"),
                    "capacity_problems": (event.get("capacity") or {}).get("problems") or []}
            for name, info in (event.get("clusters") or {}).items():
                entry = clusters.setdefault(name, {"name": name, "status": "planned",
                                                   "hosts": [], "reason": None})
                entry["max_unavailable"] = info.get("max_unavailable")
                entry["hosts"] = list(info.get("hosts") or entry["hosts"])
                for member in entry["hosts"]:
                    _host_entry(hosts, name, member)
            for index, wave in enumerate(plan["waves"]):
                for member in wave:
                    if member in hosts:
                        hosts[member]["wave"] = index + 1
            for member, reason in plan["skipped"].items():
                if member in hosts:
                    hosts[member].update(status="skipped", reason=reason)
        elif kind == "host_start":
            entry = _host_entry(hosts, cluster, host)
            entry.update(status="in_maintenance", start=ts,
                         resumed_phase=event.get("resumed_phase"))
            if event.get("wave"):
                entry["wave"] = event["wave"]
        elif kind == "phase":
            entry = _host_entry(hosts, cluster, host)
            key = (host, event.get("phase"))
            if str(event.get("phase")).startswith("shutdown ") and event.get("state") == "end":
                stopped_allowed.append(event["phase"].split(" ", 1)[1])
            if event.get("state") == "start":
                open_phases[key] = ts
            else:
                # An end event may carry its own start (one event per phase).
                start = open_phases.pop(key, ts)
                if event.get("start") is not None:
                    start = event["start"]
                entry["phases"].append({"phase": event.get("phase"), "start": start, "end": ts,
                                        "state": event.get("state"),
                                        "details": event.get("details")})
        elif kind == "migration":
            record = {k: event.get(k) for k in ("guest", "source", "destination", "purpose",
                                                "started", "ended", "time_ms", "downtime_ms",
                                                "status", "message", "where")}
            record["cluster"] = cluster
            record["host"] = host
            record["started"] = record["started"] or ts
            record["ended"] = record["ended"] or ts
            migrations.append(record)
            if host:
                _host_entry(hosts, cluster, host)["migrations"].append(record)
            if record["status"] == "ok" and record["destination"]:
                locations[record["guest"]] = record["destination"]
        elif kind == "host_done":
            entry = _host_entry(hosts, cluster, host)
            entry.update(status="done", end=ts, boot_id_before=event.get("boot_id_before"),
                         boot_id_after=event.get("boot_id_after"), rebooted=event.get("rebooted"))
        elif kind == "host_skipped":
            _host_entry(hosts, cluster, host).update(status="skipped", reason=event.get("reason"))
        elif kind == "host_failed":
            entry = _host_entry(hosts, cluster, host)
            entry.update(status="failed", failed_phase=event.get("phase"),
                         message=event.get("message"))
            entry["failed_at"] = ts
        elif kind == "cluster_stopped":
            entry = clusters.setdefault(cluster, {"name": cluster, "status": "planned",
                                                  "hosts": [], "reason": None,
                                                  "max_unavailable": None})
            entry.update(status="stopped", reason=event.get("reason"))
        elif kind == "guest_locations":
            locations.update(event.get("locations") or {})
        elif kind == "census":
            census = event
        elif kind == "lock":
            locks.append({k: event.get(k) for k in ("ts", "cluster", "state", "holder", "message")})
        elif kind == "run_end":
            run.update(ended=ts, status=event.get("status") or "ok", message=event.get("message"))

    last_ts = max([e.get("ts", 0) for e in events] or [0])
    if run["ended"] is None:
        run["ended"] = last_ts
    if run["started"] is None and events:
        run["started"] = events[0].get("ts")

    # Phases still open when the log ends (a crash): show them up to the last event.
    for (host, phase), start in open_phases.items():
        entry = hosts.get(host)
        if entry:
            entry["phases"].append({"phase": phase, "start": start, "end": last_ts,
                                    "state": "unfinished", "details": None})

    for entry in hosts.values():
        if entry["start"] is not None and entry["end"] is None:
            # Failed or interrupted hosts stay marked: in maintenance until the end of the log.
            entry["end_open"] = True
        entry["phases"].sort(key=lambda p: p["start"] or 0)

    for name, entry in clusters.items():
        members = [hosts[h] for h in entry["hosts"] if h in hosts]
        statuses = {m["status"] for m in members}
        if entry["status"] != "stopped":
            if "failed" in statuses:
                entry["status"] = "failed"
            elif run["dry_run"]:
                entry["status"] = "dry_run"
            elif members and statuses <= {"done", "skipped"}:
                entry["status"] = "done"
            elif "in_maintenance" in statuses or "done" in statuses:
                entry["status"] = "incomplete"
        intervals = [(m["start"], m["end"] if m["end"] is not None else last_ts)
                     for m in members if m["start"] is not None]
        entry["max_in_maintenance"] = max_concurrent(intervals)

    guests = {}
    for record in migrations:
        guest = guests.setdefault(record["guest"], {
            "name": record["guest"], "cluster": record["cluster"], "migrations": 0,
            "failed_migrations": 0, "total_downtime_ms": 0, "worst_downtime_ms": 0,
            "location": None})
        if record["status"] == "ok":
            guest["migrations"] += 1
            downtime = record["downtime_ms"] or 0
            guest["total_downtime_ms"] += downtime
            guest["worst_downtime_ms"] = max(guest["worst_downtime_ms"], downtime)
        elif record["status"] != "skipped":  # failed, not_started
            guest["failed_migrations"] += 1
    for guest_name, host in locations.items():
        guests.setdefault(guest_name, {"name": guest_name, "cluster": None, "migrations": 0,
                                       "failed_migrations": 0, "total_downtime_ms": 0,
                                       "worst_downtime_ms": 0, "location": None})
        guests[guest_name]["location"] = host
        if guests[guest_name]["cluster"] is None and host in hosts:
            guests[guest_name]["cluster"] = hosts[host]["cluster"]

    ok_migrations = [m for m in migrations if m["status"] == "ok"]
    worst = max(ok_migrations, key=lambda m: m["downtime_ms"] or 0, default=None)
    totals = {
        "hosts_planned": len(hosts),
        "hosts_patched": sum(1 for h in hosts.values() if h["status"] == "done"),
        "hosts_skipped": sum(1 for h in hosts.values() if h["status"] == "skipped"),
        "hosts_failed": sum(1 for h in hosts.values() if h["status"] == "failed"),
        "hosts_rebooted": sum(1 for h in hosts.values() if h["rebooted"]),
        "guests_moved": len({m["guest"] for m in ok_migrations if m["purpose"] in ("drain", None)}),
        "migrations": len(ok_migrations),
        "failed_migrations": sum(1 for m in migrations if m["status"] not in ("ok", "skipped")),
        "skipped_migrations": sum(1 for m in migrations if m["status"] == "skipped"),
        "total_downtime_ms": sum(m["downtime_ms"] or 0 for m in ok_migrations),
        "worst_downtime_ms": (worst["downtime_ms"] or 0) if worst else 0,
        "worst_downtime_guest": worst["guest"] if worst else None,
        "total_migration_time_ms": sum(m["time_ms"] or 0 for m in ok_migrations),
        "duration_s": round((run["ended"] or 0) - (run["started"] or 0), 1) if run["started"] else 0,
    }
    if run["status"] == "running" and any(h["status"] == "failed" for h in hosts.values()):
        run["status"] = "failed"

    accounted = account_for_guests(census, stopped_allowed)
    if accounted and accounted["missing"]:
        # The worst failure is a green run that lost a guest: whatever the hosts did, fail.
        run["status"] = "failed"
        lost = "guests unaccounted for at the end of the run: %s" % ", ".join(
            "%s (ran on %s at the start; %s)" % (m["guest"], m["started_on"], m["why"]) for m in accounted["missing"])
        run["message"] = "%s; %s" % (run["message"], lost) if run["message"] else lost

    return {"run": run, "totals": totals, "plan": plan, "clusters": clusters, "hosts": hosts,
            "guests": guests, "migrations": migrations, "locks": locks, "census": accounted}


def account_for_guests(census, stopped_allowed=()):
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


# --------------------------------------------------------------------------- rendering
def _fmt_time(ts):
    if ts is None:
        return "-"
    return time.strftime("%H:%M:%S", time.gmtime(ts)) + "Z"


def _fmt_ms(ms):
    if ms is None:
        return "-"
    if ms >= 10000:
        return "%.1f s" % (ms / 1000.0)
    return "%d ms" % ms


def _ordered_hosts(report):
    ordered = []
    for cname in sorted(report["clusters"]):
        for host in report["clusters"][cname]["hosts"]:
            if host in report["hosts"]:
                ordered.append(report["hosts"][host])
    seen = {h["name"] for h in ordered}
    ordered += [h for n, h in sorted(report["hosts"].items()) if n not in seen]
    return ordered


def render_svg(report, width=900):
    """A timeline: one row per host, its maintenance interval and the phases inside it."""
    hosts = _ordered_hosts(report)
    start = report["run"]["started"] or 0
    end = max(report["run"]["ended"] or start, start + 1)
    label_w, row_h, top = 150, 22, 30
    plot_w = width - label_w - 20
    height = top + row_h * max(len(hosts), 1) + 40

    def x(ts):
        return label_w + (max(min(ts, end), start) - start) / (end - start) * plot_w

    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
             'font-family="sans-serif" font-size="11" role="img" '
             'aria-label="timeline of the run per host">' % (width, height)]
    parts.append('<text x="4" y="16" font-weight="bold">Timeline (%s - %s, %.0f s)</text>'
                 % (_fmt_time(start), _fmt_time(end), end - start))
    # Grid every "nice" number of seconds.
    span = end - start
    step = next((s for s in (5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600) if span / s <= 12), 7200)
    tick = 0
    while tick <= span:
        xx = x(start + tick)
        parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>'
                     % (xx, top - 4, xx, top + row_h * len(hosts)))
        parts.append('<text x="%.1f" y="%d" fill="#777" text-anchor="middle">+%ds</text>'
                     % (xx, top + row_h * len(hosts) + 14, tick))
        tick += step
    for row, host in enumerate(hosts):
        y = top + row * row_h
        parts.append('<text x="4" y="%d">%s <tspan fill="#777">(%s)</tspan></text>'
                     % (y + 15, html.escape(host["name"]), html.escape(str(host["cluster"]))))
        if host["start"] is not None:
            host_end = host["end"] if host["end"] is not None else end
            parts.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s">'
                         '<title>%s in maintenance %s - %s</title></rect>'
                         % (x(host["start"]), y + 3, max(x(host_end) - x(host["start"]), 1),
                            row_h - 6, PHASE_COLOURS["maintenance"], html.escape(host["name"]),
                            _fmt_time(host["start"]), _fmt_time(host_end)))
        for phase in host["phases"]:
            colour = PHASE_COLOURS.get(phase["phase"], "#bab0ac")
            stroke = ' stroke="#c00" stroke-width="2"' if phase["state"] in ("failed", "unfinished") else ""
            parts.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"%s>'
                         '<title>%s %s: %s - %s</title></rect>'
                         % (x(phase["start"]), y + 6, max(x(phase["end"]) - x(phase["start"]), 1.5),
                            row_h - 12, colour, stroke, html.escape(host["name"]),
                            html.escape(phase["phase"]), _fmt_time(phase["start"]),
                            _fmt_time(phase["end"])))
        if host["status"] == "failed":
            xx = x(host.get("failed_at") or end)
            parts.append('<text x="%.1f" y="%d" fill="#c00" font-weight="bold">&#10007; failed</text>'
                         % (xx + 3, y + 15))
        elif host["status"] == "skipped":
            parts.append('<text x="%d" y="%d" fill="#777">skipped: %s</text>'
                         % (label_w + 4, y + 15, html.escape(str(host["reason"]))))
    legend_x = label_w
    legend_y = height - 10
    for name, colour in PHASE_COLOURS.items():
        values = (legend_x, legend_y - 9, colour, legend_x + 13, legend_y, name)
        parts.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/>'
                     '<text x="%d" y="%d">%s</text>' % values)
        legend_x += 13 + 7 * len(name) + 12
    parts.append("</svg>")
    return "\n".join(parts)


def _status_word(status):
    return {"done": "done", "failed": "FAILED", "skipped": "skipped", "stopped": "STOPPED",
            "in_maintenance": "left in maintenance", "planned": "not started"}.get(status, status)


def _shown_destination(migration):
    """The "to" column: the destination; a failed migration without one (its guest runs
    nowhere: left paused, active on both) shows where the guest is instead."""
    if migration["status"] not in ("ok", "skipped") and not migration["destination"] and migration.get("where"):
        return migration["where"]
    return migration["destination"]


def render_markdown(report, svg_name="timeline.svg"):
    run, totals = report["run"], report["totals"]
    out = ["# Rolling maintenance run %s" % run["run_id"], ""]
    out.append("- status: **%s**%s" % (run["status"], " (dry run: nothing was changed)" if run["dry_run"] else ""))
    if run["message"]:
        out.append("- message: %s" % run["message"])
    out.append("- started %s, ended %s (%s s)"
               % (_fmt_time(run["started"]), _fmt_time(run["ended"]), totals["duration_s"]))
    out.append("- hosts patched: %d, skipped: %d, failed: %d (of %d)"
               % (totals["hosts_patched"], totals["hosts_skipped"], totals["hosts_failed"],
                  totals["hosts_planned"]))
    out.append("- guests moved: %d in %d live migrations (%d failed)"
               % (totals["guests_moved"], totals["migrations"], totals["failed_migrations"]))
    out.append("- guest downtime: total %s, worst %s%s"
               % (_fmt_ms(totals["total_downtime_ms"]), _fmt_ms(totals["worst_downtime_ms"]),
                  " (%s)" % totals["worst_downtime_guest"] if totals["worst_downtime_guest"] else ""))
    out += ["", "![timeline of the run](%s)" % svg_name, ""]
    if report["plan"] and report["plan"]["waves"]:
        out += ["## Plan", ""]
        for index, wave in enumerate(report["plan"]["waves"]):
            out.append("%d. %s" % (index + 1, ", ".join(wave) or "-"))
        out.append("")
        if report["plan"].get("capacity_ok") is not None:
            out.append("Capacity proof: %s" % ("ok" if report["plan"]["capacity_ok"] else
                                               "FAILED: " + "; ".join(report["plan"]["capacity_problems"])))
            out.append("")
        for host, drain in sorted(report["plan"]["drain_plans"].items()):
            moves = ", ".join("%s -> %s" % (m.get("guest"), m.get("destination"))
                              for m in drain.get("moves") or []) or "no guest to move"
            problems = "; ".join(drain.get("problems") or [])
            out.append("- drain plan of %s (as the cluster is now): %s%s" % (
                host, moves, (" - REFUSED: " + problems) if problems else ""))
        if report["plan"]["drain_plans"]:
            out.append("")
    for cname in sorted(report["clusters"]):
        cluster = report["clusters"][cname]
        out += ["## Cluster %s: %s" % (cname, _status_word(cluster["status"])), ""]
        if cluster.get("reason"):
            out += ["%s" % cluster["reason"], ""]
        out.append("max_unavailable %s, at most %d host(s) in maintenance at once"
                   % (cluster.get("max_unavailable"), cluster.get("max_in_maintenance", 0)))
        out += ["", "| host | wave | status | in maintenance | rebooted | note |",
                "| --- | --- | --- | --- | --- | --- |"]
        for host in cluster["hosts"]:
            entry = report["hosts"].get(host)
            if not entry:
                continue
            note = entry["reason"] or entry["message"] or ""
            if entry["failed_phase"]:
                note = "in phase %s: %s" % (entry["failed_phase"], note)
            out.append("| %s | %s | %s | %s - %s | %s | %s |" % (
                host, entry["wave"] or "-", _status_word(entry["status"]), _fmt_time(entry["start"]),
                _fmt_time(entry["end"]), {True: "yes", False: "no"}.get(entry["rebooted"], "-"),
                note.replace("|", "/").replace("\n", " ")))
        migrations = [m for m in report["migrations"] if m["cluster"] == cname]
        if migrations:
            out += ["", "| guest | purpose | from | to | when | migration time | downtime | status |",
                    "| --- | --- | --- | --- | --- | --- | --- | --- |"]
            for m in migrations:
                out.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    m["guest"], m["purpose"] or "-", m["source"], _shown_destination(m),
                    _fmt_time(m["started"]), _fmt_ms(m["time_ms"]), _fmt_ms(m["downtime_ms"]),
                    m["status"] if m["status"] == "ok" else "%s: %s" % (m["status"], m["message"])))
        out.append("")
    if report["guests"]:
        out += ["## Where every guest is", "", "| guest | host now | migrations | total downtime | worst downtime |",
                "| --- | --- | --- | --- | --- |"]
        for name in sorted(report["guests"]):
            g = report["guests"][name]
            row = (name, g["location"] or "?", g["migrations"], _fmt_ms(g["total_downtime_ms"]),
                   _fmt_ms(g["worst_downtime_ms"]))
            out.append("| %s | %s | %d | %s | %s |" % row)
        out.append("")
    return "\n".join(out)


def render_html(report):
    run, totals = report["run"], report["totals"]
    esc = html.escape
    status_colour = {"ok": "#2e7d32", "failed": "#c62828", "dry_run": "#1565c0",
                     "refused": "#c62828"}.get(run["status"], "#555")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>Rolling maintenance %s</title>" % esc(str(run["run_id"])),
           "<style>body{font-family:sans-serif;margin:2em;color:#222}"
           "table{border-collapse:collapse;margin:.5em 0 1.5em}"
           "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}"
           "th{background:#f3f3f3}.failed{color:#c62828;font-weight:bold}"
           ".kpi{display:inline-block;margin:0 1.5em .5em 0}.kpi b{font-size:20px;display:block}"
           "</style></head><body>"]
    out.append("<h1>Rolling maintenance run %s</h1>" % esc(str(run["run_id"])))
    out.append('<p>Status: <b style="color:%s">%s</b>%s. Started %s, ended %s (%s s).</p>'
               % (status_colour, esc(run["status"]),
                  " &mdash; dry run, nothing was changed" if run["dry_run"] else "",
                  _fmt_time(run["started"]), _fmt_time(run["ended"]), totals["duration_s"]))
    if run["message"]:
        out.append('<p class="failed">%s</p>' % esc(run["message"]))
    out.append("<div>")
    worst_text = _fmt_ms(totals["worst_downtime_ms"])
    if totals["worst_downtime_guest"]:
        worst_text += " (%s)" % totals["worst_downtime_guest"]
    for label, value in (("hosts patched", totals["hosts_patched"]),
                         ("hosts skipped", totals["hosts_skipped"]),
                         ("hosts failed", totals["hosts_failed"]),
                         ("guests moved", totals["guests_moved"]),
                         ("live migrations", totals["migrations"]),
                         ("total guest downtime", _fmt_ms(totals["total_downtime_ms"])),
                         ("worst guest downtime", worst_text)):
        out.append('<span class="kpi"><b>%s</b>%s</span>' % (esc(str(value)), esc(label)))
    out.append("</div>")
    out.append(render_svg(report))
    if report["plan"] and report["plan"]["waves"]:
        out.append("<h2>Plan</h2><ol>")
        for wave in report["plan"]["waves"]:
            out.append("<li>%s</li>" % esc(", ".join(wave)))
        out.append("</ol>")
        if report["plan"].get("capacity_ok") is not None:
            verdict = "ok"
            if not report["plan"]["capacity_ok"]:
                verdict = '<span class="failed">FAILED: %s</span>' % esc("; ".join(report["plan"]["capacity_problems"]))
            out.append("<p>Capacity proof: %s</p>" % verdict)
        if report["plan"]["drain_plans"]:
            out.append("<h3>Drain plans (as each cluster is now)</h3><ul>")
            for host, drain in sorted(report["plan"]["drain_plans"].items()):
                moves = ", ".join("%s &rarr; %s" % (esc(str(m.get("guest"))), esc(str(m.get("destination"))))
                                  for m in drain.get("moves") or []) or "no guest to move"
                problems = "; ".join(drain.get("problems") or [])
                refused = ' <span class="failed">REFUSED: %s</span>' % esc(problems) if problems else ""
                out.append("<li><b>%s</b>: %s%s</li>" % (esc(host), moves, refused))
            out.append("</ul>")
    for cname in sorted(report["clusters"]):
        cluster = report["clusters"][cname]
        cls = ' class="failed"' if cluster["status"] in ("failed", "stopped") else ""
        out.append("<h2>Cluster %s: <span%s>%s</span></h2>" % (esc(cname), cls,
                                                               esc(_status_word(cluster["status"]))))
        if cluster.get("reason"):
            out.append('<p class="failed">%s</p>' % esc(cluster["reason"]))
        out.append("<p>max_unavailable %s; at most %d host(s) were in maintenance at once.</p>"
                   % (esc(str(cluster.get("max_unavailable"))), cluster.get("max_in_maintenance", 0)))
        out.append("<table><tr><th>host</th><th>wave</th><th>status</th><th>marked</th>"
                   "<th>unmarked</th><th>rebooted</th><th>phases</th><th>note</th></tr>")
        for host in cluster["hosts"]:
            entry = report["hosts"].get(host)
            if not entry:
                continue
            phases = ", ".join("%s %.0fs" % (p["phase"], (p["end"] or 0) - (p["start"] or 0))
                               for p in entry["phases"])
            note = entry["reason"] or entry["message"] or ""
            if entry["failed_phase"]:
                note = "in phase %s: %s" % (entry["failed_phase"], note)
            cls = ' class="failed"' if entry["status"] == "failed" else ""
            out.append("<tr><td>%s</td><td>%s</td><td%s>%s</td><td>%s</td><td>%s</td><td>%s</td>"
                       "<td>%s</td><td>%s</td></tr>" % (
                           esc(host), entry["wave"] or "-", cls, esc(_status_word(entry["status"])),
                           _fmt_time(entry["start"]), _fmt_time(entry["end"]),
                           {True: "yes", False: "no"}.get(entry["rebooted"], "-"), esc(phases),
                           esc(note)))
        out.append("</table>")
        migrations = [m for m in report["migrations"] if m["cluster"] == cname]
        if migrations:
            out.append("<table><tr><th>guest</th><th>purpose</th><th>from</th><th>to</th><th>when</th>"
                       "<th>migration time</th><th>downtime</th><th>status</th></tr>")
            for m in migrations:
                cls = "" if m["status"] in ("ok", "skipped") else ' class="failed"'
                out.append("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>"
                           "<td>%s</td><td%s>%s</td></tr>" % (
                               esc(str(m["guest"])), esc(str(m["purpose"] or "-")),
                               esc(str(m["source"])), esc(str(_shown_destination(m))),
                               _fmt_time(m["started"]), _fmt_ms(m["time_ms"]),
                               _fmt_ms(m["downtime_ms"]), cls,
                               esc(m["status"] if m["status"] == "ok"
                                   else "%s: %s" % (m["status"], m["message"]))))
            out.append("</table>")
    if report["guests"]:
        out.append("<h2>Where every guest is</h2><table><tr><th>guest</th><th>host now</th>"
                   "<th>migrations</th><th>total downtime</th><th>worst downtime</th></tr>")
        for name in sorted(report["guests"]):
            g = report["guests"][name]
            out.append("<tr><td>%s</td><td>%s</td><td>%d</td><td>%s</td><td>%s</td></tr>" % (
                esc(name), esc(str(g["location"] or "?")), g["migrations"],
                _fmt_ms(g["total_downtime_ms"]), _fmt_ms(g["worst_downtime_ms"])))
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(directory):
    """Build the report from directory's events and write report.{json,html,md} + timeline.svg."""
    report = build_report(load_events(directory))
    files = {
        "report.json": json.dumps(report, indent=2, sort_keys=True, default=str) + "\n",
        "report.html": render_html(report) + "\n",
        "report.md": render_markdown(report) + "\n",
        "timeline.svg": render_svg(report) + "\n",
    }
    paths = {}
    for name, content in files.items():
        path = os.path.join(directory, name)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.replace(tmp, path)
        paths[name.replace(".", "_")] = path
    return report, paths
