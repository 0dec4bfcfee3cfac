# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One canary proof on real hosts: a guest live-migrates onto a rebooted host and back.

The decisions are ``canary``'s; this is the libvirt side. It reads the host and its peers in
service, removes canaries a crashed run left behind (on the hosts it reads), starts the owned
canary on the chosen peer (or takes the operator's named guest), migrates it with the run's
migration options (``migration.migrate_guest``, as the drain does) and, for an owned canary,
destroys it again wherever it is - also when a migration failed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.virtfleet.cluster.plugins.module_utils import canary
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
    VIR_ERR_NO_DOMAIN, libvirt_message, open_connection)
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_facts import read_hosts
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration import migrate_guest
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_options import MigrationOptions
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_recovery import MigrationError


@dataclass
class CanaryRequest:
    """What the proof needs: the host, its cluster's other members with their URIs, the marks."""
    host: str
    uri: str
    peers: Mapping[str, str]                       # name -> URI, every other member of the cluster
    marks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    guest: str = ""                                # the operator's canary; empty: an owned one
    memory_mib: int = canary.DEFAULT_MEMORY_MIB
    unmovable: Sequence[str] = ()
    stop_allowed: Sequence[str] = ()
    shared_storage_path: Optional[str] = None
    run_id: Optional[str] = None
    options: MigrationOptions = field(default_factory=MigrationOptions)


def remove_canaries(conn, names: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Destroys the owned canaries ``names`` on one host (a transient domain then vanishes; a
    definition is removed too). Returns (removed or already gone, what could not be removed with why)."""
    removed, problems = [], []
    for name in names:
        try:
            dom = conn.lookupByName(name)
            if not canary.domain_is_canary(dom):
                continue  # not ours (renamed meanwhile): never destroy it
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
            removed.append(name)
        except Exception as exc:  # pylint: disable=broad-except  # reported, the proof goes on
            if libvirt_error_code(exc) == VIR_ERR_NO_DOMAIN:
                removed.append(name)  # gone meanwhile (a transient domain that stopped)
            else:
                problems.append("%s: %s" % (name, libvirt_message(exc)))
    return removed, problems


def libvirt_error_code(exc: BaseException) -> Optional[int]:
    """libvirt's error code of an exception, None for any other exception."""
    get_code = getattr(exc, "get_error_code", None)
    return get_code() if callable(get_code) else None


def _remove_everywhere(name: str, uris: Mapping[str, str], connect: Callable[[str], Any]) -> List[str]:
    """The owned canary ``name`` is gone from every host in ``uris`` afterwards, or says where not."""
    problems = []
    for host, uri in sorted(uris.items()):
        try:
            conn = connect(uri)
        except Exception as exc:  # pylint: disable=broad-except
            problems.append("%s: cannot connect to remove %s (%s)" % (host, name, libvirt_message(exc)))
            continue
        try:
            problems += ["%s: %s" % (host, why) for why in remove_canaries(conn, [name])[1]]
        finally:
            conn.close()
    return problems


def prove_host(request: CanaryRequest, check_mode: bool = False,
               connect: Callable[[str], Any] = open_connection) -> Dict[str, Any]:
    """Runs the proof; returns the result (``migrations`` as report records, ``leftovers_removed``,
    ``canary``, ``peer``, ``owned``). Raises VirtfleetError carrying the same fields (and
    ``passed_over`` when no canary could be had) when the host is not proven."""
    in_service, passed_over = canary.peers_in_service(request.host, sorted(request.peers), request.marks)
    readings = read_hosts([(name, request.peers[name], request.shared_storage_path) for name in in_service]
                          + [(request.host, request.uri, None)], connect=connect)
    try:
        facts = {name: r.facts for name, r in readings.items() if r.facts is not None and name != request.host}
        errors = {name: r.error for name, r in readings.items() if r.facts is None and name != request.host}
        if readings[request.host].facts is None:
            raise VirtfleetError("%s does not answer: %s" % (request.host, readings[request.host].error),
                                 {"reason": "host-unreachable", "passed_over": passed_over, "migrations": []})
        result = {"changed": False, "owned": not request.guest, "migrations": [], "leftovers_removed": [],
                  "warnings": []}
        for name, reading in sorted(readings.items()):
            leftovers = (reading.facts or {}).get("canaries") or []
            if leftovers and not check_mode:
                leftovers, problems = remove_canaries(reading.connection, leftovers)
                result["warnings"] += ["a leftover canary could not be removed on %s: %s" % (name, p) for p in problems]
            result["leftovers_removed"] += ["%s on %s" % (leftover, name) for leftover in leftovers]
        result["changed"] = bool(result["leftovers_removed"]) and not check_mode

        if request.guest:
            source, why_not = canary.named_guest_source(request.guest, facts, errors, request.unmovable, request.stop_allowed)
            candidates = [source] if source else []
            name = request.guest
        else:
            candidates, why_not = canary.rank_peers(facts, errors)
            name = canary.canary_name(request.host)
        peer = candidates[0] if candidates else None
        result.update(canary=name, peer=peer, passed_over=passed_over + why_not)
        if peer is None:
            result["reason"] = "no-canary"
            raise _failure("no guest can serve as canary for %s" % request.host, result)
        if check_mode:
            result.update(changed=True, msg="would migrate canary %s from %s onto %s and back" % (name, peer, request.host))
            return result

        if not request.guest:
            peer = _start_owned_canary(name, candidates, facts, readings, request, result)
    finally:
        for reading in readings.values():
            reading.close()

    uris = {peer: request.peers[peer], request.host: request.uri}
    try:
        _there_and_back(name, peer, request, result, connect)
    finally:
        if not request.guest:
            result["warnings"] += ["the canary %s was not removed from %s" % (name, p)
                                   for p in _remove_everywhere(name, uris, connect)]
    failed = [m for m in result["migrations"] if m["status"] != "ok"]
    if failed:
        result["reason"] = "migration-failed"
        raise _failure("canary %s failed: %s" % (name, failed[0]["message"]), result)
    there, back = result["migrations"]
    result["msg"] = "canary %s migrated from %s onto %s (downtime %s ms) and back (downtime %s ms)" % (
        name, peer, request.host, there["downtime_ms"], back["downtime_ms"])
    return result


def _start_owned_canary(name: str, candidates: Sequence[str], facts: Mapping[str, Mapping[str, Any]],
                        readings: Mapping[str, Any], request: CanaryRequest, result: Dict[str, Any]) -> str:
    """Starts the owned canary on the first of ``candidates`` that takes it; a peer that refuses
    (no room, say) is named in ``passed_over`` and the next one is tried. Returns the peer."""
    guests = [g for host_facts in facts.values() for g in host_facts.get("guests") or []]
    refusals = []
    for peer in candidates:
        xml = canary.canary_domain_xml(name, canary.cluster_shape(guests, facts[peer]), request.memory_mib, request.host,
                                       request.run_id)
        try:
            readings[peer].connection.createXML(xml, 0)
        except Exception as exc:  # pylint: disable=broad-except
            refusals.append("%s: the canary did not start there (%s)" % (peer, libvirt_message(exc)))
            result["passed_over"].append(refusals[-1])
            continue
        result.update(peer=peer, changed=True)
        return peer
    result.update(reason="canary-not-started", peer=None)
    raise _failure("the canary %s did not start on any peer in service: %s" % (name, "; ".join(refusals)), result)


def _failure(message: str, result: Dict[str, Any]) -> VirtfleetError:
    """The failure with its result; what could not be cleaned up goes into the message (a failed
    task shows no warnings)."""
    problems = result.pop("warnings", None) or []
    return VirtfleetError("; ".join([message] + problems), result)


def _there_and_back(name: str, peer: str, request: CanaryRequest, result: Dict[str, Any], connect) -> None:
    """Onto the host, then back to the peer; stops at the first failed migration."""
    legs = [(peer, request.peers[peer], request.host, request.uri), (request.host, request.uri, peer, request.peers[peer])]
    for source, source_uri, dest, dest_uri in legs:
        started = time.time()
        try:
            outcome = migrate_guest(name, source_uri, dest_uri, request.options, source_name=source, dest_name=dest,
                                    connect=connect)
        except MigrationError as exc:
            result["migrations"].append(canary.migration_record(name, source, dest, started, time.time(), error=exc))
            result["changed"] = True
            return
        result["migrations"].append(canary.migration_record(name, source, dest, started, time.time(), outcome=outcome))
        result["changed"] = True
