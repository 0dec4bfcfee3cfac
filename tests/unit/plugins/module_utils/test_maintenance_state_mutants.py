"""Shared maintenance state (issue 17): the exact records, refusals and history entries of the
lock, the window and the marks, and each condition on its own (this run's token and not any
lock, a window joined or opened, a mark's owner), as the mutation run showed them untested."""
import json
import os
import re
import socket
import time

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_state as ms
from ansible_collections.virtfleet.cluster.plugins.module_utils import state_store as store

TOKEN = "a" * 32
OTHER_TOKEN = "b" * 32


@pytest.fixture
def state(tmp_path):
    return ms.ClusterState(store.state_dir(str(tmp_path)), "lab-a")


def dry(state):
    return ms.ClusterState(state.path, state.cluster, check_mode=True)


def holder(run_id="run-1", token=TOKEN, **extra):
    return ms.default_holder(run_id, dict(extra, token=token))


def locked(state, run_id="run-1", token=TOKEN):
    mine = holder(run_id, token)
    state.acquire_lock(mine)
    return mine


def history_of(state):
    path = os.path.join(state.path, store.HISTORY_FILE)
    if not os.path.exists(path):
        return []
    # ts and cluster are on every entry; what differs is the rest.
    entries = [json.loads(line) for line in open(path)]
    for entry in entries:
        assert entry.pop("cluster") == "lab-a" and isinstance(entry.pop("ts"), float)
    return entries


def on_disk(path):
    with open(path) as handle:
        return json.load(handle)


def lock_file(state):
    return os.path.join(state.path, store.LOCK_FILE)


def window_file(state):
    return os.path.join(state.path, store.WINDOW_FILE)


def mark_file(state, host):
    return os.path.join(state.path, store.MARKS_DIR, host + ".json")


# --------------------------------------------------------------------------- holders
def test_default_holder_fields_and_extra_values_that_override_them(monkeypatch):
    monkeypatch.setenv("USER", "alice")
    before = time.time()
    made = ms.default_holder("run-1")
    assert set(made) == {"run_id", "token", "controller", "pid", "user", "since"}
    assert made["run_id"] == "run-1" and re.fullmatch("[0-9a-f]{32}", made["token"])
    assert made["controller"] == socket.gethostname() and made["pid"] == os.getpid() and made["user"] == "alice"
    assert made["since"] in (store.iso(before), store.iso(time.time()))
    # The controller's facts replace this process's; empty ones (None, "") do not.
    given = ms.default_holder("run-1", {"token": "t1", "controller": "", "pid": None, "started": "T", "awx_job_id": 0})
    assert given["token"] == "t1" and given["controller"] == socket.gethostname() and given["pid"] == os.getpid()
    assert given["started"] == "T" and given["awx_job_id"] == 0


def test_default_holder_user_falls_back_to_logname_then_the_uid(monkeypatch):
    monkeypatch.delenv("USER", raising=False)
    monkeypatch.setenv("LOGNAME", "bob")
    assert ms.default_holder("r")["user"] == "bob"
    monkeypatch.delenv("LOGNAME")
    assert ms.default_holder("r")["user"] == str(os.getuid())


def test_describe_holder_word_for_word():
    full = {"run_id": "r1", "user": "ops", "controller": "ctl", "pid": 42, "since": "S", "started": "T",
            "awx_job_id": 9, "token": "0123456789abcdef"}
    assert ms.describe_holder(full) == "run r1 (ops@ctl, pid 42, since T, AWX job 9, token 0123456789ab)"
    assert ms.describe_holder(dict(full, started=None, pid=0, awx_job_id=None, token="")) == "run r1 (ops@ctl, since S)"
    assert ms.describe_holder(None) == "run ? (?@?, since ?)"
    assert ms.describe_holder(["not", "a", "holder"]) == "run ? (?@?, since ?)"


def test_holder_of_a_record_is_its_holder_dict_or_nothing():
    assert ms.holder_of({"holder": {"run_id": "r"}}) == {"run_id": "r"}
    assert ms.holder_of({"holder": "r"}) == {}
    assert ms.holder_of(["holder"]) == {}
    assert ms.holder_of(None) == {}


# --------------------------------------------------------------------------- acquire
def test_a_holder_without_a_token_is_refused_and_nothing_is_written(state):
    with pytest.raises(store.StateError) as refused:
        state.acquire_lock({"run_id": "run-1"})
    assert str(refused.value) == "a lock holder needs a token (default_holder makes one)"
    assert not os.path.exists(state.path)


def test_the_lock_record_is_written_as_returned_and_logged(state):
    before = time.time()
    mine = holder()
    changed, lock, broken = state.acquire_lock(mine)
    assert (changed, broken) == (True, None)
    assert lock == {"cluster": "lab-a", "holder": mine, "acquired": lock["acquired"]}
    assert before <= lock["acquired"] <= time.time()
    assert on_disk(lock_file(state)) == lock
    assert history_of(state) == [{"event": "locked", "holder": mine}]


def test_reentry_with_the_same_token_returns_the_lock_unchanged_and_logs_nothing(state):
    mine = locked(state)
    written = on_disk(lock_file(state))
    # Another run id with this token is still this run (the token is the identity).
    assert state.acquire_lock(dict(mine, run_id="renamed")) == (False, written, None)
    assert history_of(state) == [{"event": "locked", "holder": mine}]


def test_another_run_is_refused_word_for_word(state):
    first = locked(state, "run-1")
    other = holder("run-2", OTHER_TOKEN)
    with pytest.raises(store.LockHeld) as refused:
        state.acquire_lock(other)
    assert str(refused.value) == (
        "cluster lab-a is locked by %s. Two runs never maintain one cluster at once. If that run is dead, an "
        "operator releases the lock with rolling_maintenance_force_unlock: [lab-a] (lock file %s)."
        % (ms.describe_holder(first), lock_file(state)))
    assert refused.value.holder == first and refused.value.result == {"holder": first, "lock_held": True}
    assert on_disk(lock_file(state))["holder"] == first


def test_the_same_run_id_with_another_token_is_refused_word_for_word(state):
    first = holder("run-1", TOKEN, controller="ctl-1", pid=4711)
    state.acquire_lock(first)
    with pytest.raises(store.LockHeld) as refused:
        state.acquire_lock(holder("run-1", OTHER_TOKEN))
    assert str(refused.value) == (
        "cluster lab-a is locked by %s, another run with the same run id run-1 (this run is token bbbbbbbbbbbb): two "
        "runs were started with the same rolling_maintenance_run_id and the first still holds the lock. Two runs "
        "with one run id never maintain one cluster at once. To resume a run that died while holding the lock, make sure it is gone "
        "(pid 4711 on ctl-1), then release it with rolling_maintenance_force_unlock: [lab-a] (lock file %s)."
        % (ms.describe_holder(first), lock_file(state)))
    assert refused.value.holder == first


def test_a_corrupt_lock_is_refused_without_force_and_left_as_it_is(state):
    state.ensure_dirs()
    with open(lock_file(state), "w") as handle:
        handle.write("{half")
    with pytest.raises(store.CorruptState) as refused:
        state.acquire_lock(holder())
    assert refused.value.raw == b"{half" and refused.value.path == lock_file(state)
    assert open(lock_file(state)).read() == "{half" and history_of(state) == []


def test_force_in_check_mode_says_what_it_would_break_and_writes_nothing(state):
    dead = locked(state, "dead-run")
    old = on_disk(lock_file(state))
    new = holder("run-2", OTHER_TOKEN)
    changed, lock, broken = dry(state).acquire_lock(new, force=True)
    assert changed and lock["holder"] == new and lock["cluster"] == "lab-a" and broken == old
    assert on_disk(lock_file(state))["holder"] == dead and len(history_of(state)) == 1
    # The same for a corrupt lock: the error is said, the file stays.
    with open(lock_file(state), "w") as handle:
        handle.write("{half")
    changed, lock, broken = dry(state).acquire_lock(new, force=True)
    assert changed and set(broken) == {"corrupt", "error"} and broken["corrupt"] is True
    assert "not valid JSON" in broken["error"] and lock_file(state) in broken["error"]
    assert open(lock_file(state)).read() == "{half" and sorted(os.listdir(state.path)) == [
        store.HISTORY_FILE, store.LOCK_FILE, store.MARKS_DIR]


def test_force_breaks_a_live_lock_logging_who_broke_whom(state):
    dead = locked(state, "dead-run")
    old = on_disk(lock_file(state))
    new = holder("run-2", OTHER_TOKEN)
    changed, lock, broken = state.acquire_lock(new, force=True)
    assert changed and broken == old and on_disk(lock_file(state)) == lock and lock["holder"] == new
    assert history_of(state) == [{"event": "locked", "holder": dead},
                                 {"event": "lock_broken", "by": "run-2", "holder": dead},
                                 {"event": "locked", "holder": new}]
    assert sorted(os.listdir(state.path)) == [store.HISTORY_FILE, store.LOCK_FILE, store.MARKS_DIR]


def test_force_sets_a_corrupt_lock_aside_under_a_dated_name(state):
    state.ensure_dirs()
    with open(lock_file(state), "w") as handle:
        handle.write("{half")
    changed, lock, broken = state.acquire_lock(holder("run-2"), force=True)
    copies = [n for n in os.listdir(state.path) if n.startswith(store.LOCK_FILE + ".corrupt-")]
    assert len(copies) == 1 and re.fullmatch(r"lock\.json\.corrupt-\d{8}T\d{6}Z-[0-9a-f]{6}", copies[0])
    copy = os.path.join(state.path, copies[0])
    assert open(copy).read() == "{half"
    assert changed and broken == {"corrupt": True, "corrupt_copy": copy, "error": broken["error"]}
    assert "not valid JSON" in broken["error"]
    assert history_of(state) == [
        {"event": "lock_broken", "by": "run-2", "corrupt": True, "corrupt_copy": copy, "error": broken["error"]},
        {"event": "locked", "holder": lock["holder"]}]


def test_a_lock_taken_between_the_check_and_the_link_is_reported_never_overwritten(state, monkeypatch):
    state.ensure_dirs()
    other = holder("run-2", OTHER_TOKEN)
    real_create = ms.create_json_exclusive

    def somebody_first(path, data):
        assert real_create(path, {"cluster": "lab-a", "holder": other, "acquired": 1.0})
        return real_create(path, data)
    monkeypatch.setattr(ms, "create_json_exclusive", somebody_first)
    with pytest.raises(store.LockHeld) as refused:
        state.acquire_lock(holder())
    assert str(refused.value) == "cluster lab-a was just locked by %s" % ms.describe_holder(other)
    assert refused.value.holder == other and on_disk(lock_file(state))["holder"] == other
    assert history_of(state) == []


# --------------------------------------------------------------------------- release
def test_release_by_token_whatever_the_run_id_and_the_history_says_it_was_not_forced(state):
    mine = locked(state)
    assert state.release_lock("renamed", token=TOKEN) is True
    assert not os.path.exists(lock_file(state))
    assert history_of(state)[1:] == [{"event": "unlocked", "by": "renamed", "holder": mine, "forced": False}]
    assert sorted(os.listdir(state.path)) == [store.HISTORY_FILE, store.MARKS_DIR]  # no tombstone left


def test_release_with_another_token_is_refused_word_for_word_even_for_the_same_run_id(state):
    mine = locked(state)
    with pytest.raises(store.LockHeld) as refused:
        state.release_lock("run-1", token=OTHER_TOKEN)
    assert str(refused.value) == ("cluster lab-a is locked by %s, not by this run (run run-1, token bbbbbbbbbbbb): "
                                  "not releasing it" % ms.describe_holder(mine))
    with pytest.raises(store.LockHeld) as refused:
        state.release_lock("run-2")
    assert str(refused.value) == ("cluster lab-a is locked by %s, not by this run (run run-2): not releasing it"
                                  % ms.describe_holder(mine))
    assert on_disk(lock_file(state))["holder"] == mine and len(history_of(state)) == 1


def test_a_forced_release_of_another_runs_lock_is_logged_as_forced(state):
    dead = locked(state, "dead-run")
    assert state.release_lock("operator", force=True) is True
    assert history_of(state)[1:] == [{"event": "unlocked", "by": "operator", "holder": dead, "forced": True}]


def test_release_in_check_mode_changes_and_logs_nothing(state):
    locked(state)
    assert dry(state).release_lock("run-1", token=TOKEN) is True
    assert os.path.exists(lock_file(state)) and len(history_of(state)) == 1
    # A corrupt lock forced away in check mode: said, kept.
    with open(lock_file(state), "w") as handle:
        handle.write("{half")
    assert dry(state).release_lock("operator", force=True) is True
    assert open(lock_file(state)).read() == "{half"
    assert not [n for n in os.listdir(state.path) if ".corrupt-" in n]


def test_a_corrupt_lock_is_not_released_without_force(state):
    state.ensure_dirs()
    with open(lock_file(state), "w") as handle:
        handle.write("[]")
    with pytest.raises(store.CorruptState):
        state.release_lock("run-1", token=TOKEN)
    assert open(lock_file(state)).read() == "[]"


def test_release_renames_the_lock_to_a_unique_tombstone_first(state, monkeypatch):
    locked(state)
    renames = []
    real_rename = os.rename

    def recording(source, target):
        renames.append((source, target))
        real_rename(source, target)
    monkeypatch.setattr(ms.os, "rename", recording)
    state.release_lock("run-1", token=TOKEN)
    assert len(renames) == 1 and renames[0][0] == lock_file(state)
    directory, name = os.path.split(renames[0][1])
    assert directory == state.path and re.fullmatch(r"\.lock\.json\.released-[0-9a-f]{32}", name)
    assert not os.path.exists(renames[0][1])


def test_a_corrupt_lock_replaced_before_it_is_set_aside_is_put_back(state, monkeypatch):
    state.ensure_dirs()
    with open(lock_file(state), "w") as handle:
        handle.write("{half")
    other = holder("run-3", OTHER_TOKEN)
    real_rename = os.rename

    def replaced_first(source, target):
        # Another operator broke the corrupt lock and a run locked the cluster in between.
        store.write_json_atomic(source, {"cluster": "lab-a", "holder": other, "acquired": 1.0})
        real_rename(source, target)
    monkeypatch.setattr(ms.os, "rename", replaced_first)
    with pytest.raises(store.LockHeld) as refused:
        state.acquire_lock(holder("run-2"), force=True)
    assert str(refused.value) == ("cluster lab-a was locked by %s while this run was removing the lock it had read: "
                                  "that lock stays, nothing was removed" % ms.describe_holder(other))
    assert refused.value.holder == other
    assert on_disk(lock_file(state))["holder"] == other
    assert sorted(os.listdir(state.path)) == [store.LOCK_FILE, store.MARKS_DIR]


def test_a_displaced_lock_that_cannot_be_put_back_is_kept_and_reported(state, monkeypatch):
    locked(state)
    thief, third = holder("run-2", OTHER_TOKEN), holder("run-3", "c" * 32)
    real_rename, real_create = os.rename, store.create_json_exclusive

    def stolen_first(source, target):
        store.write_json_atomic(source, {"cluster": "lab-a", "holder": thief, "acquired": 2.0})
        real_rename(source, target)

    def third_run_links_first(source, target):
        assert real_create(target, {"cluster": "lab-a", "holder": third, "acquired": 3.0})
        return store.link_exclusive(source, target)
    monkeypatch.setattr(ms.os, "rename", stolen_first)
    monkeypatch.setattr(ms, "link_exclusive", third_run_links_first)
    with pytest.raises(store.LockHeld) as refused:
        state.release_lock("run-1", token=TOKEN)
    tombs = [n for n in os.listdir(state.path) if n.startswith(".lock.json.released-")]
    assert len(tombs) == 1
    tomb = os.path.join(state.path, tombs[0])
    assert on_disk(tomb)["holder"] == thief and on_disk(lock_file(state))["holder"] == third
    assert str(refused.value) == (
        "cluster lab-a: the lock of %s, taken while this run was removing another, could not be put back because "
        "yet another run locked the cluster in that instant; it is kept as %s. Check which runs are active on "
        "cluster lab-a before going on." % (ms.describe_holder(thief), tomb))
    assert refused.value.holder == thief
    assert history_of(state)[-1] == {"event": "lock_displaced", "holder": thief, "kept_as": tomb}


# --------------------------------------------------------------------------- require_lock
def test_require_lock_needs_this_run_id_and_when_given_this_token(state):
    with pytest.raises(store.StateError) as refused:
        state.require_lock("run-1", TOKEN)
    assert str(refused.value) == ("run run-1 (token aaaaaaaaaaaa) does not hold the lock of cluster lab-a (held by: "
                                  "nobody): it was released, or another run holds it now; this run acts on the "
                                  "cluster no further")
    mine = locked(state)
    state.require_lock("run-1", TOKEN)
    state.require_lock("run-1")  # without a token the run id decides
    with pytest.raises(store.StateError) as refused:
        state.require_lock("run-1", OTHER_TOKEN)
    assert str(refused.value) == ("run run-1 (token bbbbbbbbbbbb) does not hold the lock of cluster lab-a (held by: "
                                  "%s): it was released, or another run holds it now; this run acts on the cluster "
                                  "no further" % ms.describe_holder(mine))
    for run_id, token in (("run-2", TOKEN), ("run-2", None)):
        with pytest.raises(store.StateError) as refused:
            state.require_lock(run_id, token)
        assert str(refused.value).startswith("run run-2%s does not hold" % (" (token aaaaaaaaaaaa)" if token else ""))


# --------------------------------------------------------------------------- window
def test_a_new_window_record_is_written_and_logged(state):
    locked(state)
    before = time.time()
    changed, window = state.open_window("run-1", token=TOKEN)
    assert changed and window == {"name": "run-1", "opened": window["opened"], "opened_by": "run-1",
                                  "runs": ["run-1"], "closed": None, "hosts_done": {}, "guest_origins": {}}
    assert before <= window["opened"] <= time.time() and on_disk(window_file(state)) == window
    assert history_of(state)[1:] == [{"event": "window_opened", "name": "run-1", "by": "run-1"}]
    assert not os.path.exists(os.path.join(state.path, "window.previous.json"))


def test_a_window_is_joined_once_per_run_and_only_when_open_and_of_the_name_asked(state):
    locked(state)
    state.open_window("run-1", name="w")
    assert state.open_window("run-1") == (False, on_disk(window_file(state)))
    assert state.open_window("run-1", name="w") == (False, on_disk(window_file(state)))
    state.release_lock("run-1")
    locked(state, "run-2", OTHER_TOKEN)
    changed, window = state.open_window("run-2", name="w", token=OTHER_TOKEN)
    assert changed and window["runs"] == ["run-1", "run-2"] and window["name"] == "w"
    assert on_disk(window_file(state)) == window and len(history_of(state)) == 4  # joining is not logged
    assert state.open_window("run-2", token=OTHER_TOKEN)[0] is False


def test_joining_in_check_mode_writes_nothing(state):
    locked(state)
    state.open_window("run-1", name="w")
    state.release_lock("run-1")
    locked(state, "run-2", OTHER_TOKEN)
    changed, window = dry(state).open_window("run-2", token=OTHER_TOKEN)
    assert changed and window["runs"] == ["run-1", "run-2"]
    assert on_disk(window_file(state))["runs"] == ["run-1"]


def test_another_name_new_or_a_closed_window_opens_a_new_one_keeping_the_previous(state):
    locked(state)
    state.open_window("run-1", name="w1")
    first = on_disk(window_file(state))
    changed, window = state.open_window("run-1", name="w2")
    assert changed and window["name"] == "w2" and window["runs"] == ["run-1"]
    assert on_disk(os.path.join(state.path, "window.previous.json")) == first
    changed, window = state.open_window("run-1", name="w2", new=True)
    assert changed and window["name"] == "w2" and window["opened"] > first["opened"]
    state.close_window("run-1")
    closed = on_disk(window_file(state))
    changed, window = state.open_window("run-1", name="w2")
    assert changed and window["closed"] is None and window["hosts_done"] == {}
    assert on_disk(os.path.join(state.path, "window.previous.json")) == closed


def test_a_new_window_in_check_mode_writes_nothing(state):
    locked(state)
    state.open_window("run-1", name="w1")
    first = on_disk(window_file(state))
    changed, window = dry(state).open_window("run-1", name="w2")
    assert changed and window["name"] == "w2"
    assert on_disk(window_file(state)) == first
    assert not os.path.exists(os.path.join(state.path, "window.previous.json"))
    assert [h["event"] for h in history_of(state)] == ["locked", "window_opened"]


def test_window_changes_need_an_open_window(state):
    locked(state)
    for act in (lambda: state.host_done("run-1", "h1"), lambda: state.record_guest_origins("run-1", {"g": "h1"})):
        with pytest.raises(store.StateError) as refused:
            act()
        assert str(refused.value) == "cluster lab-a has no open maintenance window"
    state.open_window("run-1")
    state.close_window("run-1")
    with pytest.raises(store.StateError) as refused:
        state.host_done("run-1", "h1")
    assert str(refused.value) == "cluster lab-a has no open maintenance window"


def test_window_changes_check_the_token(state):
    locked(state)
    state.open_window("run-1")
    for act in (lambda: state.host_done("run-1", "h1", token=OTHER_TOKEN),
                lambda: state.record_guest_origins("run-1", {"g": "h1"}, token=OTHER_TOKEN),
                lambda: state.close_window("run-1", token=OTHER_TOKEN),
                lambda: state.close_window("run-1", token=OTHER_TOKEN, members=["h1"])):
        with pytest.raises(store.StateError, match="does not hold the lock"):
            act()
    assert on_disk(window_file(state))["hosts_done"] == {} and on_disk(window_file(state))["closed"] is None


def test_host_done_records_details_the_run_and_the_time(state):
    locked(state)
    state.open_window("run-1")
    before = time.time()
    changed, window = state.host_done("run-1", "h1", {"boot_id_after": "b"}, token=TOKEN)
    done = window["hosts_done"]["h1"]
    assert changed and done == {"boot_id_after": "b", "run_id": "run-1", "at": done["at"]}
    assert before <= done["at"] <= time.time() and on_disk(window_file(state)) == window
    _changed, window = state.host_done("run-1", "h2")
    assert set(window["hosts_done"]["h2"]) == {"run_id", "at"}


def test_guest_origins_unchanged_or_in_check_mode_write_nothing(state):
    locked(state)
    state.open_window("run-1")
    changed, window = state.record_guest_origins("run-1", {"g1": "h1"})
    assert changed and window["guest_origins"] == {"g1": "h1"} == on_disk(window_file(state))["guest_origins"]
    assert state.record_guest_origins("run-1", {"g1": "h9"}) == (False, on_disk(window_file(state)))
    assert state.record_guest_origins("run-1", None)[0] is False
    changed, window = dry(state).record_guest_origins("run-1", {"g2": "h2"})
    assert changed and window["guest_origins"] == {"g1": "h1", "g2": "h2"}
    assert on_disk(window_file(state))["guest_origins"] == {"g1": "h1"}


def test_close_window_records_who_and_when_and_logs_it(state):
    locked(state)
    state.open_window("run-1", name="w")
    before = time.time()
    changed, window = state.close_window("run-1", token=TOKEN)
    assert changed and window["left"] == [] and window["closed_by"] == "run-1"
    assert before <= window["closed"] <= time.time()
    assert on_disk(window_file(state)) == {k: v for k, v in window.items() if k != "left"}
    assert history_of(state)[-1] == {"event": "window_closed", "name": "w", "by": "run-1"}
    # Closed already (by a run that shared the cluster): nothing changes, still under the lock.
    assert state.close_window("run-1") == (False, dict(on_disk(window_file(state)), left=[]))
    state.release_lock("run-1", token=TOKEN)
    with pytest.raises(store.StateError, match="does not hold the lock"):
        state.close_window("run-1", token=TOKEN)


def test_a_window_kept_open_still_needs_the_lock(state):
    locked(state)
    state.open_window("run-1")
    state.release_lock("run-1")
    with pytest.raises(store.StateError, match="does not hold the lock"):
        state.close_window("run-1", members=["h1"])
    # Without a window at all, every member is left.
    state.acquire_lock(holder("run-2", OTHER_TOKEN))
    os.unlink(window_file(state))
    assert state.close_window("run-2", members=["h1", "h2"], not_needed=["h2"]) == (False, {"left": ["h1"]})


def test_closing_in_check_mode_writes_and_logs_nothing(state):
    locked(state)
    state.open_window("run-1")
    changed, window = dry(state).close_window("run-1")
    assert changed and window["closed"] and window["closed_by"] == "run-1"
    assert on_disk(window_file(state))["closed"] is None
    assert [h["event"] for h in history_of(state)] == ["locked", "window_opened"]


# --------------------------------------------------------------------------- marks
def test_mark_belongs_to_its_run_or_its_window_only():
    assert ms.ClusterState.mark_belongs_to(None, "run-1", "w") is False
    assert ms.ClusterState.mark_belongs_to({}, "run-1", "w") is False
    assert ms.ClusterState.mark_belongs_to({"owner": {"run_id": "run-1"}, "window": "x"}, "run-1", None) is True
    assert ms.ClusterState.mark_belongs_to({"owner": {"run_id": "run-0"}, "window": "w"}, "run-1", "w") is True
    assert ms.ClusterState.mark_belongs_to({"owner": {"run_id": "run-0"}, "window": "x"}, "run-1", "w") is False
    # No window on either side is no common window.
    assert ms.ClusterState.mark_belongs_to({"window": None}, "run-1", None) is False
    assert ms.ClusterState.mark_belongs_to({"window": ""}, "run-1", "") is False


def test_an_unknown_phase_is_refused_word_for_word(state):
    locked(state)
    with pytest.raises(store.StateError) as refused:
        state.mark("run-1", "h1", holder(), phase="patching")
    assert str(refused.value) == "unknown phase 'patching' (one of marked, drained, patched, rebooted, verified)"
    assert state.marks() == {}


def test_a_new_mark_record_is_created_and_logged(state):
    mine = locked(state)
    before = time.time()
    changed, mark = state.mark("run-1", "h1", mine, window_name="w", token=TOKEN)
    assert changed and mark == {"host": "h1", "cluster": "lab-a", "window": "w", "owner": mine, "phase": "marked",
                                "reason": "rolling maintenance", "since": mark["since"],
                                "phases": {"marked": mark["phases"]["marked"]}}
    assert before <= mark["since"] <= mark["phases"]["marked"] <= time.time()
    assert on_disk(mark_file(state, "h1")) == mark
    assert history_of(state)[1:] == [{"event": "marked", "host": "h1", "owner": mine, "reason": "rolling maintenance"}]


def test_a_mark_keeps_its_start_reason_first_phases_and_merges_details(state):
    mine = locked(state)
    _changed, first = state.mark("run-1", "h1", mine, window_name="w", reason="kernel", details={"a": 1})
    time.sleep(0.01)
    changed, mark = state.mark("run-1", "h1", mine, phase="drained", window_name="w", details={"b": 2})
    assert changed and mark["since"] == first["since"] and mark["reason"] == "kernel"
    assert mark["phases"]["marked"] == first["phases"]["marked"] and mark["phases"]["drained"] > first["since"]
    assert mark["details"] == {"a": 1, "b": 2} and on_disk(mark_file(state, "h1")) == mark
    _changed, mark = state.mark("run-1", "h1", mine, phase="marked", window_name="w", reason="firmware")
    assert mark["phase"] == "marked" and mark["reason"] == "firmware"
    assert mark["phases"]["marked"] == first["phases"]["marked"]
    # Only the creation is logged.
    assert [h["event"] for h in history_of(state)] == ["locked", "marked"]


def test_the_same_mark_again_changes_nothing(state):
    mine = locked(state)
    _changed, mark = state.mark("run-1", "h1", mine, window_name="w")
    assert state.mark("run-1", "h1", mine, window_name="w") == (False, mark)


def test_marking_in_check_mode_writes_nothing(state):
    mine = locked(state)
    changed, mark = dry(state).mark("run-1", "h1", mine, window_name="w")
    assert changed and mark["host"] == "h1" and state.marks() == {}
    state.mark("run-1", "h1", mine, window_name="w")
    changed, mark = dry(state).mark("run-1", "h1", mine, phase="drained", window_name="w")
    assert changed and mark["phase"] == "drained" and state.marks()["h1"]["phase"] == "marked"
    assert [h["event"] for h in history_of(state)] == ["locked", "marked"]


def test_a_mark_made_by_somebody_else_in_between_is_refused(state, monkeypatch):
    mine = locked(state)
    theirs = {"host": "h1", "owner": {"run_id": "other-tool"}}
    real_create = ms.create_json_exclusive

    def somebody_first(path, data):
        assert real_create(path, theirs)
        return real_create(path, data)
    monkeypatch.setattr(ms, "create_json_exclusive", somebody_first)
    with pytest.raises(store.StateError) as refused:
        state.mark("run-1", "h1", mine, window_name="w")
    assert str(refused.value) == "host h1 was marked concurrently by somebody else"
    assert on_disk(mark_file(state, "h1")) == theirs
    assert [h["event"] for h in history_of(state)] == ["locked"]


def test_a_foreign_mark_is_refused_word_for_word_before_the_lock_is_asked(state):
    owner = ms.default_holder("operator", {"user": "ops", "controller": "desk"})
    state.mark("operator", "h2", owner)
    with pytest.raises(store.StateError) as refused:
        state.mark("run-1", "h2", holder(), window_name="w")   # no lock held: the mark is said first
    assert str(refused.value) == ("host h2 is marked in maintenance by %s (rolling maintenance): leaving it as found"
                                  % ms.describe_holder(owner))
    os.unlink(mark_file(state, "h2"))
    state.mark("operator", "h2", owner, reason="RAM swap")
    with pytest.raises(store.StateError, match=r"\(RAM swap\): leaving it as found$"):
        state.mark("run-1", "h2", holder(), window_name="w")
    with open(mark_file(state, "h2"), "w") as handle:
        json.dump({"owner": owner, "reason": ""}, handle)
    with pytest.raises(store.StateError, match=r"\(no reason given\): leaving it as found$"):
        state.mark("run-1", "h2", holder(), window_name="w")


def test_the_operator_marks_without_a_lock_a_run_never(state):
    changed, _mark = state.mark("operator", "h1", holder("operator"))
    assert changed
    with pytest.raises(store.StateError, match="does not hold the lock"):
        state.mark("run-1", "h2", holder(), window_name="w")
    assert set(state.marks()) == {"h1"}


def test_unmark_of_no_mark_changes_nothing(state):
    assert state.unmark("run-1", "h1") is False


def test_unmark_removes_and_logs_only_this_runs_or_a_forced_one(state):
    mine = locked(state)
    state.mark("operator", "h2", holder("operator"), reason="RAM swap")
    state.mark("run-1", "h1", mine, window_name="w")
    with pytest.raises(store.StateError) as refused:
        state.unmark("run-1", "h2", window_name="w")
    assert str(refused.value) == ("host h2 is marked by %s, not by this run: leaving the mark"
                                  % ms.describe_holder(state.marks()["h2"]["owner"]))
    assert state.unmark("run-1", "h1", window_name="w", token=TOKEN) is True
    assert state.unmark("run-1", "h2", force=True) is True
    assert state.marks() == {}
    assert history_of(state)[-2:] == [{"event": "unmarked", "host": "h1", "by": "run-1"},
                                      {"event": "unmarked", "host": "h2", "by": "run-1"}]


def test_unmark_with_a_token_needs_the_lock_without_one_or_by_the_operator_not(state):
    mine = locked(state)
    state.mark("run-1", "h1", mine, window_name="w")
    state.mark("run-1", "h2", mine, window_name="w")
    state.mark("run-1", "h3", mine, window_name="w")
    with pytest.raises(store.StateError, match="does not hold the lock"):
        state.unmark("run-1", "h1", window_name="w", token=OTHER_TOKEN)
    assert set(state.marks()) == {"h1", "h2", "h3"}
    state.release_lock("run-1")
    # A rescue that lost the lock still takes its own marks away (no token given), and so does
    # the operator with any token.
    assert state.unmark("run-1", "h2", window_name="w") is True
    assert state.unmark("operator", "h3", force=True, token=OTHER_TOKEN) is True
    assert set(state.marks()) == {"h1"}


def test_unmark_in_check_mode_writes_and_logs_nothing(state):
    mine = locked(state)
    state.mark("run-1", "h1", mine, window_name="w")
    assert dry(state).unmark("run-1", "h1", window_name="w") is True
    assert set(state.marks()) == {"h1"}
    assert [h["event"] for h in history_of(state)] == ["locked", "marked"]


# --------------------------------------------------------------------------- second look (survivors of the first re-run)
def test_a_holder_without_pid_or_controller_is_said_with_question_marks(state):
    state.ensure_dirs()
    store.write_json_atomic(lock_file(state), {"cluster": "lab-a", "holder": {"run_id": "run-1", "token": TOKEN}})
    with pytest.raises(store.LockHeld, match=r"make sure it is gone \(pid \? on \?\), then release"):
        state.acquire_lock(holder("run-1", OTHER_TOKEN))


def test_a_refused_release_returns_the_holder(state):
    mine = locked(state)
    with pytest.raises(store.LockHeld) as refused:
        state.release_lock("run-2")
    assert refused.value.holder == mine and refused.value.result["holder"] == mine


def test_a_forced_release_of_a_corrupt_lock_logs_who_broke_it(state):
    state.ensure_dirs()
    with open(lock_file(state), "w") as handle:
        handle.write("{half")
    assert state.release_lock("operator", force=True)
    assert [(h["event"], h["by"]) for h in history_of(state)] == [("lock_broken", "operator")]


def test_the_corrupt_copy_is_named_in_utc_whatever_the_local_time_zone(state, monkeypatch):
    state.ensure_dirs()
    with open(lock_file(state), "w") as handle:
        handle.write("{half")
    monkeypatch.setenv("TZ", "Etc/GMT-9")   # nine hours east of UTC
    time.tzset()
    try:
        before = time.gmtime()
        state.release_lock("operator", force=True)
        after = time.gmtime()
    finally:
        monkeypatch.undo()
        time.tzset()
    copy = [n for n in os.listdir(state.path) if ".corrupt-" in n][0]
    stamp = copy.split(".corrupt-")[1][:16]
    assert stamp in (time.strftime("%Y%m%dT%H%M%SZ", before), time.strftime("%Y%m%dT%H%M%SZ", after))


def test_a_window_without_a_runs_list_is_joined(state):
    locked(state)
    state.ensure_dirs()
    store.write_json_atomic(window_file(state), {"name": "w", "closed": None, "hosts_done": {}, "guest_origins": {}})
    changed, window = state.open_window("run-1")
    assert changed and window["runs"] == ["run-1"] and window["name"] == "w"


def test_a_runs_own_mark_without_a_window_is_its_own(state):
    mine = locked(state)
    state.mark("run-1", "h1", mine)
    changed, mark = state.mark("run-1", "h1", mine, phase="drained")
    assert changed and mark["phase"] == "drained"
    assert state.unmark("run-1", "h1") is True


def test_a_rerun_of_the_window_unmarks_the_earlier_runs_mark(state):
    first = locked(state)
    state.mark("run-1", "h1", first, window_name="w")
    state.release_lock("run-1")
    locked(state, "run-2", OTHER_TOKEN)
    assert state.unmark("run-2", "h1", window_name="w", token=OTHER_TOKEN) is True


def test_a_corrupt_mark_is_said_with_its_host_when_marking_or_unmarking(state):
    locked(state)
    state.ensure_dirs()
    with open(mark_file(state, "h1"), "w") as handle:
        handle.write("{")
    for act in (lambda: state.mark("run-1", "h1", holder(), window_name="w"), lambda: state.unmark("run-1", "h1")):
        with pytest.raises(store.CorruptState, match="Host h1's maintenance mark cannot be read"):
            act()
