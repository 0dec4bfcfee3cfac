"""Cluster slots: who may be out of service now, decided from the shared state (no lab)."""
import os
import threading
import time

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import cluster_slots as cs
from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_state as ms
from ansible_collections.virtfleet.cluster.plugins.module_utils import state_store as store

from .test_maintenance_state import run_state_module

TOKEN = "t" * 32


@pytest.fixture
def state(tmp_path):
    state = ms.ClusterState(store.state_dir(str(tmp_path)), "lab-a")
    state.init_identity()
    state.acquire_lock(ms.default_holder("run-1", {"token": TOKEN}))
    state.open_window("run-1", token=TOKEN)
    return state


def holder():
    return {"run_id": "run-1", "token": TOKEN}


# --------------------------------------------------------------------------- the pure rule
def test_decide_turn_waits_for_every_host_of_the_earlier_rounds():
    rounds = [["a1", "a2"], ["a3"]]
    assert cs.decide("a3", "host", 2, {}, rounds, done=["a1"]).action == "wait"
    assert "a2" in cs.decide("a3", "host", 2, {}, rounds, done=["a1"]).reason
    assert cs.decide("a3", "host", 2, {}, rounds, done=["a1", "a2"]) == cs.Decision("take", slot="host-0.json")
    # Hosts of the first round need nobody before them.
    assert cs.decide("a2", "host", 2, {}, rounds).action == "take"


def test_decide_room_counts_slot_holders_marks_and_unanswered_hosts_but_not_the_host_itself():
    slots = {"host-0.json": {"host": "a1"}}
    assert cs.decide("a2", "host", 2, slots, [["a1", "a2"]]) == cs.Decision("take", slot="host-1.json")
    assert cs.decide("a2", "host", 2, slots, [["a1", "a2"]], out_of_service=["a9"]).action == "wait"
    # Its own mark (a resumed host) does not count against it.
    assert cs.decide("a2", "host", 1, {}, [["a2"]], out_of_service=["a2"]).action == "take"
    assert "max_unavailable 1" in cs.decide("a2", "host", 1, {}, [["a2"]], out_of_service=["a7"]).reason


def test_out_of_service_is_marks_host_slot_holders_and_unanswered_hosts_not_the_move_turn():
    slots = {"host-0.json": {"host": "a1", "pool": "host"}, "move-0.json": {"host": "a4", "pool": "move"}}
    assert cs.hosts_out_of_service(slots, marked=["a2"], unreachable=["a3"]) == {"a1", "a2", "a3"}
    assert cs.hosts_out_of_service({}) == set()


def test_decide_a_failed_holder_stops_the_cluster_for_new_hosts_only():
    slots = {"host-0.json": {"host": "a1", "failed": "failed in phase patch"}}
    stopped = cs.decide("a2", "host", 2, slots, [["a1", "a2"]])
    assert stopped.action == "stopped" and "a1" in stopped.reason and "patch" in stopped.reason
    # A host already out still gets the move turn for its drain or canary.
    assert cs.decide("a3", "move", 1, slots) == cs.Decision("take", slot="move-0.json")


def test_decide_holds_and_move_turn_is_one_per_cluster():
    slots = {"move-0.json": {"host": "a1"}}
    assert cs.decide("a1", "move", 1, slots) == cs.Decision("holds", slot="move-0.json")
    waiting = cs.decide("a2", "move", 1, slots)
    assert waiting.action == "wait" and "a1" in waiting.reason


# --------------------------------------------------------------------------- on the shared state
def test_take_waits_for_the_turn_then_takes_after_the_earlier_host_is_done(state):
    slots = cs.ClusterSlots(state)
    rounds = [["a1"], ["a2"]]
    assert slots.take("a1", "host", 1, holder(), rounds)["admitted"]
    waiting = slots.take("a2", "host", 1, holder(), rounds)
    assert not waiting["admitted"] and "a1" in waiting["waiting_for"]
    state.host_done("run-1", "a1", token=TOKEN)
    assert slots.release("a1", TOKEN) == ["host-0.json"]
    taken = slots.take("a2", "host", 1, holder(), rounds)
    assert taken["admitted"] and taken["slot"] == "host-0.json"
    assert cs.ClusterSlots(state).read()["host-0.json"]["host"] == "a2"


def test_take_counts_an_operator_mark_against_max_unavailable(state):
    state.mark("operator", "a7", ms.default_holder("operator"), reason="RAM swap")
    result = cs.ClusterSlots(state).take("a1", "host", 1, holder(), [["a1"]])
    assert not result["admitted"] and "a7" in result["waiting_for"]
    assert cs.ClusterSlots(state).read() == {}


def test_concurrent_takers_never_exceed_the_limit(state):
    slots = cs.ClusterSlots(state)
    hosts = ["a%d" % n for n in range(8)]
    results = {}
    barrier = threading.Barrier(len(hosts))

    def take(host):
        barrier.wait()
        results[host] = slots.take(host, "host", 2, holder(), [hosts], wait=0)

    threads = [threading.Thread(target=take, args=(h,)) for h in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    admitted = [h for h, r in results.items() if r["admitted"]]
    assert 1 <= len(admitted) <= 2
    assert sorted(r["host"] for r in slots.read().values()) == sorted(admitted)


def test_stop_keeps_the_host_slot_flagged_and_gives_the_move_turn_back(state):
    slots = cs.ClusterSlots(state)
    rounds = [["a1", "a2"], ["a3"]]
    slots.take("a1", "host", 2, holder(), rounds)
    slots.take("a2", "host", 2, holder(), rounds)
    slots.take("a1", "move", 1, holder())
    assert slots.stop("a1", "failed in phase drain", TOKEN) == {"others_active": ["a2"]}
    assert sorted(slots.read()) == ["host-0.json", "host-1.json"]

    def lock_released():
        raise store.StateError("the lock was released after the failure")

    # Told, even once the failed host's rescue released the lock: no claim is tried.
    told = slots.take("a3", "host", 2, holder(), rounds, before_claim=lock_released)
    assert not told["admitted"] and "a1" in told["stopped"] and "drain" in told["stopped"]
    assert slots.take("a2", "move", 1, holder())["admitted"]


def test_check_mode_writes_nothing(state):
    dry = ms.ClusterState(state.path, "lab-a", check_mode=True)
    assert cs.ClusterSlots(dry).take("a1", "host", 1, holder(), [["a1"]]) == {
        "admitted": True, "slot": "host-0.json", "stopped": None, "waiting_for": None, "changed": True}
    assert not os.path.exists(os.path.join(state.path, cs.SLOTS_DIR)) or cs.ClusterSlots(state).read() == {}


# --------------------------------------------------------------------------- the module
def test_module_take_slot_needs_the_lock_and_open_window_clears_an_earlier_runs_slots(state, tmp_path):
    base = {"path": str(tmp_path), "cluster": "lab-a", "host": "a1"}
    code, result = run_state_module(dict(base, state="take_slot", pool="host", run_id="run-2", token="x" * 32,
                                         rounds=[["a1"]]))
    assert code == 1 and "does not hold the lock" in result["msg"]
    code, result = run_state_module(dict(base, state="take_slot", pool="host", run_id="run-1", token=TOKEN, rounds=[["a1"]]))
    assert code == 0 and result["admitted"] and result["changed"]
    # The run stops with the slot held; the next run (a new token) takes the lock and joins the window.
    state.release_lock("run-1", token=TOKEN)
    state.acquire_lock(ms.default_holder("run-2", {"token": "y" * 32}))
    code, result = run_state_module(dict(base, state="open_window", run_id="run-2", token="y" * 32))
    assert code == 0 and result["changed"]
    assert cs.ClusterSlots(state).read() == {}


def test_module_host_done_puts_the_host_back_in_service_in_one_call(state, tmp_path):
    """Recorded done, unmarked and both its slots given back: the next host of the cluster may start."""
    rounds = [["a1"], ["a2"]]
    slots = cs.ClusterSlots(state)
    assert slots.take("a1", "host", 1, holder(), rounds)["admitted"] and slots.take("a1", "move", 1, holder())["admitted"]
    state.mark("run-1", "a1", ms.default_holder("run-1", {"token": TOKEN}), token=TOKEN)
    assert not slots.take("a2", "host", 1, holder(), rounds)["admitted"]
    code, result = run_state_module({"path": str(tmp_path), "cluster": "lab-a", "host": "a1", "run_id": "run-1",
                                     "token": TOKEN, "state": "host_done", "details": {"boot_id_after": "b2"}})
    assert code == 0 and result["changed"]
    assert sorted(result["released"]) == ["host-0.json", "move-0.json"]
    assert result["state"]["marks"] == {} and result["state"]["window"]["hosts_done"]["a1"]["boot_id_after"] == "b2"
    assert slots.take("a2", "host", 1, holder(), rounds)["admitted"]


def test_module_refuses_report_events_it_would_not_record(tmp_path):
    """Only the action plugin records a task's report events (on the controller); the module run
    without it says so instead of dropping them."""
    code, result = run_state_module({"path": str(tmp_path), "cluster": "lab-a", "state": "read",
                                     "report": {"directory": str(tmp_path / "report"), "events": [{"type": "host_start"}]}})
    assert code == 1 and "maintenance_state action plugin" in result["msg"]
    assert not os.path.exists(tmp_path / "report")


# --------------------------------------------------------------------------- issue 17: the re-check after the claim
def test_a_mark_made_between_the_decision_and_the_claim_gives_the_slot_back(state):
    """An operator marks a7 after a1 was told to take the cluster's only slot and before its
    link: with the slot in place there is no room (a7 is out of service), so a1 must not keep it."""
    slots = cs.ClusterSlots(state)

    def operator_marks_a7():
        state.mark("operator", "a7", ms.default_holder("operator"), reason="RAM swap")
    result = slots.take("a1", "host", 1, holder(), [["a1"]], before_claim=operator_marks_a7)
    assert result == {"admitted": False, "slot": None, "stopped": None, "changed": False,
                      "waiting_for": "room: a7 out of service, max_unavailable 1"}
    assert slots.read() == {}


def test_a_host_claiming_beside_another_claim_and_a_new_mark_gives_its_slot_back(state):
    """max_unavailable 2: a1 and a2 were both told to take a slot while nothing was out; a7 is
    marked before a1's link. a1 re-checks, sees two others out and gives its slot back (a2's
    own re-check sees a7 and, if a1 still held its slot, a1: it gives back too)."""
    slots = cs.ClusterSlots(state)

    def a2_claims_too_and_the_operator_marks_a7():
        # a2 took its slot in the same instant (its own decision saw no mark either).
        cs.create_json_exclusive(os.path.join(slots.directory, "host-1.json"), dict(holder(), host="a2", pool="host"))
        state.mark("operator", "a7", ms.default_holder("operator"), reason="RAM swap")
    store.make_state_dirs(slots.directory)
    result = slots.take("a1", "host", 2, holder(), [["a1", "a2"]], before_claim=a2_claims_too_and_the_operator_marks_a7)
    assert not result["admitted"]
    assert result["waiting_for"] == "room: a2, a7 out of service, max_unavailable 2"
    assert sorted(slots.read()) == ["host-1.json"]


# --------------------------------------------------------------------------- issue 17: what the mutation run showed untested
OTHER_TOKEN = "o" * 32
WAITING = {"admitted": False, "slot": None, "stopped": None, "changed": False}


class FakeClock:
    """time.monotonic and time.sleep of cluster_slots: a wait of seconds takes none, and every
    sleep is recorded (and may change the state, as another host would meanwhile)."""

    def __init__(self, monkeypatch, on_sleep=lambda count: None):
        self.now, self.sleeps, self.on_sleep = 100.0, [], on_sleep
        monkeypatch.setattr(cs.time, "monotonic", lambda: self.now)
        monkeypatch.setattr(cs.time, "sleep", self.sleep)

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep(len(self.sleeps))


def put_slot(slots, name, **record):
    store.make_state_dirs(slots.directory)
    store.write_json_atomic(os.path.join(slots.directory, name), record)


def test_decide_messages_word_for_word():
    failed = {"host-0.json": {"host": "a2", "failed": "drain"}, "host-1.json": {"host": "a1", "failed": "patch"}}
    assert cs.decide("a3", "host", 2, failed).reason == "the cluster stopped after a1 (patch), a2 (drain) failed"
    turn = cs.decide("a4", "host", 3, {}, [["a1", "a2", "a3"], ["a4"]], done=["a2"])
    assert turn == cs.Decision("wait", "its turn: a1, a3 of an earlier round not done yet")
    room = cs.decide("a3", "host", 2, {"host-0.json": {"host": "a2"}}, [["a1", "a2", "a3"]], out_of_service=["a1"])
    assert room == cs.Decision("wait", "room: a1, a2 out of service, max_unavailable 2")
    held = cs.decide("a3", "move", 2, {"move-0.json": {"host": "a2"}, "move-1.json": {"host": "a1"}})
    assert held == cs.Decision("wait", "a move slot: held by a1, a2")


def test_take_answers_with_every_field_on_every_path(state, monkeypatch):
    FakeClock(monkeypatch)
    slots = cs.ClusterSlots(state)
    rounds = [["a1"], ["a2"]]
    assert slots.take("a1", "host", 1, holder(), rounds) == {
        "admitted": True, "slot": "host-0.json", "stopped": None, "waiting_for": None, "changed": True}
    # Asked again, the host holds its slot: nothing changes.
    assert slots.take("a1", "host", 1, holder(), rounds) == {
        "admitted": True, "slot": "host-0.json", "stopped": None, "waiting_for": None, "changed": False}
    assert slots.take("a2", "host", 1, holder(), rounds) == dict(
        WAITING, waiting_for="its turn: a1 of an earlier round not done yet")
    slots.stop("a1", "failed in phase patch", TOKEN)
    assert slots.take("a2", "host", 1, holder(), rounds) == {
        "admitted": False, "slot": None, "stopped": "the cluster stopped after a1 (failed in phase patch) failed",
        "waiting_for": None, "changed": False}


def test_an_unknown_pool_is_refused_word_for_word(state):
    with pytest.raises(store.StateError) as refused:
        cs.ClusterSlots(state).take("a1", "disk", 1, holder())
    assert str(refused.value) == "unknown slot pool 'disk' (one of host, move)"


def test_the_slot_record_names_the_holder_host_pool_and_time(state):
    slots = cs.ClusterSlots(state)
    slots.take("a1", "move", 1, dict(holder(), pid=4711))
    record = slots.read()["move-0.json"]
    assert record == {"run_id": "run-1", "token": TOKEN, "pid": 4711, "host": "a1", "pool": "move",
                      "since": record["since"], "since_iso": store.iso(record["since"])}
    assert isinstance(record["since"], float) and abs(record["since"] - time.time()) < 60


def test_without_a_wait_take_answers_at_once(state, monkeypatch):
    clock = FakeClock(monkeypatch)
    slots = cs.ClusterSlots(state)
    slots.take("a1", "host", 1, holder(), [["a1", "a2"]])
    assert not slots.take("a2", "host", 1, holder(), [["a1", "a2"]])["admitted"]
    assert not slots.take("a2", "host", 1, holder(), [["a1", "a2"]], wait=-5)["admitted"]
    assert clock.sleeps == []


def test_a_wait_polls_every_second_until_its_deadline(state, monkeypatch):
    clock = FakeClock(monkeypatch)
    slots = cs.ClusterSlots(state)
    slots.take("a1", "host", 1, holder(), [["a1", "a2"]])
    result = slots.take("a2", "host", 1, holder(), [["a1", "a2"]], wait=3)
    assert result == dict(WAITING, waiting_for="room: a1 out of service, max_unavailable 1")
    assert clock.sleeps == [1.0, 1.0, 1.0]
    clock.sleeps.clear()
    slots.take("a2", "host", 1, holder(), [["a1", "a2"]], wait=1, poll=0.25)
    assert clock.sleeps == [0.25] * 4


def test_a_waiting_host_takes_the_slot_given_back_meanwhile(state, monkeypatch):
    slots = cs.ClusterSlots(state)
    slots.take("a1", "host", 1, holder(), [["a1", "a2"]])
    clock = FakeClock(monkeypatch, on_sleep=lambda count: count == 2 and slots.release("a1", TOKEN))
    result = slots.take("a2", "host", 1, holder(), [["a1", "a2"]], wait=60)
    assert result["admitted"] and result["slot"] == "host-0.json" and clock.sleeps == [1.0, 1.0]


def test_a_slot_linked_first_by_another_host_is_said_then_the_next_one_taken(state, monkeypatch):
    slots = cs.ClusterSlots(state)
    rounds = [["a1", "a2"]]

    def a2_links_first():
        if "host-0.json" not in slots.read():
            put_slot(slots, "host-0.json", host="a2", pool="host", token=TOKEN)
    assert slots.take("a1", "host", 2, holder(), rounds, before_claim=a2_links_first) == dict(
        WAITING, waiting_for="a host slot taken at the same moment by another host")
    assert sorted(slots.read()) == ["host-0.json"]
    clock = FakeClock(monkeypatch)
    slots.release("a2", TOKEN)
    result = slots.take("a1", "host", 2, holder(), rounds, wait=5, before_claim=a2_links_first)
    assert result["admitted"] and result["slot"] == "host-1.json" and clock.sleeps == [1.0]


def test_the_move_turn_is_one_per_cluster_whatever_the_limit_and_the_marks(state):
    state.mark("operator", "a7", ms.default_holder("operator"), reason="RAM swap")
    slots = cs.ClusterSlots(state)
    assert slots.take("a1", "move", 1, holder(), unreachable=["a8"])["slot"] == "move-0.json"
    waiting = slots.take("a2", "move", 2, holder())
    assert waiting == dict(WAITING, waiting_for="a move slot: held by a1")


def test_hosts_done_in_a_closed_window_are_no_turn_of_this_one(state):
    state.host_done("run-1", "a1", token=TOKEN)
    slots = cs.ClusterSlots(state)
    rounds = [["a1"], ["a2"]]
    assert slots.take("a2", "host", 1, holder(), rounds)["admitted"]
    slots.release("a2", TOKEN)
    state.close_window("run-1", token=TOKEN)
    assert slots.take("a2", "host", 1, holder(), rounds)["waiting_for"] == "its turn: a1 of an earlier round not done yet"


def test_read_takes_slot_records_only(state):
    slots = cs.ClusterSlots(state)
    assert slots.read() == {}   # no slots directory yet
    put_slot(slots, "host-0.json", host="a1")
    put_slot(slots, ".host-1.json", host="a2")       # hidden: a temporary name, never a slot
    put_slot(slots, "host-2.tmp", host="a3")
    store.write_json_atomic(os.path.join(slots.directory, "host-3.json"), ["not", "a", "record"])
    assert slots.read() == {"host-0.json": {"host": "a1"}}


def test_release_gives_back_the_pools_named_and_only_this_runs_slots(state):
    slots = cs.ClusterSlots(state)
    put_slot(slots, "host-0.json", host="a1", pool="host", token=TOKEN)
    put_slot(slots, "move-0.json", host="a1", pool="move", token=TOKEN)
    put_slot(slots, "host-1.json", host="a1", pool="host", token=OTHER_TOKEN)   # an earlier run's
    assert slots.release("a1", TOKEN, pools=("move",)) == ["move-0.json"]
    assert slots.release("a1", TOKEN) == ["host-0.json"]
    assert sorted(slots.read()) == ["host-1.json"]
    dry = cs.ClusterSlots(ms.ClusterState(state.path, "lab-a", check_mode=True))
    assert dry.release("a1") == ["host-1.json"] and sorted(slots.read()) == ["host-1.json"]
    assert slots.release("a1") == ["host-1.json"] and slots.read() == {}


def test_stop_flags_this_runs_host_slot_and_names_the_others_still_active(state):
    slots = cs.ClusterSlots(state)
    put_slot(slots, "host-0.json", host="a1", pool="host", token=TOKEN)
    put_slot(slots, "move-0.json", host="a1", pool="move", token=TOKEN)
    put_slot(slots, "host-1.json", host="a2", pool="host", token=TOKEN)
    put_slot(slots, "host-2.json", host="a3", pool="host", token=TOKEN, failed="reboot")
    put_slot(slots, "host-3.json", host="a4", pool="host", token=OTHER_TOKEN)
    put_slot(slots, "host-4.json", host="a1", pool="host", token=OTHER_TOKEN)     # an earlier run's
    put_slot(slots, "move-1.json", host="a5", pool="move", token=TOKEN)
    put_slot(slots, "move-2.json", host="a1", pool="move", token=OTHER_TOKEN)
    assert slots.stop("a1", "", TOKEN) == {"others_active": ["a2"]}
    after = slots.read()
    assert after["host-0.json"]["failed"] == "failed"
    assert "failed" not in after["host-4.json"] and "move-2.json" in after and "move-0.json" not in after
    # Without a token, every run's (a1's slot of the earlier run is not flagged).
    assert slots.stop("a9", "x") == {"others_active": ["a1", "a2", "a4"]}


def test_stop_in_check_mode_writes_nothing(state):
    slots = cs.ClusterSlots(state)
    put_slot(slots, "host-0.json", host="a1", pool="host", token=TOKEN)
    put_slot(slots, "move-0.json", host="a1", pool="move", token=TOKEN)
    dry = cs.ClusterSlots(ms.ClusterState(state.path, "lab-a", check_mode=True))
    assert dry.stop("a1", "drain", TOKEN) == {"others_active": []}
    assert slots.read() == {"host-0.json": {"host": "a1", "pool": "host", "token": TOKEN},
                            "move-0.json": {"host": "a1", "pool": "move", "token": TOKEN}}


def test_clear_others_removes_the_slots_of_runs_that_hold_the_lock_no_more(state):
    slots = cs.ClusterSlots(state)
    put_slot(slots, "host-0.json", host="a1", token=TOKEN)
    put_slot(slots, "host-1.json", host="a2", token=OTHER_TOKEN)
    put_slot(slots, "host-2.json", host="a3", token="stopped-run")
    put_slot(slots, "move-0.json", host="a3")
    dry = cs.ClusterSlots(ms.ClusterState(state.path, "lab-a", check_mode=True))
    # A run sharing the lock (OTHER_TOKEN) keeps its slot; a stopped run's and a tokenless one go.
    assert dry.clear_others({TOKEN, OTHER_TOKEN}) == ["host-2.json", "move-0.json"] and len(slots.read()) == 4
    assert slots.clear_others({TOKEN, OTHER_TOKEN}) == ["host-2.json", "move-0.json"]
    assert sorted(slots.read()) == ["host-0.json", "host-1.json"]
    assert slots.clear_others({TOKEN}) == ["host-1.json"]


def test_a_resumed_host_is_not_kept_out_by_its_own_mark(state):
    """A host marked by this run (it stopped after its mark) takes the only slot: its own mark is
    not another host out of service, neither at the decision nor at the re-check after the link."""
    state.mark("run-1", "a1", holder(), window_name=state.window()["name"], token=TOKEN)
    assert cs.ClusterSlots(state).take("a1", "host", 1, holder(), [["a1"]], unreachable=["a1"])["admitted"]


def test_the_move_turn_asked_again_is_held(state):
    slots = cs.ClusterSlots(state)
    assert slots.take("a1", "move", 1, holder())["changed"]
    assert slots.take("a1", "move", 1, holder()) == {
        "admitted": True, "slot": "move-0.json", "stopped": None, "waiting_for": None, "changed": False}


# --------------------------------------------------------------------------- runs sharing the cluster
OTHER = "o" * 32


def test_decide_a_host_another_run_holds_marked_or_did_is_left_to_it():
    theirs = {"host-0.json": {"host": "a1", "pool": "host", "token": OTHER, "run_id": "run-2"}}
    assert cs.decide("a1", "host", 2, theirs, [["a1"]], token=TOKEN) == cs.Decision(
        "elsewhere", "in maintenance by run run-2")
    # Without tokens (one run), the host's slot is its own.
    assert cs.decide("a1", "host", 2, theirs, [["a1"]]).action == "holds"
    busy = cs.decide("a2", "host", 2, {}, [["a2"]], out_of_service=["a2"], token=TOKEN, busy={"a2": "run-2"})
    assert busy == cs.Decision("elsewhere", "in maintenance by run run-2")
    done = cs.decide("a2", "host", 2, {}, [["a2"]], done={"a2": {"run_id": "run-2"}}, token=TOKEN)
    assert done == cs.Decision("elsewhere", "recorded done in the window by run run-2")


def test_two_runs_share_max_unavailable_and_a_host_is_maintained_once(state):
    # run-1 holds the lock exclusively in the fixture; a second rolling run shares the cluster
    # when both take it shared.
    state.release_lock("run-1", token=TOKEN)
    state.acquire_lock(ms.default_holder("run-1", {"token": TOKEN}), shared=True)
    state.acquire_lock(ms.default_holder("run-2", {"token": OTHER}), shared=True)
    slots = cs.ClusterSlots(state)
    one, two = holder(), {"run_id": "run-2", "token": OTHER}
    assert slots.take("a1", "host", 1, one, [["a1"], ["a2"]])["admitted"]
    # run-2's own order starts with a3, but the cluster's one place is taken by run-1.
    waiting = slots.take("a3", "host", 1, two, [["a3"], ["a1"]])
    assert not waiting["admitted"] and "a1 out of service" in waiting["waiting_for"]
    # run-2 planned a1 too: it leaves it to run-1 at once (no waiting on a host that may reboot),
    # and does not do it again after.
    began = time.monotonic()
    assert slots.take("a1", "host", 1, two, [["a1"]], wait=5)["elsewhere"] == "in maintenance by run run-1"
    assert time.monotonic() - began < 2
    state.host_done("run-1", "a1", token=TOKEN)
    slots.release("a1", TOKEN)
    assert slots.take("a1", "host", 1, two, [["a1"]])["elsewhere"] == "recorded done in the window by run run-1"
    assert slots.take("a3", "host", 1, two, [["a3"], ["a1"]])["admitted"]
    assert not slots.take("a2", "host", 1, one, [["a1"], ["a2"]])["admitted"]


def test_out_for_other_runs_is_their_marks_and_host_slots_never_this_runs_or_a_dead_runs():
    marks = {"a1": {"owner": {"run_id": "run-2", "token": OTHER}}, "a2": {"owner": {"run_id": "run-1", "token": TOKEN}},
             "a3": {"owner": {"run_id": "gone", "token": "d" * 32}}, "a4": {"owner": {"run_id": "operator"}}}
    slots = {"host-0.json": {"host": "a5", "pool": "host", "token": OTHER, "run_id": "run-2"},
             "host-1.json": {"host": "a6", "pool": "host", "token": TOKEN, "run_id": "run-1"},
             "move-0.json": {"host": "a7", "pool": "move", "token": OTHER, "run_id": "run-2"},
             "host-2.json": {"host": "a8", "pool": "host", "token": "d" * 32, "run_id": "gone"}}
    live = {TOKEN, OTHER}
    assert cs.out_for_other_runs(marks, slots, live, TOKEN) == {"a1": "run-2", "a5": "run-2"}
    assert cs.out_for_other_runs(marks, slots, live, OTHER) == {"a2": "run-1", "a6": "run-1"}


def test_verify_shared_names_the_hosts_other_runs_have_out_and_the_holders(state, tmp_path):
    """What the preflight reads per host: the hosts another run sharing the lock has out (so it
    asks them nothing) and every holder of the lock, described for a message."""
    state.release_lock("run-1", token=TOKEN)
    state.acquire_lock(ms.default_holder("run-1", {"token": TOKEN, "controller": "ctl-1"}), shared=True)
    state.acquire_lock(ms.default_holder("run-2", {"token": OTHER}), shared=True)
    state.mark("run-1", "a1", holder(), token=TOKEN)
    assert cs.ClusterSlots(state).take("a2", "host", 2, holder(), [["a1", "a2"]])["admitted"]
    asked = {"path": str(tmp_path), "cluster": "lab-a", "state": "verify_shared",
             "identity": state.identity()["id"], "run_id": "run-2", "token": OTHER}
    code, result = run_state_module(asked)
    assert code == 0 and result["out_elsewhere"] == {"a1": "run-1", "a2": "run-1"}
    holders = result["state"]["holders"]
    assert [(h["run_id"], h["shared"]) for h in holders] == [("run-2", True), ("run-1", True)]  # in token order
    first = next(h for h in holders if h["run_id"] == "run-1")
    assert first["description"].startswith("run run-1 (") and "ctl-1" in first["description"]
    code, result = run_state_module(dict(asked, run_id="run-1", token=TOKEN))
    assert result["out_elsewhere"] == {}                                   # its own mark and slot
    # An exclusive holder comes first and is not shared.
    state.release_lock("run-1", token=TOKEN)
    state.release_lock("run-2", token=OTHER)
    state.acquire_lock(ms.default_holder("rebalance-1", {"token": "r" * 32}))
    assert [(h["run_id"], h["shared"]) for h in state.snapshot()["holders"]] == [("rebalance-1", False)]
