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
    operator with O(force=true) (also a corrupt lock file, which is kept as C(lock.json.corrupt-<time>)).
  - A lock belongs to one run, identified by O(token) (random, made once per run) and not by
    O(run_id), so a second run started with the same run id is refused while the first holds the lock.
  - The state directory must prove it is the cluster's shared one. C(cluster-id.json) in it names
    the cluster with a random id, written once (O(state=init)); every change except C(unlock) and
    C(unmark) is refused while it is missing, and O(state=verify_shared) fails on a host that does
    not read the same id as the others (its shared mount is missing). The storage path itself is
    never created.
  - A mark owned by somebody else (not this run, not this maintenance window) is never changed.
  - All writes are atomic (link or rename of a fully written file).
version_added: 0.1.0
author:
  - virtfleet maintainers (@virtfleet)
extends_documentation_fragment:
  - virtfleet.cluster.attributes
attributes:
  check_mode:
    support: full
    details: Reads the state and reports what it would change (C(changed)); writes nothing.
  diff_mode:
    support: none
    details: The result holds the state after the change.
options:
  path:
    description:
      - The cluster's shared primary storage path (C(virtfleet_storage.path)). The state lives in
        its C(.virtfleet) subdirectory, created by O(state=init). The path itself must exist (it is
        the shared storage's mount or a directory on it); it is never created.
    type: path
    required: true
  cluster:
    description: Name of the cluster (shown in messages and recorded in the files).
    type: str
    required: true
  state:
    description:
      - C(read) returns the lock, the window, the marks and the identity.
      - C(init) gives the state directory its identity (C(cluster-id.json), once per cluster; kept
        when it exists). Run it where the shared storage is known to be mounted, then check every
        other host with C(verify_shared).
      - C(verify_shared) fails unless this host reads the cluster's identity file (with the id in
        O(identity) when given); the message names the path and its mount. With O(run_id) and
        O(token) it also says whether another run holds the cluster's lock (RV(lock_held),
        RV(lock_message)), taking nothing.
      - C(lock) takes the cluster lock for O(run_id) and O(token) (re-entrant for the same token),
        exclusive or, with O(shared=true), shared with other runs that take it shared (C(runs/<token>.json));
        refused with the holder's name when a run holds it that excludes this one, unless O(force=true) breaks it.
      - C(unlock) releases the lock held by O(token) (by O(run_id) when no token is given);
        O(force=true) releases anybody's, a corrupt one too, and every shared one.
      - C(open_window) joins the open maintenance window or opens one (needs the lock). While other runs share
        the lock, the open window is joined even with O(new_window=true) or another O(window) name.
      - C(record_origins) remembers the host of every guest in O(guests) (first record wins).
      - C(mark) marks O(host) in maintenance or advances its O(phase).
      - C(unmark) removes this window's mark of O(host).
      - C(host_done) records O(host) as done in the window, removes this window's mark of it (O(window)) and gives
        back its slots - it is back in service, and the next host of the cluster may start.
      - C(close_window) closes the window (the cluster is finished); with O(members), only when each of them
        is recorded done in the window or listed in O(not_needed) - otherwise it stays open and C(left) in RV(window)
        names the hosts left.
      - C(take_slot) takes a slot of O(pool) for O(host) in the cluster's shared state (C(slots/), each slot
        created atomically), waiting up to O(wait) seconds. Pool C(host) when the host's turn in O(rounds)
        has come (every host of the earlier rounds is recorded done in the window) and fewer than O(limit)
        hosts of the cluster hold a slot, are marked or are listed in O(unreachable); pool C(move) (one per
        cluster) for a drain or a canary. RV(admitted) says whether it holds the slot, RV(stopped) why the
        cluster stopped (a holder failed) and RV(waiting_for) what it still waits for. Runs sharing the lock share the
        slots; RV(elsewhere) says that another run holds a slot for O(host), marked it or recorded it done in the
        window meanwhile (the host is left to that run, at once). Needs the lock.
      - C(release_slot) gives back O(host)'s slots of O(pool) (both pools when O(pool) is omitted).
      - C(stop_slot) flags O(host)'s host slot failed with O(reason) (its cluster stops, every waiting host is
        told) and gives back its move slot. RV(others_active) names the hosts of this run still holding a slot.
      - C(reserve) records O(moves) as O(host)'s drain's reservation (C(reservations/), replacing its earlier one), so that
        a drain of another host of the cluster planning meanwhile subtracts it, and gives back O(host)'s move turn
        (its plan is made). Needs the lock.
      - C(unreserve) removes O(host)'s reservation (its drain's migrations are over).
      - C(open_window) also removes the slots and reservations left by runs that hold the lock no more (they
        stopped); C(stop_slot) and C(host_done) also remove the host's reservation.
      - Every answer carries RV(state), with the slots and reservations.
    type: str
    required: true
    choices: [read, init, verify_shared, lock, unlock, open_window, record_origins, mark, unmark, host_done, close_window,
              take_slot, release_slot, stop_slot, reserve, unreserve]
  run_id:
    description: Identifier of the run acting. Required for every O(state) except C(read), C(init) and C(verify_shared).
    type: str
  token:
    description:
      - The run's identity in the lock (random, made once per run by the caller, never a user's choice).
        With C(lock), recorded as the holder's token (a new one is made when omitted and returned
        as RV(token)). With every other O(state) that needs the lock, the lock must carry this token.
    type: str
  identity:
    description:
      - The id of the cluster's identity file as the other hosts read it. With C(verify_shared), this
        host must read the same; with any other O(state), checked before anything is read or written
        (an O(state=unlock) from a host whose shared mount is missing then fails instead of
        reporting that there was nothing to release).
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
      - Name of the maintenance window. With O(state=open_window), empty joins the open window
        whatever its name. With O(state=mark) and O(state=unmark), the window whose marks this run may adopt.
    type: str
  new_window:
    description: With O(state=open_window), open a new window even if one is open.
    type: bool
    default: false
  guests:
    description: With O(state=record_origins), guest name to host name.
    type: dict
    default: {}
  members:
    description:
      - With O(state=close_window), every host of the cluster - the window closes only when each is recorded
        done in it or listed in O(not_needed).
    type: list
    elements: str
  not_needed:
    description: With O(state=close_window), hosts that had nothing to patch (they need not be done).
    type: list
    elements: str
    default: []
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
  shared:
    description:
      - With O(state=lock) (and O(state=verify_shared)), take the lock shared with other runs that take it shared
        (rolling maintenance runs, which then share the cluster's slots, window and reservations). A shared lock
        excludes an exclusive one and another run with the same O(run_id); an exclusive one excludes every other.
    type: bool
    default: false
  pool:
    description: With O(state=take_slot) and O(state=release_slot), the pool of slots (see O(state)).
    type: str
    choices: [host, move]
  limit:
    description: With O(state=take_slot) and O(pool=host), the cluster's C(max_unavailable).
    type: int
    default: 1
  rounds:
    description:
      - With O(state=take_slot) and O(pool=host), the run's planned order of the cluster's hosts (lists of
        hosts that may be out together, in order).
    type: list
    elements: list
    default: []
  unreachable:
    description: With O(state=take_slot), hosts of the cluster that did not answer at preflight (out of service).
    type: list
    elements: str
    default: []
  moves:
    description: With O(state=reserve), the moves O(host)'s drain is about to make.
    type: list
    elements: dict
    default: []
    suboptions:
      guest:
        description: The guest.
        type: str
        required: true
      destination:
        description: The host it goes to.
        type: str
        required: true
      memory_mib:
        description: The memory it takes there (MiB).
        type: int
        required: true
      vcpus:
        description: Its vCPUs.
        type: int
        required: true
  wait:
    description: With O(state=take_slot), how long to wait for the slot on the host (seconds), polling the shared state.
    type: float
    default: 0
  report:
    description:
      - Events of the run's report recorded with this change, as M(virtfleet.cluster.maintenance_report) records
        them - by this module's action plugin, in-process on the controller, once the change is made on the
        host. A refused change records nothing (the caller records the failure). One task per phase boundary
        instead of two.
      - Not for a task that retries (C(until)) - each successful attempt would record them.
    type: dict
    suboptions:
      directory:
        description: The run's report directory on the controller.
        type: path
        required: true
      run_id:
        description: Added to every event that lacks one.
        type: str
      events:
        description: The events, in order (C(type) required; C(ts) defaults to now).
        type: list
        elements: dict
        default: []
notes:
  - Supports check mode; nothing is written then and the result says what would change.
"""

EXAMPLES = r"""
- name: Give a new cluster's state directory its identity (once; where the storage is mounted)
  virtfleet.cluster.maintenance_state:
    path: "{{ virtfleet_storage.path }}"
    cluster: "{{ virtfleet_cluster }}"
    state: init
  register: cluster_state_identity

- name: Every host reads the same identity (its shared mount is there)
  virtfleet.cluster.maintenance_state:
    path: "{{ virtfleet_storage.path }}"
    cluster: "{{ virtfleet_cluster }}"
    state: verify_shared
    identity: "{{ cluster_state_identity.identity.id }}"

- name: Take the lock of the host's cluster
  virtfleet.cluster.maintenance_state:
    path: "{{ virtfleet_storage.path }}"
    cluster: "{{ virtfleet_cluster }}"
    state: lock
    run_id: "{{ rolling_maintenance_run_id }}"
    token: "{{ my_run_token }}"

- name: Mark this host in maintenance
  virtfleet.cluster.maintenance_state:
    path: "{{ virtfleet_storage.path }}"
    cluster: "{{ virtfleet_cluster }}"
    state: mark
    host: "{{ inventory_hostname }}"
    run_id: "{{ rolling_maintenance_run_id }}"
    window: "{{ window_name }}"

- name: Operator - release a lock left by a dead run
  virtfleet.cluster.maintenance_state:
    path: /srv/cluster-a
    cluster: cluster-a
    state: unlock
    run_id: operator
    force: true
"""

RETURN = r"""
state:
  description: The cluster's state read back after the action (unchanged in check mode; see O(state) results).
  returned: always
  type: dict
  contains:
    lock:
      description: The lock (C(holder) with C(run_id), C(token), C(user), C(controller), C(pid), C(since)) or null.
      type: dict
    identity:
      description: The state directory's identity (C(cluster), C(id), C(created), C(created_by)) or null.
      type: dict
    window:
      description: The window (C(name), C(hosts_done), C(guest_origins), C(closed)) or null.
      type: dict
    marks:
      description: >-
        Host name to mark (C(owner), C(window), C(phase), C(phases), C(reason)); C(owner_live) on a
        mark whose run still holds the cluster's lock (no other run adopts it).
      type: dict
    runs:
      description: Token to registration (C(holder)) of each rolling maintenance run sharing the cluster's lock.
      type: dict
    holders:
      description: >-
        Every run holding the cluster's lock now, the exclusive holder first: its holder (C(run_id),
        C(token), C(user), C(controller), C(pid), C(since)) with C(shared) and C(description) (who,
        where, since: for a message).
      type: list
      elements: dict
    slots:
      description: Slot file name to its holder (C(host), C(pool), C(token), C(since); C(failed) when it failed).
      type: dict
    reservations:
      description: Draining host to its reservation (C(token), C(run_id), C(since), C(moves)).
      type: dict
broken_lock:
  description: With O(state=lock) and O(force=true), the lock that was broken (C(corrupt) and C(corrupt_copy) for a corrupt one).
  returned: when a lock was broken
  type: dict
lock_held:
  description: With O(state=verify_shared), O(run_id) and O(token) - another run holds the cluster's lock (RV(lock_message) says which, and what to do).
  returned: when another run holds the lock
  type: bool
out_elsewhere:
  description: >-
    With O(state=verify_shared) and O(token), host name to run id of each host another run
    holding the cluster's lock has out now (its mark or its host slot): that run may be draining
    or rebooting it.
  returned: when O(state=verify_shared) and O(token) is given
  type: dict
lock_message:
  description: Why this run could not take the lock now, naming the run that holds it.
  returned: when RV(lock_held)
  type: str
token:
  description: With O(state=lock), the token the lock is held with.
  returned: when O(state=lock)
  type: str
identity:
  description: The identity read (or created) with O(state=init) or O(state=verify_shared).
  returned: when O(state) is init or verify_shared
  type: dict
window:
  description: The maintenance window after the action (as it would be in check mode).
  returned: when O(state) is open_window, record_origins, host_done or close_window
  type: dict
mark:
  description: The host's mark after O(state=mark).
  returned: when O(state=mark)
  type: dict
admitted:
  description: With O(state=take_slot), whether O(host) holds a slot of O(pool) now.
  returned: when O(state=take_slot)
  type: bool
slot:
  description: With O(state=take_slot), the slot's file name under C(slots/) (null when not admitted).
  returned: when O(state=take_slot)
  type: str
stopped:
  description: With O(state=take_slot), why the cluster stopped (a slot holder failed), else null.
  returned: when O(state=take_slot)
  type: str
waiting_for:
  description: With O(state=take_slot), what the host still waits for when not admitted (its turn, room), else null.
  returned: when O(state=take_slot)
  type: str
shared_with:
  description: With O(state=lock) and O(shared=true), the run ids of the other runs that share the cluster's lock now.
  returned: when O(state=lock) and O(shared=true)
  type: list
  elements: str
elsewhere:
  description: With O(state=take_slot), which run maintains the host, or recorded it done in the window meanwhile (not admitted).
  returned: when O(state=take_slot) and another run maintains the host or did
  type: str
released:
  description: With O(state=release_slot), O(state=host_done) and O(state=reserve), the slot files given back.
  returned: when O(state) is release_slot, host_done or reserve
  type: list
  elements: str
recorded:
  description: With O(report), the number of events recorded on the controller.
  returned: when O(report) is given
  type: int
others_active:
  description: With O(state=stop_slot), hosts of this run that still hold a host slot of the cluster and did not fail.
  returned: when O(state=stop_slot)
  type: list
  elements: str
"""

import os
import socket
from typing import Any, Dict, Optional

from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.cluster_slots import ClusterSlots, out_for_other_runs
from ansible_collections.virtfleet.cluster.plugins.module_utils.maintenance_state import ClusterState, default_holder
from ansible_collections.virtfleet.cluster.plugins.module_utils.reservations import ClusterReservations
from ansible_collections.virtfleet.cluster.plugins.module_utils.run_events import REPORT_OPTIONS
from ansible_collections.virtfleet.cluster.plugins.module_utils.state_store import (
    IDENTITY_FILE, SharedStateError, StateError, state_dir)

STATES = ["read", "init", "verify_shared", "lock", "unlock", "open_window", "record_origins", "mark", "unmark",
          "host_done", "close_window", "take_slot", "release_slot", "stop_slot", "reserve", "unreserve"]
# States that write new state: only into a directory that proved it is the cluster's shared one.
NEEDS_IDENTITY = ("lock", "open_window", "record_origins", "mark", "host_done", "close_window", "take_slot", "reserve")

ARGUMENT_SPEC: Dict[str, Any] = dict(
    path=dict(type="path", required=True),
    cluster=dict(type="str", required=True),
    state=dict(type="str", required=True, choices=STATES),
    run_id=dict(type="str"),
    token=dict(type="str", no_log=False),  # an identity, not a secret: shown in messages
    identity=dict(type="str"),
    holder=dict(type="dict", default={}),
    host=dict(type="str"),
    phase=dict(type="str", default="marked", choices=["marked", "drained", "patched", "rebooted", "verified"]),
    window=dict(type="str"),
    new_window=dict(type="bool", default=False),
    guests=dict(type="dict", default={}),
    members=dict(type="list", elements="str"),
    not_needed=dict(type="list", elements="str", default=[]),
    details=dict(type="dict", default={}),
    reason=dict(type="str"),
    force=dict(type="bool", default=False),
    shared=dict(type="bool", default=False),
    pool=dict(type="str", choices=["host", "move"]),
    limit=dict(type="int", default=1),
    rounds=dict(type="list", elements="list", default=[]),
    unreachable=dict(type="list", elements="str", default=[]),
    moves=dict(type="list", elements="dict", default=[], options=dict(
        guest=dict(type="str", required=True),
        destination=dict(type="str", required=True),
        memory_mib=dict(type="int", required=True),
        vcpus=dict(type="int", required=True),
    )),
    wait=dict(type="float", default=0),
    # Taken out by the action plugin (recorded on the controller): the module never sees it.
    report=dict(type="dict", options=REPORT_OPTIONS),
)


def safe_snapshot(state: ClusterState) -> Dict[str, Any]:
    """The state for a result; what cannot be read is said, not raised (a failure path must not
    end in a traceback)."""
    try:
        return state.snapshot()
    except (StateError, OSError) as exc:
        return {"cluster": state.cluster, "path": state.path, "unreadable": str(exc)}


def safe_identity(state: ClusterState) -> Optional[Dict[str, Any]]:
    try:
        return state.identity()
    except (StateError, OSError):
        return None


def require_identity(state: ClusterState, expected: Optional[str]) -> None:
    if state.identity() is None:
        state.ensure_storage()
        raise SharedStateError(
            "the state directory %s of cluster %s has no identity file (cluster-id.json): it was never initialised, or "
            "this host (%s) does not see the cluster's shared storage at %s. Nothing is written into a directory that "
            "has not proven it is the shared one. The rolling_maintenance role initialises it at preflight and checks "
            "it from every host; by hand: maintenance_state state=init on a host where the storage is mounted, then "
            "state=verify_shared on every other host." % (state.path, state.cluster, socket.gethostname(), state.storage_path))
    state.verify_shared(expected)


def act(state: ClusterState, params: Dict[str, Any], requested: str, run_id: Optional[str],
        holder: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Does the change ``requested`` (the module's ``state``) and returns its result fields."""
    result: Dict[str, Any] = {"changed": False}
    token = params["token"]
    if requested in NEEDS_IDENTITY or (params["identity"] and requested not in ("init", "verify_shared")):
        require_identity(state, params["identity"])
    if requested == "read":
        pass  # the state is read back for every answer
    elif requested == "init":
        result["changed"], result["identity"] = state.init_identity()
    elif requested == "verify_shared":
        result["identity"] = state.verify_shared(params["identity"])
        refusal = state.held_by_another(holder, shared=params["shared"]) if holder and token else None
        if refusal:  # read only: whether this run could take the lock now
            result.update(lock_held=True, holder=refusal.result["holder"], lock_message=refusal.message)
        if token:
            # From the state read back (read once here): the hosts other runs have out.
            result["state"] = read = state.snapshot()
            result["out_elsewhere"] = out_for_other_runs(read["marks"], read["slots"],
                                                         state.live_tokens(read["lock"], read["runs"]), token)
    elif requested == "lock":
        changed, lock, broken = state.acquire_lock(holder, force=params["force"], shared=params["shared"])
        result["changed"] = changed
        result["token"] = lock["holder"]["token"]
        if params["shared"]:
            result["shared_with"] = sorted((r.get("holder") or {}).get("run_id") or "?"
                                           for t, r in state.runs().items() if t != result["token"])
        if broken:
            result["broken_lock"] = broken
    elif requested == "unlock":
        result["changed"] = state.release_lock(run_id, force=params["force"], token=token)
    elif requested == "open_window":
        result["changed"], result["window"] = state.open_window(run_id, name=params["window"],
                                                                new=params["new_window"], token=token)
        if token:
            # Slots and reservations of runs that hold the lock no more (stopped) are void.
            live = state.live_tokens()
            if ClusterSlots(state).clear_others(live) or ClusterReservations(state).clear_others(live):
                result["changed"] = True
    elif requested == "record_origins":
        result["changed"], result["window"] = state.record_guest_origins(run_id, params["guests"], token=token)
    elif requested == "mark":
        result["changed"], result["mark"] = state.mark(
            run_id, params["host"], holder, phase=params["phase"],
            window_name=params["window"], reason=params["reason"], details=params["details"], token=token)
    elif requested == "unmark":
        result["changed"] = state.unmark(run_id, params["host"], window_name=params["window"],
                                         force=params["force"], token=token)
    elif requested == "host_done":
        result["changed"], result["window"] = state.host_done(run_id, params["host"], params["details"], token=token)
        # Back in service: unmarked first, then its slots given back (only then may the next host start).
        unmarked = state.unmark(run_id, params["host"], window_name=params["window"], token=token)
        result["released"] = ClusterSlots(state).release(params["host"], token)
        unreserved = ClusterReservations(state).remove(params["host"], token)
        result["changed"] = result["changed"] or unmarked or bool(result["released"]) or unreserved
    elif requested == "close_window":
        result["changed"], result["window"] = state.close_window(run_id, token=token, members=params["members"],
                                                                 not_needed=params["not_needed"])
    elif requested == "reserve":
        # Only the run holding the cluster's lock drains in it. Reserved, the plan needs the turn no more.
        state.require_lock(run_id, token)
        ClusterReservations(state).reserve(params["host"], params["moves"], dict(holder or {}, token=token))
        result["released"] = ClusterSlots(state).release(params["host"], token, pools=("move",))
        result["changed"] = True
    elif requested == "unreserve":
        result["changed"] = ClusterReservations(state).remove(params["host"], token)
    else:
        result.update(act_on_slots(state, params, requested, run_id, holder))
    return result


def act_on_slots(state: ClusterState, params: Dict[str, Any], requested: str, run_id: Optional[str],
                 holder: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    slots = ClusterSlots(state)
    token = params["token"]
    if requested == "take_slot":
        if not params["pool"]:
            raise StateError("pool is required for state take_slot")
        # Only the run holding the cluster's lock hands out its slots.
        return slots.take(params["host"], params["pool"], params["limit"], dict(holder or {}, token=token),
                          rounds=params["rounds"], unreachable=params["unreachable"], wait=params["wait"],
                          before_claim=lambda: state.require_lock(run_id, token))
    if requested == "release_slot":
        released = slots.release(params["host"], token, pools=[params["pool"]] if params["pool"] else ("host", "move"))
        return {"changed": bool(released), "released": released}
    if requested != "stop_slot":
        raise StateError("unknown state %r" % requested)
    result = slots.stop(params["host"], params["reason"] or "failed", token)
    ClusterReservations(state).remove(params["host"], token)
    return dict(result, changed=True)


def failure_fields(state: ClusterState, exc: StateError, requested: str) -> Dict[str, Any]:
    """What a refused change returns besides what its error carries (the lock's holder, ``shared``).
    A refused state change writes nothing; with state=lock, no lock was taken."""
    fields: Dict[str, Any] = {"lock_not_taken": requested == "lock", "state": safe_snapshot(state)}
    if isinstance(exc, SharedStateError):
        fields.update(storage_exists=os.path.isdir(state.storage_path),
                      identity_file_exists=os.path.exists(os.path.join(state.path, IDENTITY_FILE)),
                      identity=safe_identity(state))
    return fields


def work(params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    state = ClusterState(state_dir(params["path"]), params["cluster"], check_mode=check_mode)
    requested = params["state"]
    run_id = params["run_id"]
    if params["report"]:
        raise StateError("report is recorded on the controller by the maintenance_state action plugin, which was not used "
                         "here: record the events with virtfleet.cluster.maintenance_report instead")
    if requested not in ("read", "init", "verify_shared") and not run_id:
        raise StateError("run_id is required for state %s" % requested)
    if requested in ("mark", "unmark", "host_done", "take_slot", "release_slot", "stop_slot", "reserve",
                     "unreserve") and not params["host"]:
        raise StateError("host is required for state %s" % requested)
    extra = dict(params["holder"] or {})
    if params["token"]:
        extra["token"] = params["token"]
    holder = default_holder(run_id, extra) if run_id else None
    try:
        result = act(state, params, requested, run_id, holder)
        if "state" not in result:  # verify_shared read it already
            result["state"] = state.snapshot()
    except StateError as exc:
        exc.result.update(failure_fields(state, exc, requested))
        raise
    except OSError as exc:
        raise StateError("cannot use the state directory %s of cluster %s on %s: %s. The login user of every host "
                         "of the cluster must be able to read and write it (see docs/troubleshooting.md, \"The shared "
                         "maintenance state\")." % (state.path, state.cluster, socket.gethostname(), exc)) from exc
    return result


def main() -> None:
    run_module(ARGUMENT_SPEC, work, needs_libvirt=False)


if __name__ == "__main__":
    main()
