"""Plan of a rolling maintenance run: host selection, waves, wave-aware capacity proof."""
import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_plan
from ansible_collections.virtfleet.cluster.plugins.module_utils.maintenance_plan import plan_maintenance
from module_main import run_module_main


def host(name, cluster="a", **kw):
    return dict(name=name, cluster=cluster, max_unavailable=kw.pop("max_unavailable", 1),
                needs_patch=kw.pop("needs_patch", True), **kw)


def cap(hosts, guests, mem=2048):
    return {"hosts": [{"name": h, "memory_total_mib": mem, "cpus": 4} for h in hosts],
            "guests": [{"name": g, "memory_mib": m, "vcpus": 1, "host": h} for g, m, h in guests]}


def test_clusters_in_parallel_one_host_per_cluster_per_wave():
    plan = plan_maintenance([host("a1"), host("a2"), host("a3"), host("b1", "b"), host("b2", "b")],
                            "run-1")
    assert plan["wave_hosts"] == [["a1", "b1"], ["a2", "b2"], ["a3"]]
    assert plan["capacity"] is None and plan["ok"]


def test_max_unavailable_two():
    plan = plan_maintenance([host(n, max_unavailable=2) for n in ("a1", "a2", "a3")], "run-1")
    assert plan["wave_hosts"] == [["a1", "a2"], ["a3"]]


def test_disagreeing_limits_refused():
    with pytest.raises(ValueError):
        plan_maintenance([host("a1"), host("a2", max_unavailable=2)], "run-1")


def test_skips_foreign_marks_done_hosts_and_nothing_to_patch():
    operator_mark = {"owner": {"run_id": "operator", "user": "ops"}, "window": None, "reason": "RAM swap"}
    plan = plan_maintenance([  # max_unavailable 2: a1 down for its own reason leaves 1
        host("a1", mark=operator_mark, max_unavailable=2),
        host("a2", done={"at": 1}, max_unavailable=2),
        host("a3", needs_patch=False, max_unavailable=2),
        host("a4", needs_patch=False, reboot_required=True, max_unavailable=2),
        host("a5", needs_patch=None, max_unavailable=2),  # unknown: maintain
    ], "run-2", window_name="w")
    assert plan["maintained"] == ["a4", "a5"]
    assert "RAM swap" in plan["skipped"]["a1"] and "left as found" in plan["skipped"]["a1"]
    assert "already done" in plan["skipped"]["a2"]
    assert "nothing to patch" in plan["skipped"]["a3"]
    assert plan["foreign_marked"] == ["a1"]


def test_force_maintains_hosts_with_nothing_to_patch():
    plan = plan_maintenance([host("a1", needs_patch=False)], "run-1", force=True)
    assert plan["maintained"] == ["a1"]


def test_host_left_marked_by_the_window_is_finished_first():
    mark = {"owner": {"run_id": "run-1"}, "window": "w", "phase": "drained"}
    plan = plan_maintenance([host("a1"), host("a2", needs_patch=False, mark=mark)], "run-2",
                            window_name="w")
    assert plan["resumed"] == {"a2": "drained"}
    assert plan["wave_hosts"] == [["a2"], ["a1"]]


def test_capacity_proof_follows_the_waves():
    # Three hosts of 2 GiB, 1.5 GiB of guests each, no reserve: one host out at a time works.
    guests = [("g1", 700, "a1"), ("g2", 700, "a2"), ("g3", 700, "a3")]
    capacity = {"a": cap(["a1", "a2", "a3"], guests)}
    policy = {"memory_reserve_mib": 0, "respect_free_memory": False}
    plan = plan_maintenance([host(n) for n in ("a1", "a2", "a3")], "run-1", capacity=capacity,
                            policy=policy)
    assert plan["ok"], plan["capacity"]["problems"]
    assert [s["host"] for s in plan["capacity"]["steps"]] == ["a1", "a2", "a3"]
    # The guest moved off a1 is on a2 or a3 when those drain: later steps move it again.
    moved = [m["guest"] for s in plan["capacity"]["steps"] for m in s["plan"]["moves"]]
    assert moved.count("g1") >= 2


def test_capacity_proof_fails_when_two_hosts_out_at_once_do_not_fit():
    guests = [("g1", 1500, "a1"), ("g2", 1500, "a2"), ("g3", 1500, "a3")]
    capacity = {"a": cap(["a1", "a2", "a3"], guests)}
    policy = {"memory_reserve_mib": 0, "respect_free_memory": False}
    one = plan_maintenance([host(n) for n in ("a1", "a2", "a3")], "run-1", capacity=capacity,
                           policy=policy)
    assert not one["ok"]  # 1500 + 1500 > 2048 on any remaining host
    assert any("draining a1" in p for p in one["capacity"]["problems"])


def test_foreign_marked_host_is_never_a_destination():
    mark = {"owner": {"run_id": "operator"}, "reason": "broken fan"}
    guests = [("g1", 1000, "a1")]
    capacity = {"a": cap(["a1", "a2", "a3"], guests)}
    plan = plan_maintenance([host("a1", max_unavailable=2), host("a2", mark=mark, max_unavailable=2),
                             host("a3", max_unavailable=2)], "run-1",
                            capacity=capacity, policy={"memory_reserve_mib": 0,
                                                       "respect_free_memory": False})
    step = plan["capacity"]["steps"][0]
    assert step["host"] == "a1" and step["plan"]["moves"][0]["destination"] == "a3"


def test_missing_capacity_facts_is_not_a_proof():
    plan = plan_maintenance([host("a1"), host("b1", "b")], "run-1",
                            capacity={"a": cap(["a1", "a2"], [])})
    assert not plan["ok"]
    assert plan["capacity"]["unchecked_clusters"] == ["b"]


def test_capacity_from_hypervisor_facts():
    from ansible_collections.virtfleet.cluster.plugins.module_utils.maintenance_plan import capacity_from_facts
    facts = {
        "a1": {"memory_total_mib": 4096, "memory_free_mib": 3000, "cpus": 4, "guests": [
            {"name": "g1", "active": True, "memory_mib": 128, "vcpus": 1, "movable": True},
            {"name": "off", "active": False, "memory_mib": 512, "vcpus": 1, "movable": True},
            {"name": "pci", "active": True, "memory_mib": 256, "vcpus": 2, "movable": False,
             "migration_blockers": ["host device passthrough (1 hostdev)"]}]},
        "a2": {"memory_total_mib": 4096, "cpus": 4, "guests": []},
    }
    capacity = capacity_from_facts({"a": ["a1", "a2", "a3"]}, facts, marked=["a2"],
                                   unmovable_guests=[], anti_affinity_groups={"web": ["g1"]})
    hosts = {h["name"]: h for h in capacity["a"]["hosts"]}
    assert set(hosts) == {"a1", "a2"} and hosts["a2"]["in_maintenance"]
    guests = {g["name"]: g for g in capacity["a"]["guests"]}
    assert set(guests) == {"g1", "pci"}
    assert guests["g1"]["anti_affinity_group"] == "web"
    assert not guests["pci"]["movable"] and "passthrough" in guests["pci"]["unmovable_reason"]
    plan = plan_maintenance([host("a1")], "run-1", capacity=capacity)
    assert not plan["ok"]  # pci cannot move and a2 is marked


def test_stop_allowed_guest_does_not_fail_the_proof():
    from ansible_collections.virtfleet.cluster.plugins.module_utils.maintenance_plan import capacity_from_facts
    pci = {"name": "pci", "active": True, "memory_mib": 256, "vcpus": 2, "movable": False}
    facts = {"a1": {"memory_total_mib": 4096, "cpus": 4, "guests": [pci]},
             "a2": {"memory_total_mib": 4096, "cpus": 4, "guests": []}}
    refused = plan_maintenance([host("a1")], "run-1", capacity=capacity_from_facts({"a": ["a1", "a2"]}, facts))
    allowed = plan_maintenance([host("a1")], "run-1", capacity=capacity_from_facts(
        {"a": ["a1", "a2"]}, facts, stop_allowed_guests=["pci"]))
    assert not refused["ok"] and allowed["ok"]


def test_windows_are_per_cluster():
    mark = {"owner": {"run_id": "run-1"}, "window": "wa", "phase": "rebooted"}
    plan = plan_maintenance([host("a1", mark=mark, window="wa"),
                             host("b1", "b", mark=dict(mark), window="wb")], "run-2")
    assert plan["resumed"] == {"a1": "rebooted"}
    assert "b1" in plan["foreign_marked"]


def test_hosts_already_out_of_service_count_against_max_unavailable():
    operator = {"owner": {"run_id": "operator"}, "reason": "repair"}
    two = plan_maintenance([host(n, max_unavailable=2, mark=operator if n == "a3" else None)
                            for n in ("a1", "a2", "a3")], "run-1",
                           members={"a": ["a1", "a2", "a3"]}, marked=["a3"])
    assert two["wave_hosts"] == [["a1"], ["a2"]]  # 2 - 1 down = one at a time
    one = plan_maintenance([host("a1"), host("a2"), host("b1", "b")], "run-1",
                           members={"a": ["a1", "a2", "a3"], "b": ["b1"]}, marked=["a3"])
    assert one["maintained"] == ["b1"]
    assert "already has 1 host(s) out of service (a3)" in one["skipped"]["a1"]


def test_a_host_another_live_run_has_out_takes_no_room_but_is_no_destination():
    """Two runs share the cluster (issue 11): run-2's host a1 is out now; run-1's hosts still
    get their rounds (the shared slots wait for a1 at run time), a1 is neither maintained
    again nor a destination in the proof, and a mark of the window whose run is gone is
    resumed as before."""
    live = {"owner": {"run_id": "run-2", "token": "b" * 32}, "window": "w", "owner_live": True}
    plan = plan_maintenance([host("a1", mark=live, window="w"), host("a2", window="w"), host("a3", window="w")],
                            "run-1", window_name="w", members={"a": ["a1", "a2", "a3"]},
                            capacity={"a": cap(["a1", "a2", "a3"], [("g2", 512, "a2"), ("g3", 512, "a3")], mem=600)})
    assert plan["maintained"] == ["a2", "a3"] and "run-2" in plan["skipped"]["a1"]
    assert plan["slot_order"]["a"] == [["a2"], ["a3"]]
    assert plan["clusters"]["a"]["max_unavailable_now"] == 1 and plan["clusters"]["a"]["out_for_now"] == ["a1"]
    # Rebooting under the other run, it does not answer: still out for now only.
    silent = plan_maintenance([host("a1", mark=live, window="w"), host("a2", window="w")], "run-1", window_name="w",
                              members={"a": ["a1", "a2"]}, unreachable={"a1": "libvirt does not answer"})
    assert silent["maintained"] == ["a2"] and silent["clusters"]["a"]["max_unavailable_now"] == 1
    # a2's guest would fit only on the empty a1 (600 MiB hosts): a1 is out now, so the proof fails.
    assert not plan["ok"] and "g2" in " ".join(plan["capacity"]["problems"])
    gone = dict(live, owner_live=False)
    resumed = plan_maintenance([host("a1", mark=gone, window="w"), host("a2", window="w")], "run-1", window_name="w",
                               members={"a": ["a1", "a2"]})
    assert resumed["resumed"] == {"a1": "marked"} and resumed["maintained"][0] == "a1"


def test_plan_reports_configured_and_current_limits():
    operator = {"owner": {"run_id": "operator"}, "reason": "repair"}
    plan = plan_maintenance([host(n, max_unavailable=2, mark=operator if n == "a3" else None)
                             for n in ("a1", "a2", "a3")], "run-1",
                            members={"a": ["a1", "a2", "a3"]}, marked=["a3"])
    assert plan["clusters"]["a"]["max_unavailable"] == 2
    assert plan["clusters"]["a"]["max_unavailable_now"] == 1
    assert plan["clusters"]["a"]["out_of_service"] == ["a3"]


# --- one facts-to-capacity conversion (issue 10, case 8) -----------------------------------------

def _guest_facts(name, memory, max_memory=None, **kw):
    facts = {"name": name, "active": True, "memory_mib": memory, "max_memory_mib": max_memory or memory,
             "vcpus": 1, "movable": True, "migration_blockers": [], "local_disks": False}
    facts.update(kw)
    return facts


def test_proof_reserves_maximum_memory_as_the_drain_does():
    # g1's balloon shows 256 MiB but it may grow back to 1536 MiB: a2 (1024 MiB) cannot take it.
    from ansible_collections.virtfleet.cluster.plugins.module_utils.maintenance_plan import capacity_from_facts
    facts = {"a1": {"memory_total_mib": 4096, "cpus": 4, "guests": [_guest_facts("g1", 256, 1536)]},
             "a2": {"memory_total_mib": 1024, "cpus": 4, "guests": []}}
    plan = plan_maintenance([host("a1")], "run-1", capacity=capacity_from_facts({"a": ["a1", "a2"]}, facts),
                            policy={"memory_reserve_mib": 0})
    assert not plan["ok"]
    assert "g1 (1536 MiB, 1 vCPU) cannot be placed" in plan["capacity"]["problems"][0]


def test_proof_keeps_local_disk_guests_in_place_unless_storage_is_copied():
    from ansible_collections.virtfleet.cluster.plugins.module_utils.maintenance_plan import capacity_from_facts
    local = _guest_facts("db", 256, local_disks=True,
                         migration_notes=["local disks need block migration: /var/lib/libvirt/images/db.qcow2"])
    facts = {"a1": {"memory_total_mib": 4096, "cpus": 4, "guests": [local]},
             "a2": {"memory_total_mib": 4096, "cpus": 4, "guests": []}}
    refused = plan_maintenance([host("a1")], "run-1", capacity=capacity_from_facts({"a": ["a1", "a2"]}, facts))
    assert not refused["ok"]
    assert "db cannot live-migrate (local disks and copy_storage is off (local disks need block migration: " \
           "/var/lib/libvirt/images/db.qcow2))" in refused["capacity"]["problems"][0]
    copied = plan_maintenance([host("a1")], "run-1",
                              capacity=capacity_from_facts({"a": ["a1", "a2"]}, facts, copy_storage=True))
    assert copied["ok"], copied["capacity"]["problems"]


def test_proof_sees_free_memory_as_earlier_waves_left_it():
    # a1 reports 0 MiB free at preflight; once its guests left (wave 1) it has room again for
    # a2's guest (wave 2), as the drain of a2 will read from a1 itself.
    from ansible_collections.virtfleet.cluster.plugins.module_utils.maintenance_plan import capacity_from_facts
    facts = {"a1": {"memory_total_mib": 1024, "memory_free_mib": 0, "cpus": 4,
                    "guests": [_guest_facts("g1", 600)]},
             "a2": {"memory_total_mib": 1024, "memory_free_mib": 1024, "cpus": 4,
                    "guests": [_guest_facts("g2", 600)]},
             "a3": {"memory_total_mib": 1024, "memory_free_mib": 1024, "cpus": 4, "guests": []}}
    plan = plan_maintenance([host("a1"), host("a2")], "run-1",
                            capacity=capacity_from_facts({"a": ["a1", "a2", "a3"]}, facts),
                            policy={"memory_reserve_mib": 0})
    assert plan["ok"], plan["capacity"]["problems"]
    steps = {s["host"]: s["plan"]["moves"] for s in plan["capacity"]["steps"]}
    assert [(m["guest"], m["destination"]) for m in steps["a1"]] == [("g1", "a3")]
    # a3 now holds g1 (424 MiB free): g2 goes to a1, which got g1's 600 MiB back.
    assert [(m["guest"], m["destination"]) for m in steps["a2"]] == [("g2", "a1")]


# --- what counts against max_unavailable (issue 10, case 7) ---------------------------------------

def test_unreachable_hosts_count_against_max_unavailable_in_or_outside_the_run():
    # a3 is outside the run (--limit) and its libvirt does not answer; b3 is a host of the run
    # whose SSH failed at setup. Both are out of service as surely as a marked host.
    plan = plan_maintenance([host("a1"), host("a2"), host("b1", "b", max_unavailable=2),
                             host("b2", "b", max_unavailable=2), host("b3", "b", max_unavailable=2)], "run-1",
                            members={"a": ["a1", "a2", "a3"], "b": ["b1", "b2", "b3"]},
                            unreachable={"a3": "libvirt does not answer: connection refused",
                                         "b3": "SSH does not answer: unreachable at setup"})
    assert plan["maintained"] == ["b1", "b2"]
    assert plan["wave_hosts"] == [["b1"], ["b2"]]  # 2 - 1 down = one at a time
    assert "already has 1 host(s) out of service (a3)" in plan["skipped"]["a1"]
    assert "a3: libvirt does not answer: connection refused" in plan["skipped"]["a1"]
    assert plan["skipped"]["b3"].startswith("could not be asked at preflight: SSH does not answer")
    assert plan["out_of_service"] == {"a3": "libvirt does not answer: connection refused",
                                      "b3": "SSH does not answer: unreachable at setup"}
    assert plan["clusters"]["b"]["out_of_service"] == ["b3"]
    assert plan["clusters"]["b"]["max_unavailable_now"] == 1


def test_unreachable_and_marked_hosts_add_up():
    operator = {"owner": {"run_id": "operator"}, "reason": "repair"}
    plan = plan_maintenance([host(n, max_unavailable=2) for n in ("a1", "a2")], "run-1",
                            members={"a": ["a1", "a2", "a3", "a4"]}, marked=["a3"],
                            unreachable={"a4": "SSH does not answer"},
                            states={"a": {"marks": {"a3": operator}, "window": None}})
    assert plan["maintained"] == []
    assert "already has 2 host(s) out of service (a3, a4)" in plan["skipped"]["a1"]
    assert "a3: marked in maintenance by run operator: repair" in plan["skipped"]["a1"]


def test_host_whose_ssh_does_not_answer_is_no_destination_in_the_proof():
    # a2 answers libvirt (its facts are there) but not SSH: counted out of service, so the
    # proof must not send a1's guest there; a3 is full.
    capacity = {"a": {"hosts": [{"name": "a1", "memory_total_mib": 2048, "cpus": 4},
                                {"name": "a2", "memory_total_mib": 2048, "cpus": 4},
                                {"name": "a3", "memory_total_mib": 2048, "cpus": 4}],
                      "guests": [{"name": "g1", "memory_mib": 1000, "vcpus": 1, "host": "a1"},
                                 {"name": "g3", "memory_mib": 1800, "vcpus": 1, "host": "a3"}]}}
    policy = {"memory_reserve_mib": 0, "respect_free_memory": False}
    hosts = [host("a1", max_unavailable=2)]
    assert plan_maintenance(hosts, "run-1", capacity=capacity, policy=policy)["ok"]
    plan = plan_maintenance(hosts, "run-1", capacity=capacity, policy=policy,
                            members={"a": ["a1", "a2", "a3"]}, unreachable={"a2": "SSH does not answer"})
    assert plan["maintained"] == ["a1"]
    assert not plan["ok"]
    assert any("g1" in p for p in plan["capacity"]["problems"])


@pytest.mark.parametrize("order", ["given", "name", "fewest_guests", "most_guests"])
def test_host_left_marked_by_the_window_goes_first_whatever_the_order(order):
    mark = {"owner": {"run_id": "run-1"}, "window": "w", "phase": "drained"}
    plan = plan_maintenance([host("a1", guests=0), host("a2", guests=9), host("a3", mark=mark, guests=5),
                             host("b1", "b", guests=1), host("b2", "b", guests=2)], "run-2",
                            window_name="w", order=order)
    assert plan["resumed"] == {"a3": "drained"}
    assert plan["waves"][0]["by_cluster"]["a"] == ["a3"]


def test_host_recorded_done_but_still_marked_is_unmarked_not_out_of_service():
    # The run that maintained a1 stopped between recording it done and unmarking it.
    mark = {"owner": {"run_id": "run-1"}, "window": "w", "phase": "verified"}
    plan = plan_maintenance([host("a1", mark=mark, done={"at": 1}), host("a2"), host("a3")], "run-2",
                            window_name="w", members={"a": ["a1", "a2", "a3"]}, marked=["a1"])
    assert plan["maintained"] == ["a2", "a3"]
    assert plan["stale_marks"] == ["a1"]
    assert plan["skipped"]["a1"].startswith("already done in maintenance window w")
    assert "This run unmarks it at preflight; it is in service" in plan["skipped"]["a1"]
    assert plan["clusters"]["a"]["out_of_service"] == []
    assert plan["clusters"]["a"]["stale_marks"] == ["a1"]
    assert "a1" not in plan["resumed"]


def test_stale_mark_of_a_host_outside_the_run_is_read_from_the_cluster_state():
    mark = {"owner": {"run_id": "run-1"}, "window": "w", "phase": "verified"}
    other = {"owner": {"run_id": "run-0"}, "window": "old", "phase": "drained"}
    states = {"a": {"marks": {"a3": mark, "a4": other},
                    "window": {"name": "w", "hosts_done": {"a3": {"at": 1}, "a4": {"at": 1}}, "closed": None}}}
    plan = plan_maintenance([host("a1", max_unavailable=2), host("a2", max_unavailable=2)], "run-2", window_name="w",
                            members={"a": ["a1", "a2", "a3", "a4"]}, marked=["a3", "a4"], states=states)
    assert plan["stale_marks"] == ["a3"]  # a4's mark is another window's: left as found
    assert plan["clusters"]["a"]["out_of_service"] == ["a4"]
    assert plan["wave_hosts"] == [["a1"], ["a2"]]


def test_stale_marked_host_is_a_destination_in_the_proof():
    from ansible_collections.virtfleet.cluster.plugins.module_utils.maintenance_plan import capacity_from_facts
    mark = {"owner": {"run_id": "run-1"}, "window": "w", "phase": "verified"}
    facts = {"a1": {"memory_total_mib": 4096, "cpus": 4, "guests": []},
             "a2": {"memory_total_mib": 4096, "cpus": 4, "guests": [_guest_facts("g2", 512)]}}
    capacity = capacity_from_facts({"a": ["a1", "a2"]}, facts, marked=["a1"])
    plan = plan_maintenance([host("a1", mark=mark, done={"at": 1}), host("a2")], "run-2", window_name="w",
                            capacity=capacity, policy={"memory_reserve_mib": 0},
                            members={"a": ["a1", "a2"]}, marked=["a1"])
    assert plan["maintained"] == ["a2"]
    assert plan["ok"], plan["capacity"]["problems"]
    assert plan["capacity"]["steps"][0]["plan"]["moves"][0]["destination"] == "a1"


def _run_module(args):
    """The maintenance_plan module's main() in-process, as the role calls it; returns its result."""
    from ansible_collections.virtfleet.cluster.plugins.modules import maintenance_plan as module
    return run_module_main(module, args)[1]


def test_module_counts_a_member_whose_libvirt_gave_no_facts():
    # The role's arguments as preflight.yml passes them today: a3 (outside --limit) is a member
    # of the cluster, but its libvirt did not answer, so it has no facts.
    facts = {name: {"memory_total_mib": 4096, "cpus": 4, "guests": []} for name in ("a1", "a2")}
    result = _run_module({"run_id": "run-1", "hosts": [host("a1"), host("a2")], "facts": facts,
                          "members": {"a": ["a1", "a2", "a3"]}, "marked": []})
    assert not result.get("failed"), result
    assert result["maintained"] == []
    assert "a3" in result["out_of_service"] and "libvirt" in result["out_of_service"]["a3"]


def test_module_takes_unreachable_hosts_and_returns_stale_marks():
    mark = {"owner": {"run_id": "run-1"}, "window": "w", "phase": "verified"}
    facts = {name: {"memory_total_mib": 4096, "cpus": 4, "guests": []} for name in ("a1", "a2", "a3", "a4")}
    result = _run_module({"run_id": "run-2", "window": "w", "order": "name",
                          "hosts": [host("a1", max_unavailable=2), host("a2", max_unavailable=2)],
                          "facts": facts, "members": {"a": ["a1", "a2", "a3", "a4"]}, "marked": ["a4"],
                          "unreachable": {"a3": "SSH does not answer"},
                          "states": {"a": {"marks": {"a4": mark},
                                           "window": {"name": "w", "hosts_done": {"a4": {}}, "closed": None}}}})
    assert not result.get("failed"), result
    assert result["stale_marks"] == ["a4"]
    assert result["wave_hosts"] == [["a1"], ["a2"]]
    assert result["out_of_service"] == {"a3": "SSH does not answer"}
    # A true "unreachable" in a module result makes Ansible take the host for unreachable.
    assert "unreachable" not in result and result["not_answering"] == {"a3": "SSH does not answer"}


# --- the small decisions of the plan, exactly (issue 17: survivors of `make mutation`) ------------

def test_a_mark_names_its_run_and_where_it_came_from():
    assert maintenance_plan.mark_owner_text({"owner": {"run_id": "r1", "user": "ops", "controller": "ctl"}}) == (
        "run r1 (ops@ctl)")
    assert maintenance_plan.mark_owner_text({"owner": {"run_id": "r1", "controller": "ctl"}}) == "run r1 (?@ctl)"
    assert maintenance_plan.mark_owner_text({"owner": {"user": "ops"}}) == "run ? (ops@?)"
    assert maintenance_plan.mark_owner_text({"owner": {"run_id": "r1"}}) == "run r1"
    assert maintenance_plan.mark_owner_text(None) == "run ?"


def test_a_mark_is_ours_by_run_id_or_by_this_window_only():
    mark = {"owner": {"run_id": "r1"}, "window": "w1"}
    assert maintenance_plan.mark_is_ours(mark, "r1", None)
    assert maintenance_plan.mark_is_ours(mark, "r2", "w1")
    assert not maintenance_plan.mark_is_ours(mark, "r2", "w2")
    assert not maintenance_plan.mark_is_ours({"owner": {"run_id": "r1"}}, "r2", None)  # no window on either side
    assert not maintenance_plan.mark_is_ours({"owner": {"run_id": "r1"}, "window": None}, "r2", None)
    assert not maintenance_plan.mark_is_ours({}, "r1", "w1") and not maintenance_plan.mark_is_ours(None, "r1", "w1")


def test_what_a_mark_means_for_the_report():
    assert maintenance_plan._mark_text(None, False) == "marked in maintenance"
    assert maintenance_plan._mark_text({"owner": {"run_id": "r1"}, "phase": "draining"}, True) == (
        "left marked by this maintenance window (run r1, phase draining) and not finished by this run")
    assert maintenance_plan._mark_text({"owner": {"run_id": "r1"}}, True).endswith(
        "(run r1, phase marked) and not finished by this run")
    assert maintenance_plan._mark_text({"owner": {"run_id": "op"}, "reason": "RAM"}, False) == (
        "marked in maintenance by run op: RAM")
    assert maintenance_plan._mark_text({"owner": {"run_id": "op"}}, False) == (
        "marked in maintenance by run op: no reason given")


@pytest.mark.parametrize("given, expected", [
    (None, {}),
    ({}, {}),
    ({"hv-1": "ssh timeout", "hv-2": None, "hv-3": ""},
     {"hv-1": "ssh timeout", "hv-2": "did not answer at preflight", "hv-3": "did not answer at preflight"}),
    (["hv-1", {"name": "hv-2", "reason": "refused"}, {"name": "hv-3"}],
     {"hv-1": "did not answer at preflight", "hv-2": "refused", "hv-3": "did not answer at preflight"}),
    (("hv-1",), {"hv-1": "did not answer at preflight"}),
    ({"hv-1": 5}, {"hv-1": "5"}),
])
def test_unreachable_hosts_in_every_accepted_shape(given, expected):
    assert maintenance_plan._unreachable_hosts(given) == expected


@pytest.mark.parametrize("given, message", [
    ("hv-1", "unreachable must be a dict of host name to reason, not 'hv-1'"),
    ([""], "unreachable: a host name must be a non-empty string, not ''"),
    ([{"reason": "x"}], "unreachable: a host name must be a non-empty string, not None"),
    ({3: "x"}, "unreachable: a host name must be a non-empty string, not 3"),
])
def test_unreachable_hosts_in_another_shape_are_refused(given, message):
    with pytest.raises(ValueError) as caught:
        maintenance_plan._unreachable_hosts(given)
    assert str(caught.value) == message
