# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan of a rolling maintenance run: which hosts, in which waves, and the capacity proof.

Glue between the shared state (``maintenance_state``: marks, hosts done in the window), the
wave planner (``waves.plan_waves``) and the placement planner (``placement.prove_rolling_capacity``),
with capacity from the one facts conversion (``capacity.cluster_from_facts``, the drain's too).
Nothing here decides placement or wave shapes itself.

Which hosts are maintained, in this order of precedence:

1. a host marked in maintenance by somebody else (an operator, another tool, another window)
   is left as it was found: not maintained, and never a destination;
2. a host already done in this maintenance window is skipped (a re-run resumes); if it is
   still marked by this window (a run stopped between recording it done and unmarking it),
   its mark is stale: returned in ``stale_marks`` for the role to remove at preflight, and the
   host is in service (counted as such, and a destination in the proof);
3. a host that could not be asked at preflight (its libvirt or its SSH did not answer) is
   skipped;
4. a host this window's earlier run left marked is finished, whatever it has to patch, and
   before every other host of its cluster whatever the order;
5. a host with nothing to patch and no reboot pending is skipped unless forced;
6. every other host is maintained.

Hosts already out of service count against the cluster's ``max_unavailable``: hosts marked
and not maintained by this run (by somebody else, or left marked by this window outside the
run) and hosts whose libvirt or SSH did not answer at preflight, in or outside the run's hosts.
The waves take that many fewer hosts at once, and a cluster whose limit is used up by them is
not maintained at all (its hosts are skipped, saying which hosts are out of service and why).
None of them is a destination in the capacity proof. A host marked by another run that shares
the cluster's lock (``owner_live`` in its mark) is out only until that run brings it back: it
takes none of this run's room (the shared slots keep the cluster under ``max_unavailable``) and
is no destination in the proof (``out_for_now``).

The capacity proof follows the waves: in wave k, every host of the wave is out of service at
once (so with ``max_unavailable`` 2 two hosts drain while neither can take the other's guests),
hosts of earlier waves are back in service and guests are where earlier drains put them.

Pure Python, no Ansible import.
"""
from __future__ import annotations

import dataclasses
import functools
import gc

from ansible_collections.virtfleet.cluster.plugins.module_utils.capacity import cluster_from_facts
from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import (
    PlacementPolicy, capacity_from_dicts, fields_of, prove_rolling_capacity)
from ansible_collections.virtfleet.cluster.plugins.module_utils.waves import (
    plan_waves, wave_violations)


def mark_owner_text(mark):
    owner = (mark or {}).get("owner") or {}
    text = "run %s" % owner.get("run_id", "?")
    if owner.get("user") or owner.get("controller"):
        text += " (%s@%s)" % (owner.get("user", "?"), owner.get("controller", "?"))
    return text


def mark_is_ours(mark, run_id, window):
    """True when mark was made by this run or by an earlier run of this maintenance window, not
    by another run that still holds the cluster's lock (``owner_live``: it shares the cluster
    and the window, and goes on with its host; at preflight this run has no mark yet)."""
    return bool(mark) and not mark.get("owner_live") and ((mark.get("owner") or {}).get("run_id") == run_id
                                                          or (bool(window) and mark.get("window") == window))


def classify_hosts(hosts, run_id, window_name, force=False, unreachable=None):
    """Splits hosts (dicts, see plan_maintenance) into maintained and skipped.

    unreachable: host -> why it could not be asked at preflight (libvirt or SSH).
    Returns (maintained names, skipped {name: reason}, resumed {name: phase},
    foreign_marked {name: reason}, stale_marks [names]).
    """
    maintained, skipped, resumed, foreign, stale = [], {}, {}, {}, []
    unreachable = unreachable or {}
    for host in hosts:
        name = host["name"]
        mark = host.get("mark")
        window = host.get("window", window_name)  # windows are per cluster
        ours = mark_is_ours(mark, run_id, window)
        if mark and not ours:
            reason = "marked in maintenance by %s: %s; left as found" % (
                mark_owner_text(mark), mark.get("reason") or "no reason given")
            skipped[name] = reason
            foreign[name] = reason
            continue
        if host.get("done"):
            skipped[name] = "already done in maintenance window %s" % (window or "?")
            if ours:
                stale.append(name)
                skipped[name] += ("; still marked (phase %s): the run that maintained it stopped between recording it "
                                  "done and unmarking it. This run unmarks it at preflight" % (mark.get("phase") or "marked"))
                skipped[name] += ("; it could not be asked at preflight (%s) and counts as out of service" % unreachable[name]
                                  if name in unreachable else "; it is in service")
            continue
        if name in unreachable:
            skipped[name] = "could not be asked at preflight: %s; it counts as out of service" % unreachable[name]
            continue
        if ours:
            maintained.append(name)
            resumed[name] = mark.get("phase") or "marked"
            continue
        needs_patch = host.get("needs_patch")
        if not force and needs_patch is False and not host.get("reboot_required"):
            skipped[name] = "nothing to patch and no reboot required"
            continue
        maintained.append(name)
    return maintained, skipped, resumed, foreign, stale


def prove_capacity_by_wave(waves, capacity, foreign_marked, policy, in_service=()):
    """Simulates the drains wave by wave (see module docstring). Returns a JSON-able dict.

    foreign_marked: hosts out of service through every wave (marked by somebody else, not
    answering at preflight): never destinations. in_service: hosts the capacity may show in
    maintenance whose stale mark the run removes at preflight: destinations.

    Each cluster is one continuous simulation (``placement.prove_rolling_capacity``): a wave
    sees the guests where earlier waves put them and every host's free memory as those moves
    left it, as the drain of that wave will read it from the hosts; rebuilding each wave
    from the preflight figures would count a host emptied earlier as still full, and a host
    filled earlier as still free.
    """
    result = {"ok": True, "problems": [], "steps": [], "unchecked_clusters": []}
    state = {}
    for cluster, data in (capacity or {}).items():
        state[cluster] = capacity_from_dicts(data.get("hosts") or [], data.get("guests") or [])
    sequences = {}  # cluster -> [(wave index, [members with facts])]
    for wave in waves:
        for cluster, members in sorted(wave.by_cluster.items()):
            if cluster not in state:
                if cluster not in result["unchecked_clusters"]:
                    result["unchecked_clusters"].append(cluster)
                    result["ok"] = False
                    result["problems"].append("cluster %s: no capacity facts, cannot prove that "
                                              "the cluster absorbs its hosts' guests" % cluster)
                continue
            known = {h.name for h in state[cluster][0]}
            for member in members:
                if member not in known:
                    result["ok"] = False
                    result["problems"].append("cluster %s: no capacity facts for host %s"
                                              % (cluster, member))
            checked = [m for m in members if m in known]
            if checked:
                sequences.setdefault(cluster, []).append((wave.index, checked))
    steps_by_wave = {}
    for cluster, sequence in sequences.items():
        hosts, guests = state[cluster]
        # Hosts out of service (marked by somebody else, not answering) stay so through every
        # wave; hosts whose stale mark the run removes are back in service.
        out, back = set(foreign_marked), set(in_service) - set(foreign_marked)
        hosts = [dataclasses.replace(h, in_maintenance=(h.in_maintenance and h.name not in back) or h.name in out)
                 for h in hosts]
        proof = prove_rolling_capacity([members for _index, members in sequence], hosts, guests, policy)
        for step in proof.steps:
            wave_index = sequence[step.step - 1][0]
            steps_by_wave.setdefault((wave_index, cluster), []).append(step)
    for (wave_index, cluster), steps in sorted(steps_by_wave.items()):
        for step in steps:
            result["steps"].append({"wave": wave_index, "cluster": cluster, "host": step.host,
                                    "plan": step.plan.to_dict()})
            for problem in step.plan.problems():
                result["ok"] = False
                result["problems"].append("wave %d, draining %s: %s" % (wave_index, step.host, problem))
    return result


def without_cyclic_gc(function):
    """Runs ``function`` with Python's cyclic garbage collector paused.

    At estate scale the planner holds hundreds of thousands of small records (300,000 guests);
    each of the collector's full passes rescans all of them, which made the preflight grow
    faster than the estate (bench/plan_scale.py: 14x the time for 10x the clusters). The
    records hold no reference cycles: reference counting frees them all the same.
    """
    @functools.wraps(function)
    def paused(*args, **kwargs):
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()
    return paused


@without_cyclic_gc
def capacity_from_facts(cluster_members, facts, marked=(), unmovable_guests=(),
                        anti_affinity_groups=None, stop_allowed_guests=(), copy_storage=False):
    """Capacity input of the proof from ``hypervisor_facts`` results, through the collection's
    one conversion (``capacity.cluster_from_facts``, which the drain uses too).

    cluster_members: cluster -> host names; facts: host -> the module's ``hypervisor`` dict
    (a host without facts is left out: it cannot be a destination); marked: hosts in
    maintenance (never destinations). Only running guests count, each reserving the larger of
    its current and maximum memory. A guest that cannot move (declared unmovable, a migration
    blocker, local disks without copy_storage) is a failure of the proof unless
    stop_allowed_guests allows stopping it.
    """
    capacity = {}
    for cluster, members in cluster_members.items():
        hosts, guests = cluster_from_facts(facts, members, marked, unmovable_guests, anti_affinity_groups,
                                           copy_storage, list(stop_allowed_guests or ()), cluster)
        capacity[cluster] = {"hosts": [fields_of(h) for h in hosts], "guests": [fields_of(g) for g in guests]}
    return capacity


def _unreachable_hosts(unreachable):
    """host -> reason, from a dict (host -> reason) or a list of names or {name, reason} dicts."""
    if not unreachable:
        return {}
    if isinstance(unreachable, dict):
        entries = list(unreachable.items())
    elif isinstance(unreachable, (list, tuple, set)):
        entries = [(e.get("name"), e.get("reason")) if isinstance(e, dict) else (e, None) for e in unreachable]
    else:
        raise ValueError("unreachable must be a dict of host name to reason, not %r" % (unreachable,))
    out = {}
    for name, reason in entries:
        if not isinstance(name, str) or not name:
            raise ValueError("unreachable: a host name must be a non-empty string, not %r" % (name,))
        out[name] = str(reason) if reason not in (None, "") else "did not answer at preflight"
    return out


def _cluster_states(states):
    """cluster -> (marks {host: mark}, open window or None) from maintenance_state read results."""
    out = {}
    for cluster, state in (states or {}).items():
        if state is None:
            continue
        if not isinstance(state, dict):
            raise ValueError("states: the state of cluster %s must be a dict (maintenance_state's state: marks, window), "
                             "not %r" % (cluster, state))
        marks = state.get("marks") or {}
        window = state.get("window") or None
        if not isinstance(marks, dict) or not all(isinstance(m, dict) for m in marks.values()):
            raise ValueError("states: the marks of cluster %s must be a dict of host name to mark, not %r" % (cluster, marks))
        if window is not None and (not isinstance(window, dict) or not isinstance(window.get("hosts_done") or {}, dict)):
            raise ValueError("states: the window of cluster %s must be a dict with hosts_done, not %r" % (cluster, window))
        out[cluster] = (marks, None if (window is None or window.get("closed")) else window)
    return out


def _mark_text(mark, ours):
    if not mark:
        return "marked in maintenance"
    if ours:
        return "left marked by this maintenance window (%s, phase %s) and not finished by this run" % (
            mark_owner_text(mark), mark.get("phase") or "marked")
    return "marked in maintenance by %s: %s" % (mark_owner_text(mark), mark.get("reason") or "no reason given")


@without_cyclic_gc
def slot_order(waves):
    """Each cluster's rounds in planned order: the hosts of the cluster in each wave, the waves
    it takes part in only. In a run each cluster walks its rounds on its own clock: a host takes
    a slot once every host of its cluster's earlier rounds is done (the capacity proof simulated
    exactly these rounds)."""
    order = {}
    for wave in waves:
        for cluster, hosts in sorted(wave.by_cluster.items()):
            if hosts:
                order.setdefault(cluster, []).append(list(hosts))
    return order


def plan_maintenance(hosts, run_id, window_name=None, force=False, order="given",
                     capacity=None, policy=None, members=None, marked=None, unreachable=None, states=None):
    """The whole plan.

    hosts: dicts ``{name, cluster, max_unavailable (default 1), needs_patch (bool or None when
    unknown), reboot_required, mark (this host's mark or None), window (name of its cluster's
    maintenance window, default window_name), done (window record or None), guests (count, for
    the guest-count orders)}`` in the operator's order.
    capacity: cluster -> ``{hosts: [HostCapacity fields], guests: [Guest fields]}`` covering
    every host of the cluster (also those not maintained: they are destinations).
    policy: a PlacementPolicy or a dict of its fields.
    members / marked: cluster -> all its host names, and every host marked in maintenance
    (any owner): marked hosts this run does not maintain reduce the cluster's max_unavailable.
    unreachable: host -> why it could not be asked at preflight (its libvirt or its SSH did not
    answer), for any host of the clusters (in ``hosts`` or ``members``): each counts against
    its cluster's max_unavailable, is not maintained and is never a destination.
    states: cluster -> its shared state as ``maintenance_state`` reads it (``marks``,
    ``window``): the marks and done hosts of members outside ``hosts``. A host recorded done
    in the open window and still marked by it is a stale mark (``stale_marks``): neither
    maintained nor counted as out of service; the caller removes the mark.
    """
    if isinstance(policy, dict) or policy is None:
        policy = PlacementPolicy(**(policy or {}))
    unreachable = _unreachable_hosts(unreachable)
    cluster_states = _cluster_states(states)
    cluster_of = {h["name"]: h["cluster"] for h in hosts}
    member_of = dict(cluster_of)
    for cluster, names in (members or {}).items():
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise ValueError("members: cluster %s must list host names, not %r" % (cluster, names))
        for name in names:
            member_of.setdefault(name, cluster)
    limits = {}
    for host in hosts:
        limit = int(host.get("max_unavailable") or 1)
        if limits.setdefault(host["cluster"], limit) != limit:
            raise ValueError("hosts of cluster %s disagree on max_unavailable (%s and %s)"
                             % (host["cluster"], limits[host["cluster"]], limit))
    maintained, skipped, resumed, foreign, stale = classify_hosts(hosts, run_id, window_name, force, unreachable)
    configured = dict(limits)
    # Every mark known: the run's hosts' own, then the clusters' states (hosts outside the run).
    marks = {h["name"]: h.get("mark") for h in hosts if h.get("mark")}
    window_of = {h["name"]: h.get("window", window_name) for h in hosts}
    marked_hosts = set(marked or ()) | set(marks)
    for cluster, (cluster_marks, window) in sorted(cluster_states.items()):
        done = (window or {}).get("hosts_done") or {}
        for name, mark in sorted(cluster_marks.items()):
            marked_hosts.add(name)
            if name in cluster_of:
                continue  # a host of the run: classify_hosts decided
            marks.setdefault(name, mark)
            member_of.setdefault(name, cluster)
            window_of.setdefault(name, (window or {}).get("name") or window_name)
            if name in done and mark_is_ours(mark, run_id, window_of[name]):
                stale.append(name)
    stale = sorted(set(stale))
    # Hosts already out of service count against max_unavailable: marked hosts this run does
    # not maintain (by somebody else, or left marked by this window outside the run; not a
    # stale mark the run removes) and hosts that did not answer at preflight. With a limit of
    # 1 and one host under repair or unreachable, no other host of that cluster may go down now.
    out_of_service = {}  # cluster -> {host: why}

    def count_down(name, why):
        cluster = member_of.get(name)
        if cluster is None:
            return  # not a host of the run's clusters
        entry = out_of_service.setdefault(cluster, {})
        entry[name] = "%s; %s" % (entry[name], why) if name in entry else why

    # A host marked by another run that shares the cluster (``owner_live``) is out only for
    # now: that run brings it back, and the slots (shared by both runs) keep the cluster under
    # max_unavailable at every moment. It takes no room for the whole run, but it is no
    # destination in the proof.
    out_for_now = set()
    for name in sorted(marked_hosts):
        if name not in maintained and name not in stale:
            mark = marks.get(name)
            if (mark or {}).get("owner_live"):
                out_for_now.add(name)
                continue
            count_down(name, _mark_text(mark, mark_is_ours(mark, run_id, window_of.get(name, window_name))))
    for name, why in sorted(unreachable.items()):
        if name in out_for_now:
            continue  # the other run has it out (rebooting, likely): back when that run is through with it
        count_down(name, why)
    for cluster, down in sorted(out_of_service.items()):
        if cluster not in limits or not down:
            continue
        left = limits[cluster] - len(down)
        if left >= 1:
            limits[cluster] = left
            continue
        why_waiting = ("cluster %s already has %d host(s) out of service (%s) and max_unavailable is %d: "
                       "no other host may go down now (%s)" % (
                           cluster, len(down), ", ".join(sorted(down)), configured[cluster],
                           "; ".join("%s: %s" % (other, why) for other, why in sorted(down.items()))))
        for name in [h["name"] for h in hosts if h["cluster"] == cluster and h["name"] in maintained]:
            maintained.remove(name)
            skipped[name] = why_waiting
            if resumed.pop(name, None) is not None:
                # Left marked by this window and not finished now: out of service as well.
                count_down(name, _mark_text(marks.get(name), True))
    guest_counts = {h["name"]: int(h.get("guests") or 0) for h in hosts}
    # Hosts left marked by this window go first whatever the order: they are out of service already.
    waves = plan_waves([(h["name"], h["cluster"]) for h in hosts], limits, order=order,
                       guest_counts=guest_counts, skip=set(skipped), first=set(resumed))
    violations = wave_violations(waves, cluster_of, limits)
    if violations:  # the wave planner's own invariant: never more than the limit at once
        raise ValueError("; ".join(violations))
    not_destinations = sorted(set(foreign) | out_for_now | {n for names in out_of_service.values() for n in names})
    proof = (prove_capacity_by_wave(waves, capacity, not_destinations, policy, in_service=stale)
             if capacity is not None else None)
    clusters = {}
    maintained_now = set(maintained)  # a list lookup per host was quadratic at estate scale
    for host in hosts:
        cluster = host["cluster"]
        down = out_of_service.get(cluster) or {}
        entry = clusters.setdefault(cluster, {
            "max_unavailable": configured[cluster],
            "max_unavailable_now": max(configured[cluster] - len(down), 0),
            "out_of_service": sorted(down),
            "out_of_service_reasons": dict(sorted(down.items())),
            "stale_marks": [n for n in stale if member_of.get(n) == cluster],
            "out_for_now": sorted(n for n in out_for_now if member_of.get(n) == cluster),
            "hosts": [], "maintained": []})
        entry["hosts"].append(host["name"])
        if host["name"] in maintained_now:
            entry["maintained"].append(host["name"])
    return {
        "waves": [w.to_dict() for w in waves],
        "wave_hosts": [w.hosts for w in waves],
        "slot_order": slot_order(waves),
        "maintained": maintained,
        "skipped": skipped,
        "resumed": resumed,
        "foreign_marked": sorted(foreign),
        "out_of_service": {n: why for reasons in out_of_service.values() for n, why in sorted(reasons.items())},
        # Not "unreachable": Ansible takes a result carrying a true "unreachable" for an unreachable host.
        "not_answering": {n: why for n, why in sorted(unreachable.items()) if n in member_of},
        "stale_marks": stale,
        "clusters": clusters,
        "capacity": proof,
        "ok": proof is None or proof["ok"],
    }
