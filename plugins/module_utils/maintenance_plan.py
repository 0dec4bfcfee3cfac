# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan of a rolling maintenance run: which hosts, in which waves, and the capacity proof.

Glue between the shared state (``maintenance_state``: marks, hosts done in the window), the
wave planner (``waves.plan_waves``) and the placement planner (``placement.plan_drain``).
Nothing here decides placement or wave shapes itself.

Which hosts are maintained, in this order of precedence:

1. a host marked in maintenance by somebody else (an operator, another tool, another window)
   is left as it was found: not maintained, and never a destination;
2. a host already done in this maintenance window is skipped (a re-run resumes);
3. a host this window's earlier run left marked is finished, whatever it has to patch;
4. a host with nothing to patch and no reboot pending is skipped unless forced;
5. every other host is maintained.

Hosts already out of service (marked, not maintained by this run) count against the
cluster's ``max_unavailable``: the waves take that many fewer hosts at once, and a cluster
whose limit is used up by them is not maintained at all (its hosts are skipped, saying why).

The capacity proof follows the waves: in wave k, every host of the wave is out of service at
once (so with ``max_unavailable`` 2 two hosts drain while neither can take the other's guests),
hosts of earlier waves are back in service and guests are where earlier drains put them.

Pure Python, no Ansible import.
"""
from __future__ import annotations

import dataclasses

from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import (
    PlacementPolicy, capacity_from_dicts, plan_drain)
from ansible_collections.virtfleet.cluster.plugins.module_utils.waves import (
    plan_waves, wave_violations)


def mark_owner_text(mark):
    owner = (mark or {}).get("owner") or {}
    text = "run %s" % owner.get("run_id", "?")
    if owner.get("user") or owner.get("controller"):
        text += " (%s@%s)" % (owner.get("user", "?"), owner.get("controller", "?"))
    return text


def classify_hosts(hosts, run_id, window_name, force=False):
    """Splits hosts (dicts, see plan_maintenance) into maintained and skipped.

    Returns (maintained names, skipped {name: reason}, resumed {name: phase},
    foreign_marked {name: reason}).
    """
    maintained, skipped, resumed, foreign = [], {}, {}, {}
    for host in hosts:
        name = host["name"]
        mark = host.get("mark")
        window = host.get("window", window_name)  # windows are per cluster
        ours = bool(mark) and ((mark.get("owner") or {}).get("run_id") == run_id
                               or (bool(window) and mark.get("window") == window))
        if mark and not ours:
            reason = "marked in maintenance by %s: %s; left as found" % (
                mark_owner_text(mark), mark.get("reason") or "no reason given")
            skipped[name] = reason
            foreign[name] = reason
            continue
        if host.get("done"):
            skipped[name] = "already done in maintenance window %s" % (window or "?")
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
    return maintained, skipped, resumed, foreign


def prove_capacity_by_wave(waves, capacity, foreign_marked, policy):
    """Simulates the drains wave by wave (see module docstring). Returns a JSON-able dict."""
    result = {"ok": True, "problems": [], "steps": [], "unchecked_clusters": []}
    state = {}
    for cluster, data in (capacity or {}).items():
        hosts, guests = capacity_from_dicts(data.get("hosts") or [], data.get("guests") or [])
        state[cluster] = (hosts, {g.name: g for g in guests})
    for wave in waves:
        for cluster, members in sorted(wave.by_cluster.items()):
            if cluster not in state:
                if cluster not in result["unchecked_clusters"]:
                    result["unchecked_clusters"].append(cluster)
                    result["ok"] = False
                    result["problems"].append("cluster %s: no capacity facts, cannot prove that "
                                              "the cluster absorbs its hosts' guests" % cluster)
                continue
            hosts, guests = state[cluster]
            out_of_service = set(members) | set(foreign_marked)
            known = {h.name for h in hosts}
            for member in members:
                if member not in known:
                    result["ok"] = False
                    result["problems"].append("cluster %s: no capacity facts for host %s"
                                              % (cluster, member))
            view = [dataclasses.replace(h, in_maintenance=h.in_maintenance or h.name in out_of_service)
                    for h in hosts]
            for member in members:
                if member not in known:
                    continue
                plan = plan_drain(member, view, list(guests.values()), policy)
                for move in plan.moves:
                    guests[move.guest].host = move.destination
                result["steps"].append({"wave": wave.index, "cluster": cluster, "host": member,
                                        "plan": plan.to_dict()})
                for problem in plan.problems():
                    result["ok"] = False
                    result["problems"].append("wave %d, draining %s: %s" % (wave.index, member, problem))
    return result


def capacity_from_facts(cluster_members, facts, marked=(), unmovable_guests=(),
                        anti_affinity_groups=None, stop_allowed_guests=()):
    """Capacity input of the proof from ``hypervisor_facts`` results.

    cluster_members: cluster -> host names; facts: host -> the module's ``hypervisor`` dict
    (a host without facts is left out: it cannot be a destination); marked: hosts in
    maintenance (never destinations). Only running guests count. A guest that cannot move is
    a failure of the proof unless stop_allowed_guests allows stopping it.
    """
    group_of = {}
    for group, members in sorted((anti_affinity_groups or {}).items()):
        for guest in members:
            group_of.setdefault(guest, group)
    capacity = {}
    for cluster, members in cluster_members.items():
        hosts, guests = [], []
        for name in members:
            host_facts = facts.get(name)
            if not host_facts:
                continue
            hosts.append({"name": name, "memory_total_mib": int(host_facts["memory_total_mib"]),
                          "cpus": int(host_facts["cpus"]),
                          "memory_free_mib": host_facts.get("memory_free_mib"),
                          "in_maintenance": name in marked, "cluster": cluster})
            for guest in host_facts.get("guests") or []:
                if not guest.get("active"):
                    continue
                movable = bool(guest.get("movable", True)) and guest["name"] not in unmovable_guests
                reason = None
                if not movable:
                    reason = "; ".join(guest.get("migration_blockers") or []) or "declared unmovable"
                guests.append({"name": guest["name"], "memory_mib": int(guest.get("memory_mib") or 0),
                               "vcpus": int(guest.get("vcpus") or 1), "host": name,
                               "anti_affinity_group": group_of.get(guest["name"]),
                               "movable": movable, "unmovable_reason": reason,
                               "unmovable_policy": ("shutdown" if guest["name"] in stop_allowed_guests
                                                    else "fail")})
        capacity[cluster] = {"hosts": hosts, "guests": guests}
    return capacity


def plan_maintenance(hosts, run_id, window_name=None, force=False, order="given",
                     capacity=None, policy=None, members=None, marked=None):
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
    """
    if isinstance(policy, dict) or policy is None:
        policy = PlacementPolicy(**(policy or {}))
    cluster_of = {h["name"]: h["cluster"] for h in hosts}
    limits = {}
    for host in hosts:
        limit = int(host.get("max_unavailable") or 1)
        if limits.setdefault(host["cluster"], limit) != limit:
            raise ValueError("hosts of cluster %s disagree on max_unavailable (%s and %s)"
                             % (host["cluster"], limits[host["cluster"]], limit))
    maintained, skipped, resumed, foreign = classify_hosts(hosts, run_id, window_name, force)
    configured = dict(limits)
    # Hosts already out of service (marked by somebody else, or marked and not maintained by
    # this run) count against max_unavailable: with a limit of 1 and one host under repair, no
    # other host of that cluster may go down now.
    out_of_service = {}
    for cluster, names in (members or {}).items():
        out_of_service[cluster] = sorted(h for h in names if h in set(marked or ()) and h not in maintained)
    for name in foreign:
        cluster = cluster_of[name]
        if name not in out_of_service.setdefault(cluster, []):
            out_of_service[cluster].append(name)
    for cluster, down in sorted(out_of_service.items()):
        if cluster not in limits or not down:
            continue
        left = limits[cluster] - len(down)
        if left >= 1:
            limits[cluster] = left
            continue
        for host in hosts:
            if host["cluster"] == cluster and host["name"] in maintained:
                maintained.remove(host["name"])
                resumed.pop(host["name"], None)
                skipped[host["name"]] = (
                    "cluster %s already has %d host(s) out of service (%s) and max_unavailable is %d: "
                    "no other host may go down now" % (cluster, len(down), ", ".join(sorted(down)),
                                                       configured[cluster]))
    guest_counts = {h["name"]: int(h.get("guests") or 0) for h in hosts}
    # Hosts left marked by this window go first: they are out of service already.
    ordered = sorted(hosts, key=lambda h: 0 if h["name"] in resumed else 1)
    waves = plan_waves([(h["name"], h["cluster"]) for h in ordered], limits, order=order,
                       guest_counts=guest_counts, skip=set(skipped))
    violations = wave_violations(waves, cluster_of, limits)
    if violations:  # the wave planner's own invariant: never more than the limit at once
        raise ValueError("; ".join(violations))
    proof = prove_capacity_by_wave(waves, capacity, foreign, policy) if capacity is not None else None
    clusters = {}
    for host in hosts:
        entry = clusters.setdefault(host["cluster"], {
            "max_unavailable": configured[host["cluster"]],
            "max_unavailable_now": max(configured[host["cluster"]]
                                       - len(out_of_service.get(host["cluster"]) or []), 0),
            "out_of_service": sorted(out_of_service.get(host["cluster"]) or []),
            "hosts": [], "maintained": []})
        entry["hosts"].append(host["name"])
        if host["name"] in maintained:
            entry["maintained"].append(host["name"])
    return {
        "waves": [w.to_dict() for w in waves],
        "wave_hosts": [w.hosts for w in waves],
        "maintained": maintained,
        "skipped": skipped,
        "resumed": resumed,
        "foreign_marked": sorted(foreign),
        "clusters": clusters,
        "capacity": proof,
        "ok": proof is None or proof["ok"],
    }
