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

from ansible_collections.virtfleet.cluster.plugins.module_utils.capacity import cluster_from_facts
from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import (
    PlacementPolicy, capacity_from_dicts, prove_rolling_capacity)
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
    """Simulates the drains wave by wave (see module docstring). Returns a JSON-able dict.

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
        # Hosts marked by somebody else stay out of service through every wave.
        hosts = [dataclasses.replace(h, in_maintenance=h.in_maintenance or h.name in set(foreign_marked))
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
        capacity[cluster] = {"hosts": [dataclasses.asdict(h) for h in hosts],
                             "guests": [dataclasses.asdict(g) for g in guests]}
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
