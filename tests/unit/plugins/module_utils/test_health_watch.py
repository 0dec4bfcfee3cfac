"""health_watch: which failing hosts are emptied now, which wait for room under max_unavailable,
which are left alone (marked), and that no failing host is ever a destination."""
from ansible_collections.virtfleet.cluster.plugins.module_utils.health_watch import plan_health_actions


def failing(signal, why="threshold crossed"):
    return {"failing": True, "worst": signal, "crossed": [{"signal": signal, "why": why}]}


HEALTHY = {"failing": False, "worst": None, "crossed": []}


def host(name, cluster="c1", health=None, **extra):
    return dict({"name": name, "cluster": cluster, "health": health or HEALTHY, "reachable": True, "marked": False,
                 "max_unavailable": 1}, **extra)


def test_one_failing_host_is_drained_the_second_of_its_cluster_waits():
    plan = plan_health_actions([host("hv1", health=failing("memory_corrected", "corrected memory errors: 1200/h")),
                                host("hv2", health=failing("memory_corrected")), host("hv3")])
    assert plan["drain"] == ["hv1"] and plan["waiting"] == ["hv2"]
    assert plan["hosts"]["hv1"] == {"action": "drain", "why": "corrected memory errors: 1200/h",
                                    "signal": "memory_corrected", "cluster": "c1"}
    assert "max_unavailable 1" in plan["hosts"]["hv2"]["why"] and "hv1" in plan["hosts"]["hv2"]["why"]
    assert plan["hosts"]["hv3"]["action"] == "ok"
    assert plan["clusters"]["c1"]["not_destinations"] == ["hv1", "hv2"]
    assert plan["msg"] == "hv1: mark and drain (memory_corrected); hv2: waiting (memory_corrected)"


def test_worst_signal_goes_first_whatever_the_name():
    plan = plan_health_actions([host("hv1", health=failing("nic_errors")), host("hv2", health=failing("memory_uncorrected"))])
    assert plan["drain"] == ["hv2"] and plan["waiting"] == ["hv1"]


def test_marked_host_is_left_alone_and_counts_against_max_unavailable():
    plan = plan_health_actions([host("hv1", health=failing("disk_health"), marked=True, mark_reason="patching"),
                                host("hv2", health=failing("memory_corrected")), host("hv3")])
    assert plan["hosts"]["hv1"]["action"] == "already_marked" and "patching" in plan["hosts"]["hv1"]["why"]
    assert plan["drain"] == [] and plan["waiting"] == ["hv2"]


def test_unreachable_host_counts_as_out():
    plan = plan_health_actions([host("hv1", reachable=False, health=None), host("hv2", health=failing("libvirt"))])
    assert plan["hosts"]["hv1"]["action"] == "unreachable"
    assert plan["waiting"] == ["hv2"] and plan["clusters"]["c1"]["not_destinations"] == ["hv1", "hv2"]


def test_max_unavailable_two_and_clusters_are_independent():
    plan = plan_health_actions([host("a1", health=failing("machine_check"), max_unavailable=2),
                                host("a2", health=failing("machine_check"), max_unavailable=2),
                                host("a3", health=failing("machine_check"), max_unavailable=2),
                                host("b1", cluster="c2", health=failing("memory_pressure"))])
    assert plan["drain"] == ["a1", "a2", "b1"] and plan["waiting"] == ["a3"]


def test_nothing_to_do():
    plan = plan_health_actions([host("hv1"), host("hv2")])
    assert plan["drain"] == plan["waiting"] == [] and plan["msg"] == "no host to empty (2 checked)"


def test_locked_cluster_drains_nothing_its_failing_hosts_wait_naming_the_run():
    plan = plan_health_actions([host("hv1", health=failing("memory_uncorrected"), locked_by="run r1 (ops@ctl)"),
                                host("hv2", locked_by="run r1 (ops@ctl)"),
                                host("b1", cluster="c2", health=failing("memory_uncorrected"))])
    assert plan["drain"] == ["b1"] and plan["waiting"] == ["hv1"]
    assert "locked by run r1" in plan["hosts"]["hv1"]["why"]


# --- recovery of a host that stopped answering (health_watch_recover_after) -------------------

def silent(name, last_seen, **extra):
    return host(name, reachable=False, health=None, last_seen=last_seen, **extra)


def test_recovery_is_off_by_default():
    plan = plan_health_actions([silent("hv1", 0.0), host("hv2")], now=10 ** 6)
    assert plan["recover"] == [] and plan["hosts"]["hv1"]["action"] == "unreachable"


def test_host_silent_for_the_recovery_time_is_recovered_not_before():
    hosts = [silent("hv1", 1000.0), host("hv2")]
    assert plan_health_actions(hosts, recover_after_s=600, now=1599.0)["recover"] == []
    early = plan_health_actions(hosts, recover_after_s=600, now=1599.0)["hosts"]["hv1"]
    assert early["action"] == "unreachable" and "silent for 599s, recovery after 600s" in early["why"]
    plan = plan_health_actions(hosts, recover_after_s=600, now=1600.0)
    assert plan["recover"] == ["hv1"] and plan["hosts"]["hv1"]["action"] == "recover"
    assert "hv1: recover" in plan["msg"]
    # Still out of service for the drains of the same run.
    assert plan["clusters"]["c1"]["not_destinations"] == ["hv1"]


def test_one_recovery_per_run_the_longest_silent_first():
    plan = plan_health_actions([silent("a1", 500.0, cluster="a"), silent("b1", 100.0, cluster="b"), host("a2", cluster="a"),
                                host("b2", cluster="b")], recover_after_s=60, now=1000.0)
    assert plan["recover"] == ["b1"]
    assert plan["hosts"]["a1"]["action"] == "unreachable" and "later run" in plan["hosts"]["a1"]["why"]


def test_never_recovered_unknown_marked_or_in_a_locked_cluster():
    plan = plan_health_actions([silent("hv1", None), silent("hv2", 0.0, marked=True, mark_reason="repair"),
                                silent("x1", 0.0, cluster="x", locked_by="run r1 (ops@ctl)"), host("x2", cluster="x")],
                               recover_after_s=60, now=10 ** 6)
    assert plan["recover"] == []
    assert "never seen answering" in plan["hosts"]["hv1"]["why"]
    assert plan["hosts"]["hv2"]["action"] == "already_marked"
    assert "locked by run r1" in plan["hosts"]["x1"]["why"]
