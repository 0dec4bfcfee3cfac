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
* Recovery (off unless ``recover_after_s`` > 0): a host that has not answered a health check
  for that long (since its last answered check, as its peers read it in the shared state) is
  handed to recover_host.yml, which still probes, fences and never starts a guest twice. Only
  an unmarked host of an unlocked cluster (a rolling run reboots its hosts; a marked host is an
  operator's), one per run (the recovery takes every peer's capacity into account once).

Pure Python (no Ansible import).
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from ansible_collections.virtfleet.cluster.plugins.module_utils.host_health import SIGNALS

Record = Dict[str, Any]


def _severity(host: Record) -> int:
    worst = (host.get("health") or {}).get("worst")
    return SIGNALS.index(worst) if worst in SIGNALS else len(SIGNALS)


def _why(host: Record) -> str:
    crossed = (host.get("health") or {}).get("crossed") or []
    return "; ".join(str(c.get("why")) for c in crossed) or "threshold crossed"


def _silent_for(host: Record, now: float) -> Optional[float]:
    last_seen = host.get("last_seen")
    return None if last_seen is None else now - float(last_seen)


def plan_health_actions(hosts: List[Record], recover_after_s: float = 0, now: Optional[float] = None) -> Record:
    """hosts: [{name, cluster, max_unavailable (default 1), reachable, health (host_health's
    result, or None when it did not run), marked, mark_reason, locked_by (who holds the
    cluster's lock, when it is held and the watch does not override it), last_seen (time of its
    last answered check, None when unknown)}]. Returns {hosts: name -> {action, cluster, why,
    signal}, drain, waiting, recover (at most one host), clusters: name -> {...}, msg}.

    Actions: drain, waiting, already_marked, ok (no threshold crossed - which signals were not
    checked is in the host's health result), unreachable, recover.
    """
    now = time.time() if now is None else now
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
    recover = _plan_recovery(hosts, decisions, clusters, recover_after_s, now)
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
    parts += ["%s: recover (%s)" % (n, decisions[n]["why"]) for n in recover]
    return {"hosts": decisions, "drain": drain, "waiting": waiting, "recover": recover, "clusters": clusters,
            "msg": "; ".join(parts) if parts else "no host to empty (%d checked)" % len(hosts)}


def _plan_recovery(hosts: List[Record], decisions: Dict[str, Record], clusters: Dict[str, Record],
                   recover_after_s: float, now: float) -> List[str]:
    """The unanswering host to recover now (at most one), the longest silent first; every other
    unanswering host's decision says why it is not recovered."""
    if recover_after_s <= 0:
        return []
    candidates = []
    for host in hosts:
        decision = decisions.get(host["name"])  # failing hosts are decided after this
        if not decision or decision["action"] != "unreachable":
            continue
        silent = _silent_for(host, now)
        locked_by = clusters[host["cluster"]]["locked_by"]
        if silent is None:
            decision["why"] += "; never seen answering, so not recovered automatically (recover_host.yml)"
        elif locked_by:
            decision["why"] += "; not recovered: cluster %s is locked by %s" % (host["cluster"], locked_by)
        elif silent < recover_after_s:
            decision["why"] += "; silent for %ds, recovery after %ds of silence" % (silent, recover_after_s)
        else:
            candidates.append((-silent, host["name"]))
    recover = [name for _silent, name in sorted(candidates)[:1]]
    for silent, name in sorted(candidates):
        decisions[name]["why"] += "; silent for %ds (recovery after %ds)" % (-silent, recover_after_s)
        if name in recover:
            decisions[name]["action"] = "recover"
        else:
            decisions[name]["why"] += ": recovered by a later run (one recovery per run)"
    return recover
