"""Reservations: drains of one cluster in flight side by side never plan onto the same free memory (no lab)."""
import os

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import drain
from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_state as ms
from ansible_collections.virtfleet.cluster.plugins.module_utils import reservations as rs
from ansible_collections.virtfleet.cluster.plugins.module_utils import state_store as store
from ansible_collections.virtfleet.cluster.plugins.module_utils.drain_options import ClusterHost, DrainOptions
from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import Guest, HostCapacity, PlacementPolicy, plan_drain
# The slot tests' cluster state (identity, run-1's lock and window, token TOKEN) and module runner.
from .test_cluster_slots import TOKEN, run_state_module, state  # noqa: F401  pylint: disable=unused-import


def move(guest, destination, memory_mib=1024, vcpus=1):
    return {"guest": guest, "destination": destination, "memory_mib": memory_mib, "vcpus": vcpus}


# --------------------------------------------------------------------------- the planner
def test_a_reservation_counts_as_allocated_and_as_no_longer_free():
    # hv-3 has room for one 1024 MiB guest (2048 - 512 reserve); a drain in flight promised it 1024 MiB.
    hosts = [HostCapacity("hv-2", 8192, 4, in_maintenance=True), HostCapacity("hv-3", 2048, 4, memory_free_mib=1800)]
    guests = [Guest("g1", 1024, 1, "hv-2")]
    assert plan_drain("hv-2", hosts, guests, PlacementPolicy()).ok
    hosts[1].reserved_memory_mib = 1024
    plan = plan_drain("hv-2", hosts, guests, PlacementPolicy())
    assert not plan.ok
    reason = plan.unplaced[0].per_host["hv-3"]
    assert "1024 MiB of it reserved by other drains in flight" in reason and "host reports 1800 MiB free" in reason
    # Free memory alone: the allocation has room, the host's free memory does not once the reservation is subtracted.
    roomy = [hosts[0], HostCapacity("hv-3", 16384, 4, memory_free_mib=1800, reserved_memory_mib=1024)]
    assert not plan_drain("hv-2", roomy, guests, PlacementPolicy()).ok
    assert plan_drain("hv-2", roomy, guests, PlacementPolicy(respect_free_memory=False)).ok


def test_reserved_vcpus_count_against_the_cpu_overcommit():
    hosts = [HostCapacity("hv-2", 8192, 4, in_maintenance=True), HostCapacity("hv-3", 8192, 1, reserved_vcpus=1)]
    plan = plan_drain("hv-2", hosts, [Guest("g1", 128, 1, "hv-2")], PlacementPolicy(cpu_overcommit=1.0))
    assert not plan.ok and "vCPUs: needs 1, 0 left" in plan.unplaced[0].per_host["hv-3"]


def test_in_flight_takes_every_other_drain_of_the_cluster_also_another_runs():
    reservations = {"hv-1": {"token": TOKEN, "moves": [move("a", "hv-3")]},
                    "hv-2": {"token": TOKEN, "moves": [move("b", "hv-3")]},
                    "hv-9": {"token": "other-run", "moves": [move("c", "hv-3")]}}
    assert rs.in_flight(reservations, "hv-2") == [dict(move("a", "hv-3"), source="hv-1"),
                                                  dict(move("c", "hv-3"), source="hv-9")]
    assert rs.in_flight({}, "hv-2") == []


def test_subtract_counts_a_guest_once_whether_it_has_not_left_is_in_transit_or_has_arrived():
    hosts = [HostCapacity("hv-1", 8192, 4, in_maintenance=True), HostCapacity("hv-3", 8192, 4),
             HostCapacity("hv-4", 8192, 4)]
    guests = [Guest("waiting", 512, 1, "hv-1"),                               # not left yet
              Guest("transit", 256, 2, "hv-1"), Guest("transit", 256, 2, "hv-3"),  # libvirt lists it on both
              Guest("arrived", 128, 1, "hv-4")]                               # the destination's facts count it
    moves = [move("waiting", "hv-3", 512), move("transit", "hv-3", 256, 2), move("arrived", "hv-4", 128),
             move("elsewhere", "hv-7", 64)]                                   # not a host of this plan
    new_hosts, new_guests, reserved = rs.subtract_in_flight(hosts, guests, moves)
    assert reserved == {"hv-3": {"memory_mib": 768, "vcpus": 3, "guests": ["transit", "waiting"]}}
    by_name = {h.name: h for h in new_hosts}
    assert (by_name["hv-3"].reserved_memory_mib, by_name["hv-3"].reserved_vcpus) == (768, 3)
    assert by_name["hv-4"].reserved_memory_mib == 0 and hosts[1].reserved_memory_mib == 0  # inputs untouched
    # The copy in transit on the destination is counted by the reservation, not twice.
    assert sorted((g.name, g.host) for g in new_guests) == [("arrived", "hv-4"), ("transit", "hv-1"), ("waiting", "hv-1")]


def _view(hosts, guests, source):
    by_name = {h.name: ClusterHost(h.name, "test:///%s" % h.name, h.in_maintenance) for h in hosts}
    return drain.ClusterView(source, by_name, hosts, guests, {}, None, {})


def test_two_drains_side_by_side_never_plan_onto_the_same_free_memory():
    """hv-1 and hv-2 out at once; hv-3 and hv-4 each have room for one 1024 MiB guest. The first
    drain reserves hv-3; the second, planning while the first migrates, goes to hv-4."""
    hosts = [HostCapacity("hv-1", 8192, 4, in_maintenance=True), HostCapacity("hv-2", 8192, 4, in_maintenance=True),
             HostCapacity("hv-3", 1600, 4, memory_free_mib=1600), HostCapacity("hv-4", 1600, 4, memory_free_mib=1600)]
    guests = [Guest("a", 1024, 1, "hv-1"), Guest("b", 1024, 1, "hv-2")]
    first = drain.plan_host_drain(_view(hosts, guests, "hv-1"), DrainOptions())
    assert [(m["guest"], m["destination"]) for m in first["moves"]] == [("a", "hv-3")] and first["reserved"] == {}
    in_flight = rs.in_flight({"hv-1": {"token": TOKEN, "moves": first["moves"]}}, "hv-2")
    second = drain.plan_host_drain(_view(hosts, guests, "hv-2"), DrainOptions(), in_flight)
    assert [(m["guest"], m["destination"]) for m in second["moves"]] == [("b", "hv-4")]
    assert second["reserved"] == {"hv-3": {"memory_mib": 1024, "vcpus": 1, "guests": ["a"]}}
    # Without the reservation it would have planned onto hv-3's same free memory.
    blind = drain.plan_host_drain(_view(hosts, guests, "hv-2"), DrainOptions())
    assert [m["destination"] for m in blind["moves"]] == ["hv-3"]


def test_a_drain_whose_reservation_cannot_be_recorded_moves_nothing(monkeypatch):
    facts = {"memory_total_mib": 8192, "memory_free_mib": 6000, "cpus": 4, "guests": [
        {"name": "g1", "active": True, "memory_mib": 256, "max_memory_mib": 256, "vcpus": 1, "movable": True}]}
    empty = dict(facts, guests=[])
    monkeypatch.setattr(drain.libvirt_facts, "gather_hypervisor_facts",
                        lambda uri, *a, **k: facts if uri.endswith("hv-1") else empty)

    class Closing:
        def close(self):
            return 0
    migrated = []

    def on_plan(plan):
        raise RuntimeError("the shared state could not be written")
    with pytest.raises(drain.DrainError) as caught:
        drain.drain_host("hv-1", [ClusterHost("hv-1", "test:///hv-1"), ClusterHost("hv-2", "test:///hv-2")],
                         DrainOptions(cpu_check=False), connect=lambda uri: Closing(),
                         migrate=lambda *a, **k: migrated.append(a), on_plan=on_plan)
    assert migrated == []
    assert "stopped before any migration: the shared state could not be written" in caught.value.message
    assert caught.value.result["locations"] == {"g1": "hv-1"}


# --------------------------------------------------------------------------- the store
def test_reserve_replaces_remove_takes_only_this_runs_and_clear_others_the_rest(state):
    reservations = rs.ClusterReservations(state)
    reservations.reserve("hv-1", [dict(move("a", "hv-3"), source="hv-1", order=1)], {"run_id": "run-1", "token": TOKEN})
    reservations.reserve("hv-1", [move("b", "hv-3")], {"run_id": "run-1", "token": TOKEN})
    reservations.reserve("hv-2", [move("c", "hv-4")], {"run_id": "old", "token": "old-token"})
    read = reservations.read()
    assert read["hv-1"]["moves"] == [move("b", "hv-3")] and read["hv-1"]["host"] == "hv-1"
    assert read["hv-1"]["run_id"] == "run-1" and read["hv-1"]["since"] > 0
    assert not reservations.remove("hv-2", TOKEN)                   # another run's: kept
    assert reservations.clear_others({TOKEN, "old-token"}) == []       # both runs hold the lock
    assert reservations.clear_others({TOKEN}) == ["hv-2"]
    assert reservations.remove("hv-1", TOKEN) and reservations.read() == {}
    with pytest.raises(store.StateError, match="invalid host name"):
        reservations.reserve("../x", [], {})


def test_reserve_in_check_mode_writes_nothing(state):
    checking = ms.ClusterState(state.path, state.cluster, check_mode=True)
    rs.ClusterReservations(checking).reserve("hv-1", [move("a", "hv-3")], {"token": TOKEN})
    assert not os.path.exists(os.path.join(state.path, rs.RESERVATIONS_DIR))


# --------------------------------------------------------------------------- the module
def test_module_reserve_needs_the_lock_and_every_answer_carries_reservations_and_slots(state, tmp_path):
    base = {"path": str(tmp_path), "cluster": "lab-a", "host": "hv-1", "moves": [move("a", "hv-3")]}
    code, result = run_state_module(dict(base, state="reserve", run_id="run-2", token="x" * 32))
    assert code == 1 and "does not hold the lock" in result["msg"]
    assert rs.ClusterReservations(state).read() == {}
    code, result = run_state_module(dict(base, state="reserve", run_id="run-1", token=TOKEN))
    assert code == 0 and result["changed"]
    assert result["state"]["reservations"]["hv-1"]["moves"] == [move("a", "hv-3")]
    code, result = run_state_module(dict(base, state="take_slot", pool="move", run_id="run-1", token=TOKEN))
    assert code == 0 and result["state"]["slots"]["move-0.json"]["host"] == "hv-1"
    assert result["state"]["reservations"]["hv-1"]["token"] == TOKEN
    # Reserving again (the next plan of the host) gives its move turn back in the same call.
    code, result = run_state_module(dict(base, state="reserve", run_id="run-1", token=TOKEN))
    assert code == 0 and result["released"] == ["move-0.json"] and result["state"]["slots"] == {}
    code, result = run_state_module({"path": str(tmp_path), "cluster": "lab-a", "state": "read"})
    assert code == 0 and set(result["state"]["reservations"]) == {"hv-1"}
    code, result = run_state_module(dict(base, state="unreserve", run_id="run-1", token=TOKEN))
    assert code == 0 and result["changed"] and result["state"]["reservations"] == {}


def test_a_read_naming_a_host_changes_nothing(state, tmp_path):
    """The drain action reads the state with its host named: a read must never stop the host's slot."""
    from ansible_collections.virtfleet.cluster.plugins.module_utils import cluster_slots as cs
    assert cs.ClusterSlots(state).take("hv-1", "host", 1, {"run_id": "run-1", "token": TOKEN})["admitted"]
    code, result = run_state_module({"path": str(tmp_path), "cluster": "lab-a", "state": "read", "host": "hv-1",
                                     "run_id": "run-1", "token": TOKEN})
    assert code == 0 and not result["changed"]
    assert result["state"]["slots"]["host-0.json"].get("failed") is None


def test_a_failed_or_finished_host_and_the_next_run_leave_no_reservation(state, tmp_path):
    base = {"path": str(tmp_path), "cluster": "lab-a", "run_id": "run-1", "token": TOKEN}
    reservations = rs.ClusterReservations(state)
    for host in ("hv-1", "hv-2", "hv-3"):
        reservations.reserve(host, [move("g-" + host, "hv-4")], {"run_id": "run-1", "token": TOKEN})
    assert run_state_module(dict(base, state="stop_slot", host="hv-1", reason="drain failed"))[0] == 0
    code, result = run_state_module(dict(base, state="host_done", host="hv-2"))
    assert code == 0 and set(result["state"]["reservations"]) == {"hv-3"}
    # The run stops with hv-3's reservation left; the next run removes it once it holds the lock.
    state.release_lock("run-1", token=TOKEN)
    state.acquire_lock(ms.default_holder("run-2", {"token": "y" * 32}))
    code, result = run_state_module(dict(base, state="open_window", run_id="run-2", token="y" * 32))
    assert code == 0 and result["changed"] and result["state"]["reservations"] == {}


# --------------------------------------------------------------------------- the host_drain action
def _drain_action(monkeypatch, drain_host, admitted_after=0, turn_timeout=3600):
    """The host_drain action with shared_state; the maintenance_state calls it makes are answered
    by a fake (the move turn given after ``admitted_after`` refusals) and listed in ``calls``."""
    from unittest import mock
    from ansible_collections.virtfleet.cluster.plugins.action import host_drain as action
    calls = []
    shared = {"reservations": {"hv-2": {"token": TOKEN, "moves": [move("b", "hv-3")]}},
              "slots": {"host-1.json": {"host": "hv-4", "pool": "host"}}, "marks": {},
              "lock": {"holder": {"token": TOKEN}}}

    def execute_module(module_name, module_args, task_vars):
        state = module_args["state"]
        calls.append(state if state not in ("release_slot", "take_slot") else "%s_%s" % (state, module_args["pool"]))
        if state == "take_slot":
            given = calls.count("take_slot_move") > admitted_after
            return {"state": shared, "admitted": given, "waiting_for": None if given else "a move slot: held by hv-2"}
        return {"state": shared}
    monkeypatch.setattr(drain, "drain_host", drain_host)
    monkeypatch.setattr(action, "HAS_LIBVIRT", True)
    task = mock.MagicMock(async_val=0, check_mode=False, action="virtfleet.cluster.host_drain", args={
        "host": "hv-1", "hosts": [{"name": h, "uri": "test:///" + h} for h in ("hv-1", "hv-2", "hv-3", "hv-4")],
        "shared_state": {"path": "/srv", "cluster": "lab-a", "run_id": "run-1", "token": TOKEN,
                         "turn_timeout": turn_timeout}})
    connection = mock.MagicMock()
    connection._shell.tmpdir = "/nonexistent"
    plugin = action.ActionModule(task, connection, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), mock.MagicMock())
    monkeypatch.setattr(plugin, "_execute_module", execute_module)
    return plugin.run(task_vars={}), calls


def test_the_drain_action_plans_in_the_move_turn_then_reserves_gives_the_turn_back_and_unreserves(monkeypatch):
    """The order of the shared-state calls around a drain that migrates."""
    seen = {}

    def drain_host(source, hosts, options, check_mode=False, progress=None, gate=None, in_flight=(), on_plan=None,
                   incoming_locks=None):
        seen.update(in_flight=in_flight, out={h["name"] for h in hosts if h["in_maintenance"]}, locks=incoming_locks)
        plan = {"moves": [dict(move("a", "hv-3"), source="hv-1", order=1)]}
        on_plan(plan)
        assert gate(plan["moves"][0]) is None
        seen["migrated"] = True
        return {"host": source, "changed": True, "plan": plan, "left": [], "shutdown": [], "elapsed_s": 1.0,
                "migrations": [{"guest": "a", "source": "hv-1", "destination": "hv-3", "status": "migrated",
                                "running_on": "hv-3", "where": "hv-3", "result": {}}]}
    result, calls = _drain_action(monkeypatch, drain_host, admitted_after=1)
    assert not result.get("failed"), result.get("msg")
    # Waited once for the turn; planned with the state as the turn gave it.
    assert calls == ["take_slot_move", "take_slot_move", "reserve", "read", "unreserve"]
    assert seen["in_flight"] == [dict(move("b", "hv-3"), source="hv-2")]
    assert seen["out"] == {"hv-4"}                     # holds a host slot: going out, no destination
    assert seen["locks"] and os.path.isabs(seen["locks"])  # the drains of this controller share them


def test_a_refused_plan_gives_the_move_turn_back_and_reserves_nothing(monkeypatch):
    def drain_host(source, hosts, options, check_mode=False, progress=None, gate=None, in_flight=(), on_plan=None,
                   incoming_locks=None):
        raise drain.DrainError("refusing to drain hv-1, nothing was moved: the cluster cannot absorb 1 of its 1 guests",
                               {"host": source, "plan": {"moves": []}, "migrations": []})
    result, calls = _drain_action(monkeypatch, drain_host)
    assert result["failed"] and result["msg"].startswith("refusing to drain hv-1, nothing was moved")
    assert calls == ["take_slot_move", "release_slot_move"]


def test_a_move_turn_that_does_not_come_fails_the_drain_naming_the_holder_and_moving_nothing(monkeypatch):
    def drain_host(*_args, **_kwargs):
        raise AssertionError("planned without the move turn")
    result, calls = _drain_action(monkeypatch, drain_host, admitted_after=99, turn_timeout=0)
    assert result["failed"] and calls == ["take_slot_move"]
    assert result["msg"] == ("hv-1 waited 0 s (turn_timeout) for the move turn of cluster lab-a to drain, and moved "
                             "nothing: a move slot: held by hv-2")
