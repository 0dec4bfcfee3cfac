"""SharedStateClient: the maintenance_state calls an action plugin makes over its task's
connection for the cluster's move turn (a fake _execute_module answers; no Ansible run)."""
import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.shared_state_client import TURN_POLL_SECONDS, SharedStateClient

SHARED = {"path": "/srv/shared", "cluster": "c1", "run_id": "run-1", "token": "t" * 32, "identity": "id-1", "turn_timeout": 100}


class FakeHost:
    """maintenance_state as the host would answer: the given answers in turn; the clock moves by
    each call's wait (the module waits on the host)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []
        self.now = 0.0

    def execute_module(self, module_name, module_args, task_vars):
        assert module_name == "virtfleet.cluster.maintenance_state" and task_vars == {"inventory_hostname": "hv-1"}
        self.calls.append(module_args)
        self.now += module_args.get("wait") or 0
        return self.answers.pop(0)

    def client(self, shared=None):
        return SharedStateClient(self.execute_module, {"inventory_hostname": "hv-1"}, shared or SHARED, "hv-1",
                                 clock=lambda: self.now)


def test_the_turn_is_asked_for_until_given_and_the_state_comes_with_it():
    host = FakeHost({"state": {}, "admitted": False, "waiting_for": "hv-2 holds it"},
                    {"state": {"marks": {"hv-3": {}}}, "admitted": True})
    assert host.client().take_move_turn("run its canary") == {"marks": {"hv-3": {}}}
    first = host.calls[0]
    assert first == {"state": "take_slot", "pool": "move", "wait": TURN_POLL_SECONDS, "identity": "id-1",
                     "path": "/srv/shared", "cluster": "c1", "run_id": "run-1", "token": "t" * 32, "host": "hv-1"}
    assert len(host.calls) == 2


def test_a_turn_that_does_not_come_in_time_fails_saying_what_it_waited_for():
    waiting = {"state": {}, "admitted": False, "waiting_for": "hv-2 holds the move turn"}
    host = FakeHost(*[waiting] * 4)
    with pytest.raises(VirtfleetError) as failure:
        host.client().take_move_turn("run its canary")
    assert failure.value.message == ("hv-1 waited 100 s (turn_timeout) for the move turn of cluster c1 to run its canary, "
                                     "and moved nothing: hv-2 holds the move turn")
    # 30 + 30 + 30 + the 10 s left: never waits past the timeout.
    assert [call["wait"] for call in host.calls] == [30, 30, 30, 10]


def test_a_call_the_host_cannot_answer_names_the_state_and_the_reason():
    host = FakeHost({"failed": True, "msg": "identity mismatch"})
    with pytest.raises(VirtfleetError, match=r"shared state \(/srv/shared\) could not be used \(state=release_slot\): "
                                             r"identity mismatch"):
        host.client().release_move_turn()
    assert host.calls == [{"state": "release_slot", "pool": "move", "path": "/srv/shared", "cluster": "c1",
                           "run_id": "run-1", "token": "t" * 32, "host": "hv-1"}]


def test_a_call_may_name_another_host():
    host = FakeHost({"state": {"marks": {}}})
    assert host.client().call(host="hv-2", state="read")["state"] == {"marks": {}}
    assert host.calls[0]["host"] == "hv-2"
