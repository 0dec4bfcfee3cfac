# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of virtfleet.cluster.maintenance_state: runs the module on the host, where the
cluster's shared storage is mounted, then records the task's ``report`` events on the
controller (report_task, in-process). A phase boundary of the rolling maintenance (how far the
host got, into its mark; what happened, into the report) is then one task, not two.
"""

from __future__ import annotations

import time

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.virtfleet.cluster.plugins.module_utils import report_task
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.run_events import REPORT_OPTIONS

REPORT_SPEC = {"report": {"type": "dict", "options": REPORT_OPTIONS}}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        module_args = dict(self._task.args)
        report = module_args.pop("report", None)
        if report:
            validation = ArgumentSpecValidator(REPORT_SPEC).validate({"report": report})
            if validation.error_messages:
                raise AnsibleActionFail("Validation of the report option failed: %s" % "; ".join(validation.error_messages))
            report = validation.validated_parameters["report"]
            # Stamped before the change: a host_done must not read later than the next host's start,
            # which the change (its slot given back) lets begin.
            began = time.time()
            report["events"] = [dict(event, ts=event.get("ts", began)) for event in report["events"]]
        result.update(self._execute_module(module_name="virtfleet.cluster.maintenance_state", module_args=module_args,
                                           task_vars=task_vars))
        # Recorded once the change is made: a refused one records nothing (the caller records the failure).
        if report and not result.get("failed"):
            try:
                result["recorded"] = report_task.run(dict(report, state="event", event=None))["recorded"]
            except VirtfleetError as failure:
                result.update(failure.as_result(), failed=True, msg="%s (the state change was made)" % failure.message)
        return result
