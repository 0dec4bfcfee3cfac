# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reservations: what a drain in flight has promised its destinations (memory, vCPUs), kept in
the cluster's shared state so that a drain planning meanwhile subtracts it instead of planning
onto the same free memory. Two hosts of a cluster out at once (max_unavailable > 1) then drain
side by side: only their plans are made one at a time, in the cluster's move turn.

``<state dir>/reservations/<host>.json``, one per draining host: ``host``, ``token`` and
``run_id`` of the run, ``since`` and ``moves`` (``guest``, ``destination``, ``memory_mib``,
``vcpus``). Written once the drain has planned (still in the move turn, so the next plan reads
it), removed when its migrations are over. A drain counts every other host's reservation, also
those of another run sharing the cluster's lock; those of a run that stopped are removed by the
next run once it holds the lock (``open_window``), like its slots.

Pure Python, no Ansible import.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import Guest, HostCapacity
from ansible_collections.virtfleet.cluster.plugins.module_utils.state_store import (
    StateError, StateStore, iso, make_state_dirs, now, read_json, unlink_quietly, write_json_atomic)

RESERVATIONS_DIR = "reservations"
MOVE_FIELDS = ("guest", "destination", "memory_mib", "vcpus")
Record = Dict[str, Any]


class ClusterReservations:
    """The reservation files of one cluster's state directory."""

    def __init__(self, store: StateStore):
        self.store = store
        self.directory = os.path.join(store.path, RESERVATIONS_DIR)

    def _path(self, host: str) -> str:
        if not host or "/" in host or host.startswith("."):
            raise StateError("invalid host name for a reservation: %r" % host)
        return os.path.join(self.directory, host + ".json")

    def read(self) -> Dict[str, Record]:
        """Draining host -> its reservation."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return {}
        # One removed between listdir and its read is read as None (no such file): left out.
        records = {name[:-5]: read_json(os.path.join(self.directory, name))
                   for name in names if name.endswith(".json") and not name.startswith(".")}
        return {host: record for host, record in records.items() if isinstance(record, dict)}

    def reserve(self, host: str, moves: Iterable[Mapping[str, Any]], holder: Record) -> Record:
        """Record the moves ``host``'s drain is about to make (replacing its earlier reservation)."""
        record = dict(holder, host=host, since=now(), since_iso=iso(now()),
                      moves=[{field: move[field] for field in MOVE_FIELDS} for move in moves])
        if not self.store.check_mode:
            make_state_dirs(self.directory)
            write_json_atomic(self._path(host), record)
        return record

    def remove(self, host: str, token: Optional[str] = None) -> bool:
        """Remove ``host``'s reservation (only one made with ``token``, when given)."""
        record = self.read().get(host)
        if record is None or (token and record.get("token") != token):
            return False
        if not self.store.check_mode:
            unlink_quietly(self._path(host))
        return True

    def clear_others(self, live_tokens: Iterable[str]) -> List[str]:
        """Remove every reservation of a run that holds the cluster's lock no more
        (``live_tokens``: the runs that do): called under the lock; they are left by a run that
        stopped."""
        live = set(live_tokens)
        hosts = sorted(host for host, record in self.read().items() if record.get("token") not in live)
        if not self.store.check_mode:
            for host in hosts:
                unlink_quietly(self._path(host))
        return hosts


def in_flight(reservations: Mapping[str, Record], host: str) -> List[Record]:
    """The moves promised by the other drains of the cluster (not ``host``'s own), of every run
    that shares it; one left by a run that stopped counts too until the next run removes it."""
    return [dict(move, source=other) for other, record in sorted((reservations or {}).items())
            if other != host
            for move in record.get("moves") or ()]


def subtract_in_flight(hosts: Sequence[HostCapacity], guests: Sequence[Guest],
                       moves: Iterable[Mapping[str, Any]]) -> Tuple[List[HostCapacity], List[Guest], Dict[str, Record]]:
    """``(hosts, guests, reserved)`` for the planner, with other drains' moves in flight counted.

    A reserved guest running on its destination alone has arrived: the destination's facts
    count it already. Otherwise (not left yet, or in migration: then libvirt lists it on both
    hosts) its memory and vCPUs are reserved on the destination, and its copy there is left out
    of ``guests``, so it is counted once. ``reserved``: destination -> ``memory_mib``, ``vcpus``
    and ``guests`` (sorted), for the plan's report.
    """
    seen: Dict[str, set] = {}
    for guest in guests:
        seen.setdefault(guest.name, set()).add(guest.host)
    names = {host.name for host in hosts}
    reserved: Dict[str, Record] = {}
    for move in moves:
        destination, name = move["destination"], move["guest"]
        if destination not in names or seen.get(name) == {destination}:
            continue
        entry = reserved.setdefault(destination, {"memory_mib": 0, "vcpus": 0, "guests": []})
        entry["memory_mib"] += int(move["memory_mib"])
        entry["vcpus"] += int(move["vcpus"])
        entry["guests"].append(name)
    for entry in reserved.values():
        entry["guests"].sort()
    in_transit = {(name, destination) for destination, entry in reserved.items() for name in entry["guests"]}
    guests = [guest for guest in guests if (guest.name, guest.host) not in in_transit]
    hosts = [dataclasses.replace(host, reserved_memory_mib=reserved[host.name]["memory_mib"],
                                 reserved_vcpus=reserved[host.name]["vcpus"]) if host.name in reserved else host
             for host in hosts]
    return hosts, guests, reserved
