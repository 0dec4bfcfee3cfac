"""Plan of a rolling maintenance run: exact reasons, out-of-service accounting across clusters
and states, and the capacity proof's report (issue 17: what the mutation run showed untested)."""
import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils.maintenance_plan import (
    capacity_from_facts, classify_hosts, plan_maintenance, prove_capacity_by_wave)
from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import PlacementPolicy
from ansible_collections.virtfleet.cluster.plugins.module_utils.waves import plan_waves

OPERATOR = {"owner": {"run_id": "operator", "user": "ops"}, "reason": "RAM swap"}


def host(name, cluster="a", **kw):
    return dict(name=name, cluster=cluster, max_unavailable=kw.pop("max_unavailable", 1),
                needs_patch=kw.pop("needs_patch", True), **kw)


def cap(hosts, guests, mem=2048):
    return {"hosts": [{"name": h, "memory_total_mib": mem, "cpus": 4} for h in hosts],
            "guests": [{"name": g, "memory_mib": m, "vcpus": 1, "host": h} for g, m, h in guests]}


def window_mark(run_id="run-old", window="w", phase="drained"):
    return {"owner": {"run_id": run_id}, "window": window, "phase": phase}


# --- classify_hosts ------------------------------------------------------------------------------

def test_classify_hosts_defaults_to_no_force_and_reports_every_reason():
    hosts = [host("a1", needs_patch=False),
             host("a2", mark=OPERATOR),
             host("a3"),
             host("a4", mark={"owner": {"run_id": "run-1"}}),  # this run's own mark, no window
             host("a5", done={"at": 1}, window=None)]
    maintained, skipped, resumed, foreign, stale = classify_hosts(hosts, "run-1", None, unreachable={"a3": "ssh timeout"})
    assert maintained == ["a4"]
    assert resumed == {"a4": "marked"}
    assert foreign == {"a2": "marked in maintenance by run operator (ops@?): RAM swap; left as found"}
    assert skipped == {"a1": "nothing to patch and no reboot required",
                       "a2": foreign["a2"],
                       "a3": "could not be asked at preflight: ssh timeout; it counts as out of service",
                       "a5": "already done in maintenance window ?"}
    assert stale == []


def test_a_done_host_still_marked_by_the_window_is_stale_with_its_state_said():
    hosts = [host("a1", done={"at": 1}, mark=window_mark(phase=None)),
             host("a2", done={"at": 1}, mark=window_mark(phase="rebooted")),
             host("a3")]
    maintained, skipped, _resumed, _foreign, stale = classify_hosts(hosts, "run-2", "w", unreachable={"a2": "no route"})
    assert stale == ["a1", "a2"] and maintained == ["a3"]
    opening = ("already done in maintenance window w; still marked (phase %s): the run that maintained it stopped "
               "between recording it done and unmarking it. This run unmarks it at preflight")
    assert skipped["a1"] == opening % "marked" + "; it is in service"
    assert skipped["a2"] == (opening % "rebooted"
                             + "; it could not be asked at preflight (no route) and counts as out of service")


# --- plan_maintenance: inputs --------------------------------------------------------------------

def test_a_placement_policy_object_is_taken_as_it_is():
    capacity = {"a": cap(["a1", "a2"], [("g1", 1000, "a1")])}
    tight = plan_maintenance([host("a1")], "run-1", capacity=capacity,
                             policy=PlacementPolicy(memory_reserve_mib=1500, respect_free_memory=False))
    loose = plan_maintenance([host("a1")], "run-1", capacity=capacity,
                             policy=PlacementPolicy(memory_reserve_mib=0, respect_free_memory=False))
    assert tight["ok"] is False and loose["ok"] is True


@pytest.mark.parametrize("members", [{"a": "a1a2"}, {"a": ["a1", 2]}])
def test_members_must_be_lists_of_names(members):
    with pytest.raises(ValueError) as raised:
        plan_maintenance([host("a1")], "run-1", members=members)
    assert str(raised.value) == "members: cluster a must list host names, not %r" % (members["a"],)


def test_disagreeing_limits_are_named_and_a_missing_limit_is_one():
    with pytest.raises(ValueError) as raised:
        plan_maintenance([host("a1", max_unavailable=2), host("a2", max_unavailable=3)], "run-1")
    assert str(raised.value) == "hosts of cluster a disagree on max_unavailable (2 and 3)"
    plan = plan_maintenance([host(n, max_unavailable=None) for n in ("a1", "a2")], "run-1")
    assert plan["wave_hosts"] == [["a1"], ["a2"]]
    assert plan["clusters"]["a"]["max_unavailable"] == 1


def test_the_guest_count_order_counts_a_host_without_a_figure_as_empty():
    plan = plan_maintenance([host("a1", guests=1), host("a2", guests=None), host("a3", guests=2)], "run-1",
                            order="fewest_guests")
    assert plan["wave_hosts"] == [["a2"], ["a1"], ["a3"]]


# --- plan_maintenance: out of service ----------------------------------------------------------

def test_the_cluster_entry_of_the_report_exactly():
    plan = plan_maintenance([host("a1", max_unavailable=2), host("a2", max_unavailable=2, mark=OPERATOR),
                             host("a3", max_unavailable=2, needs_patch=False)], "run-1")
    assert plan["clusters"] == {"a": {
        "max_unavailable": 2, "max_unavailable_now": 1, "out_of_service": ["a2"],
        "out_of_service_reasons": {"a2": "marked in maintenance by run operator (ops@?): RAM swap"},
        "stale_marks": [], "out_for_now": [], "hosts": ["a1", "a2", "a3"], "maintained": ["a1"]}}
    assert plan["out_of_service"] == {"a2": "marked in maintenance by run operator (ops@?): RAM swap"}


def test_more_hosts_down_than_the_limit_leaves_none_now():
    plan = plan_maintenance([host("a1"), host("a2", mark=OPERATOR)], "run-1", unreachable={"a3": "down"},
                            members={"a": ["a1", "a2", "a3"]})
    assert plan["clusters"]["a"]["max_unavailable_now"] == 0
    assert plan["maintained"] == []


def test_a_host_left_marked_by_its_own_window_and_not_answering_is_down_for_both_reasons():
    # The host's window comes from the host (windows are per cluster), not from the run.
    plan = plan_maintenance([host("a1", max_unavailable=2, window="wa", mark=window_mark(window="wa")),
                             host("a2", max_unavailable=2)], "run-2", unreachable={"a1": "ssh timeout"})
    assert plan["out_of_service"] == {"a1": "left marked by this maintenance window (run run-old, phase drained) and "
                                            "not finished by this run; ssh timeout"}
    assert plan["maintained"] == ["a2"] and plan["resumed"] == {}


def test_a_resumed_host_of_a_cluster_with_no_room_left_is_out_of_service_as_left_marked():
    plan = plan_maintenance([host("a1", mark=window_mark()), host("a2", mark=OPERATOR)], "run-2", window_name="w")
    assert plan["maintained"] == [] and plan["resumed"] == {}
    assert plan["out_of_service"] == {
        "a1": "left marked by this maintenance window (run run-old, phase drained) and not finished by this run",
        "a2": "marked in maintenance by run operator (ops@?): RAM swap"}
    assert plan["skipped"]["a1"] == (
        "cluster a already has 1 host(s) out of service (a2) and max_unavailable is 1: no other host may go down now "
        "(a2: marked in maintenance by run operator (ops@?): RAM swap)")


def test_limits_of_several_clusters_each_take_their_own_down_hosts():
    # "a": a cluster outside the run with a host down; "b": room left; "c": no room left.
    plan = plan_maintenance([host("b1", "b", max_unavailable=2), host("b2", "b", max_unavailable=2),
                             host("c1", "c")], "run-1",
                            members={"a": ["a1"], "b": ["b1", "b2", "b3"], "c": ["c1", "c2"]},
                            unreachable={"a1": "x", "b3": "y", "c2": "z"})
    assert plan["wave_hosts"] == [["b1"], ["b2"]]
    assert "c1" in plan["skipped"] and plan["not_answering"] == {"a1": "x", "b3": "y", "c2": "z"}


def test_marks_and_done_hosts_outside_the_run_come_from_the_cluster_states():
    states = {
        "a": None,  # no state read for this cluster
        "b": {"marks": {"b1": OPERATOR,  # a host of the run: its own entry (no mark) decides
                        "b7": window_mark(run_id="run-1", window=None),  # this run's, done: stale
                        "b8": window_mark(window="wb"),  # the cluster window's, done: stale
                        "b9": OPERATOR},
              "window": {"name": "wb", "hosts_done": {"b7": {}, "b8": {}}}},
    }
    plan = plan_maintenance([host("b1", "b", max_unavailable=3), host("b2", "b", max_unavailable=3)], "run-1",
                            states=states)
    assert plan["stale_marks"] == ["b7", "b8"]
    assert plan["clusters"]["b"]["out_of_service_reasons"] == {
        "b9": "marked in maintenance by run operator (ops@?): RAM swap"}
    assert plan["clusters"]["b"]["stale_marks"] == ["b7", "b8"]
    assert plan["maintained"] == ["b1", "b2"] and plan["resumed"] == {}  # b1: its own (absent) mark counts


def test_a_closed_window_makes_no_stale_mark():
    states = {"a": {"marks": {"a9": window_mark(window="wa")},
                    "window": {"name": "wa", "closed": True, "hosts_done": {"a9": {}}}}}
    plan = plan_maintenance([host("a1", max_unavailable=2)], "run-1", states=states)
    assert plan["stale_marks"] == []
    assert list(plan["out_of_service"]) == ["a9"]


@pytest.mark.parametrize("state, message", [
    ("marked", "states: the state of cluster a must be a dict (maintenance_state's state: marks, window), "
               "not 'marked'"),
    ({"marks": {"a1": "x"}}, "states: the marks of cluster a must be a dict of host name to mark, not {'a1': 'x'}"),
    ({"marks": ["a1"]}, "states: the marks of cluster a must be a dict of host name to mark, not ['a1']"),
    ({"window": "w"}, "states: the window of cluster a must be a dict with hosts_done, not 'w'"),
    ({"window": {"hosts_done": ["a1"]}},
     "states: the window of cluster a must be a dict with hosts_done, not {'hosts_done': ['a1']}"),
])
def test_cluster_states_of_another_shape_are_refused(state, message):
    with pytest.raises(ValueError) as raised:
        plan_maintenance([host("a1")], "run-1", states={"a": state})
    assert str(raised.value) == message


# --- the capacity proof's report -----------------------------------------------------------------

def test_proof_steps_name_wave_cluster_host_and_plan():
    capacity = {"a": cap(["a1", "a2"], [("g1", 100, "a1")]), "b": cap(["b1", "b2"], [])}
    plan = plan_maintenance([host("a1"), host("b1", "b")], "run-1", capacity=capacity,
                            policy={"memory_reserve_mib": 0, "respect_free_memory": False})
    steps = plan["capacity"]["steps"]
    assert [(s["wave"], s["cluster"], s["host"]) for s in steps] == [(1, "a", "a1"), (1, "b", "b1")]
    assert set(steps[0]) == {"wave", "cluster", "host", "plan"}
    assert [m["guest"] for m in steps[0]["plan"]["moves"]] == ["g1"]


def test_proof_without_facts_for_a_cluster_or_a_host_names_each_and_checks_the_rest():
    waves = plan_waves([("a1", "a"), ("b1", "b"), ("b9", "b"), ("c1", "c")], {"a": 1, "b": 2, "c": 1})
    capacity = {"b": cap(["b1", "b2"], [("g1", 100, "b1")]), "c": cap(["c1", "c2"], [("g2", 5000, "c1")])}
    result = prove_capacity_by_wave(waves, capacity, [], PlacementPolicy(memory_reserve_mib=0, respect_free_memory=False))
    assert result["ok"] is False
    assert result["unchecked_clusters"] == ["a"]
    assert result["problems"][:2] == [
        "cluster a: no capacity facts, cannot prove that the cluster absorbs its hosts' guests",
        "cluster b: no capacity facts for host b9"]
    assert [(s["cluster"], s["host"]) for s in result["steps"]] == [("b", "b1"), ("c", "c1")]
    assert result["problems"][2].startswith("wave 1, draining c1: ")


def test_proof_with_a_host_without_facts_alone_is_not_ok():
    waves = plan_waves([("b9", "b")], {"b": 1})
    result = prove_capacity_by_wave(waves, {"b": cap(["b1"], [])}, [], PlacementPolicy())
    assert result == {"ok": False, "problems": ["cluster b: no capacity facts for host b9"], "steps": [],
                      "unchecked_clusters": []}


# --- capacity_from_facts -----------------------------------------------------------------------

def test_capacity_from_facts_keeps_to_the_members_names_the_cluster_and_the_unmovable():
    g1 = {"name": "g1", "active": True, "memory_mib": 128, "vcpus": 1, "movable": True}
    facts = {"a1": {"memory_total_mib": 4096, "cpus": 4, "guests": [g1]},
             "a2": {"memory_total_mib": 4096, "cpus": 4, "guests": []},
             "b1": {"memory_total_mib": 4096, "cpus": 4, "guests": []}}
    capacity = capacity_from_facts({"a": ["a1", "a2"]}, facts, unmovable_guests=["g1"])
    assert [h["name"] for h in capacity["a"]["hosts"]] == ["a1", "a2"]
    assert {h["cluster"] for h in capacity["a"]["hosts"]} == {"a"}
    assert capacity["a"]["guests"][0]["movable"] is False


def test_a_host_left_marked_by_the_runs_window_or_run_id_and_not_answering_is_down_as_left_marked():
    by_window = plan_maintenance([host("a1", max_unavailable=2, mark=window_mark()), host("a2", max_unavailable=2)],
                                 "run-2", window_name="w", unreachable={"a1": "ssh timeout"})
    by_run = plan_maintenance([host("a1", max_unavailable=2, mark=window_mark(run_id="run-2", window=None)),
                               host("a2", max_unavailable=2)], "run-2", unreachable={"a1": "ssh timeout"})
    for plan, owner in ((by_window, "run-old"), (by_run, "run-2")):
        assert plan["out_of_service"] == {"a1": "left marked by this maintenance window (run %s, phase drained) and "
                                                "not finished by this run; ssh timeout" % owner}
        assert plan["foreign_marked"] == [] and plan["maintained"] == ["a2"]


def test_a_host_marked_by_this_run_is_resumed_first():
    plan = plan_maintenance([host("a1"), host("a2", mark=window_mark(run_id="run-2", window=None, phase=None))],
                            "run-2")
    assert plan["resumed"] == {"a2": "marked"} and plan["wave_hosts"] == [["a2"], ["a1"]]


def test_waves_breaking_the_limit_are_refused_not_planned(monkeypatch):
    # The wave planner's own invariant, checked again: a plan with too many hosts down at once is never returned.
    from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_plan
    monkeypatch.setattr(maintenance_plan, "wave_violations", lambda waves, cluster_of, limits: ["wave 1: a1, a2 in a"])
    with pytest.raises(ValueError) as raised:
        plan_maintenance([host("a1"), host("a2")], "run-1")
    assert str(raised.value) == "wave 1: a1, a2 in a"


def test_proof_of_a_cluster_without_facts_alone_is_not_ok():
    result = prove_capacity_by_wave(plan_waves([("a1", "a")], {"a": 1}), {}, [], PlacementPolicy())
    assert result == {"ok": False, "steps": [], "unchecked_clusters": ["a"], "problems": [
        "cluster a: no capacity facts, cannot prove that the cluster absorbs its hosts' guests"]}
