# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Slots: which hosts of a cluster may be out of service now, decided from the cluster's shared
state (so each cluster of a run progresses on its own clock, whatever the play's hosts know).

Two pools of slot files live in ``<state dir>/slots/``, each slot created with an exclusive
link (atomic, also on NFS) and removed when its holder is through:

* ``host-<n>.json`` (n < max_unavailable): a host holds one from before its mark until it is
  back in service. A host takes one when its turn in the run's planned order has come (every
  host of the earlier rounds of its cluster is recorded done in the maintenance window) and the
  cluster has room: slot holders, marked hosts and hosts that did not answer at preflight
  together stay below max_unavailable. A host that fails keeps its slot, flagged ``failed``:
  the cluster stops (every waiting host is told), and its mark keeps it out of service.
* ``move-0.json``: the one live-migration turn of the cluster, held by a drain while it plans
  and records its reservation (``reservations``), or by a canary for its round trip, so two
  hosts out at once never plan onto the same free memory or pick the same canary.

Runs that share the cluster's lock (``maintenance_state``: two operators, two AWX jobs)
share its slots: max_unavailable and the move turn hold across them. Each run keeps its own
order (its rounds); a host another run holds a slot for (or marked), or recorded done in the
window meanwhile, is left to it (``elsewhere``): never maintained twice, and not asked
anything more while that run may be rebooting it. Slots of a run
that no longer holds the lock are removed by the next run once it holds it (``clear_others``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Union

from ansible_collections.virtfleet.cluster.plugins.module_utils.state_store import (
    StateError, StateStore, create_json_exclusive, iso, make_state_dirs, marks_of_runs, now, read_json, unlink_quietly,
    write_json_atomic)

SLOTS_DIR = "slots"
POOLS = ("host", "move")
Record = Dict[str, Any]


@dataclass(frozen=True)
class Decision:
    """What a host may do now: ``take`` slot ``slot``, it already ``holds`` it, ``wait``
    (``reason`` says for what), nothing because another run maintains it or did meanwhile
    (``elsewhere``, ``reason`` says which) or stop, because the cluster ``stopped`` (``reason``
    says why)."""
    action: str
    reason: str = ""
    slot: Optional[str] = None


def slot_name(pool: str, index: int) -> str:
    return "%s-%d.json" % (pool, index)


def hosts_out_of_service(slots: Dict[str, Record], marked: Iterable[str] = (), unreachable: Iterable[str] = ()) -> Set[str]:
    """The hosts of a cluster out of service or going out: marked in maintenance, holding a host
    slot, or unreachable at preflight. Each takes room of max_unavailable; none is a destination."""
    holders = {r.get("host") for name, r in slots.items() if name.startswith("host-")}
    return holders | set(marked) | set(unreachable)


def out_for_other_runs(marks: Mapping[str, Record], slots: Mapping[str, Record], live_tokens: Iterable[str],
                       token: Optional[str]) -> Dict[str, str]:
    """host -> run id of each host another run holding the cluster's lock has out now (its mark
    or its host slot): that run may be draining or rebooting it, so this run leaves it alone."""
    others = set(live_tokens) - {token}
    out = marks_of_runs(dict(marks), others)
    for record in slots.values():
        if record.get("pool") == "host" and record.get("token") in others and record.get("host"):
            out.setdefault(record["host"], record.get("run_id") or "?")
    return out


def decide(host: str, pool: str, limit: int, slots: Dict[str, Record], rounds: Sequence[Sequence[str]] = (),
           done: Union[Mapping[str, Record], Iterable[str]] = (), out_of_service: Iterable[str] = (),
           token: Optional[str] = None, busy: Optional[Mapping[str, str]] = None) -> Decision:
    """Pure admission rule (see the module docstring). ``slots``: slot file name to record, of
    both pools; ``rounds``: the run's planned order of the host's cluster (lists of hosts that
    may be out together); ``done``: hosts recorded done in the window (host -> its record);
    ``out_of_service``: marked hosts and hosts that did not answer at preflight; ``token``: the
    asking run's (slots of other tokens are other runs'); ``busy``: hosts marked by another run
    that holds the lock -> that run."""
    failed = sorted("%s (%s)" % (r.get("host"), r.get("failed")) for r in slots.values() if r.get("failed"))
    # A failed host stops its cluster: no host starts after it. A host already out goes on (its
    # drain or canary still needs the move turn).
    if failed and pool == "host":
        return Decision("stopped", "the cluster stopped after %s failed" % ", ".join(failed))
    pool_slots = {name: r for name, r in slots.items() if name.startswith(pool + "-")}
    of_host = [(name, r) for name, r in sorted(pool_slots.items()) if r.get("host") == host]
    mine = [name for name, r in of_host if token is None or r.get("token") == token]
    if mine:
        return Decision("holds", slot=mine[0])
    if pool == "host":
        done = done if isinstance(done, Mapping) else {name: {} for name in done}
        if host in done:
            # Planned by this run, maintained by another since (a run's own done hosts are not planned).
            return Decision("elsewhere", "recorded done in the window by run %s" % (done[host] or {}).get("run_id", "?"))
        busy = dict(busy or {})
        busy.update((host, r.get("run_id") or "?") for _name, r in of_host)
        if host in busy:
            # That run has it now (drains, reboots it): this run leaves it, and asks it nothing more.
            return Decision("elsewhere", "in maintenance by run %s" % busy[host])
        for index, members in enumerate(rounds):
            if host in members:
                earlier = [h for r in rounds[:index] for h in r if h not in done]
                if earlier:
                    return Decision("wait", "its turn: %s of an earlier round not done yet" % ", ".join(earlier))
                break
        out = hosts_out_of_service(slots, out_of_service) - {host}
        if len(out) >= limit:
            return Decision("wait", "room: %s out of service, max_unavailable %d" % (", ".join(sorted(out)), limit))
    for index in range(limit):
        if slot_name(pool, index) not in pool_slots:
            return Decision("take", slot=slot_name(pool, index))
    holders = ", ".join(sorted(str(r.get("host")) for r in pool_slots.values()))
    return Decision("wait", "a %s slot: held by %s" % (pool, holders))


class ClusterSlots:
    """The slot files of one cluster's state directory."""

    def __init__(self, store: StateStore):
        self.store = store
        self.directory = os.path.join(store.path, SLOTS_DIR)

    def read(self) -> Dict[str, Record]:
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return {}
        # A slot released between listdir and its read is read as None (no such file): left out.
        slots = {name: read_json(os.path.join(self.directory, name))
                 for name in names if name.endswith(".json") and not name.startswith(".")}
        return {name: record for name, record in slots.items() if isinstance(record, dict)}

    def _situation(self, host: str, pool: str, limit: int, rounds: Sequence[Sequence[str]],
                   unreachable: Iterable[str], token: Optional[str], leaving_out: Optional[str] = None) -> Decision:
        slots = self.read()
        slots.pop(leaving_out, None)
        if pool == "move":
            return decide(host, pool, 1, slots, token=token)
        window = self.store.window() or {}
        done = (window.get("hosts_done") or {}) if not window.get("closed") else {}
        marks = self.store.marks()
        busy = out_for_other_runs(marks, slots, self.store.live_tokens(), token)
        return decide(host, pool, limit, slots, rounds, done, set(marks) | set(unreachable), token, busy)

    def take(self, host: str, pool: str, limit: int, holder: Record, rounds: Sequence[Sequence[str]] = (),
             unreachable: Iterable[str] = (), wait: float = 0.0, poll: float = 1.0,
             before_claim: Callable[[], None] = lambda: None) -> Record:
        """Take a slot for host, waiting up to ``wait`` seconds. Returns ``admitted`` (bool),
        ``slot``, ``stopped`` (why the cluster stopped, or None), ``waiting_for``, ``changed``
        and, when another run maintains the host or did meanwhile, ``elsewhere`` (which run).
        ``before_claim`` runs before each attempt to make a slot and may refuse it (raise): the
        run must still hold the cluster's lock then. A stopped cluster is said
        without it (the failed host's rescue may have released the lock already)."""
        if pool not in POOLS:
            raise StateError("unknown slot pool %r (one of %s)" % (pool, ", ".join(POOLS)))
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            decision = self._situation(host, pool, limit, rounds, unreachable, holder.get("token"))
            if decision.action == "take":
                if self.store.check_mode:
                    return {"admitted": True, "slot": decision.slot, "stopped": None, "waiting_for": None, "changed": True}
                before_claim()
                decision = self._claim(host, pool, limit, decision.slot, holder, rounds, unreachable)
                if decision.action == "take":
                    return {"admitted": True, "slot": decision.slot, "stopped": None, "waiting_for": None, "changed": True}
            if decision.action == "stopped":
                return {"admitted": False, "slot": None, "stopped": decision.reason, "waiting_for": None, "changed": False}
            if decision.action == "holds":
                return {"admitted": True, "slot": decision.slot, "stopped": None, "waiting_for": None, "changed": False}
            if decision.action == "elsewhere":
                return {"admitted": False, "slot": None, "stopped": None, "waiting_for": None, "changed": False,
                        "elsewhere": decision.reason}
            if time.monotonic() >= deadline:
                return {"admitted": False, "slot": None, "stopped": None, "waiting_for": decision.reason, "changed": False}
            time.sleep(poll)

    def _claim(self, host: str, pool: str, limit: int, name: str, holder: Record,
               rounds: Sequence[Sequence[str]], unreachable: Iterable[str]) -> Decision:
        """Make slot ``name`` for host. Returns ``take`` (the slot is the host's now) or why not
        (the slot was given back): a decision of the same rule."""
        make_state_dirs(self.directory)
        record = dict(holder, host=host, pool=pool, since=now(), since_iso=iso(now()))
        if not create_json_exclusive(os.path.join(self.directory, name), record):
            return Decision("wait", "a %s slot taken at the same moment by another host" % pool)
        # A mark (an operator's, another tool's) or another host's slot may have appeared between
        # the decision and the link: decide again as if this slot were not there yet (with it,
        # the rule only says the host holds it) and give it back unless the host may still take one.
        again = self._situation(host, pool, limit, rounds, unreachable, holder.get("token"), leaving_out=name)
        if again.action == "take":
            return Decision("take", slot=name)
        unlink_quietly(os.path.join(self.directory, name))
        return again

    def _held_by(self, host: str, token: Optional[str]) -> List[str]:
        return [name for name, r in self.read().items()
                if r.get("host") == host and (not token or r.get("token") == token)]

    def release(self, host: str, token: Optional[str] = None, pools: Sequence[str] = POOLS) -> List[str]:
        """Remove host's slots (of this run's token, when given) in the pools named. Returns the names."""
        names = [n for n in self._held_by(host, token) if n.split("-", 1)[0] in pools]
        if not self.store.check_mode:
            for name in names:
                unlink_quietly(os.path.join(self.directory, name))
        return names

    def stop(self, host: str, reason: str, token: Optional[str] = None) -> Record:
        """A host failed: its host slot stays, flagged failed (its cluster stops), its move turn
        is given back. Returns ``others_active``: hosts of this run still holding a host slot of
        the cluster and not failed (while there are any, the run still works in the cluster)."""
        self.release(host, token, pools=("move",))
        for name in self._held_by(host, token):
            if name.startswith("host-") and not self.store.check_mode:
                path = os.path.join(self.directory, name)
                write_json_atomic(path, dict(read_json(path), failed=reason or "failed"))
        others = sorted(r.get("host") for r in self.read().values()
                        if r.get("pool") == "host" and r.get("host") != host and not r.get("failed")
                        and (not token or r.get("token") == token))
        return {"others_active": others}

    def clear_others(self, live_tokens: Iterable[str]) -> List[str]:
        """Remove every slot of a run that holds the cluster's lock no more (``live_tokens``: the
        runs that do): called under the lock; such slots are left by a run that stopped."""
        live = set(live_tokens)
        names = [name for name, r in self.read().items() if r.get("token") not in live]
        if not self.store.check_mode:
            for name in names:
                unlink_quietly(os.path.join(self.directory, name))
        return names
