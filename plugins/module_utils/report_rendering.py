# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files of the run report: HTML, Markdown and an SVG timeline, rendered with Jinja2.

``report_tables`` turns a report (``run_report.build_report``) into one table model,
``ReportTables``: every cell is a formatted value, so Markdown and HTML show the same rows and
differ only in layout. ``timeline`` computes the SVG's geometry. The templates are in
``report_templates``; HTML and SVG are autoescaped. ``write_report`` rebuilds the report from a
run's events and writes ``report.json``, ``report.html``, ``report.md`` and ``timeline.svg``.

Pure Python, no Ansible import. Rendering needs Jinja2 where the module runs (the controller):
``JINJA2_IMPORT_ERROR`` says when it is missing; recording events does not need it.
"""
from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.virtfleet.cluster.plugins.module_utils import report_templates
from ansible_collections.virtfleet.cluster.plugins.module_utils.run_events import load_events
from ansible_collections.virtfleet.cluster.plugins.module_utils.run_report import build_report

try:
    import jinja2
except ImportError:
    jinja2 = None
    JINJA2_IMPORT_ERROR: Optional[str] = traceback.format_exc()
else:
    JINJA2_IMPORT_ERROR = None

Report = Dict[str, Any]

PHASE_COLOURS = {
    "maintenance": "#d9e2ef",
    "drain": "#4e79a7",
    "patch": "#f28e2b",
    "reboot": "#e15759",
    "verify": "#59a14f",
    "canary": "#b07aa1",
    "move_back": "#9c755f",
}
OTHER_PHASE_COLOUR = "#bab0ac"
RUN_STATUS_COLOURS = {"ok": "#2e7d32", "failed": "#c62828", "dry_run": "#1565c0", "refused": "#c62828"}
STATUS_WORDS = {"done": "done", "failed": "FAILED", "skipped": "skipped", "stopped": "STOPPED",
                "in_maintenance": "left in maintenance", "planned": "not started"}
REBOOTED_WORDS = {True: "yes", False: "no"}


def format_time(ts: Optional[float]) -> str:
    if ts is None:
        return "-"
    return time.strftime("%H:%M:%S", time.gmtime(ts)) + "Z"


def format_ms(ms: Optional[float]) -> str:
    if ms is None:
        return "-"
    if ms >= 10000:
        return "%.1f s" % (ms / 1000.0)
    return "%d ms" % ms


def status_word(status: str) -> str:
    return STATUS_WORDS.get(status, status)


def shown_destination(migration: Dict[str, Any]) -> Any:
    """The "to" column: the destination; a failed migration without one (its guest runs
    nowhere: left paused, active on both) shows where the guest is instead."""
    if migration["status"] not in ("ok", "skipped") and not migration["destination"] and migration.get("where"):
        return migration["where"]
    return migration["destination"]


# --------------------------------------------------------------------------- the table model
@dataclass
class HostRow:
    name: str
    wave: Any
    status: str
    failed: bool
    marked: str
    unmarked: str
    rebooted: str
    phases: str
    note: str


@dataclass
class MigrationRow:
    guest: str
    purpose: str
    source: str
    destination: str
    when: str
    time: str
    downtime: str
    status: str
    failed: bool


@dataclass
class GuestRow:
    name: str
    location: str
    migrations: int
    total_downtime: str
    worst_downtime: str


@dataclass
class DrainPlanRow:
    host: str
    moves: List[Tuple[str, str]]
    problems: str


@dataclass
class ClusterSection:
    name: str
    status: str
    failed: bool
    reason: Optional[str]
    max_unavailable: str
    max_in_maintenance: int
    # The cluster's own clock: its first host in, its last host out.
    span: str = "-"
    hosts: List[HostRow] = field(default_factory=list)
    migrations: List[MigrationRow] = field(default_factory=list)


@dataclass
class ReportTables:
    """Everything the Markdown and HTML pages show, formatted once."""

    run_id: str
    status: str
    status_colour: str
    dry_run: bool
    message: Optional[str]
    started: str
    ended: str
    duration_s: Any
    totals: Dict[str, Any]
    total_downtime: str
    worst_downtime: str
    worst_downtime_guest: Optional[str]
    kpis: List[Tuple[str, str]]
    waves: List[List[str]]
    capacity_ok: Optional[bool]
    capacity_problems: str
    drain_plans: List[DrainPlanRow]
    clusters: List[ClusterSection]
    guests: List[GuestRow]


def _host_row(name: str, entry: Dict[str, Any]) -> HostRow:
    note = entry["reason"] or entry["message"] or ""
    if entry["failed_phase"]:
        note = "in phase %s: %s" % (entry["failed_phase"], note)
    phases = ", ".join("%s %.0fs" % (p["phase"], (p["end"] or 0) - (p["start"] or 0)) for p in entry["phases"])
    return HostRow(name=name, wave=entry["wave"] or "-", status=status_word(entry["status"]),
                   failed=entry["status"] == "failed", marked=format_time(entry["start"]),
                   unmarked=format_time(entry["end"]), rebooted=REBOOTED_WORDS.get(entry["rebooted"], "-"),
                   phases=phases, note=note)


def _migration_row(migration: Dict[str, Any]) -> MigrationRow:
    ok = migration["status"] == "ok"
    return MigrationRow(guest=str(migration["guest"]), purpose=str(migration["purpose"] or "-"),
                        source=str(migration["source"]), destination=str(shown_destination(migration)),
                        when=format_time(migration["started"]), time=format_ms(migration["time_ms"]),
                        downtime=format_ms(migration["downtime_ms"]),
                        status=migration["status"] if ok else "%s: %s" % (migration["status"], migration["message"]),
                        failed=migration["status"] not in ("ok", "skipped"))


def _cluster_span(cluster: Dict[str, Any]) -> str:
    """When the cluster's first host went in and its last came out (its own clock)."""
    if cluster.get("started") is None:
        return "-"
    return "%s - %s (%.0f s)" % (format_time(cluster["started"]), format_time(cluster["ended"]),
                                 cluster["ended"] - cluster["started"])


def _cluster_section(report: Report, name: str) -> ClusterSection:
    cluster = report["clusters"][name]
    return ClusterSection(
        name=name, status=status_word(cluster["status"]), failed=cluster["status"] in ("failed", "stopped"),
        reason=cluster.get("reason"), max_unavailable=str(cluster.get("max_unavailable")),
        max_in_maintenance=int(cluster.get("max_in_maintenance", 0)),
        span=_cluster_span(cluster),
        hosts=[_host_row(host, report["hosts"][host]) for host in cluster["hosts"] if host in report["hosts"]],
        migrations=[_migration_row(m) for m in report["migrations"] if m["cluster"] == name])


def report_tables(report: Report) -> ReportTables:
    run, totals, plan = report["run"], report["totals"], report["plan"] or {}
    worst = format_ms(totals["worst_downtime_ms"])
    worst_with_guest = worst + (" (%s)" % totals["worst_downtime_guest"] if totals["worst_downtime_guest"] else "")
    guests = [GuestRow(name=name, location=str(guest["location"] or "?"), migrations=int(guest["migrations"]),
                       total_downtime=format_ms(guest["total_downtime_ms"]),
                       worst_downtime=format_ms(guest["worst_downtime_ms"]))
              for name, guest in sorted(report["guests"].items())]
    drain_plans = [DrainPlanRow(host=host,
                                moves=[(str(m.get("guest")), str(m.get("destination"))) for m in drain.get("moves") or []],
                                problems="; ".join(drain.get("problems") or []))
                   for host, drain in sorted((plan.get("drain_plans") or {}).items())]
    return ReportTables(
        run_id=str(run["run_id"]), status=run["status"], status_colour=RUN_STATUS_COLOURS.get(run["status"], "#555"),
        dry_run=bool(run["dry_run"]), message=run["message"], started=format_time(run["started"]),
        ended=format_time(run["ended"]), duration_s=totals["duration_s"], totals=totals,
        total_downtime=format_ms(totals["total_downtime_ms"]), worst_downtime=worst,
        worst_downtime_guest=totals["worst_downtime_guest"],
        kpis=[("hosts patched", str(totals["hosts_patched"])), ("hosts skipped", str(totals["hosts_skipped"])),
              ("hosts failed", str(totals["hosts_failed"])), ("guests moved", str(totals["guests_moved"])),
              ("live migrations", str(totals["migrations"])),
              ("total guest downtime", format_ms(totals["total_downtime_ms"])),
              ("worst guest downtime", worst_with_guest)],
        waves=[list(wave) for wave in plan.get("waves") or []], capacity_ok=plan.get("capacity_ok"),
        capacity_problems="; ".join(plan.get("capacity_problems") or []), drain_plans=drain_plans,
        clusters=[_cluster_section(report, name) for name in sorted(report["clusters"])], guests=guests)


# --------------------------------------------------------------------------- the timeline's geometry
@dataclass
class Tick:
    x: float
    seconds: int


@dataclass
class Bar:
    x: float
    width: float
    colour: str
    start: str
    end: str
    label: str = ""
    alarm: bool = False


@dataclass
class TimelineRow:
    y: int
    name: str
    cluster: str
    maintenance: Optional[Bar]
    phases: List[Bar]
    failed_x: Optional[float] = None
    skipped: Optional[str] = None


@dataclass
class LegendItem:
    x: int
    colour: str
    name: str


@dataclass
class Timeline:
    width: int
    height: int
    start: str
    end: str
    span: float
    label_width: int
    row_height: int
    grid_top: int
    grid_bottom: int
    legend_y: int
    ticks: List[Tick]
    rows: List[TimelineRow]
    legend: List[LegendItem]


def _ordered_hosts(report: Report) -> List[Dict[str, Any]]:
    ordered = []
    for name in sorted(report["clusters"]):
        for host in report["clusters"][name]["hosts"]:
            if host in report["hosts"]:
                ordered.append(report["hosts"][host])
    seen = {host["name"] for host in ordered}
    ordered += [host for name, host in sorted(report["hosts"].items()) if name not in seen]
    return ordered


def timeline(report: Report, width: int = 900) -> Timeline:
    """One row per host: its maintenance interval and the phases inside it."""
    hosts = _ordered_hosts(report)
    start = report["run"]["started"] or 0
    end = max(report["run"]["ended"] or start, start + 1)
    label_w, row_h, top = 150, 22, 30
    plot_w = width - label_w - 20
    height = top + row_h * max(len(hosts), 1) + 40

    def x(ts: float) -> float:
        return label_w + (max(min(ts, end), start) - start) / (end - start) * plot_w

    # Grid every "nice" number of seconds.
    span = end - start
    step = next((s for s in (5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600) if span / s <= 12), 7200)
    ticks = [Tick(x(start + seconds), seconds) for seconds in range(0, int(span) + 1, step) if seconds <= span]
    rows = []
    for index, host in enumerate(hosts):
        maintenance = None
        if host["start"] is not None:
            host_end = host["end"] if host["end"] is not None else end
            maintenance = Bar(x(host["start"]), max(x(host_end) - x(host["start"]), 1), PHASE_COLOURS["maintenance"],
                              format_time(host["start"]), format_time(host_end))
        phases = [Bar(x(p["start"]), max(x(p["end"]) - x(p["start"]), 1.5), PHASE_COLOURS.get(p["phase"], OTHER_PHASE_COLOUR),
                      format_time(p["start"]), format_time(p["end"]), label=p["phase"],
                      alarm=p["state"] in ("failed", "unfinished"))
                  for p in host["phases"]]
        row = TimelineRow(y=top + index * row_h, name=host["name"], cluster=str(host["cluster"]), maintenance=maintenance,
                          phases=phases)
        if host["status"] == "failed":
            row.failed_x = x(host.get("failed_at") or end) + 3
        elif host["status"] == "skipped":
            row.skipped = str(host["reason"])
        rows.append(row)
    legend, legend_x = [], label_w
    for name, colour in PHASE_COLOURS.items():
        legend.append(LegendItem(legend_x, colour, name))
        legend_x += 13 + 7 * len(name) + 12
    return Timeline(width=width, height=height, start=format_time(start), end=format_time(end), span=span,
                    label_width=label_w, row_height=row_h, grid_top=top - 4, grid_bottom=top + row_h * len(hosts),
                    legend_y=height - 10, ticks=ticks, rows=rows, legend=legend)


# --------------------------------------------------------------------------- rendering
def _markdown_cell(text: str) -> str:
    """A cell of a Markdown table holds no column separator and no line break."""
    return text.replace("|", "/").replace("\n", " ")


def _render(source: str, autoescape: bool, **context: Any) -> str:
    if jinja2 is None:
        raise ImportError("rendering the report needs Jinja2: %s" % JINJA2_IMPORT_ERROR)
    environment = jinja2.Environment(autoescape=autoescape, trim_blocks=True, lstrip_blocks=True,
                                     keep_trailing_newline=True)
    environment.filters["markdown_cell"] = _markdown_cell
    text = environment.from_string(source).render(**context)
    # Each template line ends with a newline; the pages end without one (write_report adds it).
    return text[:-1] if text.endswith("\n") else text


def render_svg(report: Report, width: int = 900) -> str:
    return _render(report_templates.SVG, True, t=timeline(report, width))


def render_markdown(report: Report, svg_name: str = "timeline.svg") -> str:
    return _render(report_templates.MARKDOWN, False, r=report_tables(report), svg_name=svg_name)


def render_html(report: Report) -> str:
    return _render(report_templates.HTML, True, r=report_tables(report), svg=render_svg(report),
                   style=report_templates.STYLE)


def write_report(directory: str) -> Tuple[Report, Dict[str, str]]:
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
