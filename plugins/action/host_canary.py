# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of virtfleet.cluster.host_canary: proves the host on the controller (the
module's code, ``host_canary_task.run``) and, with ``shared_state``, inside the cluster's move
turn taken over the task's connection (maintenance_state on the host that sees the shared
storage), the peers marked in maintenance read with the turn; the turn is given back when the
canary is over, whatever happened. One task where the role used three (take the turn, prove,
give it back). With ``report``, the canary's events (its migrations, the phase's end or failure)
are recorded on the controller once it is over. When libvirt-python is missing on the
controller, the module runs on the host, in the turn.
"""

import time

from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action import ActionBase

from ansible_collections.virtfleet.cluster.plugins.module_utils import host_canary_task
from ansible_collections.virtfleet.cluster.plugins.module_utils import report_task
from ansible_collections.virtfleet.cluster.plugins.module_utils import run_events
from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import uri_secrets_in
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import HAS_LIBVIRT
from ansible_collections.virtfleet.cluster.plugins.module_utils.shared_state_client import SharedStateClient


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(host_canary_task.ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        validation, params = self.validate_argument_spec(argument_spec=host_canary_task.ARGUMENT_SPEC)
        params = validation.validated_parameters
        shared = params.get("shared_state")
        cluster_state = None
        if shared:
            cluster_state = SharedStateClient(self._execute_module, task_vars, shared, params["host"])
        turn_held, outcome = False, {}
        began = time.time()
        try:
            if cluster_state:
                current = cluster_state.take_move_turn("run its canary")
                turn_held = True
                params = dict(params, marks=current.get("marks") or {})
            outcome = self._prove(params, task_vars)
        except VirtfleetError as failure:
            outcome = dict(failure.as_result(), failed=True, msg=failure.message)
        finally:
            if turn_held and not self._task.check_mode:
                try:
                    cluster_state.release_move_turn()
                except VirtfleetError as failure:
                    outcome = dict(outcome, failed=True, msg="%s; then %s" % (outcome.get("msg") or "proven", failure.message))
        # As a module's result: what it was given (shown at -vvv), and the secrets inside URIs
        # masked wherever they are quoted (libvirt errors), the URIs staying readable.
        outcome = dict(outcome, invocation={"module_args": params})
        outcome = remove_values(outcome, set(validation._no_log_values) | set(uri_secrets_in(params)))
        if not self._task.check_mode:
            outcome = report_task.record_outcome(params.get("report"), run_events.canary_events(outcome, began), outcome)
        result.update(outcome)
        return result

    def _prove(self, params, task_vars):
        if not HAS_LIBVIRT:
            self._display.warning("libvirt-python is missing on the controller: running host_canary as a plain "
                                  "module on the host, in the move turn")
            module_args = dict(self._task.args, marks=params["marks"])
            module_args.pop("shared_state", None)
            module_args.pop("report", None)  # recorded here, on the controller
            return self._execute_module(module_name="virtfleet.cluster.host_canary", module_args=module_args,
                                        task_vars=task_vars)
        return host_canary_task.run(params, check_mode=bool(self._task.check_mode))
