# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure placement logic: which guest goes to which host.

Nothing here talks to libvirt or imports Ansible; callers build `HostCapacity` and `Guest`
objects (from hypervisor facts through `capacity.cluster_from_facts`, or by hand) and get plain
data back.

The model (hosts, guests, policy, plans), the simulation every planner runs on
(`ClusterSimulation`) and the drain planners:

* `plan_drain` places every guest of one host on the other hosts of its cluster.
* `prove_rolling_capacity` simulates draining hosts one after the other (each drain sees
  where the previous ones put their guests) and says whether every step fits.

The cluster planners (`plan_rebalance`, `plan_move_back`) live in `cluster_plans`.

Capacity is reserved cumulatively: a guest placed on a host consumes its memory and vCPUs
before the next guest is considered. Checking each guest against the untouched free
capacity (CloudStack's rolling-maintenance bug) lets several guests pick the same "free" host
and the later migrations fail half-way through a drain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

ORDERS = ("largest_first", "smallest_first", "as_listed")
UNMOVABLE_POLICIES = ("fail", "shutdown", "leave")


def fields_of(record) -> dict:
    """The fields of one of the flat records below as a new dict (``dataclasses.asdict`` deep
    copies: at estate scale, 300,000 guests, it was most of the preflight's time)."""
    return dict(vars(record))


def _copy_record(record):
    """A shallow copy of one of the flat records below (``copy.copy`` costs three times as much)."""
    duplicate = object.__new__(type(record))
    duplicate.__dict__.update(vars(record))
    return duplicate


@dataclass
class HostCapacity:
    """What a host offers. Memory in MiB.

    `memory_free_mib` is the free memory the host itself reports (None when unknown); it is
    checked in addition to the allocation accounting when `PlacementPolicy.respect_free_memory`
    is set, because overcommit ratios say nothing about memory the host OS already uses.
    `cpu` is opaque to the planner: it is handed to the caller's CPU compatibility check.
    `reserved_memory_mib` and `reserved_vcpus` are promised to guests on their way here (other
    drains in flight, see ``reservations``) and not yet in the host's figures: they count as
    allocated, and the reserved memory as no longer free.
    """

    name: str
    memory_total_mib: int
    cpus: int
    memory_free_mib: Optional[int] = None
    in_maintenance: bool = False
    cpu: object = None
    cluster: Optional[str] = None
    reserved_memory_mib: int = 0
    reserved_vcpus: int = 0


@dataclass
class Guest:
    """A guest and where it runs now (`host`). Memory in MiB.

    `movable=False` marks guests that cannot live-migrate (pinned to the host, passthrough or
    host-local devices); `unmovable_reason` says why. `unmovable_policy` overrides the plan's
    policy for this guest only. `cpu` is opaque, like `HostCapacity.cpu`.
    """

    name: str
    memory_mib: int
    vcpus: int
    host: Optional[str] = None
    anti_affinity_group: Optional[str] = None
    movable: bool = True
    unmovable_reason: Optional[str] = None
    unmovable_policy: Optional[str] = None
    cpu: object = None


@dataclass
class PlacementPolicy:
    """Knobs of the planners.

    Usable memory of a host = memory_total_mib * memory_overcommit - memory_reserve_mib.
    Usable vCPUs = cpus * cpu_overcommit. Defaults follow Nova's (1.0 memory, 4.0 CPU,
    512 MiB kept for the host itself).
    """

    memory_overcommit: float = 1.0
    cpu_overcommit: float = 4.0
    memory_reserve_mib: int = 512
    order: str = "largest_first"
    unmovable: str = "fail"
    respect_free_memory: bool = True

    def __post_init__(self):
        if self.order not in ORDERS:
            raise ValueError("order must be one of %s, not %r" % (", ".join(ORDERS), self.order))
        if self.unmovable not in UNMOVABLE_POLICIES:
            raise ValueError("unmovable must be one of %s, not %r"
                             % (", ".join(UNMOVABLE_POLICIES), self.unmovable))
        if self.memory_overcommit <= 0 or self.cpu_overcommit <= 0:
            raise ValueError("overcommit ratios must be positive")
        if self.memory_reserve_mib < 0:
            raise ValueError("memory_reserve_mib must not be negative")


@dataclass
class Move:
    guest: str
    source: str
    destination: str
    memory_mib: int
    vcpus: int


@dataclass
class Unplaced:
    """A movable guest no host can take. `per_host` maps each candidate host to why not."""

    guest: str
    source: str
    memory_mib: int
    vcpus: int
    per_host: Dict[str, str]

    @property
    def reason(self) -> str:
        if not self.per_host:
            return "no other host in the cluster"
        return "; ".join("%s: %s" % (h, why) for h, why in sorted(self.per_host.items()))


@dataclass
class UnmovableAction:
    """What the drain does with a guest that cannot live-migrate."""

    guest: str
    action: str  # fail | shutdown | leave
    reason: str


@dataclass
class Plan:
    source: str
    moves: List[Move] = field(default_factory=list)
    unplaced: List[Unplaced] = field(default_factory=list)
    unmovable: List[UnmovableAction] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the drain can go ahead: every movable guest has a destination and no
        unmovable guest is under the `fail` policy."""
        return not self.unplaced and not any(u.action == "fail" for u in self.unmovable)

    def problems(self) -> List[str]:
        lines = ["%s (%d MiB, %d vCPU) cannot be placed: %s"
                 % (u.guest, u.memory_mib, u.vcpus, u.reason) for u in self.unplaced]
        lines += ["%s cannot live-migrate (%s) and the policy is fail" % (u.guest, u.reason)
                  for u in self.unmovable if u.action == "fail"]
        return lines

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "ok": self.ok,
            "moves": [fields_of(m) for m in self.moves],
            "unplaced": [dict(fields_of(u), per_host=dict(u.per_host), reason=u.reason) for u in self.unplaced],
            "unmovable": [fields_of(u) for u in self.unmovable],
            "problems": self.problems(),
        }


# A CPU compatibility check: returns None (or True) when `guest` can run on `host`, else a
# reason string (or False). Injected so this module stays free of libvirt.
CpuCheck = Callable[[Guest, HostCapacity], Union[None, bool, str]]


def cpu_refusal(cpu_check: Optional[CpuCheck], guest: Guest, host: HostCapacity) -> Optional[str]:
    if cpu_check is None:
        return None
    verdict = cpu_check(guest, host)
    if verdict is None or verdict is True:
        return None
    if verdict is False:
        return "CPU cannot run the guest"
    return "CPU cannot run the guest: %s" % verdict


class HostState:
    """Mutable accounting of one host during a simulation."""

    def __init__(self, host: HostCapacity, policy: PlacementPolicy):
        self.host = host
        self.memory_limit = host.memory_total_mib * policy.memory_overcommit - policy.memory_reserve_mib
        self.vcpu_limit = host.cpus * policy.cpu_overcommit
        self.memory_allocated = host.reserved_memory_mib
        self.vcpus_allocated = host.reserved_vcpus
        # Real free memory moves with every guest that arrives or leaves.
        self.memory_free = host.memory_free_mib
        if self.memory_free is not None:
            self.memory_free -= host.reserved_memory_mib
        self.groups: Dict[str, str] = {}  # anti-affinity group -> a guest of it here
        self.guests: Dict[str, Guest] = {}

    def add(self, guest: Guest, arriving: bool):
        self.memory_allocated += guest.memory_mib
        self.vcpus_allocated += guest.vcpus
        if arriving and self.memory_free is not None:
            self.memory_free -= guest.memory_mib
        if guest.anti_affinity_group:
            self.groups.setdefault(guest.anti_affinity_group, guest.name)
        self.guests[guest.name] = guest

    def remove(self, guest: Guest):
        self.memory_allocated -= guest.memory_mib
        self.vcpus_allocated -= guest.vcpus
        if self.memory_free is not None:
            self.memory_free += guest.memory_mib
        del self.guests[guest.name]
        group = guest.anti_affinity_group
        if group and self.groups.get(group) == guest.name:
            del self.groups[group]
            for other in self.guests.values():
                if other.anti_affinity_group == group:
                    self.groups[group] = other.name
                    break

    @property
    def memory_left(self) -> float:
        return self.memory_limit - self.memory_allocated

    def refusal(self, guest: Guest, policy: PlacementPolicy) -> Optional[str]:
        """Why this host cannot take `guest` now (resources and anti-affinity only)."""
        memory = guest.memory_mib
        memory_short = memory > self.memory_limit - self.memory_allocated
        free_short = (policy.respect_free_memory and self.memory_free is not None
                      and memory > self.memory_free - policy.memory_reserve_mib)
        vcpus_left = self.vcpu_limit - self.vcpus_allocated
        group = guest.anti_affinity_group
        group_taken = bool(group) and group in self.groups and self.groups[group] != guest.name
        if not (memory_short or free_short or guest.vcpus > vcpus_left or group_taken):
            return None  # the common case at estate scale: no text to build
        reasons = []
        if memory_short:
            reasons.append(
                "memory: needs %d MiB, %d MiB left (total %d MiB x %g - reserve %d MiB - %d MiB allocated)"
                % (guest.memory_mib, max(self.memory_left, 0), self.host.memory_total_mib,
                   policy.memory_overcommit, policy.memory_reserve_mib, self.memory_allocated))
        if free_short:
            reasons.append("free memory: needs %d MiB, host reports %d MiB free (reserve %d MiB)"
                           % (guest.memory_mib, self.memory_free + self.host.reserved_memory_mib,
                              policy.memory_reserve_mib))
        if (memory_short or free_short) and self.host.reserved_memory_mib:
            reasons.append("%d MiB of it reserved by other drains in flight" % self.host.reserved_memory_mib)
        if guest.vcpus > vcpus_left:
            reasons.append("vCPUs: needs %d, %g left (%d CPUs x %g - %d allocated)"
                           % (guest.vcpus, max(vcpus_left, 0), self.host.cpus, policy.cpu_overcommit,
                              self.vcpus_allocated))
        if group_taken:
            reasons.append("anti-affinity: group %r already has %s here" % (group, self.groups[group]))
        return "; ".join(reasons) or None


class ClusterSimulation:
    """Simulation state: every host's accounting plus where each guest is."""

    def __init__(self, hosts: Sequence[HostCapacity], guests: Sequence[Guest], policy: PlacementPolicy):
        names = [h.name for h in hosts]
        if len(set(names)) != len(names):
            raise ValueError("duplicate host names: %s" % sorted({n for n in names if names.count(n) > 1}))
        self.policy = policy
        self.states: Dict[str, HostState] = {h.name: HostState(h, policy) for h in hosts}
        # Destinations are weighed in name order, so that ties go to the first name.
        self.by_name: List[HostState] = [self.states[name] for name in sorted(self.states)]
        self.in_maintenance = {h.name for h in hosts if h.in_maintenance}
        self.guests: List[Guest] = [_copy_record(g) for g in guests]
        seen = set()
        for guest in self.guests:
            if guest.name in seen:
                raise ValueError("duplicate guest name %r" % guest.name)
            seen.add(guest.name)
            if guest.host is not None:
                if guest.host not in self.states:
                    raise ValueError("guest %r runs on %r, which is not among the hosts"
                                     % (guest.name, guest.host))
                # Guests already running are part of the host's free memory figure.
                self.states[guest.host].add(guest, arriving=False)

    def guests_on(self, host: str) -> List[Guest]:
        return [g for g in self.guests if g.host == host]

    def move(self, guest: Guest, destination: str):
        self.states[guest.host].remove(guest)
        guest.host = destination
        self.states[destination].add(guest, arriving=True)


def ordered_guests(guests: List[Guest], order: str) -> List[Guest]:
    if order == "largest_first":
        return sorted(guests, key=lambda g: (-g.memory_mib, -g.vcpus, g.name))
    if order == "smallest_first":
        return sorted(guests, key=lambda g: (g.memory_mib, g.vcpus, g.name))
    return list(guests)


def _drain(cluster: ClusterSimulation, source: str, cpu_check: Optional[CpuCheck]) -> Plan:
    """Plans the drain of `source` and applies the moves to `cluster`."""
    policy = cluster.policy
    if source not in cluster.states:
        raise ValueError("unknown source host %r" % source)
    plan = Plan(source=source)
    movable = []
    for guest in cluster.guests_on(source):
        if guest.movable:
            movable.append(guest)
            continue
        action = guest.unmovable_policy or policy.unmovable
        if action not in UNMOVABLE_POLICIES:
            raise ValueError("guest %r: unmovable_policy must be one of %s"
                             % (guest.name, ", ".join(UNMOVABLE_POLICIES)))
        plan.unmovable.append(UnmovableAction(guest.name, action, guest.unmovable_reason or "not movable"))

    # Who may receive guests does not change during one drain: sorted out once.
    others = [state for state in cluster.by_name if state.host.name != source]
    out_of_service = {state.host.name: "in maintenance" for state in others
                      if state.host.name in cluster.in_maintenance}
    destinations = [state for state in others if state.host.name not in out_of_service]
    for guest in ordered_guests(movable, policy.order):
        per_host: Dict[str, str] = dict(out_of_service)
        # Balanced choice: the host with the most memory left after taking the guest; ties go
        # to the fewest allocated vCPUs, then to the first name (destinations are in name order
        # and only a strictly better host replaces the best so far), so plans are reproducible.
        best, best_key = None, None
        for state in destinations:
            why = (cpu_check is not None and cpu_refusal(cpu_check, guest, state.host)) or state.refusal(guest, policy)
            if why:
                per_host[state.host.name] = why
                continue
            key = (state.memory_limit - state.memory_allocated, -state.vcpus_allocated)
            if best is None or key > best_key:
                best, best_key = state, key
        if best is None:
            plan.unplaced.append(Unplaced(guest.name, source, guest.memory_mib, guest.vcpus, per_host))
            continue
        plan.moves.append(Move(guest.name, source, best.host.name, guest.memory_mib, guest.vcpus))
        cluster.move(guest, best.host.name)
    return plan


def plan_drain(source: str, hosts: Sequence[HostCapacity], guests: Sequence[Guest],
               policy: Optional[PlacementPolicy] = None, cpu_check: Optional[CpuCheck] = None) -> Plan:
    """Places every guest running on `source` on the other `hosts`.

    `hosts`: every host of the cluster, the source included. `guests`: every guest of the
    cluster with its current `host` (guests already elsewhere count against capacity and
    anti-affinity). Hosts in maintenance and the source are never destinations; neither is a
    host the `cpu_check` refuses. The inputs are not modified.
    """
    policy = policy or PlacementPolicy()
    return _drain(ClusterSimulation(hosts, guests, policy), source, cpu_check)


@dataclass
class CapacityStep:
    host: str
    plan: Plan
    step: int = 1  # 1-based index of the step (wave) the host was drained in


@dataclass
class CapacityProof:
    """Result of `prove_rolling_capacity`: one drain plan per host in maintenance order."""

    steps: List[CapacityStep]

    @property
    def ok(self) -> bool:
        return all(step.plan.ok for step in self.steps)

    @property
    def failures(self) -> List[CapacityStep]:
        return [step for step in self.steps if not step.plan.ok]

    def problems(self) -> List[str]:
        return ["draining %s (step %d): %s" % (step.host, step.step, problem)
                for step in self.steps for problem in step.plan.problems()]

    def to_dict(self) -> dict:
        return {"ok": self.ok, "problems": self.problems(),
                "steps": [{"step": s.step, "host": s.host, "plan": s.plan.to_dict()} for s in self.steps]}


def prove_rolling_capacity(order: Sequence[Union[str, Sequence[str]]], hosts: Sequence[HostCapacity],
                           guests: Sequence[Guest], policy: Optional[PlacementPolicy] = None,
                           cpu_check: Optional[CpuCheck] = None) -> CapacityProof:
    """Checks that for every host in `order`, the rest of its cluster can absorb its guests.

    `order` lists the steps of the maintenance: a host name, or a list of host names that are
    in maintenance at the same time (a wave with max_unavailable > 1); hosts of one step are
    never destinations for each other. The drains are simulated in sequence: when a step is
    drained, guests of earlier steps are wherever their plans put them (memory, vCPUs, host
    free memory and anti-affinity follow them), and hosts of earlier steps are back in service
    (usable as destinations). Guests that would be shut down or left in place stay on their
    host. A failing step does not stop the simulation: the guests it could place are moved,
    the rest stay, so later steps still report their own shortfalls.
    """
    policy = policy or PlacementPolicy()
    cluster = ClusterSimulation(hosts, guests, policy)
    steps_hosts = [[step] if isinstance(step, str) else list(step) for step in order]
    unknown = [h for step in steps_hosts for h in step if h not in cluster.states]
    if unknown:
        raise ValueError("hosts in the order but not in the cluster: %s" % ", ".join(unknown))
    steps = []
    for number, members in enumerate(steps_hosts, start=1):
        newly_marked = [h for h in members if h not in cluster.in_maintenance]
        cluster.in_maintenance.update(members)
        for host in members:
            steps.append(CapacityStep(host, _drain(cluster, host, cpu_check), number))
        cluster.in_maintenance.difference_update(newly_marked)
    return CapacityProof(steps)


def capacity_from_dicts(hosts: Iterable[Mapping], guests: Iterable[Mapping]):
    """Builds `HostCapacity` / `Guest` lists from plain dicts (module arguments, JSON).

    Unknown keys are rejected so that a typo (`anti_affinity` for `anti_affinity_group`) does
    not silently drop a constraint.
    """
    def build(cls, data):
        known = set(cls.__dataclass_fields__)
        extra = set(data) - known
        if extra:
            raise ValueError("%s: unknown keys %s (known: %s)"
                             % (cls.__name__, sorted(extra), ", ".join(sorted(known))))
        return cls(**data)
    return [build(HostCapacity, h) for h in hosts], [build(Guest, g) for g in guests]
