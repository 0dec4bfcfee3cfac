# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cluster planners: reshape where guests run outside a drain.

* `plan_rebalance` evens out memory load with few moves.
* `plan_move_back` sends guests back to the hosts they ran on before a maintenance, where
  they fit.

Both use the simulation of `placement` (the model, cumulative reservation, the refusal of a
host), so a move they plan is one a drain would accept. Nothing here talks to libvirt or
imports Ansible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import (
    ClusterSimulation, CpuCheck, Guest, HostCapacity, Move, PlacementPolicy, cpu_refusal, ordered_guests)


def memory_loads(hosts: Sequence[HostCapacity], guests: Sequence[Guest]) -> Dict[str, float]:
    """Allocated guest memory / total memory per host (0.0 .. 1.0+)."""
    totals = {h.name: h.memory_total_mib for h in hosts}
    used = dict.fromkeys(totals, 0)
    for g in guests:
        if g.host in used:
            used[g.host] += g.memory_mib
    return {name: (used[name] / float(totals[name]) if totals[name] else 0.0) for name in totals}


def plan_rebalance(hosts: Sequence[HostCapacity], guests: Sequence[Guest],
                   policy: Optional[PlacementPolicy] = None, cpu_check: Optional[CpuCheck] = None,
                   threshold: float = 0.10, max_moves: Optional[int] = None) -> List[Move]:
    """Evens out memory load (allocated / total) across the hosts with few moves.

    Greedy: while the spread between the most and least loaded host exceeds `threshold`
    (a fraction, 0.10 = ten percentage points), move the one guest from the most loaded host
    (or, when none of its guests can usefully move, the next most loaded) that leaves the
    smallest spread, to the least loaded host that can take it; stop when no single move makes
    the spread smaller. Hosts in maintenance neither give nor take guests;
    unmovable guests stay. Moves are returned in the order to run them.
    """
    policy = policy or PlacementPolicy()
    cluster = ClusterSimulation(hosts, guests, policy)
    active = {n: s for n, s in cluster.states.items()
              if n not in cluster.in_maintenance and s.host.memory_total_mib > 0}
    moves: List[Move] = []

    def load(name, delta=0):
        state = active[name]
        return (state.memory_allocated + delta) / float(state.host.memory_total_mib)

    def spread(changes=None):
        changes = changes or {}
        loads = [load(n, changes.get(n, 0)) for n in active]
        return max(loads) - min(loads) if loads else 0.0

    while len(active) > 1 and (max_moves is None or len(moves) < max_moves):
        current = spread()
        if current <= threshold:
            break
        best = None
        by_load = sorted(active, key=lambda n: (load(n), n))
        # Most loaded source first; if its guests cannot move (unmovable, too big, constraints),
        # a less loaded source may still lift the least loaded host and shrink the spread.
        for source in reversed(by_load):
            for destination in by_load:
                if load(destination) >= load(source):
                    break
                for guest in ordered_guests([g for g in cluster.guests_on(source) if g.movable], policy.order):
                    if cpu_refusal(cpu_check, guest, active[destination].host):
                        continue
                    if active[destination].refusal(guest, policy):
                        continue
                    after = spread({source: -guest.memory_mib, destination: guest.memory_mib})
                    if after < current - 1e-9 and (best is None or after < best[0] - 1e-9):
                        best = (after, guest, source, destination)
                if best is not None:
                    # The least loaded host that can take a useful guest wins; trying hosts
                    # that are already fuller would only shift the imbalance around.
                    break
            if best is not None:
                break
        if best is None:
            break
        _after, guest, source, destination = best
        moves.append(Move(guest.name, source, destination, guest.memory_mib, guest.vcpus))
        cluster.move(guest, destination)
    return moves


@dataclass
class Skipped:
    """A guest the move-back leaves where it runs, and why."""

    guest: str
    source: str
    destination: Optional[str]
    reason: str


@dataclass
class MoveBackPlan:
    moves: List[Move] = field(default_factory=list)
    skipped: List[Skipped] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"moves": [asdict(m) for m in self.moves], "skipped": [asdict(s) for s in self.skipped]}


def plan_move_back(hosts: Sequence[HostCapacity], guests: Sequence[Guest], origins: Mapping[str, str],
                   policy: Optional[PlacementPolicy] = None, marked: Iterable[str] = (),
                   cpu_check: Optional[CpuCheck] = None) -> MoveBackPlan:
    """Sends guests back to the host they ran on before the maintenance (`origins`: guest ->
    home host), only where they fit.

    A guest away from home goes back when its home host is among `hosts`, not in maintenance
    (`marked` or `HostCapacity.in_maintenance`), the guest can live-migrate, and the home host
    can take it now (memory with overcommit and reserve, host free memory, vCPUs,
    anti-affinity, `cpu_check`). Moves are simulated in the order returned, each seeing the
    earlier ones, so running them one after the other never overfills a host: a guest that
    does not fit yet is tried again after the others moved (a guest leaving a host can make
    room for one coming home), and is skipped, with the reason, when no further move helps.
    Guests at home or without an origin stay and are not listed; guests without facts (not
    running) are not in `guests` and are ignored. The inputs are not modified.
    """
    policy = policy or PlacementPolicy()
    cluster = ClusterSimulation(hosts, guests, policy)
    marked = set(marked or ()) | cluster.in_maintenance
    plan = MoveBackPlan()
    pending: List[Guest] = []
    for guest in sorted(cluster.guests, key=lambda g: g.name):
        home = origins.get(guest.name)
        if not home or home == guest.host:
            continue
        if home not in cluster.states:
            why = "its home host %s was not read now (its libvirt did not answer, or it left the cluster)" % home
        elif home in marked:
            why = "its home host %s is in maintenance" % home
        elif not guest.movable:
            why = "it cannot live-migrate (%s)" % (guest.unmovable_reason or "not movable")
        else:
            pending.append(guest)
            continue
        plan.skipped.append(Skipped(guest.name, guest.host, home, why))
    last_refusal: Dict[str, str] = {}
    progress = True
    while pending and progress:
        progress = False
        for guest in ordered_guests(pending, policy.order):
            home = origins[guest.name]
            state = cluster.states[home]
            why = cpu_refusal(cpu_check, guest, state.host) or state.refusal(guest, policy)
            if why:
                last_refusal[guest.name] = why
                continue
            plan.moves.append(Move(guest.name, guest.host, home, guest.memory_mib, guest.vcpus))
            cluster.move(guest, home)
            pending.remove(guest)
            progress = True
    for guest in sorted(pending, key=lambda g: g.name):
        home = origins[guest.name]
        plan.skipped.append(Skipped(guest.name, guest.host, home, "it does not fit on its home host %s now: %s"
                                    % (home, last_refusal[guest.name])))
    plan.skipped.sort(key=lambda s: s.guest)
    return plan
