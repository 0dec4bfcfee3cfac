#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: maintenance_report
short_description: Record events of a rolling maintenance run and write its report
description:
  - With O(state=event), appends events to C(<directory>/events.jsonl) (one JSON line each,
    atomic appends, so hosts acting in parallel can record at the same time). Recording as the
    run goes means a run that fails half way still gets a report.
  - With O(state=render), builds the report from the events and writes C(report.json),
    C(report.html) (with an inline SVG timeline per host), C(report.md) and C(timeline.svg)
    into O(directory).
  - Runs on the controller, whatever host the task is for - its action plugin records and renders
    in-process, with no module process and no connection to the host (a rolling run records a
    dozen events per host). The report directory is the controller's own output, not the managed
    system, so it writes also in check mode (a dry run gets its plan as a report).
  - Event types and fields are described in C(plugins/module_utils/run_events.py).
version_added: 0.1.0
requirements:
  - Jinja2 on the controller, to render the report (O(state=render)); ansible-core depends on it.
author:
  - virtfleet maintainers (@virtfleet)
extends_documentation_fragment:
  - virtfleet.cluster.attributes
attributes:
  check_mode:
    support: partial
    details:
      - Writes also in check mode - the events and the report are the controller's own output, not
        the managed system (a dry run gets its plan as a report).
  diff_mode:
    support: none
    details: Nothing to diff.
options:
  directory:
    description: Directory of the run's report, for example C(reports/<run id>). Created if missing.
    type: path
    required: true
  state:
    description: C(event) records O(event) and O(events); C(render) writes the report files.
    type: str
    default: event
    choices: [event, render]
  event:
    description: One event (C(type) required; C(ts) defaults to now).
    type: dict
  events:
    description: Several events, recorded in order after O(event).
    type: list
    elements: dict
    default: []
  run_id:
    description: Added to every recorded event that lacks one.
    type: str
"""

EXAMPLES = r"""
- name: Record that a host entered maintenance
  virtfleet.cluster.maintenance_report:
    directory: "{{ rolling_maintenance_report_dir }}"
    run_id: "{{ rolling_maintenance_run_id }}"
    event:
      type: host_start
      cluster: "{{ virtfleet_cluster }}"
      host: "{{ inventory_hostname }}"

- name: Write the report
  virtfleet.cluster.maintenance_report:
    directory: reports/20261125T150000-ab12
    state: render
  run_once: true
"""

RETURN = r"""
recorded:
  description: Number of events recorded.
  returned: when O(state=event)
  type: int
files:
  description: Paths of the written files (C(report_json), C(report_html), C(report_md), C(timeline_svg)).
  returned: when O(state=render)
  type: dict
run:
  description: Run summary (C(run_id), C(status), C(started), C(ended), C(dry_run)).
  returned: when O(state=render)
  type: dict
totals:
  description: >-
    Totals (C(hosts_patched), C(hosts_skipped), C(hosts_failed), C(guests_moved), C(migrations),
    C(total_downtime_ms), C(worst_downtime_ms), C(worst_downtime_guest), C(duration_s)).
  returned: when O(state=render)
  type: dict
clusters:
  description: Per cluster C(status), C(max_unavailable) and C(max_in_maintenance) (observed).
  returned: when O(state=render)
  type: dict
census:
  description:
    - Every guest running at the start of the run found again at its end, from the C(census)
      event - C(started), C(running), C(missing) (C(guest), C(started_on), C(why)), C(stopped_allowed)
      (stopped as rolling_maintenance_stop_allowed_guests allows), C(unasked) (hosts not answering
      at the end). A guest in C(missing) fails the run. Null when the events hold no census.
  returned: when O(state=render)
  type: dict
"""

from typing import Any, Dict

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.virtfleet.cluster.plugins.module_utils import report_task
from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.report_rendering import JINJA2_IMPORT_ERROR

ARGUMENT_SPEC = report_task.ARGUMENT_SPEC


def work(params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    """Records or renders also in check mode (see report_task.run)."""
    if params["state"] == "render" and JINJA2_IMPORT_ERROR:
        # Rendered where the module runs: an interpreter without Jinja2 can still record events.
        raise VirtfleetError(missing_required_lib("Jinja2"), {"exception": JINJA2_IMPORT_ERROR})
    return report_task.run(params)


def main():
    run_module(ARGUMENT_SPEC, work, needs_libvirt=False)


if __name__ == "__main__":
    main()
