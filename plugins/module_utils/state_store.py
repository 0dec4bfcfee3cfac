# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The on-disk store of a cluster's shared maintenance state: its files, how they are written,
and the identity that proves the directory is the cluster's shared one.

The state lives as small JSON files in a directory on the cluster's shared primary storage
(``<storage path>/.virtfleet/``), so every controller (a laptop, several AWX nodes) that
reaches a host of the cluster sees the same state::

    cluster-id.json      the directory's identity (cluster name, random id), written once: every
                         host of the cluster must read the same one, or its mount is not shared
    lock.json            who is maintaining the cluster right now (never expires on its own)
    marks/<host>.json    a host in maintenance: owner, window, phase reached
    window.json          the maintenance window: hosts done, original host of every guest
    history.jsonl        append-only log of lock and mark changes (for the operator)

How it is written:

* A file that must not exist yet (the lock, a new mark, the identity) is created by ``link(2)``
  of a fully written temporary file: that fails if the name exists and never shows a
  half-written file, also on NFS where O_EXCL used to be unreliable.
* NFS: a ``link(2)`` answered EEXIST may have been made (a retransmitted request): the link
  count of the temporary file tells.
* Every rewrite goes through a temporary file and ``rename(2)``: readers see the old or the new
  file, never a torn one.
* The state directory never appears by itself: the storage path must exist (it is the mount of
  the shared storage), and the role verifies from every host that it reads the same identity
  file, so a host whose shared mount is missing never locks or marks in a private directory.

The rules of the state (who may lock, mark, close a window) are in ``maintenance_state.py``.
Pure Python (no Ansible import) so the unit tests use it directly.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, Dict, Optional, Set, Tuple

from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError

STATE_DIR_NAME = ".virtfleet"
IDENTITY_FILE = "cluster-id.json"
LOCK_FILE = "lock.json"
WINDOW_FILE = "window.json"
MARKS_DIR = "marks"
# Where the runs holding the cluster's shared lock register, one file per run (its token).
RUNS_DIR = "runs"
HISTORY_FILE = "history.jsonl"


class StateError(VirtfleetError):
    """A refused state change; the message is meant for the operator, ``result`` holds the
    fields the module returns with it."""


class LockHeld(StateError):
    """The cluster is locked by another run (``holder``, returned with the failure)."""

    def __init__(self, message: str, holder: Dict[str, Any]):
        super().__init__(message, {"holder": holder, "lock_held": True})
        self.holder = holder


class CorruptState(StateError):
    """A state file that exists but cannot be understood (not JSON, wrong shape)."""

    def __init__(self, message: str, path: str, raw: Optional[bytes] = None):
        super().__init__(message)
        self.path = path
        self.raw = raw


class SharedStateError(StateError):
    """This host does not see the cluster's shared state directory."""

    def __init__(self, message: str):
        super().__init__(message, {"shared": False})


def now() -> float:
    return time.time()


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def new_token() -> str:
    """A run's identity in the lock: random, made once per run, never chosen by a user."""
    return uuid.uuid4().hex


def state_dir(storage_path: str) -> str:
    """State directory of a cluster whose primary storage is mounted at storage_path."""
    return os.path.join(storage_path, STATE_DIR_NAME)


def read_json(path: str) -> Any:
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


def read_bytes(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def mount_of(path: str) -> Tuple[str, str]:
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


def _group_shared(directory: str) -> bool:
    """True when directory is group-writable: the hosts of a cluster may log in as different
    users sharing a group (the lab does), so the state must stay writable for the group."""
    try:
        return bool(os.stat(directory).st_mode & 0o020)
    except OSError:
        return False


def _file_mode(directory: str) -> int:
    return 0o664 if _group_shared(directory) else 0o644


def make_state_dirs(path: str) -> None:
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


def _temp_path(directory: str, final_name: str) -> str:
    return os.path.join(directory, ".%s.%s.%d.tmp" % (final_name, uuid.uuid4().hex, os.getpid()))


def _write_temp(directory: str, final_name: str, data: Any) -> str:
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


def write_json_atomic(path: str, data: Any) -> None:
    """Replace path with data: readers see the old or the new content, never a mix."""
    directory, name = os.path.split(path)
    tmp = _write_temp(directory, name, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise


def link_exclusive(source: str, target: str) -> bool:
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


def create_json_exclusive(path: str, data: Any) -> bool:
    """Create path with data only if it does not exist yet. Returns False if it exists.

    ``link(2)`` is atomic and fails on an existing name, also on NFS where O_EXCL used to be
    unreliable; the file appears already complete.
    """
    directory, name = os.path.split(path)
    tmp = _write_temp(directory, name, data)
    try:
        return link_exclusive(tmp, path)
    finally:
        unlink_quietly(tmp)


def holder_of(record: Any) -> Dict[str, Any]:
    """The ``holder`` of a lock or a run's registration ({} when there is none)."""
    holder = record.get("holder") if isinstance(record, dict) else None
    return holder if isinstance(holder, dict) else {}


def owner_of(mark: Any) -> Dict[str, Any]:
    """The ``owner`` of a mark ({} when there is none)."""
    owner = mark.get("owner") if isinstance(mark, dict) else None
    return owner if isinstance(owner, dict) else {}


def marks_of_runs(marks: Dict[str, Dict[str, Any]], tokens: Any) -> Dict[str, str]:
    """host -> run id of each mark made by one of the runs ``tokens`` (runs that hold the
    cluster's lock now, whose marks no other run adopts or counts as its own)."""
    tokens = set(tokens)
    return {host: owner_of(mark).get("run_id") or "?" for host, mark in marks.items()
            if owner_of(mark).get("token") in tokens}


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def append_history(directory: str, record: Dict[str, Any]) -> None:
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


@dataclass
class StateStore:
    """The state directory ``path`` (``<storage path>/.virtfleet``) of cluster ``cluster``:
    where its files are, its records read back (a file that cannot be understood is a message
    naming it and the fix), that it is the cluster's shared one (its identity file), its
    history. In check mode nothing is written."""

    path: str
    cluster: str
    check_mode: bool = False

    @property
    def storage_path(self) -> str:
        """The directory holding the state directory: the shared storage (its mount point or
        a directory on it). Never created here."""
        return os.path.dirname(os.path.normpath(self.path))

    def _not_mounted_hint(self, missing: Optional[str] = None) -> str:
        mount, fstype = mount_of(missing or self.storage_path)
        return ("it is on the mount %s (%s) of %s: is the cluster's shared storage mounted at %s on that host? "
                "Mount it (check with `findmnt -T %s`) and re-run"
                % (mount, fstype, socket.gethostname(), self.storage_path, self.storage_path))

    def ensure_storage(self) -> None:
        """Refuse when the storage path itself does not exist: that is a missing mount, and the
        state must never be created in its place."""
        if not os.path.isdir(self.storage_path):
            raise SharedStateError(
                "the storage path %s of cluster %s does not exist on %s, so the cluster's shared maintenance state "
                "(%s) cannot be there: %s. It is never created in its place. Nothing was changed."
                % (self.storage_path, self.cluster, socket.gethostname(), self.path, self._not_mounted_hint()))

    def ensure_dirs(self) -> None:
        if not self.check_mode:
            self.ensure_storage()
            make_state_dirs(os.path.join(self.path, MARKS_DIR))

    def _lock_path(self) -> str:
        return os.path.join(self.path, LOCK_FILE)

    def _identity_path(self) -> str:
        return os.path.join(self.path, IDENTITY_FILE)

    def _window_path(self) -> str:
        return os.path.join(self.path, WINDOW_FILE)

    def _mark_path(self, host: str) -> str:
        if not host or "/" in host or host.startswith("."):
            raise StateError("invalid host name for a mark: %r" % host)
        return os.path.join(self.path, MARKS_DIR, host + ".json")

    def _history(self, record: Dict[str, Any]) -> None:
        if self.check_mode:
            return
        record = dict(record, ts=now(), cluster=self.cluster)
        append_history(self.path, record)

    # ----------------------------------------------------------------- records
    def _corrupt_lock(self, exc: CorruptState) -> CorruptState:
        return CorruptState(
            "the lock file %s of cluster %s cannot be understood (%s), so nobody can tell which run holds the "
            "cluster. Make sure no run maintains cluster %s (controllers, AWX jobs), then break the lock with "
            "rolling_maintenance_force_unlock: [%s] (or the maintenance_state module, state=unlock force=true); "
            "the file is kept next to it as lock.json.corrupt-<time>."
            % (self._lock_path(), self.cluster, exc, self.cluster, self.cluster),
            self._lock_path(), exc.raw)

    def lock(self) -> Optional[Dict[str, Any]]:
        """The lock, None when the cluster is not locked; CorruptState if unintelligible."""
        try:
            lock = read_json(self._lock_path())
        except CorruptState as exc:
            raise self._corrupt_lock(exc)
        if lock is not None and not (isinstance(lock, dict) and isinstance(lock.get("holder"), dict)):
            raise self._corrupt_lock(CorruptState("not a lock record: %.80r" % (lock,), self._lock_path(),
                                                  read_bytes(self._lock_path())))
        return lock

    def _run_path(self, token: str) -> str:
        if not token or not all(c.isalnum() or c in "-_" for c in token):
            raise StateError("invalid run token %r" % (token,))
        return os.path.join(self.path, RUNS_DIR, token + ".json")

    def runs(self) -> Dict[str, Dict[str, Any]]:
        """token -> registration of every run holding the cluster's shared lock. A file that
        cannot be read counts as a run nobody can name (it excludes an exclusive lock)."""
        directory = os.path.join(self.path, RUNS_DIR)
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return {}
        runs: Dict[str, Dict[str, Any]] = {}
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                record = read_json(os.path.join(directory, name))
            except CorruptState as exc:
                record = {"holder": {"run_id": "?", "token": name[:-5]}, "corrupt": str(exc)}
            if isinstance(record, dict):  # None: released between listdir and read
                runs[name[:-5]] = record
        return runs

    def live_tokens(self, lock: Optional[Dict[str, Any]] = None, runs: Optional[Dict[str, Dict[str, Any]]] = None) -> Set[str]:
        """The tokens of the runs holding the cluster's lock now (exclusive or shared)."""
        if runs is None:
            runs = self.runs()
            try:
                lock = self.lock()
            except CorruptState:
                lock = None
        tokens = set(runs)
        if holder_of(lock).get("token"):
            tokens.add(holder_of(lock)["token"])
        return tokens

    def window(self) -> Optional[Dict[str, Any]]:
        try:
            window = read_json(self._window_path())
        except CorruptState as exc:
            raise CorruptState(
                "%s. The maintenance window of cluster %s cannot be read: move the file aside (the next run "
                "opens a new window, hosts done in this one are maintained again) or restore it from "
                "window.previous.json next to it." % (exc, self.cluster), exc.path, exc.raw)
        if window is not None and not isinstance(window, dict):
            raise CorruptState("the window file %s of cluster %s is not a window record: move it aside"
                               % (self._window_path(), self.cluster), self._window_path())
        return window

    def marks(self) -> Dict[str, Dict[str, Any]]:
        directory = os.path.join(self.path, MARKS_DIR)
        result: Dict[str, Dict[str, Any]] = {}
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
    def _read_mark(host: str, path: str) -> Optional[Dict[str, Any]]:
        try:
            return read_json(path)
        except CorruptState as exc:
            raise CorruptState(
                "%s. Host %s's maintenance mark cannot be read: check the host by hand, then remove the "
                "file (the host takes guests again) or rewrite it with the maintenance_state module "
                "(state=mark, run_id=operator)." % (exc, host), exc.path, exc.raw)

    def snapshot(self) -> Dict[str, Any]:
        return {"cluster": self.cluster, "path": self.path, "lock": self.lock(),
                "window": self.window(), "marks": self.marks(), "identity": self.identity()}

    # ----------------------------------------------------------------- identity
    def identity(self) -> Optional[Dict[str, Any]]:
        """The state directory's identity file (cluster, id), None if there is none."""
        try:
            identity = read_json(self._identity_path())
        except CorruptState as exc:
            raise SharedStateError(
                "%s. It names the shared state directory of cluster %s; compare it with what the other hosts "
                "of the cluster read (maintenance_state state=verify_shared) and restore it from there."
                % (exc, self.cluster))
        if identity is not None and not (isinstance(identity, dict) and identity.get("id") and identity.get("cluster")):
            raise SharedStateError("the identity file %s of cluster %s is not an identity record (cluster, id): "
                                   "restore it from what the other hosts read" % (self._identity_path(), self.cluster))
        return identity

    def init_identity(self, created_by: Optional[str] = None) -> Tuple[bool, Dict[str, Any]]:
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

    def _check_cluster(self, identity: Dict[str, Any]) -> None:
        if identity.get("cluster") != self.cluster:
            raise SharedStateError(
                "%s holds the maintenance state of cluster %s, not of cluster %s: two clusters' state paths point "
                "at one directory. Give each cluster its own (virtfleet_storage.path or rolling_maintenance_state_path)."
                % (self.path, identity.get("cluster"), self.cluster))

    def verify_shared(self, expected: Optional[str] = None) -> Dict[str, Any]:
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
