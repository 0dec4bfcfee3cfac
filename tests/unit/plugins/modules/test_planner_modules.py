"""The planner modules in the one module shape: a refused input fails the task with the
planner's message (a PlanError through run_module), and play_strategy, run as a module on a
host, says it is an action plugin."""
from ansible_collections.virtfleet.cluster.plugins.module_utils.capacity import PlanError
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.modules import move_back_plan, play_strategy, rebalance_plan

from module_main import run_module_main

FACTS = {"hv-1": {"memory_total_mib": 4096, "memory_free_mib": 4096, "cpus": 4, "guests": []}}


def test_plan_error_is_a_virtfleet_error():
    assert issubclass(PlanError, VirtfleetError)


def test_rebalance_plan_refuses_an_unknown_policy_field():
    code, result = run_module_main(rebalance_plan, {"facts": FACTS, "cluster": "c1", "policy": {"colour": "red"}})
    assert code == 1 and result["failed"]
    assert result["msg"].startswith("cannot plan the rebalance of c1: ")


def test_move_back_plan_refuses_origins_that_are_not_host_names():
    code, result = run_module_main(move_back_plan, {"facts": FACTS, "cluster": "c1", "origins": {"g1": ["hv-1"]}})
    assert code == 1 and result["msg"] == "cannot plan the move-back of cluster c1: origins must map each guest name to a host name"


def test_move_back_plan_with_nothing_away_plans_nothing():
    code, result = run_module_main(move_back_plan, {"facts": FACTS, "origins": {}})
    assert code == 0 and result["changed"] is False and result["moves"] == []


def test_play_strategy_as_a_module_says_it_is_an_action_plugin():
    code, result = run_module_main(play_strategy, {})
    assert code == 1 and result["msg"].startswith("virtfleet.cluster.play_strategy runs as an action plugin on the controller")
