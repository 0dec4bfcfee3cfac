# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared maintenance state of one cluster: lock, maintenance marks, maintenance window.

The files and how they are written (atomically, NFS-safe, in a directory that proved it is the
cluster's shared one) are in ``state_store.py``; here are the rules every change follows:

* A lock is taken atomically and released only by its holder or by an explicit force. Its holder
  is one run: a random token made once per run (never set by a user), with the run id, the
  controller, its pid and the start time. Only the same token re-enters the lock; a second run
  started with the same run id is refused like any other run.
* A lock is exclusive (``lock.json``: rebalance, an operator) or shared (``runs/<token>.json``:
  rolling maintenance runs, which cooperate through the slots, ``cluster_slots.py``). Shared
  runs exclude an exclusive holder and a run with the same run id; an exclusive holder
  excludes every other. Each is taken by announcing first (an exclusive link), then checking
  for the other kind: two that race both see each other and the later one withdraws.
* Removing a lock renames it to a unique name first and checks the renamed file is the lock
  meant; a lock another run took in between is put back.
* A mark is created atomically too; a mark whose owner is neither this run nor this
  maintenance window belongs to somebody else and is never touched, nor is a mark of this
  window whose run still holds its shared lock (a cooperating run's).
* Every change of the window or of a run's mark needs the lock (and its token, when given).

Pure Python (no Ansible import) so the unit tests use it directly.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple, Union

from ansible_collections.virtfleet.cluster.plugins.module_utils.cluster_slots import ClusterSlots
from ansible_collections.virtfleet.cluster.plugins.module_utils.reservations import ClusterReservations
from ansible_collections.virtfleet.cluster.plugins.module_utils.state_store import (
    LOCK_FILE, CorruptState, LockHeld, StateError, StateStore, create_json_exclusive, holder_of, iso, link_exclusive,
    make_state_dirs, marks_of_runs, new_token, now, owner_of, read_bytes, read_json, unlink_quietly, write_json_atomic)

# window.json is read, changed and rewritten under this mutex: runs sharing a cluster change it
# side by side. Held for milliseconds; one older than this was left by a writer that died.
WINDOW_MUTEX = ".window.lock"
WINDOW_MUTEX_STALE_S = 30.0

# Phases a host goes through while marked, in order. A resumed run uses the phase reached to
# avoid repeating a reboot that already happened.
PHASES = ("marked", "drained", "patched", "rebooted", "verified")

Record = Dict[str, Any]


def default_holder(run_id: Optional[str], extra: Optional[Record] = None) -> Record:
    """Who a lock or a mark belongs to, as shown to the operator who finds it.

    The role passes the controller's own facts in extra (token, controller, pid, started): run
    as a module, this process is on a host of the cluster, not on the controller.
    """
    holder = {
        "run_id": run_id,
        "token": new_token(),
        "controller": socket.gethostname(),
        "pid": os.getpid(),
        "user": os.environ.get("USER") or os.environ.get("LOGNAME") or str(os.getuid()),
        "since": iso(now()),
    }
    holder.update({key: value for key, value in (extra or {}).items() if value not in (None, "")})
    return holder


def _since(raw: bytes) -> float:
    """When the window mutex ``raw`` was taken (0, long ago, when it cannot be read)."""
    try:
        return float(json.loads(raw.decode("utf-8")).get("since") or 0)
    except (ValueError, AttributeError, UnicodeDecodeError):
        return 0.0


def lock_holders(lock: Optional[Record], runs: Dict[str, Record]) -> List[Record]:
    """Every run holding the cluster's lock now: the exclusive holder, then the runs sharing it
    (in token order), each its ``holder`` with ``shared`` and ``description`` (who, where, since)
    for a message."""
    records = ([(lock, False)] if lock else []) + [(runs[token], True) for token in sorted(runs)]
    return [dict(holder_of(record), shared=shared, description=describe_holder(holder_of(record)))
            for record, shared in records]


def describe_holder(holder: Any) -> str:
    holder = holder if isinstance(holder, dict) else {}
    text = "run %s" % holder.get("run_id", "?")
    who = "%s@%s" % (holder.get("user", "?"), holder.get("controller", "?"))
    text += " (%s" % who
    if holder.get("pid"):
        text += ", pid %s" % holder["pid"]
    text += ", since %s" % (holder.get("started") or holder.get("since", "?"))
    if holder.get("awx_job_id"):
        text += ", AWX job %s" % holder["awx_job_id"]
    if holder.get("token"):
        text += ", token %s" % str(holder["token"])[:12]
    return text + ")"


class ClusterState(StateStore):
    """State of one cluster in directory ``path`` (``<storage path>/.virtfleet``): the store's
    files with the rules of who may change them."""

    def snapshot(self) -> Record:
        """The store's records, the runs holding the shared lock (``runs``), the slots
        (``cluster_slots``) and the drains' reservations (``reservations``): what a plan made now
        must respect. A mark whose run still holds the lock says so (``owner_live``)."""
        base = super().snapshot()
        runs = self.runs()
        live = marks_of_runs(base["marks"], self.live_tokens(base["lock"], runs))
        marks = {host: dict(mark, owner_live=True) if host in live else mark for host, mark in base["marks"].items()}
        return dict(base, marks=marks, runs=runs, holders=lock_holders(base["lock"], runs),
                    slots=ClusterSlots(self).read(), reservations=ClusterReservations(self).read())

    # ----------------------------------------------------------------- lock
    def _conflicting_runs(self, runs: Dict[str, Record], token: str, run_id: Optional[str], shared: bool) -> Dict[str, Record]:
        """The registered runs that exclude a lock for (token, run_id): every other one for an
        exclusive lock, another run with the same run id for a shared one."""
        return {other: record for other, record in sorted(runs.items())
                if other != token and (not shared or holder_of(record).get("run_id") == run_id)}

    def _tombstone(self, tag: str) -> str:
        return os.path.join(self.path, ".%s.%s-%s" % (LOCK_FILE, tag, uuid.uuid4().hex))

    def _take_lock_away(self, seen: Union[Record, bytes, None], keep_as: Optional[str] = None) -> Tuple[bool, Optional[str]]:
        """Remove the lock file, provided it is still ``seen`` (a lock record, or the raw bytes of
        a corrupt one). Returns (removed, path it was kept as or None); removed is False when
        there was no lock file any more.

        The lock is first renamed to a unique name (atomic: whatever is lock.json now is ours
        alone), then checked. If another run's lock took its place since it was read, that lock
        is linked back (exclusively) and LockHeld is raised. Remaining window: between the rename
        and the link back the name is free for an instant; a run taking the lock exactly then
        wins, and the displaced lock is kept under its tombstone name and reported.
        """
        tomb = keep_as or self._tombstone("released")
        try:
            os.rename(self._lock_path(), tomb)
        except FileNotFoundError:
            return False, None
        raw = read_bytes(tomb)
        try:
            taken = read_json(tomb)
        except CorruptState:
            taken = None
        if raw == seen if isinstance(seen, bytes) else taken == seen:
            if keep_as is None:
                unlink_quietly(tomb)
            return True, keep_as
        holder = holder_of(taken)
        if link_exclusive(tomb, self._lock_path()):
            unlink_quietly(tomb)
            raise LockHeld("cluster %s was locked by %s while this run was removing the lock it had read: that "
                           "lock stays, nothing was removed" % (self.cluster, describe_holder(holder)), holder)
        self._history({"event": "lock_displaced", "holder": holder, "kept_as": tomb})
        raise LockHeld("cluster %s: the lock of %s, taken while this run was removing another, could not be put back "
                       "because yet another run locked the cluster in that instant; it is kept as %s. Check which "
                       "runs are active on cluster %s before going on."
                       % (self.cluster, describe_holder(holder), tomb, self.cluster), holder)

    def _set_aside_corrupt(self, exc: CorruptState, by: Optional[str]) -> Record:
        copy = os.path.join(self.path, "%s.corrupt-%s-%s" % (LOCK_FILE, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
                                                             uuid.uuid4().hex[:6]))
        _removed, kept = self._take_lock_away(exc.raw, keep_as=copy)
        self._history({"event": "lock_broken", "by": by, "corrupt": True, "corrupt_copy": kept, "error": str(exc)})
        return {"corrupt": True, "corrupt_copy": kept, "error": str(exc)}

    def acquire_lock(self, holder: Record, force: bool = False, shared: bool = False) -> Tuple[bool, Record, Optional[Record]]:
        """Take the cluster lock for holder (its run_id and token), exclusive or ``shared``.
        Returns (changed, lock, broken_lock).

        Re-entrant for the same token only: a second run with the same run id is another run and
        is refused (LockHeld) like any other, unless force is set, in which case every lock
        that excludes this one (even a corrupt one) is broken and the broken holder is returned
        and logged.
        """
        run_id, token = holder.get("run_id"), holder.get("token")
        if not token:
            raise StateError("a lock holder needs a token (default_holder makes one)")
        corrupt = None
        try:
            current = self.lock()
        except CorruptState as exc:
            current, corrupt = None, exc
        runs = self.runs()
        if shared and token in runs:
            return False, runs[token], None
        if not shared and current and holder_of(current).get("token") == token:
            return False, current, None
        others = self._conflicting_runs(runs, token, run_id, shared)
        if (current or corrupt or others) and not force:
            if corrupt:
                raise corrupt
            raise self._refusal(current or next(iter(others.values())), holder, shared)
        lock = {"cluster": self.cluster, "holder": holder, "acquired": now()}
        if shared:
            lock["shared"] = True
        broken = current or (next(iter(others.values())) if others else None)
        if self.check_mode:
            return True, lock, ({"corrupt": True, "error": str(corrupt)} if corrupt else broken)
        self.ensure_dirs()
        if corrupt:
            broken = self._set_aside_corrupt(corrupt, run_id)
        elif current:
            self._take_lock_away(current, keep_as=None)
            self._history({"event": "lock_broken", "by": run_id, "holder": holder_of(current)})
        for other, record in others.items():
            unlink_quietly(self._run_path(other))
            self._history({"event": "lock_broken", "by": run_id, "holder": holder_of(record), "shared": True})
        if shared:
            self._register(lock)
        else:
            self._lock_exclusively(lock)
        self._history(dict({"event": "locked", "holder": holder}, **({"shared": True} if shared else {})))
        return True, lock, broken

    def _register(self, lock: Record) -> None:
        """Announce a shared lock, then check: an exclusive lock or a run with the same run id
        that came in meanwhile wins, and this registration is withdrawn."""
        holder = lock["holder"]
        path = self._run_path(holder["token"])
        make_state_dirs(os.path.dirname(path))
        if not create_json_exclusive(path, lock):
            raise StateError("cluster %s: run token %s is registered already" % (self.cluster, holder["token"][:12]))
        try:
            exclusive = self.lock()
        except CorruptState as exc:
            unlink_quietly(path)
            raise exc
        clash = exclusive or next(iter(self._conflicting_runs(self.runs(), holder["token"], holder.get("run_id"), True).values()), None)
        if clash:
            unlink_quietly(path)
            other = holder_of(clash)
            raise LockHeld("cluster %s was just locked by %s" % (self.cluster, describe_holder(other)), other)

    def _lock_exclusively(self, lock: Record) -> None:
        """Take lock.json, then check: a shared run that registered meanwhile wins, and the lock
        is given back."""
        if not create_json_exclusive(self._lock_path(), lock):
            # Somebody took it between our read and our link: report them, never overwrite.
            other = holder_of(self.lock())
            raise LockHeld("cluster %s was just locked by %s" % (self.cluster, describe_holder(other)), other)
        others = self._conflicting_runs(self.runs(), lock["holder"]["token"], None, False)
        if others:
            self._take_lock_away(lock)
            other = holder_of(next(iter(others.values())))
            raise LockHeld("cluster %s was just joined by %s" % (self.cluster, describe_holder(other)), other)

    def _refusal(self, current: Record, holder: Record, shared: bool = False) -> LockHeld:
        """Why ``holder`` cannot take the lock ``current`` holds (another run's)."""
        run_id, token = holder.get("run_id"), holder.get("token") or ""
        other = holder_of(current)
        if other.get("run_id") == run_id:
            return LockHeld(
                "cluster %s is locked by %s, another run with the same run id %s (this run is token %s): two runs "
                "were started with the same rolling_maintenance_run_id and the first still holds the lock. Two runs "
                "with one run id never maintain one cluster at once. To resume a run that died while holding the lock, "
                "make sure it is gone (pid %s on %s), then release it with rolling_maintenance_force_unlock: [%s] "
                "(lock file %s)." % (self.cluster, describe_holder(other), run_id, token[:12], other.get("pid", "?"),
                                     other.get("controller", "?"), self.cluster, self._lock_file_of(current)), other)
        if current.get("shared"):
            text = ("cluster %s is locked by %s, a rolling maintenance run: it shares the cluster only with other "
                    "rolling maintenance runs. If that run is dead, an operator releases the lock with "
                    "rolling_maintenance_force_unlock: [%s] (lock file %s).")
        elif shared:
            text = ("cluster %s is locked by %s, which holds the cluster to itself: rolling maintenance runs share a "
                    "cluster only with each other. If that run is dead, an operator releases the lock with "
                    "rolling_maintenance_force_unlock: [%s] (lock file %s).")
        else:
            text = ("cluster %s is locked by %s. Two runs never maintain one cluster at once. If that run is dead, an "
                    "operator releases the lock with rolling_maintenance_force_unlock: [%s] (lock file %s).")
        return LockHeld(text % (self.cluster, describe_holder(other), self.cluster, self._lock_file_of(current)), other)

    def _lock_file_of(self, lock: Record) -> str:
        token = holder_of(lock).get("token")
        return self._run_path(token) if lock.get("shared") and token else self._lock_path()

    def held_by_another(self, holder: Record, shared: bool = False) -> Optional[LockHeld]:
        """What taking the lock for ``holder`` now would be refused with - the lock of another run -
        or None (free, shared with cooperating runs, or this run's). Reads only. A corrupt lock is
        left to acquire_lock, which says what to do with it."""
        try:
            current = self.lock()
        except CorruptState:
            return None
        token = holder.get("token")
        if current and holder_of(current).get("token") != token:
            return self._refusal(current, holder, shared)
        others = self._conflicting_runs(self.runs(), token, holder.get("run_id"), shared)
        return self._refusal(next(iter(others.values())), holder, shared) if others else None

    def release_lock(self, run_id: Optional[str], force: bool = False, token: Optional[str] = None) -> bool:
        """Release the lock held by this run (token, or run_id when no token is given): its
        shared registration or the exclusive lock. With force, any exclusive lock (a corrupt one
        is kept as lock.json.corrupt-<time>) and every registration. Returns changed."""
        if token:
            registered = self.runs().get(token)
            if registered:
                if not self.check_mode:
                    unlink_quietly(self._run_path(token))
                    self._history({"event": "unlocked", "by": run_id, "holder": holder_of(registered), "shared": True})
                return True
        released = False
        if force:
            for other, record in self.runs().items():
                if not self.check_mode:
                    unlink_quietly(self._run_path(other))
                    self._history({"event": "unlocked", "by": run_id, "holder": holder_of(record), "shared": True,
                                   "forced": True})
                released = True
        try:
            current = self.lock()
        except CorruptState as exc:
            if not force:
                raise
            if not self.check_mode:
                self._set_aside_corrupt(exc, run_id)
            return True
        if not current:
            return released
        other = holder_of(current)
        ours = other.get("token") == token if token else other.get("run_id") == run_id
        if not ours and not force:
            raise LockHeld("cluster %s is locked by %s, not by this run (run %s%s): not releasing it"
                           % (self.cluster, describe_holder(other), run_id,
                              ", token %s" % token[:12] if token else ""), other)
        if self.check_mode:
            return True
        removed, _kept = self._take_lock_away(current)
        if removed:
            self._history({"event": "unlocked", "by": run_id, "holder": other, "forced": not ours})
        return removed or released

    def require_lock(self, run_id: str, token: Optional[str] = None) -> None:
        """Refuse (StateError) unless run_id, with token when given, holds the cluster's lock."""
        self._require_lock(run_id, token)

    def _require_lock(self, run_id: str, token: Optional[str] = None) -> None:
        runs = self.runs()
        if token and holder_of(runs.get(token)).get("run_id") == run_id:
            return
        if not token and any(holder_of(r).get("run_id") == run_id for r in runs.values()):
            return  # a run id is registered once (a second run with it is refused)
        current = self.lock()
        other = holder_of(current)
        if not current or other.get("run_id") != run_id or (token and other.get("token") != token):
            raise StateError("run %s%s does not hold the lock of cluster %s (held by: %s): it was released, or another "
                             "run holds it now; this run acts on the cluster no further"
                             % (run_id, " (token %s)" % token[:12] if token else "", self.cluster,
                                describe_holder(other) if current else "nobody"))

    # ----------------------------------------------------------------- window
    @contextlib.contextmanager
    def _window_changing(self) -> Iterator[None]:
        """Hold the window's mutex while it is read, changed and rewritten (nothing in check mode)."""
        if self.check_mode:
            yield
            return
        self.ensure_dirs()
        path = os.path.join(self.path, WINDOW_MUTEX)
        deadline = time.monotonic() + 2 * WINDOW_MUTEX_STALE_S
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": now(), "id": uuid.uuid4().hex}
        while not create_json_exclusive(path, me):
            held = read_bytes(path)
            if held is None:
                continue  # given back since
            if now() - _since(held) > WINDOW_MUTEX_STALE_S:
                # Its writer died mid-change: take it away, provided it is still the one read.
                tomb = self._tombstone("window-mutex")
                try:
                    os.rename(path, tomb)
                except FileNotFoundError:
                    continue
                if read_bytes(tomb) != held:
                    link_exclusive(tomb, path)  # another writer's, taken in between: put back
                unlink_quietly(tomb)
                continue
            if time.monotonic() > deadline:
                raise StateError("the maintenance window of cluster %s is being changed by %s for more than %d s (%s): "
                                 "try again; if no run is active, remove that file"
                                 % (self.cluster, held, 2 * WINDOW_MUTEX_STALE_S, path))
            time.sleep(0.02)
        try:
            yield
        finally:
            unlink_quietly(path)

    def open_window(self, run_id: str, name: Optional[str] = None, new: bool = False,
                    token: Optional[str] = None) -> Tuple[bool, Record]:
        """Join the open maintenance window or open a new one. Returns (changed, window).

        A window collects the hosts done across runs (a failed run and its re-run), so the
        re-run skips them. It stays open until a run finishes the whole cluster
        (close_window). name pins the window explicitly: a different name opens a new window.
        """
        self._require_lock(run_id, token)
        with self._window_changing():
            return self._open_window(run_id, name, new, token)

    def _open_window(self, run_id: str, name: Optional[str], new: bool, token: Optional[str]) -> Tuple[bool, Record]:
        current = self.window()
        others = sorted(holder_of(r).get("run_id") or "?" for t, r in self.runs().items() if t != token)
        if current and not current.get("closed") and others and (new or (name and current.get("name") != name)):
            # Runs that share the cluster work in one window: a new one would hide the hosts
            # they recorded done (their turns) and is not opened while they hold the lock.
            self._history({"event": "window_joined", "name": current.get("name"), "by": run_id, "instead_of_new": True,
                           "runs": others})
            new, name = False, None
        if current and not current.get("closed") and not new and (not name or current.get("name") == name):
            if run_id not in current.get("runs", []):
                current = dict(current, runs=current.get("runs", []) + [run_id])
                if not self.check_mode:
                    write_json_atomic(self._window_path(), current)
                return True, current
            return False, current
        window = {"name": name or run_id, "opened": now(), "opened_by": run_id, "runs": [run_id],
                  "closed": None, "hosts_done": {}, "guest_origins": {}}
        if current and not self.check_mode:
            # Keep the previous window readable for the operator.
            write_json_atomic(os.path.join(self.path, "window.previous.json"), current)
        if not self.check_mode:
            self.ensure_dirs()
            write_json_atomic(self._window_path(), window)
            self._history({"event": "window_opened", "name": window["name"], "by": run_id})
        return True, window

    def _update_window(self, run_id: str, update: Callable[[Record], Record],
                       token: Optional[str] = None) -> Tuple[bool, Record]:
        self._require_lock(run_id, token)
        with self._window_changing():
            window = self.window()
            if not window or window.get("closed"):
                raise StateError("cluster %s has no open maintenance window" % self.cluster)
            new = update(json.loads(json.dumps(window)))
            if new == window:
                return False, window
            if not self.check_mode:
                write_json_atomic(self._window_path(), new)
            return True, new

    def record_guest_origins(self, run_id: str, origins: Optional[Dict[str, str]],
                             token: Optional[str] = None) -> Tuple[bool, Record]:
        """Remember where each guest ran before the window moved anything (first record wins)."""
        def update(window: Record) -> Record:
            for guest, host in sorted((origins or {}).items()):
                window["guest_origins"].setdefault(guest, host)
            return window
        return self._update_window(run_id, update, token)

    def host_done(self, run_id: str, host: str, details: Optional[Record] = None,
                  token: Optional[str] = None) -> Tuple[bool, Record]:
        def update(window: Record) -> Record:
            window["hosts_done"][host] = dict(details or {}, run_id=run_id, at=now())
            return window
        return self._update_window(run_id, update, token)

    def close_window(self, run_id: str, token: Optional[str] = None, members: Optional[Iterable[str]] = None,
                     not_needed: Iterable[str] = ()) -> Tuple[bool, Record]:
        """Close the window (the cluster is finished). Returns (changed, window), the window with
        ``left``: with ``members`` given, the window stays open while a member is neither
        recorded done in it nor in ``not_needed`` (nothing to patch), and ``left`` names them."""
        self._require_lock(run_id, token)
        with self._window_changing():
            current = self.window() or {}
            if current.get("closed"):
                # A run that shared the cluster finished it first and closed the window.
                return False, dict(current, left=[])
            left = [m for m in (members or ()) if m not in (current.get("hosts_done") or {}) and m not in set(not_needed)]
            if left:
                return False, dict(current, left=left)
            if not current:
                raise StateError("cluster %s has no open maintenance window" % self.cluster)
            window = dict(current, closed=now(), closed_by=run_id)
            if not self.check_mode:
                write_json_atomic(self._window_path(), window)
        self._history({"event": "window_closed", "name": window["name"], "by": run_id})
        return True, dict(window, left=[])

    # ----------------------------------------------------------------- marks
    @staticmethod
    def mark_belongs_to(mark: Optional[Record], run_id: Optional[str], window_name: Optional[str],
                        token: Optional[str] = None, live_tokens: Iterable[str] = ()) -> bool:
        """True if mark is this run's or was left by an earlier run of the same window.

        Marks name the run id and the window: a second run with the same run id acts on no mark
        while the first holds the lock, because every change of a mark by a run needs the lock
        (and its token, when the run passes it). A mark of the window made by another run that
        still holds the shared lock (its token among ``live_tokens``) is that run's.
        """
        if not mark:
            return False
        owner_token = owner_of(mark).get("token")
        if token and owner_token and owner_token != token and owner_token in set(live_tokens):
            return False
        if mark.get("owner", {}).get("run_id") == run_id:
            return True
        return bool(window_name) and mark.get("window") == window_name

    def mark(self, run_id: str, host: str, holder: Optional[Record], phase: str = "marked", window_name: Optional[str] = None,
             reason: Optional[str] = None, details: Optional[Record] = None, token: Optional[str] = None) -> Tuple[bool, Record]:
        """Mark host in maintenance (or advance the phase of this window's mark).

        Returns (changed, mark). Refuses a mark owned by somebody else: a host disabled by an
        operator or another tool stays as it was found.
        """
        if phase not in PHASES:
            raise StateError("unknown phase %r (one of %s)" % (phase, ", ".join(PHASES)))
        path = self._mark_path(host)
        current = self._read_mark(host, path)
        if current and not self.mark_belongs_to(current, run_id, window_name, token, self._live_if(token)):
            raise StateError("host %s is marked in maintenance by %s (%s): leaving it as found"
                             % (host, describe_holder(current.get("owner")),
                                current.get("reason") or "no reason given"))
        if run_id != "operator":
            self._require_lock(run_id, token)
        mark = dict(current or {})
        mark.update({"host": host, "cluster": self.cluster, "window": window_name,
                     "owner": holder, "phase": phase,
                     "reason": reason or mark.get("reason") or "rolling maintenance"})
        mark.setdefault("since", now())
        phases = dict(mark.get("phases") or {})
        phases.setdefault(phase, now())
        mark["phases"] = phases
        if details:
            mark.setdefault("details", {}).update(details)
        if current == mark:
            return False, current
        if self.check_mode:
            return True, mark
        self.ensure_dirs()
        if current is None:
            if not create_json_exclusive(path, mark):
                raise StateError("host %s was marked concurrently by somebody else" % host)
            self._history({"event": "marked", "host": host, "owner": holder, "reason": mark["reason"]})
        else:
            write_json_atomic(path, mark)
        return True, mark

    def unmark(self, run_id: Optional[str], host: str, window_name: Optional[str] = None, force: bool = False,
               token: Optional[str] = None) -> bool:
        path = self._mark_path(host)
        current = self._read_mark(host, path)
        if not current:
            return False
        if token and run_id != "operator":
            self._require_lock(run_id, token)
        if not force and not self.mark_belongs_to(current, run_id, window_name, token, self._live_if(token)):
            raise StateError("host %s is marked by %s, not by this run: leaving the mark"
                             % (host, describe_holder(current.get("owner"))))
        if not self.check_mode:
            unlink_quietly(path)
            self._history({"event": "unmarked", "host": host, "by": run_id})
        return True

    def _live_if(self, token: Optional[str]) -> Set[str]:
        return self.live_tokens() if token else set()
