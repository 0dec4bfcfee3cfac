"""Shared maintenance state: lock, marks, window (pure file logic, no lab)."""
import json
import os
import threading
import time

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_state as ms
from ansible_collections.virtfleet.cluster.plugins.module_utils import state_store as store
from module_main import run_module_main


@pytest.fixture
def state(tmp_path):
    return ms.ClusterState(store.state_dir(str(tmp_path)), "lab-a")


def holder(run_id):
    return ms.default_holder(run_id)


def test_lock_is_exclusive_and_names_the_holder(state):
    changed, lock, broken = state.acquire_lock(holder("run-1"))
    assert changed and broken is None
    assert lock["holder"]["run_id"] == "run-1"
    with pytest.raises(store.LockHeld) as refused:
        state.acquire_lock(holder("run-2"))
    message = str(refused.value)
    assert "run-1" in message and "rolling_maintenance_force_unlock" in message
    assert refused.value.holder["run_id"] == "run-1"


def test_lock_is_reentrant_for_its_run(state):
    mine = holder("run-1")
    state.acquire_lock(mine)
    changed, _lock, _broken = state.acquire_lock(dict(mine))
    assert not changed


def test_lock_never_expires_only_holder_or_force_releases(state):
    state.acquire_lock(holder("run-1"))
    with pytest.raises(store.LockHeld):
        state.release_lock("run-2")
    assert state.lock()["holder"]["run_id"] == "run-1"
    assert state.release_lock("run-1")
    assert state.lock() is None
    assert not state.release_lock("run-1")  # idempotent


def test_force_breaks_a_lock_and_logs_it(state):
    state.acquire_lock(holder("dead-run"))
    changed, lock, broken = state.acquire_lock(holder("run-2"), force=True)
    assert changed and broken["holder"]["run_id"] == "dead-run"
    assert lock["holder"]["run_id"] == "run-2"
    history = [json.loads(line) for line in open(os.path.join(state.path, store.HISTORY_FILE))]
    assert [h["event"] for h in history] == ["locked", "lock_broken", "locked"]


def test_concurrent_lockers_exactly_one_wins(state):
    state.ensure_dirs()
    winners, losers = [], []

    def contend(run_id):
        try:
            state.acquire_lock(holder(run_id))
            winners.append(run_id)
        except store.LockHeld:
            losers.append(run_id)

    threads = [threading.Thread(target=contend, args=("run-%d" % i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1 and len(losers) == 15
    assert state.lock()["holder"]["run_id"] == winners[0]


def test_check_mode_writes_nothing(tmp_path):
    state = ms.ClusterState(store.state_dir(str(tmp_path)), "lab-a", check_mode=True)
    changed, _lock, _broken = state.acquire_lock(holder("run-1"))
    assert changed
    assert not os.path.exists(state.path)


def test_window_needs_the_lock_and_is_joined_by_a_rerun(state):
    with pytest.raises(store.StateError):
        state.open_window("run-1")
    state.acquire_lock(holder("run-1"))
    _changed, window = state.open_window("run-1")
    assert window["name"] == "run-1" and window["runs"] == ["run-1"]
    state.host_done("run-1", "h1", {"boot_id_after": "b"})
    state.release_lock("run-1")
    # The re-run joins the open window and sees h1 done.
    state.acquire_lock(holder("run-2"))
    _changed, window = state.open_window("run-2")
    assert window["name"] == "run-1" and window["runs"] == ["run-1", "run-2"]
    assert "h1" in window["hosts_done"]
    # Once closed, the next run opens a fresh window.
    state.close_window("run-2")
    _changed, window = state.open_window("run-2")
    assert window["name"] == "run-2" and window["hosts_done"] == {}


def test_window_stays_open_while_a_member_is_neither_done_nor_without_patches(state):
    """Issue 10, case 11: a run stopped before some hosts (a downtime budget exceeded in another
    cluster) must not close the window; the hosts left are named."""
    state.acquire_lock(holder("run-1"))
    state.open_window("run-1")
    state.host_done("run-1", "h1")
    changed, window = state.close_window("run-1", members=["h1", "h2", "h3"], not_needed=["h3"])
    assert not changed and window["closed"] is None and window["left"] == ["h2"]
    assert state.window()["closed"] is None
    state.host_done("run-1", "h2")
    changed, window = state.close_window("run-1", members=["h1", "h2", "h3"], not_needed=["h3"])
    assert changed and window["closed"] and window["left"] == []


def test_named_window_and_new_window(state):
    state.acquire_lock(holder("run-1"))
    state.open_window("run-1", name="2026-11")
    _changed, window = state.open_window("run-1", name="2026-11")
    assert window["name"] == "2026-11"
    _changed, window = state.open_window("run-1", name="2026-12")
    assert window["name"] == "2026-12"
    _changed, window = state.open_window("run-1", new=True)
    assert window["name"] == "run-1"


def test_guest_origins_first_record_wins(state):
    state.acquire_lock(holder("run-1"))
    state.open_window("run-1")
    state.record_guest_origins("run-1", {"g1": "h1", "g2": "h2"})
    state.record_guest_origins("run-1", {"g1": "h3", "g3": "h3"})
    assert state.window()["guest_origins"] == {"g1": "h1", "g2": "h2", "g3": "h3"}


def test_mark_phases_and_unmark(state):
    state.acquire_lock(holder("run-1"))
    state.open_window("run-1", name="w")
    changed, mark = state.mark("run-1", "h1", holder("run-1"), window_name="w")
    assert changed and mark["phase"] == "marked"
    _changed, mark = state.mark("run-1", "h1", holder("run-1"), phase="rebooted", window_name="w",
                                details={"boot_id_after": "x"})
    assert mark["phase"] == "rebooted" and set(mark["phases"]) == {"marked", "rebooted"}
    assert mark["details"] == {"boot_id_after": "x"}
    assert set(state.marks()) == {"h1"}
    assert state.unmark("run-1", "h1", window_name="w")
    assert state.marks() == {}


def test_marks_need_the_lock(state):
    with pytest.raises(store.StateError):
        state.mark("run-1", "h1", holder("run-1"), window_name="w")


def test_foreign_mark_is_left_as_found(state):
    state.mark("operator", "h2", holder("operator"), reason="disk replacement")
    state.acquire_lock(holder("run-1"))
    with pytest.raises(store.StateError) as refused:
        state.mark("run-1", "h2", holder("run-1"), window_name="w")
    assert "disk replacement" in str(refused.value)
    with pytest.raises(store.StateError):
        state.unmark("run-1", "h2", window_name="w")
    assert state.marks()["h2"]["owner"]["run_id"] == "operator"


def test_rerun_of_the_same_window_adopts_its_mark(state):
    state.acquire_lock(holder("run-1"))
    state.open_window("run-1", name="w")
    state.mark("run-1", "h1", holder("run-1"), phase="drained", window_name="w")
    state.release_lock("run-1")
    state.acquire_lock(holder("run-2"))
    changed, mark = state.mark("run-2", "h1", holder("run-2"), phase="patched", window_name="w")
    assert changed and mark["owner"]["run_id"] == "run-2"
    assert set(mark["phases"]) == {"drained", "patched"}


def test_invalid_host_names_refused(state):
    state.acquire_lock(holder("run-1"))
    for bad in ("", "../x", ".hidden"):
        with pytest.raises(store.StateError):
            state.mark("run-1", bad, holder("run-1"), window_name="w")


def test_corrupt_file_is_reported_not_overwritten(state):
    state.ensure_dirs()
    with open(os.path.join(state.path, store.LOCK_FILE), "w") as handle:
        handle.write("{half")
    with pytest.raises(store.StateError) as refused:
        state.acquire_lock(holder("run-1"))
    assert "not valid JSON" in str(refused.value)
    assert open(os.path.join(state.path, store.LOCK_FILE)).read() == "{half"


def test_no_temporary_files_left(state):
    state.acquire_lock(holder("run-1"))
    state.open_window("run-1")
    state.mark("run-1", "h1", holder("run-1"), window_name=state.window()["name"])
    leftovers = [n for _root, _dirs, names in os.walk(state.path) for n in names if n.endswith(".tmp")]
    assert leftovers == []


def test_state_stays_writable_for_a_shared_group(tmp_path):
    storage = tmp_path / "storage"
    storage.mkdir()
    os.chmod(str(storage), 0o2775)
    old = os.umask(0o022)
    try:
        state = ms.ClusterState(store.state_dir(str(storage)), "lab-a")
        state.acquire_lock(holder("run-1"))
        state.open_window("run-1")
    finally:
        os.umask(old)
    for path in (state.path, os.path.join(state.path, store.MARKS_DIR)):
        assert os.stat(path).st_mode & 0o070 == 0o070
    for name in (store.LOCK_FILE, store.WINDOW_FILE, store.HISTORY_FILE):
        assert os.stat(os.path.join(state.path, name)).st_mode & 0o060 == 0o060


def test_private_storage_stays_private(tmp_path):
    storage = tmp_path / "storage"
    storage.mkdir()
    os.chmod(str(storage), 0o755)
    state = ms.ClusterState(store.state_dir(str(storage)), "lab-a")
    state.acquire_lock(holder("run-1"))
    assert os.stat(os.path.join(state.path, store.LOCK_FILE)).st_mode & 0o022 == 0


# --------------------------------------------------------------------------- issue 10
# Running the module in-process (as tests/unit/plugins/module_utils/test_properties.py does): the operator sees
# fail_json's message, never a traceback.
def run_state_module(args, check_mode=False):
    from ansible_collections.virtfleet.cluster.plugins.modules import maintenance_state as module
    return run_module_main(module, args, check_mode)


def history_of(state):
    path = os.path.join(state.path, store.HISTORY_FILE)
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


# Case 2: the lock's identity is a token per run, not the run id a user sets.
def test_same_run_id_with_another_token_is_refused(state):
    first = ms.default_holder("run-1", {"token": "a" * 32, "controller": "ctl-1", "pid": 4711})
    state.acquire_lock(first)
    second = ms.default_holder("run-1", {"token": "b" * 32, "controller": "ctl-2", "pid": 815})
    with pytest.raises(store.LockHeld) as refused:
        state.acquire_lock(second)
    message = str(refused.value)
    assert "same run id" in message and "4711" in message and "ctl-1" in message
    assert "rolling_maintenance_force_unlock: [lab-a]" in message
    assert state.lock()["holder"]["token"] == "a" * 32
    # Re-entrant for the same token only.
    changed, lock, _broken = state.acquire_lock(dict(first))
    assert not changed and lock["holder"]["token"] == "a" * 32


def test_a_holder_gets_a_token_controller_pid_and_start(state):
    holder = ms.default_holder("run-1")
    assert len(holder["token"]) == 32 and holder["pid"] and holder["controller"] and holder["since"]
    assert ms.default_holder("run-1")["token"] != holder["token"]


def test_lock_actions_with_a_token_check_it(state):
    first = ms.default_holder("run-1", {"token": "a" * 32})
    state.acquire_lock(first)
    for act in (lambda: state.open_window("run-1", token="b" * 32),
                lambda: state.mark("run-1", "h1", ms.default_holder("run-1"), window_name="w", token="b" * 32)):
        with pytest.raises(store.StateError) as refused:
            act()
        assert "another run" in str(refused.value)
    with pytest.raises(store.LockHeld):
        state.release_lock("run-1", token="b" * 32)
    assert state.lock()["holder"]["token"] == "a" * 32
    state.open_window("run-1", token="a" * 32)
    assert state.release_lock("run-1", token="a" * 32)
    assert state.lock() is None


def test_resume_after_release_takes_the_lock_with_a_new_token(state):
    state.acquire_lock(ms.default_holder("run-1", {"token": "a" * 32}))
    state.release_lock("run-1", token="a" * 32)          # the failed run's rescue released it
    changed, lock, broken = state.acquire_lock(ms.default_holder("run-1", {"token": "c" * 32}))
    assert changed and broken is None and lock["holder"]["token"] == "c" * 32


# Case 3: the state directory proves it is the cluster's shared one.
def test_missing_storage_path_is_never_created(tmp_path):
    storage = tmp_path / "mnt" / "cluster-a"
    state = ms.ClusterState(store.state_dir(str(storage)), "lab-a")
    with pytest.raises(store.StateError) as refused:
        state.acquire_lock(ms.default_holder("run-1"))
    assert str(storage) in str(refused.value) and "mounted" in str(refused.value)
    assert not storage.exists()
    with pytest.raises(store.StateError):
        state.init_identity()
    assert not storage.exists()


def test_identity_is_created_once_and_verified(tmp_path):
    state = ms.ClusterState(store.state_dir(str(tmp_path)), "lab-a")
    assert state.identity() is None
    created, identity = state.init_identity(created_by="hv-a1")
    assert created and identity["cluster"] == "lab-a" and len(identity["id"]) == 32
    again, same = ms.ClusterState(store.state_dir(str(tmp_path)), "lab-a").init_identity(created_by="hv-a2")
    assert not again and same == identity
    assert state.verify_shared(identity["id"]) == identity
    assert state.verify_shared() == identity


def test_a_host_that_does_not_see_the_identity_is_refused(tmp_path):
    shared = tmp_path / "shared"
    private = tmp_path / "private"   # the same path on a host whose mount is missing
    shared.mkdir()
    private.mkdir()
    _created, identity = ms.ClusterState(store.state_dir(str(shared)), "lab-a").init_identity()
    other = ms.ClusterState(store.state_dir(str(private)), "lab-a")
    with pytest.raises(store.SharedStateError) as refused:
        other.verify_shared(identity["id"])
    message = str(refused.value)
    assert store.state_dir(str(private)) in message and "mount" in message and identity["id"] in message
    assert not os.path.exists(store.state_dir(str(private)))     # nothing created there
    # A state directory of another cluster (two clusters configured on one path) is refused too.
    with pytest.raises(store.SharedStateError) as wrong:
        ms.ClusterState(store.state_dir(str(shared)), "lab-b").verify_shared()
    assert "lab-a" in str(wrong.value) and "lab-b" in str(wrong.value)


def test_module_refuses_writes_without_the_identity(tmp_path):
    code, result = run_state_module({"path": str(tmp_path), "cluster": "lab-a", "state": "lock", "run_id": "run-1"})
    assert code == 1 and "cluster-id.json" in result["msg"] and "init" in result["msg"]
    assert not os.path.exists(store.state_dir(str(tmp_path)))
    code, result = run_state_module({"path": str(tmp_path), "cluster": "lab-a", "state": "init", "run_id": "run-1"})
    assert code == 0 and result["changed"] and result["identity"]["cluster"] == "lab-a"
    ident = result["identity"]["id"]
    code, result = run_state_module({"path": str(tmp_path), "cluster": "lab-a", "state": "lock", "run_id": "run-1",
                                     "token": "t" * 32, "identity": ident})
    assert code == 0 and result["changed"] and result["state"]["lock"]["holder"]["token"] == "t" * 32
    code, result = run_state_module({"path": str(tmp_path), "cluster": "lab-a", "state": "verify_shared",
                                     "identity": "0" * 32})
    assert code == 1 and store.state_dir(str(tmp_path)) in result["msg"]
    code, result = run_state_module({"path": str(tmp_path / "gone"), "cluster": "lab-a", "state": "verify_shared",
                                     "identity": ident})
    assert code == 1 and str(tmp_path / "gone") in result["msg"] and not (tmp_path / "gone").exists()


def test_verify_shared_says_who_holds_the_lock_and_takes_nothing(tmp_path):
    """The preflight's first step: each host reads the identity and whether another run holds the
    cluster's lock (that run's refusal message), read-only; its own lock or none says nothing."""
    _code, result = run_state_module({"path": str(tmp_path), "cluster": "lab-a", "state": "init"})
    ident = result["identity"]["id"]
    asked = {"path": str(tmp_path), "cluster": "lab-a", "state": "verify_shared", "identity": ident,
             "run_id": "run-2", "token": "b" * 32}
    code, result = run_state_module(asked)
    assert code == 0 and "lock_held" not in result and result["state"]["lock"] is None
    run_state_module({"path": str(tmp_path), "cluster": "lab-a", "state": "lock", "run_id": "run-1",
                      "token": "a" * 32, "identity": ident, "holder": {"controller": "ctl-1"}})
    code, result = run_state_module(asked)
    assert code == 0 and result["lock_held"] is True and result["holder"]["run_id"] == "run-1"
    assert result["lock_message"].startswith("cluster lab-a is locked by run run-1")
    assert "rolling_maintenance_force_unlock: [lab-a]" in result["lock_message"]
    assert result["state"]["lock"]["holder"]["token"] == "a" * 32          # still run-1's
    code, result = run_state_module(dict(asked, run_id="run-1", token="a" * 32))
    assert code == 0 and "lock_held" not in result                        # its own lock
    code, result = run_state_module(dict(asked, run_id="run-1", token="c" * 32))
    assert result["lock_held"] and "same run id run-1" in result["lock_message"]


# Case 12: corrupt or unreadable state: a message naming the file and the fix; force breaks it.
def test_corrupt_lock_message_names_file_and_fix(state):
    state.ensure_dirs()
    lock_path = os.path.join(state.path, store.LOCK_FILE)
    with open(lock_path, "w") as handle:
        handle.write("{half")
    with pytest.raises(store.StateError) as refused:
        state.acquire_lock(holder("run-1"))
    assert lock_path in str(refused.value) and "rolling_maintenance_force_unlock: [lab-a]" in str(refused.value)


def test_force_breaks_a_corrupt_lock_keeping_a_copy(state):
    state.ensure_dirs()
    lock_path = os.path.join(state.path, store.LOCK_FILE)
    with open(lock_path, "w") as handle:
        handle.write("{half")
    changed, lock, broken = state.acquire_lock(holder("run-2"), force=True)
    assert changed and lock["holder"]["run_id"] == "run-2" and broken["corrupt"]
    copies = [n for n in os.listdir(state.path) if n.startswith(store.LOCK_FILE + ".corrupt-")]
    assert len(copies) == 1 and open(os.path.join(state.path, copies[0])).read() == "{half"
    event = [h for h in history_of(state) if h["event"] == "lock_broken"][0]
    assert event["corrupt_copy"].endswith(copies[0])
    # The same through an operator's forced unlock.
    with open(lock_path, "w") as handle:
        handle.write("[]")
    assert state.release_lock("operator", force=True)
    assert state.lock() is None
    assert len([n for n in os.listdir(state.path) if n.startswith(store.LOCK_FILE + ".corrupt-")]) == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_state_file_is_a_message(state):
    state.acquire_lock(holder("run-1"))
    os.chmod(os.path.join(state.path, store.LOCK_FILE), 0)
    with pytest.raises(store.StateError) as refused:
        state.lock()
    assert os.path.join(state.path, store.LOCK_FILE) in str(refused.value)


def test_module_reports_a_corrupt_state_without_traceback(tmp_path, monkeypatch):
    run_state_module({"path": str(tmp_path), "cluster": "lab-a", "state": "init", "run_id": "x"})
    lock_path = os.path.join(store.state_dir(str(tmp_path)), store.LOCK_FILE)
    with open(lock_path, "w") as handle:
        handle.write("{half")
    for requested in ("read", "lock", "unlock", "mark"):
        code, result = run_state_module({"path": str(tmp_path), "cluster": "lab-a", "state": requested,
                                         "run_id": "run-1", "host": "h1"})
        assert code == 1 and lock_path in result["msg"], (requested, result)
        assert "exception" not in result

    # An OSError anywhere (here: permission) is a message naming the directory too.
    def denied(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied", lock_path)
    monkeypatch.setattr(store, "read_json", denied)
    code, result = run_state_module({"path": str(tmp_path), "cluster": "lab-a", "state": "read"})
    assert code == 1 and lock_path in result["msg"] and "exception" not in result


# Case 17: NFS.
def test_nfs_link_answered_eexist_but_made_is_taken_as_ours(state, monkeypatch):
    state.ensure_dirs()
    real_link = os.link

    def retransmitted(src, dst):
        real_link(src, dst)
        raise FileExistsError(17, "File exists", dst)
    monkeypatch.setattr(store.os, "link", retransmitted)
    changed, lock, _broken = state.acquire_lock(holder("run-1"))
    monkeypatch.setattr(store.os, "link", real_link)
    assert changed and state.lock()["holder"]["token"] == lock["holder"]["token"]
    assert [h["event"] for h in history_of(state)] == ["locked"]


def test_nfs_eexist_for_a_real_other_lock_is_refused(state, monkeypatch):
    state.ensure_dirs()
    real_link = os.link
    other = holder("run-other")

    def raced(src, dst):
        if not os.path.exists(dst):
            tmp = dst + ".other"
            with open(tmp, "w") as handle:
                json.dump({"cluster": "lab-a", "holder": other, "acquired": 1}, handle)
            os.rename(tmp, dst)
        raise FileExistsError(17, "File exists", dst)
    monkeypatch.setattr(store.os, "link", raced)
    with pytest.raises(store.LockHeld):
        state.acquire_lock(holder("run-1"))
    monkeypatch.setattr(store.os, "link", real_link)
    assert state.lock()["holder"]["run_id"] == "run-other"


def test_release_never_removes_a_lock_taken_in_between(state, monkeypatch):
    mine = holder("run-1")
    state.acquire_lock(mine)
    thief = holder("run-2")
    real_read = store.read_json
    calls = {"n": 0}

    def read_then_steal(path):
        value = real_read(path)
        if path.endswith(store.LOCK_FILE) and calls["n"] == 0:
            calls["n"] += 1
            # Between our read and our removal, an operator forces the lock to another run.
            store.write_json_atomic(path, {"cluster": "lab-a", "holder": thief, "acquired": 2})
        return value
    monkeypatch.setattr(store, "read_json", read_then_steal)
    with pytest.raises(store.LockHeld) as refused:
        state.release_lock("run-1")
    monkeypatch.setattr(store, "read_json", real_read)
    assert "run-2" in str(refused.value)
    assert state.lock()["holder"]["run_id"] == "run-2"
    assert not [n for n in os.listdir(state.path) if "released" in n]


def test_two_releasers_of_one_lock_report_one_release(state, monkeypatch):
    mine = holder("run-1")
    state.acquire_lock(mine)
    real_read = store.read_json
    other = ms.ClusterState(state.path, "lab-a")
    calls = {"n": 0}

    def read_then_other_releases(path):
        value = real_read(path)
        if path.endswith(store.LOCK_FILE) and calls["n"] == 0:
            calls["n"] += 1
            assert other.release_lock("run-1", token=mine["token"])   # e.g. another host of the cluster
        return value
    monkeypatch.setattr(store, "read_json", read_then_other_releases)
    assert not state.release_lock("run-1", token=mine["token"])
    monkeypatch.setattr(store, "read_json", real_read)
    assert state.lock() is None
    assert [h["event"] for h in history_of(state)] == ["locked", "unlocked"]


def test_unlock_with_the_identity_fails_on_a_host_that_does_not_see_the_state(tmp_path):
    shared, private = tmp_path / "shared", tmp_path / "private"
    shared.mkdir()
    private.mkdir()
    _code, result = run_state_module({"path": str(shared), "cluster": "lab-a", "state": "init"})
    ident = result["identity"]["id"]
    # Without the identity an unlock in the private directory "succeeds" with nothing released,
    # which a caller would take for a release; with it, the host is told it does not see the state.
    code, result = run_state_module({"path": str(private), "cluster": "lab-a", "state": "unlock", "run_id": "run-1"})
    assert code == 0 and not result["changed"]
    code, result = run_state_module({"path": str(private), "cluster": "lab-a", "state": "unlock", "run_id": "run-1",
                                     "identity": ident})
    assert code == 1 and store.state_dir(str(private)) in result["msg"] and result["shared"] is False


# --------------------------------------------------------------------------- the shared lock
def shared_holder(run_id, token):
    return ms.default_holder(run_id, {"token": token})


def test_rolling_runs_share_the_lock_and_exclude_an_exclusive_holder(state):
    first, second = shared_holder("run-1", "a" * 32), shared_holder("run-2", "b" * 32)
    assert state.acquire_lock(first, shared=True)[0]
    assert state.acquire_lock(second, shared=True)[0]
    assert not state.acquire_lock(dict(second), shared=True)[0]                # re-entrant
    assert sorted(state.runs()) == ["a" * 32, "b" * 32] and state.lock() is None
    assert state.live_tokens() == {"a" * 32, "b" * 32}
    state.require_lock("run-2", "b" * 32)
    with pytest.raises(store.StateError, match="does not hold the lock"):
        state.require_lock("run-2", "a" * 32)                                  # another run's token
    # A run that needs the cluster to itself (rebalance) is refused while rolling runs share it...
    with pytest.raises(store.LockHeld, match="shares the cluster only with other rolling maintenance runs"):
        state.acquire_lock(holder("rebalance-1"))
    assert state.held_by_another(holder("rebalance-1")) is not None
    assert state.lock() is None
    # ... and each rolling run releases only its own registration.
    assert state.release_lock("run-1", token="a" * 32)
    assert sorted(state.runs()) == ["b" * 32]
    assert state.release_lock("run-2", token="b" * 32) and state.runs() == {}
    state.acquire_lock(holder("rebalance-1"))
    with pytest.raises(store.LockHeld, match="holds the cluster to itself"):
        state.acquire_lock(first, shared=True)
    assert state.held_by_another(first, shared=True) is not None and state.runs() == {}


def test_a_shared_run_with_the_same_run_id_is_refused_and_force_breaks_every_other(state):
    state.acquire_lock(shared_holder("run-1", "a" * 32), shared=True)
    with pytest.raises(store.LockHeld, match="same run id run-1"):
        state.acquire_lock(shared_holder("run-1", "c" * 32), shared=True)
    assert state.held_by_another(shared_holder("run-2", "b" * 32), shared=True) is None
    state.acquire_lock(shared_holder("run-2", "b" * 32), shared=True)
    _changed, _lock, broken = state.acquire_lock(holder("operator-fix"), force=True)
    assert broken["holder"]["run_id"] in ("run-1", "run-2") and state.runs() == {}
    assert state.lock()["holder"]["run_id"] == "operator-fix"


def test_a_registration_and_an_exclusive_lock_that_race_do_not_both_stand(state, monkeypatch):
    """Announce, then check: whichever looks second sees the other and withdraws."""
    state.ensure_dirs()
    real_runs = ms.ClusterState.runs
    rival = shared_holder("run-9", "d" * 32)

    def runs_with_a_rival_arriving(self):
        # The rolling run registers right after the exclusive lock was linked.
        path = self._run_path(rival["token"])
        store.make_state_dirs(os.path.dirname(path))
        store.create_json_exclusive(path, {"cluster": "lab-a", "holder": rival, "shared": True})
        return real_runs(self)
    monkeypatch.setattr(ms.ClusterState, "runs", lambda self: {} if not os.path.exists(self._lock_path())
                        else runs_with_a_rival_arriving(self))
    with pytest.raises(store.LockHeld, match="just joined by run run-9"):
        state.acquire_lock(holder("rebalance-1"))
    monkeypatch.setattr(ms.ClusterState, "runs", real_runs)
    assert state.lock() is None and list(state.runs()) == ["d" * 32]
    # The other way round: an exclusive lock linked right after a registration.
    state.release_lock("run-9", token="d" * 32)
    real_lock = ms.ClusterState.lock
    calls = []

    def lock_appearing(self):
        calls.append(1)
        if len(calls) == 2:  # the check after the registration
            store.create_json_exclusive(self._lock_path(), {"cluster": "lab-a", "holder": holder("rebalance-2")})
        return real_lock(self)
    monkeypatch.setattr(ms.ClusterState, "lock", lock_appearing)
    with pytest.raises(store.LockHeld, match="just locked by run rebalance-2"):
        state.acquire_lock(shared_holder("run-3", "e" * 32), shared=True)
    monkeypatch.setattr(ms.ClusterState, "lock", real_lock)
    assert state.runs() == {} and state.lock()["holder"]["run_id"] == "rebalance-2"


def test_runs_that_share_the_lock_share_the_window_and_keep_their_marks_apart(state):
    one, two = shared_holder("run-1", "a" * 32), shared_holder("run-2", "b" * 32)
    state.acquire_lock(one, shared=True)
    state.open_window("run-1", name="w1", token="a" * 32)
    state.acquire_lock(two, shared=True)
    # A new window would hide what run-1 recorded done: the open one is joined instead.
    _changed, window = state.open_window("run-2", name="w2", new=True, token="b" * 32)
    assert window["name"] == "w1" and window["runs"] == ["run-1", "run-2"]
    state.mark("run-1", "h1", one, window_name="w1", token="a" * 32)
    assert state.snapshot()["marks"]["h1"]["owner_live"] is True
    # run-1 is live: its mark of the shared window is not run-2's to change or remove.
    with pytest.raises(store.StateError, match="marked in maintenance by run run-1"):
        state.mark("run-2", "h1", two, phase="drained", window_name="w1", token="b" * 32)
    with pytest.raises(store.StateError, match="not by this run"):
        state.unmark("run-2", "h1", window_name="w1", token="b" * 32)
    # Once run-1 holds the lock no more (it stopped), a run of the window resumes its mark.
    state.release_lock("run-1", token="a" * 32)
    assert "owner_live" not in state.snapshot()["marks"]["h1"]
    assert state.mark("run-2", "h1", two, phase="drained", window_name="w1", token="b" * 32)[1]["phase"] == "drained"
    # Without other runs, new_window opens a new window as before.
    _changed, window = state.open_window("run-2", name="w2", new=True, token="b" * 32)
    assert window["name"] == "w2"


def test_two_runs_recording_hosts_done_at_once_lose_none(state):
    """Runs sharing a cluster change window.json side by side (one records a host done while the
    other records its guests' origins): a read-modify-write of one must never drop the other's."""
    tokens = {"run-1": "a" * 32, "run-2": "b" * 32}
    for run_id, token in tokens.items():
        state.acquire_lock(shared_holder(run_id, token), shared=True)
        state.open_window(run_id, token=token)
    hosts = {"run-1": ["h%02d" % i for i in range(0, 40, 2)], "run-2": ["h%02d" % i for i in range(1, 40, 2)]}

    def record(run_id):
        for host in hosts[run_id]:
            ms.ClusterState(state.path, "lab-a").host_done(run_id, host, token=tokens[run_id])
            ms.ClusterState(state.path, "lab-a").record_guest_origins(run_id, {"g-" + host: host}, token=tokens[run_id])
    workers = [threading.Thread(target=record, args=(run_id,)) for run_id in tokens]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    window = state.window()
    assert sorted(window["hosts_done"]) == ["h%02d" % i for i in range(40)]
    assert len(window["guest_origins"]) == 40
    assert not [name for name in os.listdir(state.path) if name.startswith(".window")]


def test_a_window_mutex_left_by_a_dead_writer_is_taken_away_once_stale(state, monkeypatch):
    locked = holder("run-1")
    state.acquire_lock(locked)
    state.open_window("run-1")
    mutex = os.path.join(state.path, ms.WINDOW_MUTEX)
    store.create_json_exclusive(mutex, {"host": "gone", "pid": 1, "since": store.now()})
    monkeypatch.setattr(ms, "WINDOW_MUTEX_STALE_S", 0.3)
    began = time.monotonic()
    assert state.host_done("run-1", "h1")[0]
    assert 0.3 <= time.monotonic() - began < 5            # waited for the holder, then took it away
    assert "h1" in state.window()["hosts_done"] and not os.path.exists(mutex)
    with open(mutex, "w") as torn:                         # unreadable: taken away at once
        torn.write("{")
    assert state.host_done("run-1", "h2")[0] and not os.path.exists(mutex)


def test_a_shared_lock_is_required_by_run_id_when_no_token_is_given(state):
    state.acquire_lock(shared_holder("run-1", "a" * 32), shared=True)
    state.require_lock("run-1")
    assert state.open_window("run-1")[1]["runs"] == ["run-1"]
    with pytest.raises(store.StateError, match="does not hold the lock"):
        state.require_lock("run-2")
