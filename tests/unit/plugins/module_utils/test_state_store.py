"""state_store.py (issue 17): the exclusive creation the cluster lock rests on, one call at a
time. The 16-thread race of test_maintenance_state.py shows it under contention; these show each
answer on its own, including the NFS case of a retransmitted LINK the lab cannot produce."""
import json
import os
import re
import socket

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import state_store


def test_the_first_exclusive_creation_wins_and_the_second_changes_nothing(tmp_path):
    path = str(tmp_path / "lock.json")
    assert state_store.create_json_exclusive(path, {"holder": "run-1"}) is True
    assert state_store.create_json_exclusive(path, {"holder": "run-2"}) is False
    assert json.loads(open(path).read()) == {"holder": "run-1"}
    assert sorted(os.listdir(str(tmp_path))) == ["lock.json"]  # no temporary file left behind


def test_a_link_onto_another_file_is_refused(tmp_path):
    source, target = tmp_path / "mine", tmp_path / "theirs"
    source.write_text("mine")
    target.write_text("theirs")
    assert state_store.link_exclusive(str(source), str(target)) is False
    assert target.read_text() == "theirs"


def test_a_retransmitted_link_that_already_made_our_link_is_ours(tmp_path):
    # NFS answers EEXIST to a LINK retransmitted after its reply was lost: the name is then our
    # own inode (link count 2).
    source, target = tmp_path / "mine", tmp_path / "lock"
    source.write_text("mine")
    os.link(str(source), str(target))
    assert state_store.link_exclusive(str(source), str(target)) is True


def test_an_existing_name_whose_source_vanished_is_not_ours(tmp_path, monkeypatch):
    target = tmp_path / "lock"
    target.write_text("theirs")
    source = tmp_path / "mine"
    source.write_text("mine")
    real_link = os.link

    def link_then_lose_the_source(source, name):
        try:
            real_link(source, name)
        finally:
            os.unlink(source)
    monkeypatch.setattr(state_store.os, "link", link_then_lose_the_source)
    assert state_store.link_exclusive(str(source), str(target)) is False


def test_other_link_errors_are_raised(tmp_path):
    with pytest.raises(FileNotFoundError):
        state_store.link_exclusive(str(tmp_path / "missing"), str(tmp_path / "lock"))


def test_an_atomic_write_replaces_the_content_and_leaves_no_temporary_file(tmp_path):
    path = str(tmp_path / "window.json")
    state_store.write_json_atomic(path, {"a": 1})
    state_store.write_json_atomic(path, {"b": 2})
    assert json.loads(open(path).read()) == {"b": 2}
    assert os.listdir(str(tmp_path)) == ["window.json"]


# --------------------------------------------------------------------------- issue 17: what the mutation run showed untested
CLUSTER = "lab-a"


@pytest.fixture
def store(tmp_path):
    return state_store.StateStore(state_store.state_dir(str(tmp_path)), CLUSTER)


def history_of(store):
    return [json.loads(line) for line in open(os.path.join(store.path, state_store.HISTORY_FILE))]


def test_times_are_written_in_utc_to_the_second():
    assert state_store.iso(0) == "1970-01-01T00:00:00Z"
    assert state_store.iso(1796262881.9) == "2026-12-03T01:54:41Z"


def test_a_state_file_is_indented_sorted_json_written_through_a_temporary_file_beside_it(tmp_path, monkeypatch):
    path = str(tmp_path / "window.json")
    replaced = []
    real_replace = os.replace

    def recording(source, target):
        replaced.append(source)
        real_replace(source, target)
    monkeypatch.setattr(state_store.os, "replace", recording)
    state_store.write_json_atomic(path, {"b": 2, "a": "\u00e9"})
    assert open(path, encoding="utf-8").read() == '{\n  "a": "\\u00e9",\n  "b": 2\n}\n'
    directory, name = os.path.split(replaced[0])
    assert directory == str(tmp_path) and re.fullmatch(r"\.window\.json\.[0-9a-f]{32}\.%d\.tmp" % os.getpid(), name)


def test_a_failed_replace_leaves_no_temporary_file(tmp_path, monkeypatch):
    def refused(source, target):
        raise PermissionError(13, "Permission denied", target)
    monkeypatch.setattr(state_store.os, "replace", refused)
    with pytest.raises(PermissionError):
        state_store.write_json_atomic(str(tmp_path / "window.json"), {"a": 1})
    assert os.listdir(str(tmp_path)) == []


def test_an_exclusive_creation_uses_a_temporary_name_of_its_own_file(tmp_path, monkeypatch):
    linked = []
    real_link = os.link

    def recording(source, target):
        linked.append(source)
        real_link(source, target)
    monkeypatch.setattr(state_store.os, "link", recording)
    assert state_store.create_json_exclusive(str(tmp_path / "lock.json"), {"a": 1})
    assert re.fullmatch(r"\.lock\.json\.[0-9a-f]{32}\.\d+\.tmp", os.path.basename(linked[0]))


def test_file_modes_follow_the_directory_group_write_access_exactly(tmp_path):
    shared, private = tmp_path / "shared", tmp_path / "private"
    shared.mkdir()
    private.mkdir()
    os.chmod(str(shared), 0o775)
    os.chmod(str(private), 0o755)
    old = os.umask(0o027)    # no access for others: only the group's write access is added
    try:
        for directory in (shared, private):
            state_store.write_json_atomic(str(directory / "window.json"), {})
            state_store.append_history(str(directory), {"event": "x"})
            state_store.make_state_dirs(str(directory / "state" / "marks"))
    finally:
        os.umask(old)
    for name in ("window.json", state_store.HISTORY_FILE):
        assert os.stat(str(shared / name)).st_mode & 0o777 == 0o664
        assert os.stat(str(private / name)).st_mode & 0o777 == 0o644
    for directory in (shared / "state", shared / "state" / "marks"):
        assert os.stat(str(directory)).st_mode & 0o777 == 0o770
    assert os.stat(str(private / "state" / "marks")).st_mode & 0o777 == 0o750
    assert state_store._group_shared(str(tmp_path / "missing")) is False


def test_a_directory_made_by_somebody_else_meanwhile_does_not_stop_the_deeper_ones(tmp_path, monkeypatch):
    real_mkdir = os.mkdir

    def raced(path, *args):
        real_mkdir(path, *args)
        if path.endswith("state"):
            raise FileExistsError(17, "File exists", path)
    monkeypatch.setattr(state_store.os, "mkdir", raced)
    state_store.make_state_dirs(str(tmp_path / "state" / "marks"))
    assert (tmp_path / "state" / "marks").is_dir()


def test_history_lines_are_sorted_json_one_per_record(tmp_path):
    state_store.append_history(str(tmp_path), {"event": "locked", "by": "\u00e9"})
    state_store.append_history(str(tmp_path), {"event": "unlocked"})
    assert open(str(tmp_path / state_store.HISTORY_FILE), encoding="utf-8").read() == (
        '{"by": "\\u00e9", "event": "locked"}\n{"event": "unlocked"}\n')


def test_a_link_is_ours_only_when_the_name_is_our_inode(tmp_path):
    # The source has a second name (link count 2) but the target is another file.
    source, alias, target = tmp_path / "mine", tmp_path / "alias", tmp_path / "lock"
    source.write_text("mine")
    os.link(str(source), str(alias))
    target.write_text("theirs")
    assert state_store.link_exclusive(str(source), str(target)) is False


def test_a_state_file_that_cannot_be_read_is_a_message_naming_it(tmp_path):
    with pytest.raises(state_store.StateError) as refused:
        state_store.read_json(str(tmp_path))   # a directory: open() fails with an OSError
    assert not isinstance(refused.value, state_store.CorruptState)   # unreadable, not corrupt
    assert str(refused.value) == (
        "cannot read the state file %s on %s: Is a directory. The login user of every host of the cluster must be "
        "able to read and write the state directory %s (see docs/troubleshooting.md, \"The shared maintenance "
        "state\")." % (tmp_path, socket.gethostname(), os.path.dirname(str(tmp_path))))


def test_a_corrupt_file_carries_its_path_and_bytes(tmp_path):
    path = tmp_path / "window.json"
    path.write_bytes(b"{half")
    with pytest.raises(state_store.CorruptState) as refused:
        state_store.read_json(str(path))
    assert refused.value.path == str(path) and refused.value.raw == b"{half"
    assert str(refused.value).startswith("state file %s is not valid JSON (" % path)


def test_a_lock_held_error_returns_its_holder():
    held = state_store.LockHeld("locked", {"run_id": "r"})
    assert held.holder == {"run_id": "r"} and held.result == {"holder": {"run_id": "r"}, "lock_held": True}


def test_a_lock_that_is_no_lock_record_is_corrupt_with_its_bytes(store):
    store.ensure_dirs()
    with open(os.path.join(store.path, state_store.LOCK_FILE), "w") as handle:
        handle.write("[1, 2]")
    with pytest.raises(state_store.CorruptState) as refused:
        store.lock()
    assert "cannot be understood (not a lock record: [1, 2])" in str(refused.value)
    assert refused.value.path == os.path.join(store.path, state_store.LOCK_FILE) and refused.value.raw == b"[1, 2]"


def test_a_corrupt_or_odd_window_is_said_with_the_fix(store):
    store.ensure_dirs()
    path = os.path.join(store.path, state_store.WINDOW_FILE)
    with open(path, "w") as handle:
        handle.write("{half")
    with pytest.raises(state_store.CorruptState) as refused:
        store.window()
    assert refused.value.path == path and refused.value.raw == b"{half"
    assert str(refused.value).endswith(
        ". The maintenance window of cluster lab-a cannot be read: move the file aside (the next run opens a new "
        "window, hosts done in this one are maintained again) or restore it from window.previous.json next to it.")
    with open(path, "w") as handle:
        handle.write("[]")
    with pytest.raises(state_store.CorruptState) as refused:
        store.window()
    assert str(refused.value) == "the window file %s of cluster lab-a is not a window record: move it aside" % path
    assert refused.value.path == path


def test_marks_are_read_by_host_name_and_a_corrupt_one_names_its_host(store):
    store.ensure_dirs()
    marks = os.path.join(store.path, state_store.MARKS_DIR)
    for name, text in (("h1.json", '{"phase": "marked"}'), (".h2.json", "{}"), ("h3.json.tmp", "{}")):
        with open(os.path.join(marks, name), "w") as handle:
            handle.write(text)
    assert store.marks() == {"h1": {"phase": "marked"}}
    with open(os.path.join(marks, "h4.json"), "w") as handle:
        handle.write("{")
    with pytest.raises(state_store.CorruptState) as refused:
        store.marks()
    assert refused.value.path == os.path.join(marks, "h4.json") and refused.value.raw == b"{"
    assert str(refused.value).endswith(
        ". Host h4's maintenance mark cannot be read: check the host by hand, then remove the file (the host takes "
        "guests again) or rewrite it with the maintenance_state module (state=mark, run_id=operator).")


def test_a_mark_path_never_leaves_the_marks_directory(store):
    for bad in ("sub/h1", "", ".h1"):
        with pytest.raises(state_store.StateError) as refused:
            store._mark_path(bad)
        assert str(refused.value) == "invalid host name for a mark: %r" % bad
    assert store._mark_path("h1") == os.path.join(store.path, "marks", "h1.json")


def test_history_entries_carry_the_time_and_the_cluster(store):
    store.ensure_dirs()
    store._history({"event": "locked"})
    entry = history_of(store)[0]
    assert entry == {"event": "locked", "cluster": "lab-a", "ts": entry["ts"]} and isinstance(entry["ts"], float)


def test_the_snapshot_holds_every_record(store):
    store.init_identity()
    assert store.snapshot() == {"cluster": "lab-a", "path": store.path, "lock": None, "window": None, "marks": {},
                                "identity": store.identity()}


def test_an_identity_is_the_cluster_its_id_when_by_whom_and_where(store, monkeypatch):
    monkeypatch.setattr(state_store, "now", lambda: 0.0)
    created, identity = store.init_identity()
    assert created and identity == {"cluster": "lab-a", "id": identity["id"], "created": "1970-01-01T00:00:00Z",
                                    "created_by": socket.gethostname(), "path": store.path}
    assert re.fullmatch("[0-9a-f]{32}", identity["id"]) and store.identity() == identity
    assert os.path.isdir(os.path.join(store.path, state_store.MARKS_DIR))
    assert history_of(store) == [{"event": "initialised", "id": identity["id"], "by": socket.gethostname(),
                                  "cluster": "lab-a", "ts": 0.0}]
    assert store.init_identity(created_by="hv-2") == (False, identity)
    dry = state_store.StateStore(store.path, "lab-a", check_mode=True)
    assert dry.init_identity() == (False, identity)


def test_an_identity_in_check_mode_is_said_not_written(tmp_path):
    dry = state_store.StateStore(state_store.state_dir(str(tmp_path)), "lab-a", check_mode=True)
    created, identity = dry.init_identity(created_by="hv-1")
    assert created and identity["created_by"] == "hv-1" and not os.path.exists(dry.path)


def test_an_identity_created_by_another_host_meanwhile_stands(store, monkeypatch):
    theirs = {"cluster": "lab-a", "id": "f" * 32}
    real_create = state_store.create_json_exclusive

    def another_host_first(path, data):
        assert real_create(path, theirs)
        return real_create(path, data)
    monkeypatch.setattr(state_store, "create_json_exclusive", another_host_first)
    assert store.init_identity() == (False, theirs)
    assert not os.path.exists(os.path.join(store.path, state_store.HISTORY_FILE))
    os.unlink(os.path.join(store.path, state_store.IDENTITY_FILE))
    theirs["cluster"] = "lab-b"
    with pytest.raises(state_store.SharedStateError, match="not of cluster lab-a"):
        store.init_identity()


def test_an_identity_needs_a_cluster_and_an_id(store):
    store.ensure_dirs()
    path = os.path.join(store.path, state_store.IDENTITY_FILE)
    for record in ({"id": "x"}, {"cluster": "lab-a"}, ["lab-a", "x"]):
        with open(path, "w") as handle:
            json.dump(record, handle)
        with pytest.raises(state_store.SharedStateError) as refused:
            store.identity()
        assert str(refused.value) == ("the identity file %s of cluster lab-a is not an identity record (cluster, id): "
                                      "restore it from what the other hosts read" % path)
    with open(path, "w") as handle:
        handle.write("{")
    with pytest.raises(state_store.SharedStateError) as refused:
        store.identity()
    assert str(refused.value).endswith(
        ". It names the shared state directory of cluster lab-a; compare it with what the other hosts of the cluster "
        "read (maintenance_state state=verify_shared) and restore it from there.")


def test_verify_shared_says_what_the_other_hosts_read_only_when_known(store):
    store.ensure_dirs()
    with pytest.raises(state_store.SharedStateError) as refused:
        store.verify_shared()
    message = str(refused.value)
    assert "has no cluster-id.json. The storage path" in message and "cluster id" not in message
    with pytest.raises(state_store.SharedStateError) as refused:
        store.verify_shared("e" * 32)
    assert "has no cluster-id.json (the other hosts read cluster id %s). The storage path" % ("e" * 32) in str(refused.value)
    _created, identity = store.init_identity()
    with pytest.raises(state_store.SharedStateError) as refused:
        store.verify_shared("e" * 32)
    assert "(cluster id %s here, %s elsewhere)" % (identity["id"], "e" * 32) in str(refused.value)


def test_mount_of_finds_the_mount_point_and_its_type(tmp_path, monkeypatch):
    assert state_store.mount_of("/proc/self") == ("/proc", "proc")
    assert state_store.mount_of("/proc/no/such/path") == ("/proc", "proc")
    # A mount point with a space is written \040 in /proc/self/mounts; a short line is skipped.
    storage = str(tmp_path / "my storage")
    os.mkdir(storage)
    real_ismount, real_open = os.path.ismount, open
    monkeypatch.setattr(state_store.os.path, "ismount", lambda path: path == storage or real_ismount(path))
    mounts = tmp_path / "mounts"
    escaped = storage.replace(" ", "\\040")
    mounts.write_text("short %s\nsrv:/x %s nfs4 rw 0 0\n" % (escaped, escaped))
    monkeypatch.setattr(state_store, "open", lambda path, *a, **kw: real_open(str(mounts), *a, **kw), raising=False)
    assert state_store.mount_of(os.path.join(storage, "missing", "deeper")) == (storage, "nfs4")
    # Without /proc/self/mounts, the type is unknown.

    def no_proc(*_args, **_kwargs):
        raise FileNotFoundError(2, "No such file or directory")
    monkeypatch.setattr(state_store, "open", no_proc, raising=False)
    assert state_store.mount_of(storage) == (storage, "?")


def hint(store, path=None):
    mount, fstype = state_store.mount_of(path or store.storage_path)
    return ("it is on the mount %s (%s) of %s: is the cluster's shared storage mounted at %s on that host? Mount it "
            "(check with `findmnt -T %s`) and re-run"
            % (mount, fstype, socket.gethostname(), store.storage_path, store.storage_path))


def test_the_shared_state_refusals_word_for_word(tmp_path):
    host = socket.gethostname()
    missing = state_store.StateStore(state_store.state_dir(str(tmp_path / "gone")), "lab-a")
    with pytest.raises(state_store.SharedStateError) as refused:
        missing.ensure_storage()
    assert str(refused.value) == (
        "the storage path %s of cluster lab-a does not exist on %s, so the cluster's shared maintenance state (%s) "
        "cannot be there: %s. It is never created in its place. Nothing was changed."
        % (tmp_path / "gone", host, missing.path, hint(missing)))
    store = state_store.StateStore(state_store.state_dir(str(tmp_path)), "lab-a")
    with pytest.raises(state_store.SharedStateError) as refused:
        store.verify_shared("e" * 32)
    assert str(refused.value) == (
        "%s does not see the shared maintenance state of cluster lab-a: %s has no cluster-id.json (the other hosts "
        "read cluster id %s). The storage path %s exists, but %s. Nothing was changed."
        % (host, store.path, "e" * 32, tmp_path, hint(store)))
    _created, identity = store.init_identity()
    with pytest.raises(state_store.SharedStateError) as refused:
        store.verify_shared("e" * 32)
    assert str(refused.value) == (
        "%s reads another state directory at %s than the rest of cluster lab-a (cluster id %s here, %s elsewhere): "
        "%s is not the cluster's shared storage on this host; %s. Nothing was changed."
        % (host, store.path, identity["id"], "e" * 32, tmp_path, hint(store)))
    with pytest.raises(state_store.SharedStateError) as refused:
        state_store.StateStore(store.path, "lab-b").verify_shared()
    assert str(refused.value) == (
        "%s holds the maintenance state of cluster lab-a, not of cluster lab-b: two clusters' state paths point at one "
        "directory. Give each cluster its own (virtfleet_storage.path or rolling_maintenance_state_path)." % store.path)


def test_a_corrupt_lock_is_said_with_the_way_to_break_it(store):
    store.ensure_dirs()
    path = os.path.join(store.path, state_store.LOCK_FILE)
    with open(path, "w") as handle:
        handle.write("{half")
    with pytest.raises(state_store.CorruptState) as refused:
        store.lock()
    inner = str(refused.value).split(" cannot be understood (")[1].rsplit("), so nobody", 1)[0]
    assert inner.startswith("state file %s is not valid JSON" % path)
    assert str(refused.value) == (
        "the lock file %s of cluster lab-a cannot be understood (%s), so nobody can tell which run holds the cluster. "
        "Make sure no run maintains cluster lab-a (controllers, AWX jobs), then break the lock with "
        "rolling_maintenance_force_unlock: [lab-a] (or the maintenance_state module, state=unlock force=true); the "
        "file is kept next to it as lock.json.corrupt-<time>." % (path, inner))
