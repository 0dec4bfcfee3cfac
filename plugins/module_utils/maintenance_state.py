# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared maintenance state of one cluster: lock, maintenance marks, maintenance window.

The state lives as small JSON files in a directory on the cluster's shared primary storage
(``<storage path>/.virtfleet/``), so every controller (a laptop, several AWX nodes) that
reaches a host of the cluster sees the same state::

    cluster-id.json      the directory's identity (cluster name, random id), written once: every
                         host of the cluster must read the same one, or its mount is not shared
    lock.json            who is maintaining the cluster right now (never expires on its own)
    marks/<host>.json    a host in maintenance: owner, window, phase reached
    window.json          the maintenance window: hosts done, original host of every guest
    history.jsonl        append-only log of lock and mark changes (for the operator)

Rules the functions below enforce:

* A lock is taken atomically (``link(2)`` of a fully written file: fails if it exists, never
  shows a half-written lock) and released only by its holder or by an explicit force. Its holder
  is one run: a random token made once per run (never set by a user), with the run id, the
  controller, its pid and the start time. Only the same token re-enters the lock; a second run
  started with the same run id is refused like any other run.
* NFS: a ``link(2)`` answered EEXIST may have been made (a retransmitted request): the link
  count of the temporary file tells. Removing a lock renames it to a unique name first and
  checks the renamed file is the lock meant; a lock another run took in between is put back.
* The state directory never appears by itself: the storage path must exist (it is the mount of
  the shared storage), and the role verifies from every host that it reads the same identity
  file, so a host whose shared mount is missing never locks or marks in a private directory.
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
IDENTITY_FILE = "cluster-id.json"
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


class CorruptState(StateError):
    """A state file that exists but cannot be understood (not JSON, wrong shape)."""

    def __init__(self, message, path, raw=None):
        super().__init__(message)
        self.path = path
        self.raw = raw


class SharedStateError(StateError):
    """This host does not see the cluster's shared state directory."""


def now():
    return time.time()


def iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def state_dir(storage_path):
    """State directory of a cluster whose primary storage is mounted at storage_path."""
    return os.path.join(storage_path, STATE_DIR_NAME)


def _read_json(path):
    """The JSON content of path, None if it does not exist. A file that cannot be read or parsed
    is a StateError naming it (CorruptState for content that is not JSON)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError("cannot read the state file %s on %s: %s. The login user of every host of the cluster "
                         "must be able to read and write the state directory %s (see docs/troubleshooting.md, "
                         "\"The shared maintenance state\")."
                         % (path, socket.gethostname(), exc.strerror or exc, os.path.dirname(path)))
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise CorruptState("state file %s is not valid JSON (%s)" % (path, exc), path, raw)


def _read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def mount_of(path):
    """(mount point, filesystem type) holding path, as far as it exists (best effort)."""
    current = os.path.abspath(path)
    while not os.path.exists(current) and os.path.dirname(current) != current:
        current = os.path.dirname(current)
    while not os.path.ismount(current) and os.path.dirname(current) != current:
        current = os.path.dirname(current)
    fstype = "?"
    try:
        with open("/proc/self/mounts", "r", encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 2 and fields[1].replace("\\040", " ") == current:
                    fstype = fields[2]
    except OSError:
        pass
    return current, fstype


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


def _link_exclusive(source, target):
    """link(2) source to target; False if target exists (and is not our link).

    On NFS a LINK request retransmitted after its reply was lost is answered EEXIST although
    the first request made the link: the source then has a link count of 2 (the classic check
    of open(2)'s O_EXCL note), and target is the same inode.
    """
    try:
        os.link(source, target)
        return True
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise
    try:
        made, there = os.stat(source), os.stat(target)
    except FileNotFoundError:
        return False
    return made.st_nlink >= 2 and (made.st_dev, made.st_ino) == (there.st_dev, there.st_ino)


def create_json_exclusive(path, data):
    """Create path with data only if it does not exist yet. Returns False if it exists.

    ``link(2)`` is atomic and fails on an existing name, also on NFS where O_EXCL used to be
    unreliable; the file appears already complete.
    """
    directory, name = os.path.split(path)
    tmp = _write_temp(directory, name, data)
    try:
        return _link_exclusive(tmp, path)
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


def new_token():
    """A run's identity in the lock: random, made once per run, never chosen by a user."""
    return uuid.uuid4().hex


def default_holder(run_id, extra=None):
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
    holder.update(dict((k, v) for k, v in (extra or {}).items() if v not in (None, "")))
    return holder


def _holder_of(record):
    holder = (record or {}).get("holder") if isinstance(record, dict) else None
    return holder if isinstance(holder, dict) else {}


def describe_holder(holder):
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


class ClusterState(object):
    """State of one cluster in directory ``path`` (``<storage path>/.virtfleet``)."""

    def __init__(self, path, cluster, check_mode=False):
        self.path = path
        self.cluster = cluster
        self.check_mode = check_mode

    # ----------------------------------------------------------------- helpers
    @property
    def storage_path(self):
        """The directory holding the state directory: the shared storage (its mount point or
        a directory on it). Never created here."""
        return os.path.dirname(os.path.normpath(self.path))

    def _not_mounted_hint(self, missing=None):
        mount, fstype = mount_of(missing or self.storage_path)
        return ("it is on the mount %s (%s) of %s: is the cluster's shared storage mounted at %s on that host? "
                "Mount it (check with `findmnt -T %s`) and re-run"
                % (mount, fstype, socket.gethostname(), self.storage_path, self.storage_path))

    def ensure_storage(self):
        """Refuse when the storage path itself does not exist: that is a missing mount, and the
        state must never be created in its place."""
        if not os.path.isdir(self.storage_path):
            raise SharedStateError(
                "the storage path %s of cluster %s does not exist on %s, so the cluster's shared maintenance state "
                "(%s) cannot be there: %s. It is never created in its place. Nothing was changed."
                % (self.storage_path, self.cluster, socket.gethostname(), self.path, self._not_mounted_hint()))

    def ensure_dirs(self):
        if not self.check_mode:
            self.ensure_storage()
            make_state_dirs(os.path.join(self.path, MARKS_DIR))

    def _lock_path(self):
        return os.path.join(self.path, LOCK_FILE)

    def _identity_path(self):
        return os.path.join(self.path, IDENTITY_FILE)

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
    def _corrupt_lock(self, exc):
        return CorruptState(
            "the lock file %s of cluster %s cannot be understood (%s), so nobody can tell which run holds the "
            "cluster. Make sure no run maintains cluster %s (controllers, AWX jobs), then break the lock with "
            "rolling_maintenance_force_unlock: [%s] (or the maintenance_state module, action=unlock force=true); "
            "the file is kept next to it as lock.json.corrupt-<time>."
            % (self._lock_path(), self.cluster, exc, self.cluster, self.cluster),
            self._lock_path(), getattr(exc, "raw", None))

    def lock(self):
        """The lock, None when the cluster is not locked; CorruptState if unintelligible."""
        try:
            lock = _read_json(self._lock_path())
        except CorruptState as exc:
            raise self._corrupt_lock(exc)
        if lock is not None and not (isinstance(lock, dict) and isinstance(lock.get("holder"), dict)):
            raise self._corrupt_lock(CorruptState("not a lock record: %.80r" % (lock,), self._lock_path(),
                                                  _read_bytes(self._lock_path())))
        return lock

    def window(self):
        try:
            window = _read_json(self._window_path())
        except CorruptState as exc:
            raise CorruptState(
                "%s. The maintenance window of cluster %s cannot be read: move the file aside (the next run "
                "opens a new window, hosts done in this one are maintained again) or restore it from "
                "window.previous.json next to it." % (exc, self.cluster), exc.path, exc.raw)
        if window is not None and not isinstance(window, dict):
            raise CorruptState("the window file %s of cluster %s is not a window record: move it aside"
                               % (self._window_path(), self.cluster), self._window_path())
        return window

    def marks(self):
        directory = os.path.join(self.path, MARKS_DIR)
        result = {}
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return result
        for name in names:
            if name.endswith(".json") and not name.startswith("."):
                mark = self._read_mark(name[:-5], os.path.join(directory, name))
                if mark is not None:
                    result[name[:-5]] = mark
        return result

    @staticmethod
    def _read_mark(host, path):
        try:
            return _read_json(path)
        except CorruptState as exc:
            raise CorruptState(
                "%s. Host %s's maintenance mark cannot be read: check the host by hand, then remove the "
                "file (the host takes guests again) or rewrite it with the maintenance_state module "
                "(action=mark, run_id=operator)." % (exc, host), exc.path, exc.raw)

    def identity(self):
        """The state directory's identity file (cluster, id), None if there is none."""
        try:
            identity = _read_json(self._identity_path())
        except CorruptState as exc:
            raise SharedStateError(
                "%s. It names the shared state directory of cluster %s; compare it with what the other hosts "
                "of the cluster read (maintenance_state action=verify_shared) and restore it from there."
                % (exc, self.cluster))
        if identity is not None and not (isinstance(identity, dict) and identity.get("id") and identity.get("cluster")):
            raise SharedStateError("the identity file %s of cluster %s is not an identity record (cluster, id): "
                                   "restore it from what the other hosts read" % (self._identity_path(), self.cluster))
        return identity

    def snapshot(self):
        return {"cluster": self.cluster, "path": self.path, "lock": self.lock(),
                "window": self.window(), "marks": self.marks(), "identity": self.identity()}

    # ----------------------------------------------------------------- identity
    def init_identity(self, created_by=None):
        """Give the state directory its identity (once per cluster). Returns (created, identity).

        The storage path must exist; the state directory is created below it if needed. An
        identity already there is kept (and must name this cluster).
        """
        self.ensure_storage()
        current = self.identity()
        if current:
            self._check_cluster(current)
            return False, current
        identity = {"cluster": self.cluster, "id": new_token(), "created": iso(now()),
                    "created_by": created_by or socket.gethostname(), "path": self.path}
        if self.check_mode:
            return True, identity
        make_state_dirs(os.path.join(self.path, MARKS_DIR))
        if not create_json_exclusive(self._identity_path(), identity):
            current = self.identity()  # created by somebody else in between: theirs stands
            self._check_cluster(current)
            return False, current
        self._history({"event": "initialised", "id": identity["id"], "by": identity["created_by"]})
        return True, identity

    def _check_cluster(self, identity):
        if identity.get("cluster") != self.cluster:
            raise SharedStateError(
                "%s holds the maintenance state of cluster %s, not of cluster %s: two clusters' state paths point "
                "at one directory. Give each cluster its own (virtfleet_storage.path or rolling_maintenance_state_path)."
                % (self.path, identity.get("cluster"), self.cluster))

    def verify_shared(self, expected=None):
        """Prove this host sees the cluster's shared state directory: the identity file is there,
        names this cluster and (when given) has the id every other host reads. Returns it."""
        self.ensure_storage()
        identity = self.identity()
        if not identity:
            raise SharedStateError(
                "%s does not see the shared maintenance state of cluster %s: %s has no %s%s. The storage path %s "
                "exists, but %s. Nothing was changed."
                % (socket.gethostname(), self.cluster, self.path, IDENTITY_FILE,
                   " (the other hosts read cluster id %s)" % expected if expected else "",
                   self.storage_path, self._not_mounted_hint()))
        self._check_cluster(identity)
        if expected and identity.get("id") != expected:
            raise SharedStateError(
                "%s reads another state directory at %s than the rest of cluster %s (cluster id %s here, %s elsewhere): "
                "%s is not the cluster's shared storage on this host; %s. Nothing was changed."
                % (socket.gethostname(), self.path, self.cluster, identity.get("id"), expected,
                   self.storage_path, self._not_mounted_hint()))
        return identity

    # ----------------------------------------------------------------- lock
    def _tombstone(self, tag):
        return os.path.join(self.path, ".%s.%s-%s" % (LOCK_FILE, tag, uuid.uuid4().hex))

    def _take_lock_away(self, seen, keep_as=None):
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
        raw = _read_bytes(tomb)
        try:
            taken = _read_json(tomb)
        except CorruptState:
            taken = None
        if raw == seen if isinstance(seen, bytes) else taken == seen:
            if keep_as is None:
                _unlink_quietly(tomb)
            return True, keep_as
        holder = _holder_of(taken)
        if _link_exclusive(tomb, self._lock_path()):
            _unlink_quietly(tomb)
            raise LockHeld("cluster %s was locked by %s while this run was removing the lock it had read: that "
                           "lock stays, nothing was removed" % (self.cluster, describe_holder(holder)), holder)
        self._history({"event": "lock_displaced", "holder": holder, "kept_as": tomb})
        raise LockHeld("cluster %s: the lock of %s, taken while this run was removing another, could not be put back "
                       "because yet another run locked the cluster in that instant; it is kept as %s. Check which "
                       "runs are active on cluster %s before going on."
                       % (self.cluster, describe_holder(holder), tomb, self.cluster), holder)

    def _set_aside_corrupt(self, exc, by):
        copy = os.path.join(self.path, "%s.corrupt-%s-%s" % (LOCK_FILE, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
                                                             uuid.uuid4().hex[:6]))
        _removed, kept = self._take_lock_away(exc.raw, keep_as=copy)
        self._history({"event": "lock_broken", "by": by, "corrupt": True, "corrupt_copy": kept, "error": str(exc)})
        return {"corrupt": True, "corrupt_copy": kept, "error": str(exc)}

    def acquire_lock(self, holder, force=False):
        """Take the cluster lock for holder (its run_id and token). Returns (changed, lock, broken_lock).

        Re-entrant for the same token only: a second run with the same run id is another run and
        is refused (LockHeld) like any other, unless force is set, in which case the lock (even
        a corrupt one) is broken and the broken holder is returned and logged.
        """
        run_id, token = holder.get("run_id"), holder.get("token")
        if not token:
            raise StateError("a lock holder needs a token (default_holder makes one)")
        corrupt = None
        try:
            current = self.lock()
        except CorruptState as exc:
            current, corrupt = None, exc
        if current and _holder_of(current).get("token") == token:
            return False, current, None
        if (current or corrupt) and not force:
            if corrupt:
                raise corrupt
            other = _holder_of(current)
            if other.get("run_id") == run_id:
                raise LockHeld(
                    "cluster %s is locked by %s, another run with the same run id %s (this run is token %s): two runs "
                    "were started with the same rolling_maintenance_run_id and the first still holds the lock. Two runs "
                    "never maintain one cluster at once. To resume a run that died while holding the lock, make sure "
                    "it is gone (pid %s on %s), then release it with rolling_maintenance_force_unlock: [%s] "
                    "(lock file %s)." % (self.cluster, describe_holder(other), run_id, token[:12], other.get("pid", "?"),
                                         other.get("controller", "?"), self.cluster, self._lock_path()), other)
            raise LockHeld(
                "cluster %s is locked by %s. Two runs never maintain one cluster at once. "
                "If that run is dead, an operator releases the lock with "
                "rolling_maintenance_force_unlock: [%s] (lock file %s)."
                % (self.cluster, describe_holder(other), self.cluster, self._lock_path()), other)
        lock = {"cluster": self.cluster, "holder": holder, "acquired": now()}
        broken = current
        if self.check_mode:
            return True, lock, ({"corrupt": True, "error": str(corrupt)} if corrupt else broken)
        self.ensure_dirs()
        if corrupt:
            broken = self._set_aside_corrupt(corrupt, run_id)
        elif current:
            self._take_lock_away(current, keep_as=None)
            self._history({"event": "lock_broken", "by": run_id, "holder": _holder_of(current)})
        if not create_json_exclusive(self._lock_path(), lock):
            # Somebody took it between our read and our link: report them, never overwrite.
            other = _holder_of(self.lock())
            raise LockHeld("cluster %s was just locked by %s" % (self.cluster, describe_holder(other)), other)
        self._history({"event": "locked", "holder": holder})
        return True, lock, broken

    def release_lock(self, run_id, force=False, token=None):
        """Release the lock held by this run (token, or run_id when no token is given) or any
        lock with force (a corrupt one is kept as lock.json.corrupt-<time>). Returns changed."""
        try:
            current = self.lock()
        except CorruptState as exc:
            if not force:
                raise
            if not self.check_mode:
                self._set_aside_corrupt(exc, run_id)
            return True
        if not current:
            return False
        other = _holder_of(current)
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
        return removed

    def _require_lock(self, run_id, token=None):
        current = self.lock()
        other = _holder_of(current)
        if not current or other.get("run_id") != run_id or (token and other.get("token") != token):
            raise StateError("run %s%s does not hold the lock of cluster %s (held by: %s): it was released, or another "
                             "run holds it now; this run acts on the cluster no further"
                             % (run_id, " (token %s)" % token[:12] if token else "", self.cluster,
                                describe_holder(other) if current else "nobody"))

    # ----------------------------------------------------------------- window
    def open_window(self, run_id, name=None, new=False, token=None):
        """Join the open maintenance window or open a new one. Returns (changed, window).

        A window collects the hosts done across runs (a failed run and its re-run), so the
        re-run skips them. It stays open until a run finishes the whole cluster
        (close_window). name pins the window explicitly: a different name opens a new window.
        """
        self._require_lock(run_id, token)
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

    def _update_window(self, run_id, update, token=None):
        self._require_lock(run_id, token)
        window = self.window()
        if not window or window.get("closed"):
            raise StateError("cluster %s has no open maintenance window" % self.cluster)
        new = update(json.loads(json.dumps(window)))
        if new == window:
            return False, window
        if not self.check_mode:
            write_json_atomic(self._window_path(), new)
        return True, new

    def record_guest_origins(self, run_id, origins, token=None):
        """Remember where each guest ran before the window moved anything (first record wins)."""
        def update(window):
            for guest, host in sorted((origins or {}).items()):
                window["guest_origins"].setdefault(guest, host)
            return window
        return self._update_window(run_id, update, token)

    def host_done(self, run_id, host, details=None, token=None):
        def update(window):
            window["hosts_done"][host] = dict(details or {}, run_id=run_id, at=now())
            return window
        return self._update_window(run_id, update, token)

    def close_window(self, run_id, token=None, members=None, not_needed=()):
        """Close the window (the cluster is finished). Returns (changed, window), the window with
        ``left``: with ``members`` given, the window stays open while a member is neither
        recorded done in it nor in ``not_needed`` (nothing to patch), and ``left`` names them."""
        current = self.window() or {}
        left = [m for m in (members or ()) if m not in (current.get("hosts_done") or {}) and m not in set(not_needed)]
        if left:
            self._require_lock(run_id, token)
            return False, dict(current, left=left)

        def update(window):
            window["closed"] = now()
            window["closed_by"] = run_id
            return window
        changed, window = self._update_window(run_id, update, token)
        if changed:
            self._history({"event": "window_closed", "name": window["name"], "by": run_id})
        return changed, dict(window, left=[])

    # ----------------------------------------------------------------- marks
    def mark_belongs_to(self, mark, run_id, window_name):
        """True if mark is this run's or was left by an earlier run of the same window.

        Marks name the run id and the window, not the lock token: a second run with the same
        run id acts on no mark while the first holds the lock, because every change of a mark
        by a run needs the lock (and its token, when the run passes it).
        """
        if not mark:
            return False
        if mark.get("owner", {}).get("run_id") == run_id:
            return True
        return bool(window_name) and mark.get("window") == window_name

    def mark(self, run_id, host, holder, phase="marked", window_name=None, reason=None,
             details=None, token=None):
        """Mark host in maintenance (or advance the phase of this window's mark).

        Returns (changed, mark). Refuses a mark owned by somebody else: a host disabled by an
        operator or another tool stays as it was found.
        """
        if phase not in PHASES:
            raise StateError("unknown phase %r (one of %s)" % (phase, ", ".join(PHASES)))
        path = self._mark_path(host)
        current = self._read_mark(host, path)
        if current and not self.mark_belongs_to(current, run_id, window_name):
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

    def unmark(self, run_id, host, window_name=None, force=False, token=None):
        path = self._mark_path(host)
        current = self._read_mark(host, path)
        if not current:
            return False
        if not force and not self.mark_belongs_to(current, run_id, window_name):
            raise StateError("host %s is marked by %s, not by this run: leaving the mark"
                             % (host, describe_holder(current.get("owner"))))
        if token and run_id != "operator":
            self._require_lock(run_id, token)
        if not self.check_mode:
            _unlink_quietly(path)
            self._history({"event": "unmarked", "host": host, "by": run_id})
        return True
