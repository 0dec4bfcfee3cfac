"""Cluster slots: who may be out of service now, decided from the shared state (no lab)."""
import os
import threading

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import cluster_slots as cs
from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_state as ms
from ansible_collections.virtfleet.cluster.plugins.module_utils import state_store as store
from module_main import run_module_main

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
    assert cs.ClusterSlots(dry).take("a1", "host", 1, holder(), [["a1"]])["admitted"]
    assert not os.path.exists(os.path.join(state.path, cs.SLOTS_DIR)) or cs.ClusterSlots(state).read() == {}


# --------------------------------------------------------------------------- the module
def run_state_module(args, check_mode=False):
    from ansible_collections.virtfleet.cluster.plugins.modules import maintenance_state as module
    return run_module_main(module, args, check_mode)


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
