# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Carrying out a host recovery against libvirt: probing the host that seems dead, reading its
peers, starting its guests where ``host_recovery.plan_restarts`` put them.

The decisions are in ``host_recovery`` (pure); this file only asks libvirt and sockets.
"""
from __future__ import annotations

import socket
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ansible_collections.virtfleet.cluster.plugins.module_utils.capacity import cluster_from_facts
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.host_recovery import (
    dead_host_verdict, fence_refusal, lease_refusal, plan_restarts, recovery_message)
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
    libvirt_message, open_connection)
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_facts import read_hosts
from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import PlacementPolicy


class RecoveryRefused(VirtfleetError):
    """The recovery did not start any guest, and says why (host alive, no fence, a peer unread)."""


def ssh_answers(address: str, port: int, timeout: float) -> Optional[str]:
    """None when an SSH server answers with its banner within timeout, else why not. A kernel
    accepts connections for a frozen sshd: only the banner proves the server lives."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            banner = sock.recv(64)
    except OSError as exc:
        return str(exc) or exc.__class__.__name__
    return None if banner.startswith(b"SSH-") else "no SSH banner within %g s" % timeout


def probe_once(uri: str, address: str, ssh_port: int, timeout: float,
               connect: Callable[..., Any] = open_connection) -> Dict[str, Any]:
    probe: Dict[str, Any] = {"time": time.time()}
    try:
        conn = connect(uri, timeout=timeout)
        try:
            conn.getLibVersion()
        finally:
            conn.close()
        probe.update(libvirt_ok=True, libvirt_error=None)
    except Exception as exc:  # pylint: disable=broad-except  # any failure is a failed probe
        probe.update(libvirt_ok=False, libvirt_error=libvirt_message(exc))
    ssh_error = ssh_answers(address, ssh_port, timeout)
    probe.update(ssh_ok=ssh_error is None, ssh_error=ssh_error)
    return probe


def probe_host(uri: str, address: str, ssh_port: int = 22, retries: int = 3, delay: float = 10.0,
               timeout: float = 5.0, connect: Callable[..., Any] = open_connection,
               sleep: Callable[[float], None] = time.sleep) -> Dict[str, Any]:
    """Probes up to ``retries`` times, ``delay`` seconds apart; stops at the first answer."""
    probes: List[Dict[str, Any]] = []
    for attempt in range(max(1, retries)):
        if attempt:
            sleep(delay)
        probes.append(probe_once(uri, address, ssh_port, timeout, connect))
        if probes[-1]["libvirt_ok"] or probes[-1]["ssh_ok"]:
            break
    dead, why = dead_host_verdict(probes)
    return {"dead": dead, "reason": why, "probes": probes}


def _running_on(readings: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> Dict[str, str]:
    """guest name -> peer running it (by name or UUID) for every recorded guest found active."""
    by_uuid = {record.get("uuid"): record["name"] for record in records if record.get("uuid")}
    names = {record["name"] for record in records}
    running = {}
    for host, reading in readings.items():
        for guest in (reading.facts or {}).get("guests") or []:
            if not guest.get("active"):
                continue
            name = guest["name"] if guest["name"] in names else by_uuid.get(guest.get("uuid"))
            if name:
                running[name] = host
    return running


def _start(conn, record: Mapping[str, Any]) -> None:
    """Defines the guest from its record and starts it; a definition this call added is taken
    away again when the start fails (nothing half-made is left on the peer)."""
    try:
        existed = conn.lookupByName(record["name"]) is not None
    except Exception:  # pylint: disable=broad-except  # libvirt raises for an unknown name
        existed = False
    dom = conn.defineXML(record["xml"])
    try:
        dom.create()
    except Exception:
        if not existed:
            try:
                dom.undefine()
            except Exception:  # pylint: disable=broad-except  # the start's error is the one to report
                pass
        raise


def recover(params: Mapping[str, Any], check_mode: bool, connect: Callable[[str], Any] = open_connection) -> Dict[str, Any]:
    """Checks every peer, plans, and (unless check_mode) starts the dead host's guests."""
    host = params["host"]
    refusal = fence_refusal(params["fence"], params["fence_confirmed"])
    records = [r for r in params["records"] if r.get("host") == host]
    if refusal and not check_mode:
        raise RecoveryRefused("recovery of %s refused, no guest started: %s" % (host, refusal),
                              {"changed": False, "guests": sorted(r["name"] for r in records)})
    peers = [peer for peer in params["peers"] if peer["name"] != host]
    readings = read_hosts([(peer["name"], peer["uri"], None) for peer in peers], connect=connect)
    try:
        unread = {name: reading.error for name, reading in readings.items() if reading.error}
        if unread:
            # A peer that cannot be asked might run one of the guests: starting it would risk a second copy.
            raise RecoveryRefused(
                "recovery of %s refused, no guest started: peer(s) could not be read, so nobody can tell whether "
                "they already run its guests: %s" % (host, "; ".join("%s: %s" % item for item in sorted(unread.items()))),
                {"changed": False})
        marked = {peer["name"] for peer in peers if peer.get("in_maintenance")}
        hosts, guests = cluster_from_facts({name: reading.facts for name, reading in readings.items()},
                                           [peer["name"] for peer in peers], marked)
        policy = PlacementPolicy(memory_overcommit=params["memory_overcommit"],
                                 memory_reserve_mib=params["memory_reserve_mib"])
        plan = plan_restarts(host, records, hosts, guests, _running_on(readings, records), params["priorities"],
                             params["default_priority"], params["anti_affinity_groups"], policy)
        result: Dict[str, Any] = {"changed": False, "plan": plan, "restarted": [], "start_failures": [], "lease_held": None,
                                  "already_running": plan["already_running"], "unplaced": plan["unplaced"],
                                  "not_restarted": plan["not_restarted"], "fence": params["fence"]}
        if check_mode:
            result["restarted"] = list(plan["restart"])
        else:
            for step in plan["restart"]:
                record = next(r for r in records if r["name"] == step["guest"])
                try:
                    _start(readings[step["host"]].connection, record)
                except Exception as exc:  # pylint: disable=broad-except  # reported per guest
                    error = libvirt_message(exc)
                    if lease_refusal(error):
                        result["lease_held"] = {"guest": step["guest"], "host": step["host"], "error": error}
                        break
                    result["start_failures"].append({"guest": step["guest"], "host": step["host"], "error": error})
                    continue
                result["restarted"].append(dict(step, started=time.time()))
                result["changed"] = True
        result["placement"] = dict({r["guest"]: r["host"] for r in result["already_running"]},
                                   **{r["guest"]: r["host"] for r in result["restarted"]})
        result["msg"] = recovery_message(host, result, check_mode)
        result["failed_recovery"] = bool(result["lease_held"] or result["start_failures"] or result["unplaced"])
        return result
    finally:
        for reading in readings.values():
            reading.close()
