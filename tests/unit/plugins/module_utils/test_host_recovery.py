"""host_recovery: when a host counts as dead, when guests may be restarted, and the restart
plan (priorities, capacity, anti-affinity, never a second copy)."""
import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils.host_recovery import (
    dead_host_verdict, fence_refusal, lease_refusal, plan_restarts, recovery_message)
from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import Guest, HostCapacity, PlacementPolicy

SILENT = {"libvirt_ok": False, "ssh_ok": False, "libvirt_error": "no answer within 5 s", "ssh_error": "timed out"}


def test_a_host_is_dead_only_when_every_probe_found_libvirt_and_ssh_failing():
    dead, why = dead_host_verdict([SILENT, SILENT, SILENT])
    assert dead and why.startswith("neither libvirt nor SSH answered in 3 probe(s)") and "timed out" in why


@pytest.mark.parametrize("answer, named", [({"ssh_ok": True}, "ssh"), ({"libvirt_ok": True}, "libvirt"),
                                           ({"ssh_ok": True, "libvirt_ok": True}, "libvirt and ssh")])
def test_one_answer_from_either_keeps_the_host_alive(answer, named):
    dead, why = dead_host_verdict([SILENT, dict(SILENT, **answer), SILENT])
    assert not dead and why.startswith("its %s answered (probe 2 of 3)" % named)


def test_an_unprobed_host_is_not_dead():
    assert dead_host_verdict([]) == (False, "the host was not probed")


def test_nothing_restarts_without_a_confirmed_fence():
    assert "no fence is confirmed" in fence_refusal("none", False)
    assert "did not confirm" in fence_refusal("hook", False)
    assert fence_refusal("hook", True) is None
    assert fence_refusal("leases", False) is None
    assert "unknown fence method" in fence_refusal("hope", True)


@pytest.mark.parametrize("message, held", [
    ("resource busy: Lockspace resource 'a1-g1' is locked", True),  # virtlockd, as the lab says it
    ('Failed to get "write" lock\nIs another process using the image [/srv/a.qcow2]?', True),  # QEMU
    ("Failed to acquire lock: error -243", True),  # sanlock
    ("Cannot allocate memory", False),
    ("", False)])
def test_lease_refusals_are_told_from_other_failures(message, held):
    assert lease_refusal(message) is held


def record(name, memory_mib=1024, host="dead"):
    return {"name": name, "memory_mib": memory_mib, "vcpus": 1, "host": host, "xml": "<domain/>"}


def peers(*specs):
    return [HostCapacity(name=name, memory_total_mib=memory, cpus=8, in_maintenance=marked)
            for name, memory, marked in specs]


POLICY = PlacementPolicy(memory_reserve_mib=0)


def test_higher_priority_guests_take_the_room_first_and_the_rest_are_listed():
    plan = plan_restarts("dead", [record("batch", 2048), record("db", 2048), record("web", 1024)],
                         peers(("p1", 3072, False)), [], {}, {"db": 10, "web": 5}, 1, policy=POLICY)
    assert [(r["guest"], r["host"], r["priority"]) for r in plan["restart"]] == [("db", "p1", 10), ("web", "p1", 5)]
    assert [(u["guest"], u["priority"]) for u in plan["unplaced"]] == [("batch", 1)]
    assert "p1" in plan["unplaced"][0]["reason"]


def test_a_guest_already_running_on_a_peer_is_never_started_again():
    plan = plan_restarts("dead", [record("db"), record("web")], peers(("p1", 8192, False)),
                         [Guest("db", 1024, 1, host="p1")], {"db": "p1"}, policy=POLICY)
    assert plan["already_running"] == [{"guest": "db", "host": "p1"}]
    assert [r["guest"] for r in plan["restart"]] == ["web"]


def test_priority_zero_is_never_restarted():
    plan = plan_restarts("dead", [record("scratch"), record("db")], peers(("p1", 8192, False)), [], {},
                         {"scratch": 0}, policy=POLICY)
    assert plan["not_restarted"] == [{"guest": "scratch", "reason": "HA priority 0: never restarted"}]
    assert [r["guest"] for r in plan["restart"]] == ["db"]


def test_anti_affinity_and_maintenance_marks_are_respected():
    plan = plan_restarts("dead", [record("db1"), record("db2"), record("db3")],
                         peers(("p1", 8192, False), ("p2", 8192, False), ("p3", 8192, True)),
                         [Guest("db0", 1024, 1, host="p2")], {}, anti_affinity_groups={"db": ["db0", "db1", "db2", "db3"]},
                         policy=POLICY)
    assert [r["host"] for r in plan["restart"]] == ["p1"]  # p2 runs db0, p3 is in maintenance
    assert sorted(u["guest"] for u in plan["unplaced"]) == ["db2", "db3"]
    assert all("in maintenance" in u["reason"] for u in plan["unplaced"])


def test_the_message_names_each_guest_and_where_it_runs_now():
    result = {"restarted": [{"guest": "db", "host": "p1"}], "already_running": [{"guest": "web", "host": "p2"}],
              "unplaced": [{"guest": "big", "reason": "p1: not enough memory"}],
              "lease_held": {"guest": "app", "host": "p2", "error": "resource busy"}}
    message = recovery_message("hv-a1", result)
    assert message.startswith("recovery of hv-a1: restarted db on p1; already running elsewhere (not started "
                              "again): web on p2; DO NOT FIT on the other hosts (not started): big (p1: not enough memory)")
    assert "STOPPED: app could not start on p2 because its lease is held" in message
    assert recovery_message("hv-a1", {"restarted": [{"guest": "db", "host": "p1"}]}, check_mode=True) == \
        "recovery of hv-a1: would restart db on p1"
    assert recovery_message("hv-a1", {}) == "recovery of hv-a1: no guest was last seen on it"
