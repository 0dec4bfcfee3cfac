# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of virtfleet.cluster.host_drain: runs the drain on the controller and prints
each guest's progress while it runs, so a drain of many large guests never looks frozen.

Same code as the module (``host_drain_task.run`` -> ``drain.drain_host``), plus a progress
callback and the state gate: this plugin prepares them, the work lives in module_utils. When
libvirt-python is missing on the controller, falls back to executing the module the normal way
(no live progress).
"""

import time

from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.virtfleet.cluster.plugins.module_utils import drain
from ansible_collections.virtfleet.cluster.plugins.module_utils import host_drain_task
from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import uri_secrets_in
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import HAS_LIBVIRT

display = Display()

# Print a guest's line again when its percentage moved this much, or after this many seconds.
PERCENT_STEP = 10
QUIET_SECONDS = 5.0


class ProgressPrinter:
    """Turns the stream of progress samples into a few readable lines per guest."""

    def __init__(self, host, emit, clock=time.monotonic):
        self.host = host
        self.emit = emit
        self.clock = clock
        self.last = {}  # guest -> (phase, percent, iteration, time)

    def __call__(self, sample):
        now = self.clock()
        percent = sample.percent
        previous = self.last.get(sample.guest)
        if previous is not None:
            phase, last_percent, iteration, when = previous
            if (sample.phase == phase and sample.memory_iteration == iteration
                    and abs(percent - last_percent) < PERCENT_STEP
                    and now - when < QUIET_SECONDS):
                return
        self.last[sample.guest] = (sample.phase, percent, sample.memory_iteration, now)
        self.emit("%s drain: %s" % (self.host, sample))


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(host_drain_task.ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        if not HAS_LIBVIRT:
            display.warning("libvirt-python is missing on the controller: running host_drain"
                            " as a plain module, without live progress")
            result.update(self._execute_module(module_name="virtfleet.cluster.host_drain",
                                               module_args=self._task.args,
                                               task_vars=task_vars))
            return _with_migration_warnings(result)

        validation, params = self.validate_argument_spec(argument_spec=host_drain_task.ARGUMENT_SPEC)
        params = validation.validated_parameters
        check_mode = bool(self._task.check_mode)
        printer = ProgressPrinter(params["host"], display.display)
        recheck = params.get("recheck_state")
        gate = self._state_gate(recheck, task_vars) if recheck and not check_mode else None
        try:
            outcome = host_drain_task.run(params, check_mode=check_mode, progress=printer, gate=gate)
        except VirtfleetError as failure:
            outcome = dict(failure.as_result(), failed=True, msg=failure.message)
        # As run_module does for the module: the secrets inside URIs are masked wherever they
        # are quoted (libvirt errors), the URIs stay readable.
        outcome = remove_values(outcome, set(validation._no_log_values) | set(uri_secrets_in(params)))
        if not check_mode:
            for line in _summary(outcome):
                display.display("%s drain: %s" % (params["host"], line))
        result.update(outcome)
        return _with_migration_warnings(result)

    def _state_gate(self, recheck, task_vars):
        """gate(move) for the drain: reads the cluster's shared state over the task's connection
        (the host being drained sees the shared storage) right before each move."""
        def gate(move):
            read = self._execute_module(module_name="virtfleet.cluster.maintenance_state",
                                        module_args={"path": recheck["path"], "cluster": recheck["cluster"],
                                                     "state": "read"},
                                        task_vars=task_vars)
            if read.get("failed") or "state" not in read:
                return "the cluster's shared state could not be read before the move: %s" % read.get("msg", "no answer")
            return drain.move_refusal(move, read["state"], recheck["token"])
        return gate


def _with_migration_warnings(result):
    """What a migration could not carry over (its result's ``warnings``: autostart, with the
    command that does it by hand) shown as task warnings, also when the drain failed later."""
    warnings = list(result.get("warnings") or [])
    for entry in result.get("migrations") or []:
        for warning in (entry.get("result") or {}).get("warnings") or []:
            if warning not in warnings:
                warnings.append(warning)
    if warnings:
        result["warnings"] = warnings
    return result


def _summary(outcome):
    lines = []
    for entry in outcome.get("migrations", []):
        stats = entry.get("result") or {}
        if entry["status"] == "migrated":
            lines.append("%s -> %s: migrated, downtime %s ms, %s s"
                         % (entry["guest"], entry["destination"], stats.get("downtime_ms"),
                            stats.get("elapsed_s")))
        else:
            lines.append("%s: %s - %s (where it is: %s)"
                         % (entry["guest"], entry["status"], entry.get("error"), entry.get("where") or "unknown"))
    return lines
