# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cluster's shared state as an action plugin uses it: maintenance_state calls made over the
task's connection (the host runs them, where the shared storage is mounted), through the
action's ``_execute_module``. Used by the host_drain and host_canary actions for the cluster's
move turn: drains and canaries of one cluster choose their destinations one at a time.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError

# The option both actions take (documented once: doc_fragments/shared_state.py).
SHARED_STATE_SPEC = dict(type="dict", options=dict(
    path=dict(type="str", required=True),
    cluster=dict(type="str", required=True),
    run_id=dict(type="str", required=True),
    token=dict(type="str", required=True, no_log=False),
    identity=dict(type="str"),
    turn_timeout=dict(type="int", default=3600),
))

# Seconds one maintenance_state call waits for the move turn on the host before it answers.
TURN_POLL_SECONDS = 30


class SharedStateClient:
    """maintenance_state calls for ``host`` on the cluster's shared state ``shared`` (the
    SHARED_STATE_SPEC option's value), made with ``execute_module`` (an action plugin's
    ``_execute_module``) and its ``task_vars``."""

    def __init__(self, execute_module: Callable[..., Dict[str, Any]], task_vars: Dict[str, Any], shared: Dict[str, Any],
                 host: str, clock: Callable[[], float] = time.monotonic):
        self.execute_module = execute_module
        self.task_vars = task_vars
        self.shared = shared
        self.host = host
        self.clock = clock

    def call(self, host: Optional[str] = None, **args) -> Dict[str, Any]:
        """One maintenance_state call (``host`` defaults to this client's); VirtfleetError when it fails."""
        shared = self.shared
        module_args = dict(args, path=shared["path"], cluster=shared["cluster"], run_id=shared["run_id"],
                           token=shared["token"], host=host or self.host)
        answer = self.execute_module(module_name="virtfleet.cluster.maintenance_state", module_args=module_args,
                                     task_vars=self.task_vars)
        if answer.get("failed") or "state" not in answer:
            raise VirtfleetError("the cluster's shared state (%s) could not be used (state=%s): %s"
                                 % (shared["path"], args["state"], answer.get("msg", "no answer")))
        return answer

    def take_move_turn(self, purpose: str) -> Dict[str, Any]:
        """Waits for the cluster's move turn, up to ``turn_timeout`` seconds (each call waits on the
        host up to TURN_POLL_SECONDS). Returns the state as it is once the turn is given; raises
        VirtfleetError, saying what it waited for, when the turn did not come."""
        deadline = self.clock() + self.shared["turn_timeout"]
        while True:
            wait = max(0, min(TURN_POLL_SECONDS, deadline - self.clock()))
            answer = self.call(state="take_slot", pool="move", wait=wait, identity=self.shared.get("identity"))
            if answer.get("admitted"):
                return answer["state"]
            if self.clock() >= deadline:
                raise VirtfleetError("%s waited %d s (turn_timeout) for the move turn of cluster %s to %s, and moved "
                                     "nothing: %s" % (self.host, self.shared["turn_timeout"], self.shared["cluster"],
                                                      purpose, answer.get("waiting_for") or "no answer"))

    def release_move_turn(self) -> None:
        self.call(state="release_slot", pool="move")
