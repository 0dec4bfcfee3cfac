# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The O(shared_state) option of the actions that take the cluster's move turn (host_drain,
host_canary), documented once: plugins/module_utils/shared_state_client.py's SHARED_STATE_SPEC.
What each task does in the turn is in its module's description.
"""

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
options:
  shared_state:
    description:
      - The cluster's shared maintenance state, used through M(virtfleet.cluster.maintenance_state) over the
        task's connection - run the task on the host it is about (the host to drain, or to prove), without
        C(delegate_to), so the host that sees the shared storage answers. The rolling_maintenance role gives it.
      - The task first takes the cluster's move turn (M(virtfleet.cluster.maintenance_state)
        O(virtfleet.cluster.maintenance_state#module:pool=move)), waiting up to O(shared_state.turn_timeout)
        seconds - drains and canaries of one cluster choose their destinations one at a time - and reads the
        cluster's state with it. The module's description says what it does in the turn and when it gives it back.
    type: dict
    suboptions:
      path:
        description: The cluster's shared storage path, as O(virtfleet.cluster.maintenance_state#module:path).
        type: str
        required: true
      cluster:
        description: The cluster's name.
        type: str
        required: true
      run_id:
        description: The run's id, as the lock records it.
        type: str
        required: true
      token:
        description: The token of the lock the run holds (the lock must still carry it).
        type: str
        required: true
      identity:
        description: The id of the cluster's identity file as the other hosts read it (checked before anything is written).
        type: str
      turn_timeout:
        description: How long to wait for the cluster's move turn (seconds) before the task fails, moving nothing.
        type: int
        default: 3600
"""
