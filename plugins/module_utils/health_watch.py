# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What health_watch.yml does with each host after a round of health checks (module
``health_watch_plan``).

* A host marked in maintenance (by anybody) is left alone.
* A host that crossed a threshold is emptied - marked, then live-drained - while its cluster
  has room under ``max_unavailable``; the others wait and are reported as waiting. Hosts
  already out of service count against that room: marked hosts and hosts that did not answer
  (they may be down). The worst signal goes first (``host_health.SIGNALS`` order), then name.
* A cluster locked by a rolling maintenance run (``locked_by``) drains nothing: that run's
  drains would compete for the same free memory; its failing hosts wait, naming the run.
* Hosts that crossed a threshold, marked hosts and hosts that did not answer are never
  destinations of a drain: guests leaving a failing host must not land on another one.

Pure Python (no Ansible import).
"""
from __future__ import annotations

from typing import Any, Dict, List

from ansible_collections.virtfleet.cluster.plugins.module_utils.host_health import SIGNALS

Record = Dict[str, Any]


def _severity(host: Record) -> int:
    worst = (host.get("health") or {}).get("worst")
    return SIGNALS.index(worst) if worst in SIGNALS else len(SIGNALS)


def _why(host: Record) -> str:
    crossed = (host.get("health") or {}).get("crossed") or []
    return "; ".join(str(c.get("why")) for c in crossed) or "threshold crossed"


def plan_health_actions(hosts: List[Record]) -> Record:
    """hosts: [{name, cluster, max_unavailable (default 1), reachable, health (host_health's
    result, or None when it did not run), marked, mark_reason, locked_by (who holds the
    cluster's lock, when it is held and the watch does not override it)}]. Returns {hosts: name ->
    {action, cluster, why, signal}, drain, waiting, clusters: name -> {...}, msg}.

    Actions: drain, waiting, already_marked, ok (no threshold crossed - which signals were not checked is in the host's health result), unreachable.
    """
    decisions: Dict[str, Record] = {}
    clusters: Dict[str, Record] = {}
    for host in sorted(hosts, key=lambda h: h["name"]):
        cluster = clusters.setdefault(host["cluster"], {
            "max_unavailable": int(host.get("max_unavailable") or 1), "out": {}, "drain": [], "waiting": [],
            "failing": [], "locked_by": None})
        cluster["locked_by"] = cluster["locked_by"] or host.get("locked_by")
        health = host.get("health") or {}
        if host.get("marked"):
            cluster["out"][host["name"]] = "marked in maintenance (%s)" % (host.get("mark_reason") or "no reason given")
            decisions[host["name"]] = {"action": "already_marked", "why": cluster["out"][host["name"]]}
        elif not host.get("reachable", True) or not health:
            cluster["out"][host["name"]] = "did not answer the health check"
            decisions[host["name"]] = {"action": "unreachable", "why": cluster["out"][host["name"]]}
        elif health.get("failing"):
            cluster["failing"].append(host)
        else:
            decisions[host["name"]] = {"action": "ok", "why": "no threshold crossed"}
    for name, cluster in sorted(clusters.items()):
        room = cluster["max_unavailable"] - len(cluster["out"])
        for host in sorted(cluster.pop("failing"), key=lambda h: (_severity(h), h["name"])):
            signal = (host.get("health") or {}).get("worst")
            if cluster["locked_by"]:
                cluster["waiting"].append(host["name"])
                decisions[host["name"]] = {"action": "waiting", "signal": signal,
                                           "why": "%s; waits: cluster %s is locked by %s"
                                                  % (_why(host), name, cluster["locked_by"])}
            elif room > 0:
                room -= 1
                cluster["drain"].append(host["name"])
                decisions[host["name"]] = {"action": "drain", "why": _why(host), "signal": signal}
            else:
                cluster["waiting"].append(host["name"])
                decisions[host["name"]] = {
                    "action": "waiting", "signal": signal,
                    "why": "%s; waits: cluster %s already has %d host(s) out of max_unavailable %d (%s)"
                           % (_why(host), name, len(cluster["out"]) + len(cluster["drain"]), cluster["max_unavailable"],
                              ", ".join(sorted(cluster["drain"] + list(cluster["out"]))))}
        cluster["not_destinations"] = sorted(set(cluster["out"]) | set(cluster["drain"]) | set(cluster["waiting"]))
    for host in hosts:
        decisions[host["name"]]["cluster"] = host["cluster"]
    drain = [n for _c, cl in sorted(clusters.items()) for n in cl["drain"]]
    waiting = [n for _c, cl in sorted(clusters.items()) for n in cl["waiting"]]
    parts = ["%s: mark and drain (%s)" % (n, decisions[n]["signal"]) for n in drain]
    parts += ["%s: waiting (%s)" % (n, decisions[n]["signal"]) for n in waiting]
    return {"hosts": decisions, "drain": drain, "waiting": waiting, "clusters": clusters,
            "msg": "; ".join(parts) if parts else "no host to empty (%d checked)" % len(hosts)}
