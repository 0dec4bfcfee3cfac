#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: maintenance_state
short_description: Lock a cluster, mark hosts in maintenance and track a maintenance window
description:
  - Reads and changes the shared maintenance state of one cluster, kept as small JSON files in
    C(<storage path>/.virtfleet/) on the cluster's shared primary storage, so every controller
    that reaches a host of the cluster sees the same lock, marks and window.
  - Run it on a host of the cluster (the one that mounts the storage), not on the controller.
  - The lock never expires on its own. It is released by the run that holds it, or broken by an
    operator with O(force=true).
  - A mark owned by somebody else (not this run, not this maintenance window) is never changed.
  - All writes are atomic (link or rename of a fully written file).
version_added: 0.1.0
author:
  - virtfleet maintainers (@virtfleet)
options:
  path:
    description:
      - The cluster's shared primary storage path (C(virtfleet_storage.path)). The state lives in
        its C(.virtfleet) subdirectory, created when first needed.
    type: path
    required: true
  cluster:
    description: Name of the cluster (shown in messages and recorded in the files).
    type: str
    required: true
  action:
    description:
      - C(read) returns the lock, the window and the marks.
      - C(lock) takes the cluster lock for O(run_id) (re-entrant); refused with the holder's
        name when another run holds it, unless O(force=true) breaks it.
      - C(unlock) releases the lock held by O(run_id); O(force=true) releases anybody's.
      - C(open_window) joins the open maintenance window or opens one (needs the lock).
      - C(record_origins) remembers the host of every guest in O(guests) (first record wins).
      - C(mark) marks O(host) in maintenance or advances its O(phase).
      - C(unmark) removes this window's mark of O(host).
      - C(host_done) records O(host) as done in the window.
      - C(close_window) closes the window (the cluster is finished).
    type: str
    required: true
    choices: [read, lock, unlock, open_window, record_origins, mark, unmark, host_done, close_window]
  run_id:
    description: Identifier of the run acting. Required for every action except C(read).
    type: str
  holder:
    description: Extra facts about the run recorded with the lock or mark (AWX job id, ...).
    type: dict
    default: {}
  host:
    description: Host to mark, unmark or record as done.
    type: str
  phase:
    description: Phase reached by the marked host.
    type: str
    default: marked
    choices: [marked, drained, patched, rebooted, verified]
  window:
    description:
      - Name of the maintenance window. With O(action=open_window), empty joins the open window
        whatever its name. With mark actions, the window whose marks this run may adopt.
    type: str
  new_window:
    description: With O(action=open_window), open a new window even if one is open.
    type: bool
    default: false
  guests:
    description: With O(action=record_origins), guest name to host name.
    type: dict
    default: {}
  details:
    description: Extra data stored with a mark or a done host (boot ids, ...).
    type: dict
    default: {}
  reason:
    description: Why the host is marked (shown to whoever finds the mark).
    type: str
  force:
    description: Break a lock held by another run, or remove another owner's mark. Operator use.
    type: bool
    default: false
notes:
  - Supports check mode; nothing is written then and the result says what would change.
"""

EXAMPLES = r"""
- name: Take the lock of the host's cluster
  virtfleet.cluster.maintenance_state:
    path: "{{ virtfleet_storage.path }}"
    cluster: "{{ virtfleet_cluster }}"
    action: lock
    run_id: "{{ rolling_maintenance_run_id }}"

- name: Mark this host in maintenance
  virtfleet.cluster.maintenance_state:
    path: "{{ virtfleet_storage.path }}"
    cluster: "{{ virtfleet_cluster }}"
    action: mark
    host: "{{ inventory_hostname }}"
    run_id: "{{ rolling_maintenance_run_id }}"
    window: "{{ window_name }}"

- name: Operator - release a lock left by a dead run
  virtfleet.cluster.maintenance_state:
    path: /srv/cluster-a
    cluster: cluster-a
    action: unlock
    run_id: operator
    force: true
"""

RETURN = r"""
state:
  description: The cluster's state read back after the action (unchanged in check mode; see O(action) results).
  returned: always
  type: dict
  contains:
    lock:
      description: The lock (C(holder) with C(run_id), C(user), C(controller), C(since)) or null.
      type: dict
    window:
      description: The window (C(name), C(hosts_done), C(guest_origins), C(closed)) or null.
      type: dict
    marks:
      description: Host name to mark (C(owner), C(window), C(phase), C(phases), C(reason)).
      type: dict
broken_lock:
  description: With O(action=lock) and O(force=true), the lock that was broken.
  returned: when a lock was broken
  type: dict
window:
  description: The maintenance window after the action (as it would be in check mode).
  returned: when O(action) is open_window, record_origins, host_done or close_window
  type: dict
mark:
  description: The host's mark after O(action=mark).
  returned: when O(action=mark)
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.virtfleet.cluster.plugins.module_utils.maintenance_state import (
    ClusterState, LockHeld, StateError, default_holder, state_dir)


def run(module):
    params = module.params
    state = ClusterState(state_dir(params["path"]), params["cluster"], check_mode=module.check_mode)
    action = params["action"]
    run_id = params["run_id"]
    if action != "read" and not run_id:
        module.fail_json(msg="run_id is required for action %s" % action)
    if action in ("mark", "unmark", "host_done") and not params["host"]:
        module.fail_json(msg="host is required for action %s" % action)
    holder = default_holder(run_id, params["holder"]) if run_id else None
    result = {"changed": False}
    try:
        if action == "lock":
            changed, lock, broken = state.acquire_lock(holder, force=params["force"])
            result["changed"] = changed
            if broken:
                result["broken_lock"] = broken
        elif action == "unlock":
            result["changed"] = state.release_lock(run_id, force=params["force"])
        elif action == "open_window":
            result["changed"], window = state.open_window(run_id, name=params["window"],
                                                          new=params["new_window"])
            result["window"] = window
        elif action == "record_origins":
            result["changed"], result["window"] = state.record_guest_origins(run_id, params["guests"])
        elif action == "mark":
            result["changed"], result["mark"] = state.mark(
                run_id, params["host"], holder, phase=params["phase"],
                window_name=params["window"], reason=params["reason"], details=params["details"])
        elif action == "unmark":
            result["changed"] = state.unmark(run_id, params["host"], window_name=params["window"],
                                             force=params["force"])
        elif action == "host_done":
            result["changed"], result["window"] = state.host_done(run_id, params["host"], params["details"])
        elif action == "close_window":
            result["changed"], result["window"] = state.close_window(run_id)
    except LockHeld as exc:
        module.fail_json(msg=str(exc), holder=exc.holder, lock_held=True, state=state.snapshot())
    except StateError as exc:
        module.fail_json(msg=str(exc), state=state.snapshot())
    except OSError as exc:
        module.fail_json(msg="cannot use the state directory %s: %s" % (state.path, exc))
    result["state"] = state.snapshot()
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            cluster=dict(type="str", required=True),
            action=dict(type="str", required=True,
                        choices=["read", "lock", "unlock", "open_window", "record_origins",
                                 "mark", "unmark", "host_done", "close_window"]),
            run_id=dict(type="str"),
            holder=dict(type="dict", default={}),
            host=dict(type="str"),
            phase=dict(type="str", default="marked",
                       choices=["marked", "drained", "patched", "rebooted", "verified"]),
            window=dict(type="str"),
            new_window=dict(type="bool", default=False),
            guests=dict(type="dict", default={}),
            details=dict(type="dict", default={}),
            reason=dict(type="str"),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
