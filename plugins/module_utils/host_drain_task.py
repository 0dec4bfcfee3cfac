# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host_drain task: its argument spec and its work on validated parameters, shared by the
module (``run_module(ARGUMENT_SPEC, run)``) and the action plugin (which adds live progress
and the state gate). Nothing here imports Ansible.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

from ansible_collections.virtfleet.cluster.plugins.module_utils import drain
from ansible_collections.virtfleet.cluster.plugins.module_utils.drain_options import (
    DEFAULT_MAX_INCOMING, DEFAULT_MAX_PARALLEL, DEFAULT_SHUTDOWN_TIMEOUT, DrainOptions)
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_options import MIGRATION_OPTIONS_SPEC
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_watchdog import MigrationProgress
from ansible_collections.virtfleet.cluster.plugins.module_utils.run_events import TASK_REPORT_SPEC
from ansible_collections.virtfleet.cluster.plugins.module_utils.shared_state_client import SHARED_STATE_SPEC

# URIs are not no_log: run_module (and the action) mask the secrets inside them, so they stay
# readable. `migration` is validated by Ansible with the migration options' own spec.
ARGUMENT_SPEC: Dict[str, Any] = dict(
    host=dict(type="str", required=True),
    hosts=dict(type="list", elements="dict", required=True, options=dict(
        name=dict(type="str", required=True),
        uri=dict(type="str", required=True),
        in_maintenance=dict(type="bool", default=False),
        migration_uri=dict(type="str"),
    )),
    max_parallel=dict(type="int", default=DEFAULT_MAX_PARALLEL),
    max_incoming_per_destination=dict(type="int", default=DEFAULT_MAX_INCOMING),
    order=dict(type="str", default="largest_first",
               choices=["largest_first", "smallest_first", "as_listed"]),
    unmovable=dict(type="str", default="fail", choices=["fail", "shutdown", "leave"]),
    unmovable_guests=dict(type="list", elements="str", default=[]),
    stop_allowed_guests=dict(type="list", elements="str"),
    anti_affinity_groups=dict(type="dict", default={}),
    memory_overcommit=dict(type="float", default=1.0),
    cpu_overcommit=dict(type="float", default=4.0),
    memory_reserve_mib=dict(type="int", default=512),
    respect_free_memory=dict(type="bool", default=True),
    cpu_check=dict(type="bool", default=True),
    shared_storage_path=dict(type="str"),
    shutdown_timeout=dict(type="int", default=DEFAULT_SHUTDOWN_TIMEOUT),
    migration=dict(type="dict", default={}, options=MIGRATION_OPTIONS_SPEC),
    shared_state=SHARED_STATE_SPEC,
    report=TASK_REPORT_SPEC,
)


def run(params: Dict[str, Any], check_mode: bool = False, progress: Optional[Callable[[MigrationProgress], None]] = None,
        gate: Optional[Callable[[Dict[str, Any]], Optional[str]]] = None, in_flight: Sequence[Dict[str, Any]] = (),
        on_plan: Optional[Callable[[Dict[str, Any]], None]] = None, incoming_locks: Optional[str] = None) -> Dict[str, Any]:
    """The drain on validated parameters: returns the result dict, or raises a VirtfleetError
    carrying the report (where every guest is). The action plugin passes ``progress`` and, for
    shared_state, ``gate(move) -> refusal or None``, the other drains' moves ``in_flight``,
    ``on_plan(plan)`` and ``incoming_locks`` (see ``drain.drain_host``)."""
    host = params["host"]
    result: Dict[str, Any] = {"changed": False, "host": host}
    try:
        options = DrainOptions.from_params(params)
    except ValueError as exc:
        raise VirtfleetError(str(exc), result) from exc
    try:
        report = drain.drain_host(host, params["hosts"], options, check_mode=check_mode, progress=progress, gate=gate,
                                  in_flight=in_flight, on_plan=on_plan, incoming_locks=incoming_locks)
    except drain.DrainError as exc:
        raise VirtfleetError(exc.message, dict(result, **exc.result)) from exc
    except Exception as exc:  # libvirt facts errors and the like: say it, with the host
        raise VirtfleetError("drain of %s failed before any migration result: %s" % (host, exc), result) from exc
    result.update(report)
    if check_mode:
        moves = report["plan"]["moves"]
        result["msg"] = "would drain %s: %s" % (host, ", ".join(
            "%s -> %s" % (m["guest"], m["destination"]) for m in moves) or "no running guest")
    else:
        done = [m for m in report["migrations"] if m["status"] == "migrated"]
        result["msg"] = "%s drained: %d guest(s) migrated in %s s%s" % (
            host, len(done), report.get("elapsed_s"),
            (", left running: %s" % ", ".join(report["left"])) if report["left"] else "")
    return result
