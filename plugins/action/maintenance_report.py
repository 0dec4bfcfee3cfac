# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of virtfleet.cluster.maintenance_report: records events and renders the report
in-process on the controller (report_task), with no module process and no connection to the
task's host. The report directory is the controller's own, so also in check mode.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.virtfleet.cluster.plugins.module_utils import report_task
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(report_task.ARGUMENT_SPEC)
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        params = self.validate_argument_spec(argument_spec=report_task.ARGUMENT_SPEC)[1]
        try:
            result.update(report_task.run(params))
        except VirtfleetError as failure:
            result.update(failure.as_result(), failed=True, msg=failure.message)
        return result
