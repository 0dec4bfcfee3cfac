"""Shared maintenance state: lock, marks, window (pure file logic, no lab)."""
import json
import os
import threading

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_state as ms


@pytest.fixture
def state(tmp_path):
    return ms.ClusterState(ms.state_dir(str(tmp_path)), "lab-a")


def holder(run_id):
    return ms.default_holder(run_id)


def test_lock_is_exclusive_and_names_the_holder(state):
    changed, lock, broken = state.acquire_lock(holder("run-1"))
    assert changed and broken is None
    assert lock["holder"]["run_id"] == "run-1"
    with pytest.raises(ms.LockHeld) as refused:
        state.acquire_lock(holder("run-2"))
    message = str(refused.value)
    assert "run-1" in message and "rolling_maintenance_force_unlock" in message
    assert refused.value.holder["run_id"] == "run-1"


def test_lock_is_reentrant_for_its_run(state):
    state.acquire_lock(holder("run-1"))
    changed, _lock, _broken = state.acquire_lock(holder("run-1"))
    assert not changed


def test_lock_never_expires_only_holder_or_force_releases(state):
    state.acquire_lock(holder("run-1"))
    with pytest.raises(ms.LockHeld):
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
    history = [json.loads(line) for line in open(os.path.join(state.path, ms.HISTORY_FILE))]
    assert [h["event"] for h in history] == ["locked", "lock_broken", "locked"]


def test_concurrent_lockers_exactly_one_wins(state):
    state.ensure_dirs()
    winners, losers = [], []

    def contend(run_id):
        try:
            state.acquire_lock(holder(run_id))
            winners.append(run_id)
        except ms.LockHeld:
            losers.append(run_id)

    threads = [threading.Thread(target=contend, args=("run-%d" % i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1 and len(losers) == 15
    assert state.lock()["holder"]["run_id"] == winners[0]


def test_check_mode_writes_nothing(tmp_path):
    state = ms.ClusterState(ms.state_dir(str(tmp_path)), "lab-a", check_mode=True)
    changed, _lock, _broken = state.acquire_lock(holder("run-1"))
    assert changed
    assert not os.path.exists(state.path)


def test_window_needs_the_lock_and_is_joined_by_a_rerun(state):
    with pytest.raises(ms.StateError):
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
    with pytest.raises(ms.StateError):
        state.mark("run-1", "h1", holder("run-1"), window_name="w")


def test_foreign_mark_is_left_as_found(state):
    state.mark("operator", "h2", holder("operator"), reason="disk replacement")
    state.acquire_lock(holder("run-1"))
    with pytest.raises(ms.StateError) as refused:
        state.mark("run-1", "h2", holder("run-1"), window_name="w")
    assert "disk replacement" in str(refused.value)
    with pytest.raises(ms.StateError):
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
        with pytest.raises(ms.StateError):
            state.mark("run-1", bad, holder("run-1"), window_name="w")


def test_corrupt_file_is_reported_not_overwritten(state):
    state.ensure_dirs()
    with open(os.path.join(state.path, ms.LOCK_FILE), "w") as handle:
        handle.write("{half")
    with pytest.raises(ms.StateError) as refused:
        state.acquire_lock(holder("run-1"))
    assert "not valid JSON" in str(refused.value)
    assert open(os.path.join(state.path, ms.LOCK_FILE)).read() == "{half"


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
        state = ms.ClusterState(ms.state_dir(str(storage)), "lab-a")
        state.acquire_lock(holder("run-1"))
        state.open_window("run-1")
    finally:
        os.umask(old)
    for path in (state.path, os.path.join(state.path, ms.MARKS_DIR)):
        assert os.stat(path).st_mode & 0o070 == 0o070
    for name in (ms.LOCK_FILE, ms.WINDOW_FILE, ms.HISTORY_FILE):
        assert os.stat(os.path.join(state.path, name)).st_mode & 0o060 == 0o060


def test_private_storage_stays_private(tmp_path):
    storage = tmp_path / "storage"
    storage.mkdir()
    os.chmod(str(storage), 0o755)
    state = ms.ClusterState(ms.state_dir(str(storage)), "lab-a")
    state.acquire_lock(holder("run-1"))
    assert os.stat(os.path.join(state.path, ms.LOCK_FILE)).st_mode & 0o022 == 0
