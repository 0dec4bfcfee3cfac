# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of virtfleet.cluster.host_drain: runs the drain on the controller and prints
each guest's progress while it runs, so a drain of many large guests never looks frozen.

Same code as the module (``host_drain_task.run`` -> ``drain.drain_host``), plus a progress
callback and, with ``shared_state``, the cluster's shared state used over the task's connection
(maintenance_state): the move turn taken, with the state as it is then (out-of-service hosts,
other drains' reservations); this drain's reservation recorded and the turn given back once the
plan is accepted; the state read again before each move (the gate); the reservation removed at
the end. With ``report``, the drain's events (each migration, each guest shut down, the phase's
end or failure) are recorded on the controller once it is over. The work lives in
module_utils. When libvirt-python is missing on the controller, falls back to executing the
module on the host (no live progress, no reservation: the move turn is held for the whole
drain).
"""

import os
import tempfile
import time

from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.virtfleet.cluster.plugins.module_utils import cluster_slots
from ansible_collections.virtfleet.cluster.plugins.module_utils import drain
from ansible_collections.virtfleet.cluster.plugins.module_utils import host_drain_task
from ansible_collections.virtfleet.cluster.plugins.module_utils import report_task
from ansible_collections.virtfleet.cluster.plugins.module_utils import reservations
from ansible_collections.virtfleet.cluster.plugins.module_utils import run_events
from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import uri_secrets_in
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import HAS_LIBVIRT
from ansible_collections.virtfleet.cluster.plugins.module_utils.shared_state_client import SharedStateClient

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
        validation, params = self.validate_argument_spec(argument_spec=host_drain_task.ARGUMENT_SPEC)
        params = validation.validated_parameters
        check_mode = bool(self._task.check_mode)
        host, shared = params["host"], params.get("shared_state")
        cluster_state = SharedStateClient(self._execute_module, task_vars, shared, host) if shared else None
        # What this drain holds in the shared state, given back in the end whatever happens.
        holds = {"turn": False, "moves": []}
        began = time.time()
        try:
            outcome = self._drain(params, task_vars, cluster_state, holds, check_mode)
        except VirtfleetError as failure:
            outcome = dict(failure.as_result(), failed=True, msg=failure.message)
        finally:
            left_held = self._give_back(cluster_state, holds, check_mode)
        if left_held:
            outcome = dict(outcome, failed=True, msg="%s; then %s" % (outcome.get("msg") or "drained", left_held))
        # As run_module does for the module: the secrets inside URIs are masked wherever they
        # are quoted (libvirt errors), the URIs stay readable.
        outcome = remove_values(outcome, set(validation._no_log_values) | set(uri_secrets_in(params)))
        if not check_mode:
            outcome = report_task.record_outcome(params.get("report"), run_events.drain_events(outcome, began), outcome)
            for line in _summary(outcome):
                display.display("%s drain: %s" % (host, line))
        result.update(outcome)
        return _with_migration_warnings(result)

    def _drain(self, params, task_vars, cluster_state, holds, check_mode):
        """The drain's outcome (raises VirtfleetError): in the move turn when shared_state is given."""
        host = params["host"]
        in_flight = ()
        if cluster_state:
            current = cluster_state.take_move_turn("drain")
            holds["turn"] = True
            in_flight = reservations.in_flight(current.get("reservations") or {}, host)
            params = dict(params, hosts=_out_of_service_marked(params["hosts"], current))
        if not HAS_LIBVIRT:
            display.warning("libvirt-python is missing on the controller: running host_drain"
                            " as a plain module on the host, without live progress, in the move turn")
            return self._execute_module(module_name="virtfleet.cluster.host_drain",
                                        module_args=self._task.args, task_vars=task_vars)
        on_plan = self._reserver(cluster_state, holds) if cluster_state and not check_mode else None
        gate = self._state_gate(cluster_state) if cluster_state and not check_mode else None
        # Drains side by side run in this controller's workers: its lock files keep their
        # migrations into one destination within max_incoming_per_destination together.
        incoming_locks = os.path.join(tempfile.gettempdir(), "virtfleet-incoming-%d" % os.getuid()) if cluster_state else None
        return host_drain_task.run(params, check_mode=check_mode, progress=ProgressPrinter(host, display.display),
                                   gate=gate, in_flight=in_flight, on_plan=on_plan, incoming_locks=incoming_locks)

    @staticmethod
    def _reserver(cluster_state, holds):
        """on_plan for the drain: records the plan's moves as this host's reservation, then gives
        the cluster's move turn back (the next drain plans with the reservation subtracted)."""
        def reserve(plan):
            moves = [{key: move[key] for key in reservations.MOVE_FIELDS} for move in plan["moves"]]
            if moves:  # the turn given back in the same call
                cluster_state.call(state="reserve", moves=moves, identity=cluster_state.shared.get("identity"))
                holds["moves"] = moves
            else:
                cluster_state.release_move_turn()
            holds["turn"] = False
        return reserve

    @staticmethod
    def _give_back(cluster_state, holds, check_mode):
        """Removes the reservation once the migrations are over, and gives the turn back when the
        plan never came to be reserved (refused, or failed before). Returns what could not be
        given back, or None."""
        if not cluster_state or check_mode:
            return None
        try:
            if holds["moves"]:
                cluster_state.call(state="unreserve")
            if holds["turn"]:
                cluster_state.release_move_turn()
        except VirtfleetError as failure:
            return failure.message
        return None

    @staticmethod
    def _state_gate(cluster_state):
        """gate(move) for the drain: reads the cluster's shared state right before each move."""
        def gate(move):
            try:
                current = cluster_state.call(host=move["source"], state="read")["state"]
            except VirtfleetError as failure:
                return failure.message
            return drain.move_refusal(move, current, cluster_state.shared["token"])
        return gate


def _out_of_service_marked(hosts, state):
    """The cluster's hosts with those out of service or going out, as the shared state says,
    marked in maintenance: no destinations."""
    out = cluster_slots.hosts_out_of_service(state.get("slots") or {}, state.get("marks") or {})
    return [dict(host, in_maintenance=host.get("in_maintenance") or host["name"] in out) for host in hosts]


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
