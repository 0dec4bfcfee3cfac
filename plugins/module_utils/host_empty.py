# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is a hypervisor host safe to reboot? Asked of the host's own libvirt daemon, right before.

A host is safe to reboot when
* no guest is active on it: running, paused (a failed migration may leave one paused), or
  arriving (an incoming migration shows as an active, paused guest on its destination); any
  actor may have placed one there since the drain (an operator's ``virsh migrate``, a rebalance,
  another controller), so the question is asked again immediately before the reboot;
* and no inactive definition would start a second copy of a guest when the host boots: an
  autostart definition whose guest (same UUID) is active on a peer of the cluster. When a peer
  cannot be asked, the definition is not known to be safe either.

Pure Python around a libvirt connection (tests pass small fakes of the connection).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Sequence

from ansible_collections.virtfleet.cluster.plugins.module_utils import canary
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
    CONNECTION_ARGUMENT_SPEC, VIR_DOMAIN_PAUSED, LibvirtHostError, connector, host_label, libvirt, open_connection,
    state_name)

# The options of the check (modules host_empty and host_reboot).
ARGUMENT_SPEC = dict(
    CONNECTION_ARGUMENT_SPEC,
    host=dict(type="str"),
    peers=dict(type="list", elements="dict", default=[],
               options=dict(name=dict(type="str", required=True), uri=dict(type="str", required=True))),
    autostart_elsewhere=dict(type="str", choices=["refuse", "disable"], default="refuse"),
)

# The virDomainPausedReason values an operator needs told apart.
_PAUSED_REASONS = {2: "migration", 6: "failed migration", 11: "starting up", 12: "post-copy",
                   13: "failed post-copy"}


def describe_state(state: int, reason: int) -> str:
    """'running', 'paused (migration)', ... as virsh domstate --reason would say it."""
    name = state_name(state)
    if state == VIR_DOMAIN_PAUSED and reason in _PAUSED_REASONS:
        return "%s (%s)" % (name, _PAUSED_REASONS[reason])
    return name


def active_guests(conn) -> List[Dict[str, str]]:
    """Every guest active on the host (running, paused, arriving), sorted by name. The
    collection's own canary is no guest: a leftover one dies with the reboot and costs nobody."""
    found = []
    for dom in conn.listAllDomains(0):
        if not dom.isActive() or canary.domain_is_canary(dom):
            continue
        state, reason = dom.state()
        found.append({"name": dom.name(), "uuid": dom.UUIDString(), "state": describe_state(state, reason)})
    return sorted(found, key=lambda g: g["name"])


def inactive_autostart_definitions(conn) -> List[Dict[str, str]]:
    """Inactive persistent guests marked autostart: the host would start them at boot."""
    found = []
    for dom in conn.listAllDomains(0):
        if dom.isActive() or not dom.isPersistent():
            continue
        if dom.autostart():
            found.append({"name": dom.name(), "uuid": dom.UUIDString()})
    return sorted(found, key=lambda g: g["name"])


def check_host(conn, peers: Sequence[Mapping[str, str]] = (),
               connect: Optional[Callable[[str], object]] = None) -> dict:
    """What stands in the way of rebooting the host behind ``conn``.

    ``peers``: the other hosts of the cluster (``name``, ``uri``), asked only when the host has
    inactive autostart definitions. Returns ``active`` (guests active on the host),
    ``autostart_elsewhere`` (definitions whose guest is active on a peer, with ``running_on``)
    and ``autostart_unknown`` (definitions for which some peer could not be asked, with
    ``unasked``).
    """
    result = {"active": active_guests(conn), "autostart_elsewhere": [], "autostart_unknown": []}
    definitions = inactive_autostart_definitions(conn)
    if not definitions:
        return result
    connect = connect or open_connection
    active_on_peers: Dict[str, str] = {}
    unasked: List[str] = []
    for peer in peers:
        try:
            peer_conn = connect(peer["uri"])
        except Exception:  # pylint: disable=broad-except  # any failure: that peer is unknown
            unasked.append(peer["name"])
            continue
        try:
            for guest in active_guests(peer_conn):
                active_on_peers[guest["uuid"]] = peer["name"]
        except Exception:  # pylint: disable=broad-except
            unasked.append(peer["name"])
        finally:
            _close(peer_conn)
    for definition in definitions:
        if definition["uuid"] in active_on_peers:
            result["autostart_elsewhere"].append(dict(definition, running_on=active_on_peers[definition["uuid"]]))
        elif unasked or not peers:
            result["autostart_unknown"].append(dict(definition, unasked=unasked or ["(no peer given)"]))
    return result


def _close(conn) -> None:
    try:
        conn.close()
    except Exception:  # pylint: disable=broad-except  # closing is best effort
        pass


def disable_autostart(conn, names: Sequence[str]) -> List[str]:
    """Turn autostart off for the named inactive definitions; returns the names changed."""
    changed = []
    for name in names:
        dom = conn.lookupByName(name)
        if dom.autostart():
            dom.setAutostart(0)
            changed.append(name)
    return changed


def refusal(host: str, found: Mapping[str, list]) -> Optional[str]:
    """The operator's message when the host is not safe to reboot, else None."""
    parts = []
    if found["active"]:
        parts.append("it runs %s" % ", ".join("%s (%s)" % (g["name"], g["state"]) for g in found["active"]))
    if found["autostart_elsewhere"]:
        parts.append("its inactive autostart definition%s %s would start a second copy at boot"
                     % ("s" if len(found["autostart_elsewhere"]) > 1 else "",
                        ", ".join("%s (running on %s)" % (d["name"], d["running_on"]) for d in found["autostart_elsewhere"])))
    if found["autostart_unknown"]:
        parts.append("its inactive autostart definition%s %s may run elsewhere (%s could not be asked)"
                     % ("s" if len(found["autostart_unknown"]) > 1 else "",
                        ", ".join(d["name"] for d in found["autostart_unknown"]),
                        ", ".join(sorted({p for d in found["autostart_unknown"] for p in d["unasked"]}))))
    if not parts:
        return None
    advice = []
    if found["active"]:
        advice.append("move the guests away (or wait for a migration to end)")
    if found["autostart_elsewhere"] or found["autostart_unknown"]:
        advice.append("turn autostart off for those definitions (virsh autostart --disable NAME) or let the "
                      "module do it (autostart_elsewhere: disable)")
    return "%s is not safe to reboot: %s. Not rebooting it; %s, then re-run." % (
        host, "; ".join(parts), " and ".join(advice))


def safe_to_reboot(params: Mapping, check_mode: bool, connect: Optional[Callable[[str], object]] = None):
    """The check on a module's validated parameters (ARGUMENT_SPEC): returns (failed, result).
    A daemon that cannot be asked raises LibvirtHostError: not known to be safe."""
    name = params["host"] or host_label(params["uri"])
    connect = connect or connector(params)
    try:
        conn = connect(params["uri"])
        try:
            found = check_host(conn, params["peers"], connect)
            result = {"changed": False, "guests": found["active"], "autostart_elsewhere": found["autostart_elsewhere"],
                      "autostart_unknown": found["autostart_unknown"], "autostart_disabled": []}
            stale = [d["name"] for d in found["autostart_elsewhere"] + found["autostart_unknown"]]
            if stale and params["autostart_elsewhere"] == "disable":
                result["autostart_disabled"] = stale if check_mode else disable_autostart(conn, stale)
                result["changed"] = bool(result["autostart_disabled"])
                found = dict(found, autostart_elsewhere=[], autostart_unknown=[])
        finally:
            _close(conn)
    except (LibvirtHostError, libvirt.libvirtError) as exc:
        raise LibvirtHostError("cannot tell whether %s is safe to reboot, so not going on: %s" % (name, exc)) from exc
    problem = refusal(name, found)
    result["msg"] = problem or "%s runs no guest and would start none twice: safe to reboot%s" % (
        name, " (autostart turned off for %s)" % ", ".join(result["autostart_disabled"]) if result["autostart_disabled"] else "")
    return bool(problem), result
