# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The O(report) option of the actions that record the events of their own outcome (host_drain,
host_canary), documented once: plugins/module_utils/run_events.py's TASK_REPORT_SPEC. Which
events each records is in its module's description.
"""

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
options:
  report:
    description:
      - Records the task's own events in a run's event log on the controller once the task is over (also
        when it failed), as M(virtfleet.cluster.maintenance_report) would - no task of its own for them.
        The module's description says which events.
      - Nothing is recorded in check mode. A log that cannot be written fails the task, saying that its
        work was done.
    type: dict
    suboptions:
      directory:
        description: The run's report directory, as O(virtfleet.cluster.maintenance_report#module:directory).
        type: path
        required: true
      run_id:
        description: The run's id, recorded in every event.
        type: str
      about:
        description: Fields every event carries unless it sets them itself - typically C(cluster) and C(host).
        type: dict
        default: {}
"""
