# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host_canary task (module and action plugin): its parameters, and the proof on validated
parameters (``canary_run.prove_host``)."""

from __future__ import annotations

from typing import Any, Dict

from ansible_collections.virtfleet.cluster.plugins.module_utils.canary import DEFAULT_MEMORY_MIB
from ansible_collections.virtfleet.cluster.plugins.module_utils.canary_run import CanaryRequest, prove_host
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_options import MIGRATION_OPTIONS_SPEC, MigrationOptions
from ansible_collections.virtfleet.cluster.plugins.module_utils.run_events import TASK_REPORT_SPEC
from ansible_collections.virtfleet.cluster.plugins.module_utils.shared_state_client import SHARED_STATE_SPEC

ARGUMENT_SPEC = dict(
    host=dict(type="str", required=True),
    uri=dict(type="str", required=True),
    peers=dict(type="list", elements="dict", required=True),
    marks=dict(type="dict", default={}),
    shared_state=SHARED_STATE_SPEC,
    report=TASK_REPORT_SPEC,
    guest=dict(type="str", default=""),
    memory_mib=dict(type="int", default=DEFAULT_MEMORY_MIB),
    unmovable_guests=dict(type="list", elements="str", default=[]),
    stop_allowed_guests=dict(type="list", elements="str", default=[]),
    shared_storage_path=dict(type="str"),
    run_id=dict(type="str"),
    **MIGRATION_OPTIONS_SPEC
)


def request_from(params: Dict[str, Any]) -> CanaryRequest:
    """The validated parameters as a CanaryRequest; VirtfleetError for what a spec cannot say."""
    try:
        options = MigrationOptions.from_params(params)
    except ValueError as exc:
        raise VirtfleetError(str(exc)) from exc
    peers = {}
    for peer in params["peers"]:
        if not peer.get("name") or not peer.get("uri"):
            raise VirtfleetError("every peer needs a name and a uri: %r" % (peer,))
        peers[peer["name"]] = peer["uri"]
    return CanaryRequest(host=params["host"], uri=params["uri"], peers=peers, marks=params["marks"] or {},
                         guest=params["guest"] or "", memory_mib=params["memory_mib"],
                         unmovable=params["unmovable_guests"], stop_allowed=params["stop_allowed_guests"],
                         shared_storage_path=params["shared_storage_path"], run_id=params["run_id"], options=options)


def run(params: Dict[str, Any], check_mode: bool = False) -> Dict[str, Any]:
    return prove_host(request_from(params), check_mode)
