# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What maintenance_report does, shared by the module and its action plugin: record events
into the run's event log, or render the report from them.

The action plugin runs this in-process on the controller (no module process per event: a
rolling run records a dozen events per host); the module remains for ``ansible-doc`` and for
running it where no action plugin applies. Pure Python, no Ansible import.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.report_rendering import write_report
from ansible_collections.virtfleet.cluster.plugins.module_utils.run_events import REPORT_OPTIONS, append_event

# directory, run_id and events as maintenance_state's ``report`` takes them, plus what only this task has.
ARGUMENT_SPEC: Dict[str, Any] = dict(
    REPORT_OPTIONS,
    state=dict(type="str", default="event", choices=["event", "render"]),
    event=dict(type="dict"),
)


def record(directory: str, events: List[Dict[str, Any]], run_id: str = None) -> Dict[str, Any]:
    """Appends ``events`` in order, each with ``run_id`` when it has none; all are checked first,
    so a malformed one records nothing."""
    for event in events:
        if not event.get("type"):
            raise VirtfleetError("every event needs a type: %r" % (event,))
    for event in events:
        if run_id:
            event.setdefault("run_id", run_id)
        append_event(directory, event)
    return {"changed": bool(events), "recorded": len(events)}


def record_task_events(report: Dict[str, Any], events: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Records an action's own events (the validated ``report`` option, run_events.TASK_REPORT_SPEC),
    each carrying the fields of ``report["about"]`` it does not set itself."""
    about = report.get("about") or {}
    try:
        return record(report["directory"], [dict(about, **event) for event in events], report.get("run_id"))
    except OSError as exc:
        raise VirtfleetError("cannot write the report in %s: %s" % (report["directory"], exc)) from exc


def record_outcome(report: Optional[Dict[str, Any]], events: List[Dict[str, Any]], outcome: Dict[str, Any]) -> Dict[str, Any]:
    """An action's outcome once its events are recorded (with ``recorded``, their number); a
    report that cannot be written fails the task, saying that its work was done all the same."""
    if not report:
        return outcome
    try:
        return dict(outcome, recorded=record_task_events(report, events)["recorded"])
    except VirtfleetError as failure:
        return dict(outcome, failed=True, msg="%s; then %s" % (outcome.get("msg") or "done", failure.message))


def render(directory: str) -> Dict[str, Any]:
    report, files = write_report(directory)
    clusters = {name: {key: cluster.get(key) for key in ("status", "max_unavailable", "max_in_maintenance")}
                for name, cluster in report["clusters"].items()}
    return {"changed": True, "files": files, "run": report["run"], "totals": report["totals"], "clusters": clusters,
            "census": report["census"]}


def run(params: Dict[str, Any]) -> Dict[str, Any]:
    """Records or renders, also in check mode: the report directory is the controller's own
    output, not the managed system (a dry run gets its plan as a report)."""
    try:
        if params["state"] == "render":
            return render(params["directory"])
        events = ([params["event"]] if params["event"] else []) + list(params["events"])
        return record(params["directory"], events, params["run_id"])
    except OSError as exc:
        raise VirtfleetError("cannot write the report in %s: %s" % (params["directory"], exc)) from exc
