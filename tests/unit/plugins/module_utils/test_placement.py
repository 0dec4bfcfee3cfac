"""Placement planner: cumulative reservation, constraints, ordering, capacity proof, rebalance."""
import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.virtfleet.cluster.plugins.module_utils.cluster_plans import (
    memory_loads, plan_move_back, plan_rebalance)
from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import (
    Guest, HostCapacity, PlacementPolicy, capacity_from_dicts, plan_drain, prove_rolling_capacity)

NO_RESERVE = PlacementPolicy(memory_reserve_mib=0)


def hosts(*specs, **kw):
    """hosts(("h1", 4096, 4), ...) -> HostCapacity list."""
    return [HostCapacity(name, mem, cpus, **kw) for name, mem, cpus in specs]


def destinations(plan):
    return {m.guest: m.destination for m in plan.moves}


def test_cumulative_reservation_spreads_guests_that_would_each_fit_alone():
    # h2 has room for exactly one of the two 1 GiB guests; a per-guest check would send both.
    cluster = hosts(("h1", 4096, 8), ("h2", 1536, 8), ("h3", 1280, 8))
    guests = [Guest("a", 1024, 1, host="h1"), Guest("b", 1024, 1, host="h1")]
    plan = plan_drain("h1", cluster, guests, NO_RESERVE)
    assert plan.ok
    assert sorted(destinations(plan).values()) == ["h2", "h3"]


def test_guest_left_over_when_capacity_is_used_up_by_earlier_guests():
    cluster = hosts(("h1", 4096, 8), ("h2", 1536, 8))
    guests = [Guest("a", 1024, 1, host="h1"), Guest("b", 1024, 1, host="h1")]
    plan = plan_drain("h1", cluster, guests, NO_RESERVE)
    assert not plan.ok
    assert [m.guest for m in plan.moves] == ["a"]
    (unplaced,) = plan.unplaced
    assert unplaced.guest == "b"
    assert "memory: needs 1024 MiB, 512 MiB left" in unplaced.per_host["h2"]


def test_existing_guests_count_against_capacity():
    cluster = hosts(("h1", 4096, 8), ("h2", 2048, 8))
    guests = [Guest("resident", 1536, 1, host="h2"), Guest("a", 1024, 1, host="h1")]
    plan = plan_drain("h1", cluster, guests, NO_RESERVE)
    assert plan.unplaced and plan.unplaced[0].guest == "a"


def test_memory_reserve_is_kept_free():
    cluster = hosts(("h1", 4096, 8), ("h2", 2048, 8))
    guests = [Guest("a", 1600, 1, host="h1")]
    assert plan_drain("h1", cluster, guests, NO_RESERVE).ok
    reserved = plan_drain("h1", cluster, guests, PlacementPolicy(memory_reserve_mib=512))
    assert not reserved.ok
    assert "reserve 512 MiB" in reserved.unplaced[0].per_host["h2"]


def test_memory_overcommit_ratio_allows_more_than_total():
    cluster = hosts(("h1", 4096, 8), ("h2", 1024, 8))
    guests = [Guest("a", 1024, 1, host="h1"), Guest("b", 512, 1, host="h1")]
    assert not plan_drain("h1", cluster, guests, NO_RESERVE).ok
    policy = PlacementPolicy(memory_overcommit=1.5, memory_reserve_mib=0)
    assert plan_drain("h1", cluster, guests, policy).ok


def test_cpu_overcommit_limits_vcpus():
    cluster = hosts(("h1", 8192, 8), ("h2", 8192, 2))
    guests = [Guest("a", 256, 4, host="h1"), Guest("b", 256, 4, host="h1")]
    strict = plan_drain("h1", cluster, guests, PlacementPolicy(cpu_overcommit=2.0, memory_reserve_mib=0))
    assert [u.guest for u in strict.unplaced] == ["b"]
    assert "vCPUs: needs 4, 0 left" in strict.unplaced[0].per_host["h2"]
    assert plan_drain("h1", cluster, guests, PlacementPolicy(cpu_overcommit=4.0, memory_reserve_mib=0)).ok


def test_host_reported_free_memory_is_respected_and_consumed():
    # Allocation accounting says h2 is empty, but its OS uses most memory.
    cluster = [HostCapacity("h1", 8192, 8), HostCapacity("h2", 8192, 8, memory_free_mib=1500)]
    guests = [Guest("a", 1024, 1, host="h1"), Guest("b", 1024, 1, host="h1")]
    plan = plan_drain("h1", cluster, guests, NO_RESERVE)
    assert [m.guest for m in plan.moves] == ["a"]
    assert "host reports 476 MiB free" in plan.unplaced[0].per_host["h2"]
    ignoring = PlacementPolicy(memory_reserve_mib=0, respect_free_memory=False)
    assert plan_drain("h1", cluster, guests, ignoring).ok


def test_anti_affinity_counts_guests_already_on_destination():
    cluster = hosts(("h1", 8192, 8), ("h2", 8192, 8), ("h3", 8192, 8))
    guests = [Guest("db1", 512, 1, host="h1", anti_affinity_group="db"),
              Guest("db2", 512, 1, host="h2", anti_affinity_group="db")]
    plan = plan_drain("h1", cluster, guests, NO_RESERVE)
    assert destinations(plan) == {"db1": "h3"}


def test_anti_affinity_between_guests_of_the_same_drain():
    cluster = hosts(("h1", 8192, 8), ("h2", 8192, 8))
    guests = [Guest("web1", 512, 1, host="h1", anti_affinity_group="web"),
              Guest("web2", 512, 1, host="h1", anti_affinity_group="web")]
    plan = plan_drain("h1", cluster, guests, NO_RESERVE)
    assert len(plan.moves) == 1
    assert "anti-affinity: group 'web' already has" in plan.unplaced[0].per_host["h2"]


def test_hosts_in_maintenance_and_the_source_are_never_destinations():
    cluster = [HostCapacity("h1", 8192, 8), HostCapacity("h2", 65536, 64, in_maintenance=True),
               HostCapacity("h3", 2048, 8)]
    guests = [Guest("a", 1024, 1, host="h1")]
    plan = plan_drain("h1", cluster, guests, NO_RESERVE)
    assert destinations(plan) == {"a": "h3"}
    alone = plan_drain("h1", cluster[:2], guests, NO_RESERVE)
    assert alone.unplaced[0].per_host == {"h2": "in maintenance"}


def test_cpu_check_is_consulted_with_guest_and_host():
    cluster = [HostCapacity("h1", 8192, 8, cpu="Skylake"), HostCapacity("h2", 65536, 8, cpu="Haswell"),
               HostCapacity("h3", 4096, 8, cpu="Skylake")]
    guests = [Guest("needs-avx512", 1024, 1, host="h1", cpu="Skylake"), Guest("any", 1024, 1, host="h1")]

    def cpu_check(guest, host):
        if guest.cpu and guest.cpu != host.cpu:
            return "missing avx512f"
        return None

    plan = plan_drain("h1", cluster, guests, NO_RESERVE, cpu_check=cpu_check)
    assert destinations(plan)["needs-avx512"] == "h3"
    refused = plan_drain("h1", cluster[:2], guests[:1], NO_RESERVE, cpu_check=cpu_check)
    assert refused.unplaced[0].per_host["h2"] == "CPU cannot run the guest: missing avx512f"
    boolean = plan_drain("h1", cluster[:2], guests[:1], NO_RESERVE, cpu_check=lambda g, h: False)
    assert boolean.unplaced[0].per_host["h2"] == "CPU cannot run the guest"


def test_balanced_choice_picks_most_memory_left_after_placement():
    cluster = hosts(("h1", 8192, 8), ("h2", 4096, 8), ("h3", 6144, 8))
    guests = [Guest("a", 1024, 1, host="h1"), Guest("resident", 3072, 1, host="h3")]
    assert destinations(plan_drain("h1", cluster, guests, NO_RESERVE)) == {"a": "h2"}


@pytest.mark.parametrize("order, expected", [
    ("largest_first", ["big", "mid", "small"]),
    ("smallest_first", ["small", "mid", "big"]),
    ("as_listed", ["mid", "small", "big"]),
])
def test_ordering(order, expected):
    cluster = hosts(("h1", 8192, 8), ("h2", 8192, 8))
    guests = [Guest("mid", 512, 1, host="h1"), Guest("small", 256, 1, host="h1"),
              Guest("big", 1024, 1, host="h1")]
    plan = plan_drain("h1", cluster, guests, PlacementPolicy(order=order, memory_reserve_mib=0))
    assert [m.guest for m in plan.moves] == expected


def test_largest_first_fits_what_smallest_first_cannot():
    # The 256 MiB guest first would take the only host with room for the 1 GiB one.
    cluster = hosts(("h1", 1024, 8), ("h2", 1024, 8), ("h3", 1024, 8))
    guests = [Guest("small", 256, 1, host="h1"), Guest("big", 1024, 1, host="h1"),
              Guest("resident", 512, 1, host="h3")]
    largest = plan_drain("h1", cluster, guests, PlacementPolicy(order="largest_first", memory_reserve_mib=0))
    assert destinations(largest) == {"big": "h2", "small": "h3"}
    smallest = plan_drain("h1", cluster, guests, PlacementPolicy(order="smallest_first", memory_reserve_mib=0))
    assert [u.guest for u in smallest.unplaced] == ["big"]


@pytest.mark.parametrize("policy", ["fail", "shutdown", "leave"])
def test_unmovable_policy_is_recorded(policy):
    cluster = hosts(("h1", 8192, 8), ("h2", 8192, 8))
    guests = [Guest("gpu", 1024, 1, host="h1", movable=False, unmovable_reason="PCI passthrough"),
              Guest("a", 512, 1, host="h1")]
    plan = plan_drain("h1", cluster, guests, PlacementPolicy(unmovable=policy, memory_reserve_mib=0))
    assert [(u.guest, u.action, u.reason) for u in plan.unmovable] == [("gpu", policy, "PCI passthrough")]
    assert destinations(plan) == {"a": "h2"}
    assert plan.ok is (policy != "fail")
    if policy == "fail":
        assert "gpu cannot live-migrate (PCI passthrough)" in plan.problems()[0]


def test_per_guest_unmovable_policy_overrides_plan_policy():
    cluster = hosts(("h1", 8192, 8), ("h2", 8192, 8))
    guests = [Guest("pinned", 512, 1, host="h1", movable=False, unmovable_policy="shutdown")]
    plan = plan_drain("h1", cluster, guests, PlacementPolicy(unmovable="fail"))
    assert plan.ok and plan.unmovable[0].action == "shutdown"


def test_inputs_are_not_modified():
    cluster = hosts(("h1", 8192, 8), ("h2", 8192, 8))
    guests = [Guest("a", 512, 1, host="h1")]
    plan_drain("h1", cluster, guests)
    assert guests[0].host == "h1"


def test_invalid_inputs_are_rejected_with_a_reason():
    with pytest.raises(ValueError, match="order must be one of"):
        PlacementPolicy(order="random")
    with pytest.raises(ValueError, match="not among the hosts"):
        plan_drain("h1", hosts(("h1", 1024, 1)), [Guest("a", 1, 1, host="elsewhere")])
    with pytest.raises(ValueError, match="unknown keys"):
        capacity_from_dicts([{"name": "h1", "memory_total_mib": 1, "cpus": 1}],
                            [{"name": "a", "memory_mib": 1, "vcpus": 1, "anti_affinity": "x"}])


def test_plan_to_dict_is_plain_data():
    cluster = hosts(("h1", 8192, 8), ("h2", 600, 8))
    plan = plan_drain("h1", cluster, [Guest("a", 1024, 2, host="h1")], NO_RESERVE)
    data = plan.to_dict()
    assert data["ok"] is False
    assert data["unplaced"][0]["reason"].startswith("h2: memory: needs 1024 MiB")


# --- capacity proof ---------------------------------------------------------------------------

def test_capacity_proof_simulates_the_sequence_cumulatively():
    # Checked one at a time every host can be drained. In sequence, h2's small guest lands on
    # h1 first and then h3's two 1.5 GiB guests no longer both fit there.
    cluster = hosts(("h1", 3072, 8), ("h2", 1024, 8), ("h3", 2048, 8))
    guests = [Guest("g0", 1536, 1, host="h3"), Guest("g1", 1536, 1, host="h3"),
              Guest("g3", 512, 1, host="h3"), Guest("g2", 256, 1, host="h2")]
    for host in ("h1", "h2", "h3"):
        assert plan_drain(host, cluster, guests, NO_RESERVE).ok
    proof = prove_rolling_capacity(["h1", "h2", "h3"], cluster, guests, NO_RESERVE)
    assert not proof.ok
    assert [s.host for s in proof.failures] == ["h3"]
    assert proof.problems()[0].startswith("draining h3 (step 3): g1 (1536 MiB, 1 vCPU) cannot be placed")


def test_capacity_proof_returns_drained_hosts_to_service():
    cluster = hosts(("h1", 2048, 8), ("h2", 2048, 8))
    guests = [Guest("g1", 1024, 1, host="h1"), Guest("g2", 1024, 1, host="h2")]
    proof = prove_rolling_capacity(["h1", "h2"], cluster, guests, NO_RESERVE)
    assert proof.ok, proof.problems()
    # h2 then holds both guests, and both go back to the (now empty) h1.
    assert {m.guest: m.destination for m in proof.steps[1].plan.moves} == {"g1": "h1", "g2": "h1"}


def test_capacity_proof_keeps_initial_maintenance_marks():
    cluster = [HostCapacity("h1", 4096, 8), HostCapacity("h2", 4096, 8, in_maintenance=True),
               HostCapacity("h3", 4096, 8)]
    guests = [Guest("g1", 1024, 1, host="h1"), Guest("g3", 1024, 1, host="h3")]
    proof = prove_rolling_capacity(["h1", "h3"], cluster, guests, NO_RESERVE)
    assert proof.ok
    assert all(m.destination != "h2" for s in proof.steps for m in s.plan.moves)


def test_capacity_proof_rejects_unknown_hosts():
    with pytest.raises(ValueError, match="not in the cluster"):
        prove_rolling_capacity(["nope"], hosts(("h1", 1, 1)), [])


# --- rebalance -------------------------------------------------------------------------------

def test_rebalance_evens_out_with_few_moves():
    cluster = hosts(("h1", 8192, 8), ("h2", 8192, 8), ("h3", 8192, 8))
    guests = [Guest("g%d" % i, 1024, 1, host="h1") for i in range(6)]
    moves = plan_rebalance(cluster, guests, NO_RESERVE, threshold=0.05)
    assert len(moves) == 4
    after = {g.name: g.host for g in guests}
    after.update({m.guest: m.destination for m in moves})
    counts = {h: list(after.values()).count(h) for h in ("h1", "h2", "h3")}
    assert counts == {"h1": 2, "h2": 2, "h3": 2}


def test_rebalance_does_nothing_within_threshold():
    cluster = hosts(("h1", 8192, 8), ("h2", 8192, 8))
    guests = [Guest("a", 1024, 1, host="h1"), Guest("b", 512, 1, host="h2")]
    assert plan_rebalance(cluster, guests, NO_RESERVE, threshold=0.10) == []
    # With a tight threshold a move of "a" would only mirror the imbalance: no move either.
    assert plan_rebalance(cluster, guests, NO_RESERVE, threshold=0.0) == []


def test_rebalance_respects_constraints():
    cluster = [HostCapacity("h1", 8192, 8), HostCapacity("h2", 8192, 8, in_maintenance=True),
               HostCapacity("h3", 8192, 8)]
    guests = [Guest("pinned", 4096, 1, host="h1", movable=False),
              Guest("db1", 1024, 1, host="h1", anti_affinity_group="db"),
              Guest("db3", 1024, 1, host="h3", anti_affinity_group="db")]
    assert plan_rebalance(cluster, guests, NO_RESERVE, threshold=0.0) == []


def test_rebalance_max_moves():
    cluster = hosts(("h1", 8192, 8), ("h2", 8192, 8))
    guests = [Guest("g%d" % i, 512, 1, host="h1") for i in range(8)]
    assert len(plan_rebalance(cluster, guests, NO_RESERVE, threshold=0.0, max_moves=1)) == 1


# --- properties --------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(
    host_mem=st.lists(st.integers(min_value=512, max_value=8192), min_size=2, max_size=5),
    guest_specs=st.lists(st.tuples(st.integers(min_value=64, max_value=3000), st.integers(1, 4),
                                   st.sampled_from([None, "x", "y"]), st.integers(0, 4)),
                         max_size=14),
    overcommit=st.sampled_from([1.0, 1.5]),
    order=st.sampled_from(["largest_first", "smallest_first", "as_listed"]),
)
def test_plans_never_overcommit_or_break_anti_affinity(host_mem, guest_specs, overcommit, order):
    cluster = [HostCapacity("h%d" % i, mem, 4) for i, mem in enumerate(host_mem)]
    guests = [Guest("g%d" % i, mem, vcpus, host="h%d" % (where % len(cluster)), anti_affinity_group=group)
              for i, (mem, vcpus, group, where) in enumerate(guest_specs)]
    policy = PlacementPolicy(memory_overcommit=overcommit, cpu_overcommit=2.0, memory_reserve_mib=128,
                             order=order)
    plan = plan_drain("h0", cluster, guests, policy)
    final = {g.name: g.host for g in guests}
    final.update({m.guest: m.destination for m in plan.moves})
    assert all(m.destination != "h0" for m in plan.moves)
    placed_or_not = {m.guest for m in plan.moves} | {u.guest for u in plan.unplaced}
    assert placed_or_not == {g.name for g in guests if g.host == "h0"}
    by_name = {g.name: g for g in guests}
    for host in cluster[1:]:
        # Only hosts that received guests must respect the limits: pre-existing overload is
        # not the planner's doing.
        if not any(m.destination == host.name for m in plan.moves):
            continue
        here = [by_name[n] for n, h in final.items() if h == host.name]
        assert sum(g.memory_mib for g in here) <= host.memory_total_mib * overcommit - 128
        assert sum(g.vcpus for g in here) <= host.cpus * 2.0
        arrived_groups = [by_name[m.guest].anti_affinity_group for m in plan.moves
                          if m.destination == host.name and by_name[m.guest].anti_affinity_group]
        for group in arrived_groups:
            assert sum(1 for g in here if g.anti_affinity_group == group) == 1


def test_memory_loads():
    loads = memory_loads(hosts(("h1", 1000, 1), ("h2", 1000, 1)), [Guest("a", 250, 1, host="h1")])
    assert loads == {"h1": 0.25, "h2": 0.0}


def test_capacity_proof_with_waves_keeps_a_whole_wave_out_of_service():
    cluster = hosts(("h1", 2048, 8), ("h2", 2048, 8), ("h3", 2048, 8))
    guests = [Guest("g1", 1024, 1, host="h1"), Guest("g2", 1024, 1, host="h2")]
    # One at a time, g1 may go to h2 and back; with h1 and h2 out together both must fit on h3.
    proof = prove_rolling_capacity([["h1", "h2"], "h3"], cluster, guests, NO_RESERVE)
    assert proof.ok, proof.problems()
    assert [(s.step, s.host) for s in proof.steps] == [(1, "h1"), (1, "h2"), (2, "h3")]
    assert {m.guest: m.destination for s in proof.steps[:2] for m in s.plan.moves} == {"g1": "h3", "g2": "h3"}
    # h3's two guests then go back to h1/h2, which are in service again.
    assert {m.destination for m in proof.steps[2].plan.moves} == {"h1", "h2"}
    too_big = [Guest("g1", 1536, 1, host="h1"), Guest("g2", 1024, 1, host="h2")]
    failing = prove_rolling_capacity([["h1", "h2"], "h3"], cluster, too_big, NO_RESERVE)
    assert failing.problems() == [
        "draining h2 (step 1): g2 (1024 MiB, 1 vCPU) cannot be placed: h1: in maintenance; "
        "h3: memory: needs 1024 MiB, 512 MiB left (total 2048 MiB x 1 - reserve 0 MiB - 1536 MiB allocated)"]


def test_capacity_proof_tracks_host_free_memory_across_steps():
    # Host-reported free memory follows the guests: after g1 lands on h2, h2 reports 512 MiB
    # less free when h3 is drained. Re-planning from the original free figures would accept h2.
    cluster = [HostCapacity("h1", 1024, 8, memory_free_mib=0), HostCapacity("h2", 8192, 8, memory_free_mib=1500),
               HostCapacity("h3", 8192, 8, memory_free_mib=1500)]
    guests = [Guest("g1", 512, 1, host="h1"), Guest("g3", 1024, 1, host="h3")]
    policy = PlacementPolicy(memory_reserve_mib=0)
    proof = prove_rolling_capacity(["h1", "h3"], cluster, guests, policy)
    assert proof.steps[0].plan.moves[0].destination == "h2"
    assert not proof.ok
    reasons = proof.steps[1].plan.unplaced[0].per_host
    assert "host reports 988 MiB free" in reasons["h2"]
    assert "host reports 512 MiB free" in reasons["h1"]  # g1's memory came back to h1
    assert plan_drain("h3", cluster, guests, policy).ok  # alone, h3 would drain fine


def test_rebalance_uses_a_less_loaded_source_when_the_top_host_is_stuck():
    cluster = hosts(("h1", 8192, 8), ("h2", 8192, 8), ("h3", 8192, 8))
    guests = [Guest("pinned", 6144, 1, host="h1", movable=False),
              Guest("b1", 1024, 1, host="h2"), Guest("b2", 1024, 1, host="h2"), Guest("b3", 1024, 1, host="h2")]
    moves = plan_rebalance(cluster, guests, NO_RESERVE, threshold=0.05)
    assert [(m.guest, m.source, m.destination) for m in moves] == [("b1", "h2", "h3")]


# --- move-back ---------------------------------------------------------------------------------

def test_move_back_waits_for_room_made_by_guests_leaving_the_home_host():
    # a (home h1) does not fit on h1 until b (home h3) has left it: b goes first.
    cluster = hosts(("h1", 2048, 8), ("h2", 2048, 8), ("h3", 2048, 8))
    guests = [Guest("a", 1536, 1, host="h2"), Guest("b", 1536, 1, host="h1")]
    plan = plan_move_back(cluster, guests, {"a": "h1", "b": "h3"}, NO_RESERVE)
    assert [(m.guest, m.source, m.destination) for m in plan.moves] == [("b", "h1", "h3"), ("a", "h2", "h1")]
    assert plan.skipped == []
    # Two full hosts swapping their guests: neither fits while the other is there; both stay.
    swap = plan_move_back(cluster[:2], guests, {"a": "h1", "b": "h2"}, NO_RESERVE)
    assert swap.moves == [] and [s.guest for s in swap.skipped] == ["a", "b"]


def test_move_back_skips_with_a_reason_what_cannot_go_home():
    cluster = hosts(("h1", 2048, 8), ("h2", 4096, 8), ("h3", 4096, 8)) + [HostCapacity("h4", 4096, 8, in_maintenance=True)]
    guests = [Guest("big", 1536, 1, host="h2"), Guest("new", 1024, 1, host="h1"),  # new guest, no origin
              Guest("pinned", 256, 1, host="h2", movable=False, unmovable_reason="host device passthrough"),
              Guest("web1", 256, 1, host="h3", anti_affinity_group="web"),
              Guest("web2", 256, 1, host="h2", anti_affinity_group="web"),
              Guest("away", 256, 1, host="h2"), Guest("home", 256, 1, host="h3"), Guest("gone", 256, 1, host="h2")]
    origins = {"big": "h1", "pinned": "h1", "web1": "h2", "web2": "h2", "away": "h4", "home": "h3",
               "gone": "h9", "new": "h1"}
    plan = plan_move_back(cluster, guests, origins, NO_RESERVE)
    assert plan.moves == []
    reasons = {s.guest: (s.source, s.destination, s.reason) for s in plan.skipped}
    assert set(reasons) == {"big", "pinned", "web1", "away", "gone"}  # home and new are at home
    assert reasons["big"] == ("h2", "h1", "it does not fit on its home host h1 now: memory: needs 1536 MiB, "
                                          "1024 MiB left (total 2048 MiB x 1 - reserve 0 MiB - 1024 MiB allocated)")
    assert reasons["pinned"][2] == "it cannot live-migrate (host device passthrough)"
    assert reasons["web1"][2] == "it does not fit on its home host h2 now: anti-affinity: group 'web' already has web2 here"
    assert reasons["away"][2] == "its home host h4 is in maintenance"
    assert reasons["gone"][2].startswith("its home host h9 was not read now")
    marked = plan_move_back(cluster, guests, origins, NO_RESERVE, marked=["h1"])
    assert dict((s.guest, s.reason) for s in marked.skipped)["big"] == "its home host h1 is in maintenance"


def test_move_back_counts_host_free_memory_and_vcpus_and_keeps_inputs():
    cluster = [HostCapacity("h1", 8192, 2, memory_free_mib=700), HostCapacity("h2", 8192, 8)]
    guests = [Guest("a", 512, 1, host="h2"), Guest("b", 512, 1, host="h2"), Guest("c", 64, 4, host="h2")]
    before = [Guest(**vars(g)) for g in guests]
    plan = plan_move_back(cluster, guests, {"a": "h1", "b": "h1", "c": "h1"},
                          PlacementPolicy(memory_reserve_mib=0, cpu_overcommit=1.0))
    assert [m.guest for m in plan.moves] == ["a"]
    reasons = {s.guest: s.reason for s in plan.skipped}
    assert "free memory: needs 512 MiB, host reports 188 MiB free" in reasons["b"]
    assert "vCPUs: needs 4, 1 left" in reasons["c"]
    assert guests == before


# --- exact boundaries of the capacity accounting (issue 17): a guest that fills a limit to the
# MiB or vCPU is placed, one 1 MiB or one vCPU more is refused, on every limit the planner keeps.

@pytest.mark.parametrize("guest_mib, fits", [(1536, True), (1537, False)])
def test_allocation_limit_is_exact_to_the_mib(guest_mib, fits):
    # h2: 2048 MiB total - 512 MiB reserve; no free-memory figure, so only allocation counts.
    cluster = hosts(("h1", 4096, 8), ("h2", 2048, 8))
    plan = plan_drain("h1", cluster, [Guest("a", guest_mib, 1, host="h1")], PlacementPolicy())
    assert plan.ok is fits
    if not fits:
        assert plan.unplaced[0].per_host["h2"] == ("memory: needs 1537 MiB, 1536 MiB left (total 2048 MiB x 1"
                                                   " - reserve 512 MiB - 0 MiB allocated)")


@pytest.mark.parametrize("guest_mib, fits", [(512, True), (513, False)])
def test_allocation_limit_counts_guests_already_there_to_the_mib(guest_mib, fits):
    cluster = hosts(("h1", 4096, 8), ("h2", 2048, 8))
    guests = [Guest("resident", 1024, 1, host="h2"), Guest("a", guest_mib, 1, host="h1")]
    assert plan_drain("h1", cluster, guests, PlacementPolicy()).ok is fits


@pytest.mark.parametrize("guest_mib, fits", [(1024, True), (1025, False)])
def test_free_memory_limit_is_exact_to_the_mib(guest_mib, fits):
    # Allocation would allow 3584 MiB; the host reports 1536 MiB free, minus the 512 MiB reserve.
    cluster = [HostCapacity("h1", 4096, 8), HostCapacity("h2", 4096, 8, memory_free_mib=1536)]
    plan = plan_drain("h1", cluster, [Guest("a", guest_mib, 1, host="h1")], PlacementPolicy())
    assert plan.ok is fits
    if not fits:
        assert plan.unplaced[0].per_host["h2"] == "free memory: needs 1025 MiB, host reports 1536 MiB free (reserve 512 MiB)"


def test_free_memory_shrinks_with_each_guest_placed_to_the_mib():
    # 2048 MiB free - 512 reserve = 1536: a 1024 MiB guest, then 512 MiB fit exactly, 513 does not.
    cluster = [HostCapacity("h1", 8192, 8), HostCapacity("h2", 8192, 8, memory_free_mib=2048)]
    exact = [Guest("a", 1024, 1, host="h1"), Guest("b", 512, 1, host="h1")]
    assert plan_drain("h1", cluster, exact, PlacementPolicy()).ok
    over = [Guest("a", 1024, 1, host="h1"), Guest("b", 513, 1, host="h1")]
    plan = plan_drain("h1", cluster, over, PlacementPolicy())
    assert [u.guest for u in plan.unplaced] == ["b"]
    assert "host reports 1024 MiB free" in plan.unplaced[0].per_host["h2"]


def test_free_memory_is_ignored_when_the_policy_says_so():
    cluster = [HostCapacity("h1", 4096, 8), HostCapacity("h2", 4096, 8, memory_free_mib=0)]
    guests = [Guest("a", 1024, 1, host="h1")]
    assert not plan_drain("h1", cluster, guests, PlacementPolicy()).ok
    assert plan_drain("h1", cluster, guests, PlacementPolicy(respect_free_memory=False)).ok


@pytest.mark.parametrize("vcpus, fits", [(6, True), (7, False)])
def test_vcpu_limit_is_exact_and_counts_guests_already_there(vcpus, fits):
    # 2 CPUs x 4.0 = 8 vCPUs, 2 already allocated.
    cluster = hosts(("h1", 8192, 8), ("h2", 8192, 2))
    guests = [Guest("resident", 256, 2, host="h2"), Guest("a", 256, vcpus, host="h1")]
    plan = plan_drain("h1", cluster, guests, PlacementPolicy(memory_reserve_mib=0))
    assert plan.ok is fits
    if not fits:
        assert plan.unplaced[0].per_host["h2"] == "vCPUs: needs 7, 6 left (2 CPUs x 4 - 2 allocated)"


def test_a_guest_leaving_a_host_gives_its_memory_and_vcpus_back():
    # Draining h2 first frees it; the move back of its guest must count what left.
    cluster = hosts(("h1", 2048, 1), ("h2", 2048, 1), ("h3", 2048, 1))
    guests = [Guest("a", 1536, 4, host="h1"), Guest("b", 1536, 4, host="h2")]
    proof = prove_rolling_capacity(["h1", "h2"], cluster, guests, PlacementPolicy())
    assert proof.ok, proof.problems


# --- what a plan says, and the refusals of bad input (issue 17: survivors of `make mutation`) ---

def test_a_plan_as_a_dict_names_every_move_unplaced_guest_and_unmovable_guest():
    cluster = hosts(("h1", 8192, 8), ("h2", 2048, 8))
    guests = [Guest("a", 1024, 2, host="h1"), Guest("big", 4096, 1, host="h1"),
              Guest("pinned", 256, 1, host="h1", movable=False, unmovable_reason="passthrough")]
    plan = plan_drain("h1", cluster, guests, PlacementPolicy(memory_reserve_mib=0, unmovable="leave"))
    why = "memory: needs 4096 MiB, 2048 MiB left (total 2048 MiB x 1 - reserve 0 MiB - 0 MiB allocated)"
    assert plan.to_dict() == {
        "source": "h1", "ok": False,
        "moves": [{"guest": "a", "source": "h1", "destination": "h2", "memory_mib": 1024, "vcpus": 2}],
        "unplaced": [{"guest": "big", "source": "h1", "memory_mib": 4096, "vcpus": 1, "per_host": {"h2": why},
                      "reason": "h2: " + why}],
        "unmovable": [{"guest": "pinned", "action": "leave", "reason": "passthrough"}],
        "problems": ["big (4096 MiB, 1 vCPU) cannot be placed: h2: " + why]}


def test_a_capacity_proof_as_a_dict_names_each_step():
    cluster = hosts(("h1", 2048, 8), ("h2", 2048, 8))
    proof = prove_rolling_capacity(["h1", "h2"], cluster, [Guest("a", 512, 1, host="h1")], NO_RESERVE)
    as_dict = proof.to_dict()
    assert (as_dict["ok"], as_dict["problems"]) == (True, [])
    assert [(s["step"], s["host"], s["plan"]["moves"]) for s in as_dict["steps"]] == [
        (1, "h1", [{"guest": "a", "source": "h1", "destination": "h2", "memory_mib": 512, "vcpus": 1}]),
        (2, "h2", [{"guest": "a", "source": "h2", "destination": "h1", "memory_mib": 512, "vcpus": 1}])]


@pytest.mark.parametrize("kwargs, message", [
    ({"order": "random"}, "order must be one of largest_first, smallest_first, as_listed, not 'random'"),
    ({"unmovable": "destroy"}, "unmovable must be one of fail, shutdown, leave, not 'destroy'"),
    ({"memory_overcommit": 0}, "overcommit ratios must be positive"),
    ({"cpu_overcommit": 0}, "overcommit ratios must be positive"),
    ({"memory_overcommit": 1.5, "cpu_overcommit": -1}, "overcommit ratios must be positive"),
    ({"memory_reserve_mib": -1}, "memory_reserve_mib must not be negative"),
])
def test_a_bad_policy_is_refused_saying_why(kwargs, message):
    with pytest.raises(ValueError) as caught:
        PlacementPolicy(**kwargs)
    assert str(caught.value) == message


def test_a_policy_at_its_limits_is_accepted():
    assert PlacementPolicy(memory_reserve_mib=0, memory_overcommit=0.1, cpu_overcommit=0.1).memory_reserve_mib == 0


def test_duplicate_hosts_and_guests_are_refused_by_name():
    with pytest.raises(ValueError) as caught:
        plan_drain("h1", hosts(("h1", 1024, 1), ("h2", 1024, 1), ("h1", 1024, 1)), [])
    assert str(caught.value) == "duplicate host names: ['h1']"
    with pytest.raises(ValueError) as caught:
        plan_drain("h1", hosts(("h1", 1024, 1), ("h2", 1024, 1)), [Guest("a", 1, 1, host="h1"), Guest("a", 1, 1, host="h2")])
    assert str(caught.value) == "duplicate guest name 'a'"


def test_an_unknown_source_or_guest_policy_is_refused_by_name():
    with pytest.raises(ValueError) as caught:
        plan_drain("h9", hosts(("h1", 1024, 1)), [])
    assert str(caught.value) == "unknown source host 'h9'"
    with pytest.raises(ValueError) as caught:
        plan_drain("h1", hosts(("h1", 1024, 1)), [Guest("a", 1, 1, host="h1", movable=False, unmovable_policy="kill")])
    assert str(caught.value) == "guest 'a': unmovable_policy must be one of fail, shutdown, leave"


def test_a_full_host_says_zero_mib_left_not_less():
    cluster = hosts(("h1", 4096, 8), ("h2", 1024, 8))
    guests = [Guest("resident", 1024, 1, host="h2"), Guest("a", 1, 1, host="h1")]
    assert plan_drain("h1", cluster, guests, NO_RESERVE).unplaced[0].per_host["h2"].startswith(
        "memory: needs 1 MiB, 0 MiB left")


def test_between_equal_hosts_the_one_with_fewer_vcpus_allocated_then_the_first_name_wins():
    cluster = hosts(("h1", 8192, 8), ("hb", 4096, 8), ("hc", 4096, 8))
    guests = [Guest("a", 512, 1, host="h1"), Guest("on-hb", 256, 1, host="hb"), Guest("on-hc", 256, 3, host="hc")]
    assert destinations(plan_drain("h1", cluster, guests, NO_RESERVE)) == {"a": "hb"}
    cluster = hosts(("h1", 8192, 8), ("hc", 4096, 8), ("hb", 4096, 8))
    assert destinations(plan_drain("h1", cluster, [Guest("a", 512, 1, host="h1")], NO_RESERVE)) == {"a": "hb"}


def test_largest_first_orders_equal_memory_by_vcpus_then_name():
    cluster = hosts(("h1", 8192, 8), ("h2", 8192, 8))
    guests = [Guest("b", 512, 1, host="h1"), Guest("c", 512, 4, host="h1"), Guest("a", 512, 1, host="h1")]
    assert [m.guest for m in plan_drain("h1", cluster, guests, NO_RESERVE).moves] == ["c", "a", "b"]


def test_the_capacity_proof_asks_the_cpu_check():
    cluster = hosts(("h1", 2048, 8), ("h2", 2048, 8))
    proof = prove_rolling_capacity(["h1"], cluster, [Guest("a", 512, 1, host="h1")], NO_RESERVE,
                                   cpu_check=lambda guest, host: "CPU model differs")
    assert proof.problems() == ["draining h1 (step 1): a (512 MiB, 1 vCPU) cannot be placed: h2: CPU cannot run the"
                                " guest: CPU model differs"]


def test_a_host_gives_back_memory_and_the_anti_affinity_group_when_a_guest_leaves():
    from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import HostState
    policy = PlacementPolicy(memory_reserve_mib=0)
    state = HostState(HostCapacity("h2", 4096, 8, memory_free_mib=3000), policy)
    first, second = Guest("g1", 512, 1, anti_affinity_group="db"), Guest("g2", 256, 1, anti_affinity_group="db")
    plain = Guest("web", 128, 1)
    for guest in (first, second, plain):
        state.add(guest, arriving=True)
    assert state.memory_free == 3000 - 896
    newcomer = Guest("g3", 1, 1, anti_affinity_group="db")
    assert state.refusal(newcomer, policy) == "anti-affinity: group 'db' already has g1 here"
    state.remove(plain)
    assert state.refusal(newcomer, policy) == "anti-affinity: group 'db' already has g1 here"
    state.remove(first)  # g2 of the same group is still there
    assert (state.memory_free, state.memory_allocated, state.vcpus_allocated) == (3000 - 256, 256, 1)
    assert state.refusal(newcomer, policy) == "anti-affinity: group 'db' already has g2 here"
    state.remove(second)
    assert state.refusal(newcomer, policy) is None and state.memory_free == 3000
