# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drain one hypervisor host: plan where each running guest goes, refuse before moving
anything if the cluster cannot take them, live-migrate them a few at a time, and prove at the
end that the host runs no guest any more (a host must never be rebooted with guests on it).

Three steps, each usable alone:

* ``gather_cluster(...)`` reads the cluster from libvirt: capacity of every host, the guests
  they run (``Guest``/``HostCapacity`` of ``placement``), and a CPU predicate that asks each
  destination ``compareHypervisorCPU`` about each guest's CPU;
* ``plan_host_drain(...)`` feeds that to the shared placement planner
  (``placement.plan_drain``: cumulative reservation, anti-affinity, maintenance marks), so the
  check-mode plan and the real run come from the same deterministic code;
* ``run_moves(...)`` runs the plan's migrations, at most ``max_parallel`` at once and at most
  ``max_incoming_per_destination`` into one host, in plan order; the first failure stops new
  starts, running ones finish, and every guest's location is reported. ``IncomingRoom`` holds
  each move until its destination has room, counting the other drains' moves there (drains
  of one cluster run side by side) and whatever else its own daemon lists arriving.

``drain_host(...)`` chains them (the entry point of the ``host_drain`` module and action,
through ``host_drain_task.run``). Nothing here imports Ansible.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import queue
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict

from ansible_collections.virtfleet.cluster.plugins.module_utils import canary
from ansible_collections.virtfleet.cluster.plugins.module_utils import capacity as facts_capacity
from ansible_collections.virtfleet.cluster.plugins.module_utils import libvirt_facts
from ansible_collections.virtfleet.cluster.plugins.module_utils import libvirt_connection
from ansible_collections.virtfleet.cluster.plugins.module_utils import reservations
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.drain_options import (
    DEFAULT_MAX_INCOMING, DEFAULT_MAX_PARALLEL, ClusterHost, DrainOptions)
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration import migrate_guest
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_recovery import MigrationError
from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import plan_drain


# How long a move waits for migrations of other drains into its destination to end before its
# guest is left where it is (one migration of a large guest can take this long).
INCOMING_WAIT_S = 1800
INCOMING_POLL_S = 1.0
# A place in a destination held by this room alone (no lock_dir: a module run on one host).
HELD_WITHOUT_LOCK_FILE = -1


class DrainError(VirtfleetError):
    """The drain was refused or did not empty the host. ``result`` holds the full report
    (plan, per-guest outcomes, where every guest is)."""


# --------------------------------------------------------------------------- gathering
# Facts come from the shared gatherer (libvirt_facts.gather_hypervisor_facts: capacity, guests,
# migration blockers, custom CPU element) and CPU comparison from its LibvirtCpuOracle.


def gather_host(conn, host, options):
    """``(HostCapacity, [Guest])`` of one host: the running guests only (a shut-off guest
    does not care about a reboot)."""
    facts = libvirt_facts.gather_hypervisor_facts(host.uri, options.shared_storage_path,
                                                  conn=conn)
    return host_from_facts(host, facts, options)


def host_from_facts(host, facts, options):
    """``(HostCapacity, [Guest])`` of one host from its hypervisor facts."""
    # The collection's one facts-to-capacity conversion: the preflight proof uses it too.
    capacity = facts_capacity.host_from_facts(host.name, facts, host.in_maintenance)
    # A guest that became unmovable after the caller's plan is stopped only if it is allowed.
    allowed = options.stop_allowed_guests if options.unmovable == "shutdown" else None
    guests = [facts_capacity.guest_from_facts(g, host.name, options.unmovable_guests,
                                              options.anti_affinity_groups,
                                              options.migration.copy_storage, allowed)
              for g in facts_capacity.running_guests(facts)]
    return capacity, guests


class CpuChecker:
    """Placement's CPU predicate: asks each destination's libvirt (through the shared
    ``LibvirtCpuOracle``) whether it can run the guest's CPU model. Guests whose CPU is not a
    custom model pass: the migration itself refuses if the hosts really differ."""

    def __init__(self, connections):
        self.oracle = libvirt_facts.LibvirtCpuOracle(connections)
        self._cache = {}

    def __call__(self, guest, host):
        cpu = guest.cpu or {}
        if not cpu.get("xml"):
            return None
        key = (cpu["xml"], cpu.get("arch"), cpu.get("virttype"), host.name)
        if key not in self._cache:
            self._cache[key] = self.oracle.compare(host.name, cpu["xml"], cpu.get("arch"),
                                                   cpu.get("virttype"))
        return self._cache[key]


@dataclass
class ClusterView:
    """What ``gather_cluster`` read: capacities, guests, hosts that could not be read, and
    the CPU predicate bound to the open connections."""

    source: str
    hosts: Any
    capacities: Any
    guests: Any
    unreachable: Dict[str, str]
    cpu_check: Any
    connections: Dict[str, Any]

    def close(self):
        for conn in self.connections.values():
            try:
                conn.close()
            except Exception:
                pass

    def guests_on(self, host):
        return [g for g in self.guests if g.host == host]


def gather_cluster(source, hosts, options, connect=None):
    """Reads every host of the cluster, several at once (``libvirt_facts.read_hosts``, the
    reader cluster_homogeneity uses too). The source must answer; another host that doesn't is
    left out of the plan (listed in ``unreachable``), as is any host in maintenance."""
    by_name = dict((h.name, h) for h in hosts)
    if source not in by_name:
        raise DrainError("host %s is not among the cluster hosts given (%s)"
                         % (source, ", ".join(sorted(by_name))))
    ordered = sorted(hosts, key=lambda h: h.name)
    readings = libvirt_facts.read_hosts([(h.name, h.uri, options.shared_storage_path) for h in ordered],
                                        connect or libvirt_connection.open_connection)
    connections, capacities, guests, unreachable = {}, [], [], {}
    for host in ordered:
        reading = readings[host.name]
        if reading.error is None:
            try:
                capacity, host_guests = host_from_facts(host, reading.facts, options)
            except Exception as exc:  # facts the planner cannot use: the host counts as unreadable
                reading.close()
                reading.error = libvirt_connection.libvirt_message(exc)
        if reading.error is not None:
            unreachable[host.name] = reading.error
            continue
        connections[host.name] = reading.connection
        capacities.append(capacity)
        guests.extend(host_guests)
    if source in unreachable:
        for opened in connections.values():
            opened.close()
        raise DrainError("cannot read host %s to drain it: %s" % (source, unreachable[source]))
    cpu_check = CpuChecker(connections) if options.cpu_check else None
    return ClusterView(source, by_name, capacities, guests, unreachable, cpu_check, connections)


# --------------------------------------------------------------------------- planning


def plan_host_drain(view, options, in_flight=()):
    """The drain plan of ``view.source`` as a plain dict, from the shared placement planner.

    ``moves`` are in the order they will be started (the planner's order: largest first by
    default); ``ok`` False means the drain must be refused, ``problems`` says why.
    ``in_flight``: the moves other drains of the cluster have reserved
    (``reservations.in_flight``); what they promised a destination is not free here
    (``reserved``, per destination).
    """
    capacities, guests, reserved = reservations.subtract_in_flight(view.capacities, view.guests, in_flight)
    plan = plan_drain(view.source, capacities, guests, options.policy(), view.cpu_check)
    data = plan.to_dict()
    data["reserved"] = reserved
    for index, move in enumerate(data["moves"]):
        move["order"] = index + 1
    data["max_parallel"] = options.max_parallel
    data["max_incoming_per_destination"] = options.max_incoming_per_destination
    data["unreachable_hosts"] = dict(view.unreachable)
    data["excluded_in_maintenance"] = sorted(c.name for c in view.capacities
                                             if c.in_maintenance and c.name != view.source)
    return data


def refusal_message(source, plan):
    guests_total = len(plan["moves"]) + len(plan["unplaced"])
    short = sum(u["memory_mib"] for u in plan["unplaced"])
    head = "refusing to drain %s, nothing was moved: " % source
    parts = []
    if plan["unplaced"]:
        parts.append("the cluster cannot absorb %d of its %d guests (%d MiB short: %s)"
                     % (len(plan["unplaced"]), guests_total, short,
                        ", ".join("%s %d MiB" % (u["guest"], u["memory_mib"])
                                  for u in plan["unplaced"])))
    parts.extend(p for p in plan["problems"] if "cannot live-migrate" in p)
    details = [p for p in plan["problems"] if "cannot be placed" in p]
    text = head + "; ".join(parts)
    if details:
        text += ". Details: " + " | ".join(details)
    if plan.get("unreachable_hosts"):
        text += ". Unreachable hosts left out: " + ", ".join(
            "%s (%s)" % item for item in sorted(plan["unreachable_hosts"].items()))
    return text


# --------------------------------------------------------------------------- running


def run_moves(moves, migrate_one, max_parallel=DEFAULT_MAX_PARALLEL,
              max_incoming_per_destination=DEFAULT_MAX_INCOMING, clock=time.monotonic):
    """Run ``migrate_one(move) -> result dict`` for each move (dicts with guest, source,
    destination), concurrently within the limits, in list order as far as the limits allow.

    ``migrate_one`` raises ``MigrationError`` (or anything) on failure. The first failure
    stops new starts; migrations already running finish. Returns one outcome per move, in
    ``moves`` order: ``status`` migrated | failed | not_started, ``running_on`` (the host
    running the guest, None when nobody does), ``where`` (where the guest is, for people: the
    host running it, ``hv-1 (paused)``, ``hv-1 and hv-2 (active on both)``, ``NOWHERE`` or
    ``unknown``; a failure also gives ``paused_on``), timings, ``start_index`` (order actually
    started), ``result`` or ``error``.
    """
    pending = list(range(len(moves)))
    outcomes = [None] * len(moves)
    incoming = {}
    running = 0
    started = 0
    failed = False
    done = queue.Queue()
    t0 = clock()

    def worker(index):
        move = moves[index]
        began = clock()
        try:
            result = migrate_one(move)
            outcome = {"status": "migrated", "running_on": move["destination"],
                       "location": "destination", "where": move["destination"],
                       "result": result}
        except MigrationError as exc:
            outcome = {"status": "failed", "running_on": exc.running_on,
                       "location": exc.location, "where": exc.where, "paused_on": exc.paused_on,
                       "error": exc.message, "reason": exc.reason}
        except Exception as exc:  # a bug or an unexpected libvirt state: report, don't hide
            outcome = {"status": "failed", "running_on": None, "location": "unknown",
                       "where": "unknown", "paused_on": None,
                       "error": "%s: unexpected error: %r" % (move["guest"], exc),
                       "reason": "unexpected"}
        outcome["started_s"] = round(began - t0, 3)
        outcome["ended_s"] = round(clock() - t0, 3)
        done.put((index, outcome))

    while pending or running:
        while not failed and running < max_parallel:
            startable = [i for i in pending
                         if incoming.get(moves[i]["destination"], 0) < max_incoming_per_destination]
            if not startable:
                break
            index = startable[0]
            pending.remove(index)
            destination = moves[index]["destination"]
            incoming[destination] = incoming.get(destination, 0) + 1
            running += 1
            thread = threading.Thread(target=worker, args=(index,),
                                      name="drain-%s" % moves[index]["guest"])
            thread.daemon = True
            thread.start()
            outcomes[index] = {"start_index": started}
            started += 1
        if not running:
            break  # stopped after a failure: the rest are not started
        index, outcome = done.get()
        running -= 1
        incoming[moves[index]["destination"]] -= 1
        outcomes[index].update(outcome)
        if outcome["status"] != "migrated":
            failed = True

    for index in pending:
        outcomes[index] = {"status": "not_started", "running_on": moves[index]["source"],
                           "location": "source", "where": moves[index]["source"], "start_index": None,
                           "error": "not started: an earlier migration of the drain failed"}
    report = []
    for move, outcome in zip(moves, outcomes):
        entry = {"guest": move["guest"], "source": move["source"],
                 "destination": move["destination"]}
        entry.update(outcome)
        report.append(entry)
    return report


def refused_before_start(move, why):
    """The failure of a move refused before its migration started: the guest runs where it was."""
    return MigrationError("%s not moved, still running on %s: %s" % (move["guest"], move["source"], why),
                          guest=move["guest"], source=move["source"], destination=move["destination"],
                          reason="refused-before-start", location="source", running_on=move["source"])


def arriving_guests(conn):
    """The guests arriving on a host now, sorted: an incoming live migration shows on its
    destination as an active guest paused for migration."""
    arriving = []
    for dom in conn.listAllDomains(libvirt_connection.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        if tuple(dom.state()[:2]) == (libvirt_connection.VIR_DOMAIN_PAUSED, libvirt_connection.VIR_DOMAIN_PAUSED_MIGRATION):
            arriving.append(dom.name())
    return sorted(arriving)


class IncomingRoom:
    """Keeps the migrations into each destination within ``limit`` (max_incoming_per_destination)
    across drains. Each move holds one of ``limit`` lock files of its destination in
    ``lock_dir`` while it runs: the drains of a run share the controller, so two of them never
    both take the last place (an arriving guest shows on its destination only seconds after its
    migration starts). Besides, whatever else arrives there (an operator's migration) counts as
    the destination's daemon lists it. Without ``lock_dir`` (the module run on a host, which holds
    the cluster's move turn for its whole drain) the drain's own moves and libvirt's list count.
    With ``lock_dir``, moves take a destination's places in the order they asked (see enter).
    """

    def __init__(self, connections, limit, lock_dir=None, timeout=None, poll=None, clock=None, sleep=None):
        self.connections = connections
        self.limit = limit
        self.lock_dir = lock_dir
        self.timeout = INCOMING_WAIT_S if timeout is None else timeout
        self.poll = INCOMING_POLL_S if poll is None else poll
        self.clock = clock or time.monotonic
        self.sleep = sleep or time.sleep
        self._held = {}  # (destination, guest) this drain is sending now -> its lock file's descriptor
        self._lock = threading.Lock()
        if lock_dir:
            os.makedirs(lock_dir, mode=0o700, exist_ok=True)

    def enter(self, move):
        """Waits until ``move``'s destination has room, then counts the move there. Returns the
        other guests it waited for (sorted, empty when none); raises MigrationError when the
        room did not come within ``timeout`` (the guest was not touched).

        Moves of several drains into one destination take its places in the order they asked
        (a ticket each in ``lock_dir``): a drain's next move does not overtake another drain's
        move that has been waiting while its previous one ran."""
        destination, guest = move["destination"], move["guest"]
        ticket = self._ticket(destination, guest)
        try:
            return self._wait_for_room(move, destination, guest, ticket)
        finally:
            if ticket is not None:
                _remove(ticket[0])
                os.close(ticket[1])

    def _wait_for_room(self, move, destination, guest, ticket):
        deadline = None
        waited_for = set()
        while True:
            try:
                arriving = set(arriving_guests(self.connections[destination]))
            except Exception as exc:  # the daemon refused the question: do not guess
                raise refused_before_start(move, "%s could not say what arrives on it: %s"
                                           % (destination, libvirt_connection.libvirt_message(exc))) from exc
            ahead = self._waiting_ahead(destination, ticket)
            with self._lock:
                ours = {sent for (to, sent) in self._held if to == destination}
                others = arriving - ours - {guest}
                if len(others) + len(ours) < self.limit:
                    # Moves that asked earlier go first: only a place none of them needs is taken.
                    held = self._claim(destination, guest, leave_free=len(ahead))
                    if held is not None:
                        self._held[(destination, guest)] = held
                        return sorted(waited_for)
                    others |= set(self._holders(destination)) - ours
                others |= set(ahead) - {guest}
                busy = sorted(others | ours)
            waited_for |= others
            deadline = self.clock() + self.timeout if deadline is None else deadline
            if self.clock() >= deadline:
                raise refused_before_start(move, "%s still receives %s after %d s of waiting (max_incoming_per_destination %d)"
                                           % (destination, ", ".join(busy), self.timeout, self.limit))
            self.sleep(self.poll)

    def _queue(self, destination):
        return os.path.join(self.lock_dir, "%s.queue" % _file_name(destination))

    def _ticket(self, destination, guest):
        """(path, descriptor) of this move's place in the destination's queue, its lock held
        while the move waits (so a ticket left by a crashed drain is seen as such); None without
        ``lock_dir``. Named by the time it was taken; locked before it shows in the queue."""
        if not self.lock_dir:
            return None
        queue_dir = self._queue(destination)
        os.makedirs(queue_dir, mode=0o700, exist_ok=True)
        name = "%020d-%d-%d" % (time.time_ns(), os.getpid(), next(_TICKET_NUMBERS))
        hidden = os.path.join(queue_dir, "." + name)
        descriptor = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        os.write(descriptor, guest.encode())
        path = os.path.join(queue_dir, name)
        os.rename(hidden, path)
        return path, descriptor

    def _waiting_ahead(self, destination, ticket):
        """The guests of the moves into destination that asked before this one and still wait
        (tickets whose lock nobody holds any more are removed: their drain is gone)."""
        if ticket is None:
            return []
        queue_dir, own = os.path.split(ticket[0])
        ahead = []
        for name in sorted(os.listdir(queue_dir)):
            if name >= own:
                break
            if name.startswith("."):
                continue
            path = os.path.join(queue_dir, name)
            waiting = _name_in_held_file(path)
            if waiting is None:
                _remove(path)  # entered meanwhile, or its drain is gone: nobody waits behind it
            else:
                ahead.append(waiting or "?")
        return ahead

    def leave(self, move):
        with self._lock:
            held = self._held.pop((move["destination"], move["guest"]), None)
            if held is not None and held != HELD_WITHOUT_LOCK_FILE:
                os.close(held)  # gives the place back (the lock goes with the descriptor)

    def _paths(self, destination):
        return [os.path.join(self.lock_dir, "%s-%d.lock" % (_file_name(destination), index)) for index in range(self.limit)]

    def _claim(self, destination, guest, leave_free=0):
        """A descriptor holding a free place of the destination (its lock file names the guest),
        None unless ``leave_free`` places more are free (for the moves waiting ahead);
        HELD_WITHOUT_LOCK_FILE without ``lock_dir``."""
        if not self.lock_dir:
            return HELD_WITHOUT_LOCK_FILE
        free = []
        for path in self._paths(destination):
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                continue
            free.append(descriptor)
            if len(free) > leave_free:
                break
        if len(free) <= leave_free:
            for descriptor in free:
                os.close(descriptor)
            return None
        descriptor = free.pop()
        for other in free:
            os.close(other)  # left for the moves ahead
        os.ftruncate(descriptor, 0)
        os.write(descriptor, guest.encode())
        return descriptor

    def _holders(self, destination):
        """The guests holding the destination's places now (a place given back keeps the name
        of its last guest in its file, but not its lock)."""
        names = [_name_in_held_file(path) for path in self._paths(destination)]
        return [name for name in names if name]


_TICKET_NUMBERS = itertools.count()


def _file_name(host):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", host)


def _name_in_held_file(path):
    """The name written in a lock file while somebody holds its lock; None when nobody does
    (or the file is gone)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(descriptor, 4096).decode(errors="replace").strip()
    finally:
        os.close(descriptor)
    return None


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _serialized(progress):
    """Progress callbacks come from several migration threads; callers get them one at a time."""
    if progress is None:
        return None
    lock = threading.Lock()

    def call(sample):
        with lock:
            progress(sample)
    return call


def _shutdown_cleanly(conn, guest, timeout):
    """ACPI shutdown and wait; never destroy. Returns None when off, else why not."""
    try:
        dom = conn.lookupByName(guest)
        if not dom.isActive():
            return None
        dom.shutdown()
    except Exception as exc:
        return "shutdown request failed: %s" % libvirt_connection.libvirt_message(exc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not dom.isActive():
                return None
        except Exception:
            return None  # transient guest gone
        time.sleep(1)
    return "still running %d s after a clean shutdown request (not forced)" % timeout


def running_guest_names(conn):
    """The guests active on the host; the collection's canary is none (it never needs a drain)."""
    return sorted(d.name() for d in conn.listAllDomains(libvirt_connection.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                  if not canary.domain_is_canary(d))


def move_refusal(move, state, token):
    """Why ``move`` must not start now, from the cluster's shared state read just before it
    (``maintenance_state`` read: ``lock``, ``runs``, ``marks``), or None: the run (``token``) no
    longer holds the cluster's lock (exclusive, or shared: registered in ``runs``), or the
    destination was marked in maintenance since the plan."""
    lock = (state or {}).get("lock") or {}
    holder = lock.get("holder") or {}
    runs = (state or {}).get("runs") or {}
    if holder.get("token") != token and token not in runs:
        holders = ([holder] if lock else []) + [r.get("holder") or {} for r in runs.values()]
        return ("this run no longer holds the lock of the cluster (%s): no further guest moves"
                % (("held by run %s" % ", run ".join(h.get("run_id", "?") for h in holders)) if holders
                   else "nobody holds it"))
    mark = ((state or {}).get("marks") or {}).get(move["destination"])
    if mark:
        return ("%s was marked in maintenance since the plan (by %s: %s)"
                % (move["destination"], (mark.get("owner") or {}).get("run_id", "?"), mark.get("reason") or "no reason given"))
    return None


def drain_host(source, hosts, options=None, check_mode=False, progress=None, connect=None,
               migrate=None, gate=None, in_flight=(), on_plan=None, incoming_locks=None):
    """Drain ``source`` (a host name) of its running guests.

    ``hosts``: the cluster's hosts, ``ClusterHost`` or dicts {name, uri, in_maintenance,
    migration_uri}, the source included. ``progress(MigrationProgress)`` gets live samples of
    every migration (serialized). ``check_mode`` returns the plan and touches nothing.
    ``migrate`` defaults to ``migration.migrate_guest`` (injectable for tests of the
    orchestration only). ``in_flight``: other drains' reserved moves (see
    ``plan_host_drain``); ``on_plan(plan)`` runs once an accepted plan is made, before the
    first migration (it records the reservation; what it raises stops the drain there).
    ``incoming_locks``: the directory of the lock files through which the drains of one
    controller keep ``max_incoming_per_destination`` together (``IncomingRoom``).

    Returns the report dict; raises ``DrainError`` (with ``.result``, the same report) when
    the drain is refused, a migration fails, or guests remain on the host at the end.
    """
    options = options or DrainOptions()
    hosts = [h if isinstance(h, ClusterHost) else ClusterHost.from_dict(h) for h in hosts]
    migrate = migrate or migrate_guest
    began = time.monotonic()
    view = gather_cluster(source, hosts, options, connect)
    try:
        plan = plan_host_drain(view, options, in_flight)
        result = {
            "host": source,
            "changed": False,
            "check_mode": bool(check_mode),
            "plan": plan,
            "migrations": [],
            "shutdown": [],
            "left": [a["guest"] for a in plan["unmovable"] if a["action"] == "leave"],
        }
        if not plan["ok"]:
            result["locations"] = dict((g.name, g.host) for g in view.guests_on(source))
            raise DrainError(refusal_message(source, plan), result)
        if check_mode:
            result["would_migrate"] = len(plan["moves"])
            result["would_shutdown"] = [a["guest"] for a in plan["unmovable"]
                                        if a["action"] == "shutdown"]
            # Check mode reports what a real run would change.
            result["changed"] = bool(result["would_migrate"] or result["would_shutdown"])
            return result

        if on_plan is not None:
            try:
                on_plan(plan)
            except Exception as exc:
                result["locations"] = dict((g.name, g.host) for g in view.guests_on(source))
                raise DrainError("drain of %s stopped before any migration: %s" % (source, exc), result) from exc
        by_name = view.hosts
        sample = _serialized(progress)

        gate_lock = threading.Lock()
        room = IncomingRoom(view.connections, options.max_incoming_per_destination, incoming_locks)

        def migrate_one(move):
            waited_for = room.enter(move)
            try:
                if gate is not None:
                    with gate_lock:  # one question at a time (the caller's connection is not shared)
                        why = gate(move)
                    if why:
                        raise refused_before_start(move, why)
                result = migrate(move["guest"], by_name[move["source"]].uri,
                                 by_name[move["destination"]].uri, options.migration,
                                 progress=sample, source_name=move["source"],
                                 dest_name=move["destination"],
                                 dest_peer_uri=by_name[move["destination"]].migration_uri)
            finally:
                room.leave(move)
            if waited_for:
                result = dict(result, waited_for_incoming=waited_for)
            return result

        result["moves_began"] = time.time()  # the epoch that started_s/ended_s count from
        outcomes = run_moves(plan["moves"], migrate_one, options.max_parallel,
                             options.max_incoming_per_destination)
        result["migrations"] = outcomes
        result["changed"] = any(o["status"] == "migrated" for o in outcomes)
        failures = [o for o in outcomes if o["status"] == "failed"]
        if failures:
            result["locations"] = _locations(view.guests_on(source), outcomes)
            result["where"] = _where(view.guests_on(source), outcomes)
            # Where each guest is in words: a guest paused on one host, or active on both,
            # is named so (its host-or-None location would say nobody runs it).
            raise DrainError(
                "drain of %s stopped: %s. Where the guests are: %s"
                % (source, "; ".join(o["error"] for o in failures),
                   ", ".join("%s on %s" % item for item in sorted(result["where"].items()))),
                result)

        source_conn = view.connections[source]
        for action in plan["unmovable"]:
            if action["action"] != "shutdown":
                continue
            why_not = _shutdown_cleanly(source_conn, action["guest"], options.shutdown_timeout)
            result["shutdown"].append({"guest": action["guest"], "ok": why_not is None,
                                       "error": why_not})
            result["changed"] = True

        # The proof: ask the host itself. A guest that silently stayed (or arrived) is caught
        # here, before anybody reboots the host.
        still_running = running_guest_names(source_conn)
        result["remaining_guests"] = still_running
        unexpected = [g for g in still_running if g not in result["left"]]
        result["locations"] = _locations(view.guests_on(source), outcomes)
        result["where"] = _where(view.guests_on(source), outcomes)
        result["elapsed_s"] = round(time.monotonic() - began, 3)
        if unexpected:
            why = ["%s: %s" % (item["guest"], item["error"]) for item in result["shutdown"]
                   if not item["ok"]]
            raise DrainError("%s still runs %s after the drain: do not reboot it%s"
                             % (source, ", ".join(unexpected),
                                " (%s)" % "; ".join(why) if why else ""), result)
        return result
    finally:
        view.close()


def _locations(guests_on_source, outcomes):
    where = dict((g.name, g.host) for g in guests_on_source)
    for outcome in outcomes:
        where[outcome["guest"]] = outcome["running_on"]
    return where


def _where(guests_on_source, outcomes):
    """Guest -> where it is, in words (the outcome's ``where``; a guest not moved is on its
    host): never just "nowhere" for a guest paused on a host or active on two."""
    where = dict((g.name, g.host) for g in guests_on_source)
    for outcome in outcomes:
        where[outcome["guest"]] = outcome.get("where") or "unknown"
    return where
