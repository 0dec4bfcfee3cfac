# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared maintenance state of one cluster: lock, maintenance marks, maintenance window.

The state lives as small JSON files in a directory on the cluster's shared primary storage
(``<storage path>/.virtfleet/``), so every controller (a laptop, several AWX nodes) that
reaches a host of the cluster sees the same state::

    lock.json            who is maintaining the cluster right now (never expires on its own)
    marks/<host>.json    a host in maintenance: owner, window, phase reached
    window.json          the maintenance window: hosts done, original host of every guest
    history.jsonl        append-only log of lock and mark changes (for the operator)

Rules the functions below enforce:

* A lock is taken atomically (``link(2)`` of a fully written file: fails if it exists, never
  shows a half-written lock) and released only by its holder or by an explicit force.
* A mark is created atomically the same way; a mark whose owner is neither this run nor this
  maintenance window belongs to somebody else and is never touched.
* Every rewrite goes through a temporary file and ``rename(2)``: readers see the old or the new
  file, never a torn one.

Pure Python (no Ansible import) so the unit tests use it directly.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
import uuid

STATE_DIR_NAME = ".virtfleet"
LOCK_FILE = "lock.json"
WINDOW_FILE = "window.json"
MARKS_DIR = "marks"
HISTORY_FILE = "history.jsonl"

# Phases a host goes through while marked, in order. A resumed run uses the phase reached to
# avoid repeating a reboot that already happened.
PHASES = ("marked", "drained", "patched", "rebooted", "verified")


class StateError(Exception):
    """A refused state change; the message is meant for the operator."""


class LockHeld(StateError):
    """The cluster is locked by another run."""

    def __init__(self, message, holder):
        super().__init__(message)
        self.holder = holder


def now():
    return time.time()


def iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def state_dir(storage_path):
    """State directory of a cluster whose primary storage is mounted at storage_path."""
    return os.path.join(storage_path, STATE_DIR_NAME)


def _read_json(path):
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise StateError("state file %s is not valid JSON (%s); inspect it by hand" % (path, exc))


def _group_shared(directory):
    """True when directory is group-writable: the hosts of a cluster may log in as different
    users sharing a group (the lab does), so the state must stay writable for the group."""
    try:
        return bool(os.stat(directory).st_mode & 0o020)
    except OSError:
        return False


def _file_mode(directory):
    return 0o664 if _group_shared(directory) else 0o644


def make_state_dirs(path):
    """Create path (and path/marks) inheriting group write access from the nearest existing
    parent; the umask would otherwise take it away."""
    missing = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    shared = _group_shared(current)
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            continue
        if shared:
            os.chmod(directory, os.stat(directory).st_mode | 0o070)


def _temp_path(directory, final_name):
    return os.path.join(directory, ".%s.%s.%d.tmp" % (final_name, uuid.uuid4().hex, os.getpid()))


def _write_temp(directory, final_name, data):
    tmp = _temp_path(directory, final_name)
    mode = _file_mode(directory)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # past the umask
        os.write(fd, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def write_json_atomic(path, data):
    """Replace path with data: readers see the old or the new content, never a mix."""
    directory, name = os.path.split(path)
    tmp = _write_temp(directory, name, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def create_json_exclusive(path, data):
    """Create path with data only if it does not exist yet. Returns False if it exists.

    ``link(2)`` is atomic and fails on an existing name, also on NFS where O_EXCL used to be
    unreliable; the file appears already complete.
    """
    directory, name = os.path.split(path)
    tmp = _write_temp(directory, name, data)
    try:
        os.link(tmp, path)
        return True
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return False
        raise
    finally:
        _unlink_quietly(tmp)


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _append_history(directory, record):
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    path = os.path.join(directory, HISTORY_FILE)
    created = not os.path.exists(path)
    mode = _file_mode(directory)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode)
    try:
        if created:
            try:
                os.fchmod(fd, mode)
            except OSError:
                pass  # created by somebody else in between: their mode stands
        os.write(fd, line)  # one write with O_APPEND: lines of concurrent writers never interleave
    finally:
        os.close(fd)


def default_holder(run_id, extra=None):
    """Who a lock or a mark belongs to, as shown to the operator who finds it."""
    holder = {
        "run_id": run_id,
        "controller": socket.gethostname(),
        "user": os.environ.get("USER") or os.environ.get("LOGNAME") or str(os.getuid()),
        "since": iso(now()),
    }
    holder.update(extra or {})
    return holder


def describe_holder(holder):
    holder = holder or {}
    text = "run %s" % holder.get("run_id", "?")
    who = "%s@%s" % (holder.get("user", "?"), holder.get("controller", "?"))
    text += " (%s, since %s" % (who, holder.get("since", "?"))
    if holder.get("awx_job_id"):
        text += ", AWX job %s" % holder["awx_job_id"]
    return text + ")"


class ClusterState(object):
    """State of one cluster in directory ``path`` (``<storage path>/.virtfleet``)."""

    def __init__(self, path, cluster, check_mode=False):
        self.path = path
        self.cluster = cluster
        self.check_mode = check_mode

    # ----------------------------------------------------------------- helpers
    def ensure_dirs(self):
        if not self.check_mode:
            make_state_dirs(os.path.join(self.path, MARKS_DIR))

    def _lock_path(self):
        return os.path.join(self.path, LOCK_FILE)

    def _window_path(self):
        return os.path.join(self.path, WINDOW_FILE)

    def _mark_path(self, host):
        if not host or "/" in host or host.startswith("."):
            raise StateError("invalid host name for a mark: %r" % host)
        return os.path.join(self.path, MARKS_DIR, host + ".json")

    def _history(self, record):
        if self.check_mode:
            return
        record = dict(record, ts=now(), cluster=self.cluster)
        _append_history(self.path, record)

    # ----------------------------------------------------------------- read
    def lock(self):
        return _read_json(self._lock_path())

    def window(self):
        return _read_json(self._window_path())

    def marks(self):
        directory = os.path.join(self.path, MARKS_DIR)
        result = {}
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return result
        for name in names:
            if name.endswith(".json") and not name.startswith("."):
                mark = _read_json(os.path.join(directory, name))
                if mark is not None:
                    result[name[:-5]] = mark
        return result

    def snapshot(self):
        return {"cluster": self.cluster, "path": self.path, "lock": self.lock(),
                "window": self.window(), "marks": self.marks()}

    # ----------------------------------------------------------------- lock
    def acquire_lock(self, holder, force=False):
        """Take the cluster lock for holder['run_id']. Returns (changed, lock, broken_lock).

        Re-entrant for the same run id. A lock held by another run is refused (LockHeld) unless
        force is set, in which case it is broken and the broken holder is returned and logged.
        """
        run_id = holder["run_id"]
        current = self.lock()
        if current and current.get("holder", {}).get("run_id") == run_id:
            return False, current, None
        broken = None
        if current:
            if not force:
                raise LockHeld(
                    "cluster %s is locked by %s. Two runs never maintain one cluster at once. "
                    "If that run is dead, an operator releases the lock with "
                    "rolling_maintenance_force_unlock: [%s] (lock file %s)."
                    % (self.cluster, describe_holder(current.get("holder")), self.cluster,
                       self._lock_path()),
                    current.get("holder"))
            broken = current
        lock = {"cluster": self.cluster, "holder": holder, "acquired": now()}
        if self.check_mode:
            return True, lock, broken
        self.ensure_dirs()
        if broken:
            self._history({"event": "lock_broken", "by": run_id, "holder": broken.get("holder")})
            _unlink_quietly(self._lock_path())
        if not create_json_exclusive(self._lock_path(), lock):
            # Somebody took it between our read and our link: report them, never overwrite.
            current = self.lock() or {}
            raise LockHeld("cluster %s was just locked by %s" % (
                self.cluster, describe_holder(current.get("holder"))), current.get("holder"))
        self._history({"event": "locked", "holder": holder})
        return True, lock, broken

    def release_lock(self, run_id, force=False):
        """Release the lock held by run_id (or any lock with force). Returns changed."""
        current = self.lock()
        if not current:
            return False
        holder_run = current.get("holder", {}).get("run_id")
        if holder_run != run_id and not force:
            raise LockHeld("cluster %s is locked by %s, not by run %s: not releasing it"
                           % (self.cluster, describe_holder(current.get("holder")), run_id),
                           current.get("holder"))
        if not self.check_mode:
            _unlink_quietly(self._lock_path())
            self._history({"event": "unlocked", "by": run_id, "holder": current.get("holder"),
                           "forced": holder_run != run_id})
        return True

    def _require_lock(self, run_id):
        current = self.lock()
        if not current or current.get("holder", {}).get("run_id") != run_id:
            raise StateError("run %s does not hold the lock of cluster %s (held by: %s)"
                             % (run_id, self.cluster,
                                describe_holder(current.get("holder")) if current else "nobody"))

    # ----------------------------------------------------------------- window
    def open_window(self, run_id, name=None, new=False):
        """Join the open maintenance window or open a new one. Returns (changed, window).

        A window collects the hosts done across runs (a failed run and its re-run), so the
        re-run skips them. It stays open until a run finishes the whole cluster
        (close_window). name pins the window explicitly: a different name opens a new window.
        """
        self._require_lock(run_id)
        current = self.window()
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

    def _update_window(self, run_id, update):
        self._require_lock(run_id)
        window = self.window()
        if not window or window.get("closed"):
            raise StateError("cluster %s has no open maintenance window" % self.cluster)
        new = update(json.loads(json.dumps(window)))
        if new == window:
            return False, window
        if not self.check_mode:
            write_json_atomic(self._window_path(), new)
        return True, new

    def record_guest_origins(self, run_id, origins):
        """Remember where each guest ran before the window moved anything (first record wins)."""
        def update(window):
            for guest, host in sorted((origins or {}).items()):
                window["guest_origins"].setdefault(guest, host)
            return window
        return self._update_window(run_id, update)

    def host_done(self, run_id, host, details=None):
        def update(window):
            window["hosts_done"][host] = dict(details or {}, run_id=run_id, at=now())
            return window
        return self._update_window(run_id, update)

    def close_window(self, run_id):
        def update(window):
            window["closed"] = now()
            window["closed_by"] = run_id
            return window
        changed, window = self._update_window(run_id, update)
        if changed:
            self._history({"event": "window_closed", "name": window["name"], "by": run_id})
        return changed, window

    # ----------------------------------------------------------------- marks
    def mark_belongs_to(self, mark, run_id, window_name):
        """True if mark is this run's or was left by an earlier run of the same window."""
        if not mark:
            return False
        if mark.get("owner", {}).get("run_id") == run_id:
            return True
        return bool(window_name) and mark.get("window") == window_name

    def mark(self, run_id, host, holder, phase="marked", window_name=None, reason=None,
             details=None):
        """Mark host in maintenance (or advance the phase of this window's mark).

        Returns (changed, mark). Refuses a mark owned by somebody else: a host disabled by an
        operator or another tool stays as it was found.
        """
        if phase not in PHASES:
            raise StateError("unknown phase %r (one of %s)" % (phase, ", ".join(PHASES)))
        path = self._mark_path(host)
        current = _read_json(path)
        if current and not self.mark_belongs_to(current, run_id, window_name):
            raise StateError("host %s is marked in maintenance by %s (%s): leaving it as found"
                             % (host, describe_holder(current.get("owner")),
                                current.get("reason") or "no reason given"))
        if run_id != "operator":
            self._require_lock(run_id)
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

    def unmark(self, run_id, host, window_name=None, force=False):
        path = self._mark_path(host)
        current = _read_json(path)
        if not current:
            return False
        if not force and not self.mark_belongs_to(current, run_id, window_name):
            raise StateError("host %s is marked by %s, not by this run: leaving the mark"
                             % (host, describe_holder(current.get("owner"))))
        if not self.check_mode:
            _unlink_quietly(path)
            self._history({"event": "unmarked", "host": host, "by": run_id})
        return True
