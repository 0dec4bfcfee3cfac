"""capacity.py (issue 17): the one conversion from hypervisor facts to the planners' input. A
MiB or a guest counted wrong here makes every proof and drain plan wrong the same way."""
import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import capacity
from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import Guest, HostCapacity, PlacementPolicy


def guest_facts(name="g1", **kwargs):
    facts = {"name": name, "active": True, "memory_mib": 1024, "max_memory_mib": 1024, "vcpus": 2,
             "movable": True, "migration_blockers": [], "local_disks": [], "migration_notes": []}
    facts.update(kwargs)
    return facts


def host_facts(*guests, total=8192, free=6000, cpus=4):
    return {"memory_total_mib": total, "memory_free_mib": free, "cpus": cpus, "guests": list(guests)}


@pytest.mark.parametrize("current, maximum, reserved", [
    (1024, 2048, 2048), (2048, 1024, 2048), (1025, 1024, 1025), (None, 512, 512), (512, None, 512), (None, None, 0)])
def test_a_guest_reserves_the_larger_of_its_current_and_maximum_memory(current, maximum, reserved):
    assert capacity.reserved_memory_mib({"memory_mib": current, "max_memory_mib": maximum}) == reserved


def test_the_anti_affinity_group_is_the_first_by_name_that_lists_the_guest():
    groups = {"zz": ["g1"], "aa": ["g2", "g1"], "mm": None}
    assert capacity.anti_affinity_group("g1", groups) == "aa"
    assert capacity.anti_affinity_group("g3", groups) is None
    assert capacity.anti_affinity_group("g1", None) is None


@pytest.mark.parametrize("facts, kwargs, reason", [
    (guest_facts(), {}, None),
    (guest_facts(), {"unmovable_guests": ["g1"]}, "declared unmovable"),
    (guest_facts(migration_blockers=["host device passthrough", "vhost-user"]), {},
     "host device passthrough; vhost-user"),
    (guest_facts(movable=False), {}, "the hypervisor facts say it cannot live-migrate"),
    (guest_facts(movable=None), {}, None),
    (guest_facts(local_disks=["vda"]), {}, "local disks and copy_storage is off (disks outside the shared storage)"),
    (guest_facts(local_disks=["vda"], migration_notes=["vda on /var/lib", "vdb too"]), {},
     "local disks and copy_storage is off (vda on /var/lib; vdb too)"),
    (guest_facts(local_disks=["vda"]), {"copy_storage": True}, None),
    # the first reason wins: what the operator declared, then blockers, then the facts' verdict
    (guest_facts(migration_blockers=["passthrough"], movable=False), {"unmovable_guests": ["g1"]}, "declared unmovable"),
    (guest_facts(migration_blockers=["passthrough"], movable=False, local_disks=["vda"]), {}, "passthrough"),
    (guest_facts(movable=False, local_disks=["vda"]), {}, "the hypervisor facts say it cannot live-migrate"),
])
def test_why_a_guest_cannot_move(facts, kwargs, reason):
    assert capacity.unmovable_reason(facts, **kwargs) == reason


def test_a_guest_from_its_facts():
    facts = guest_facts(memory_mib=512, max_memory_mib=2048, vcpus=3, cpu_xml="<cpu/>", arch="x86_64", domain_type="kvm")
    assert capacity.guest_from_facts(facts, "hv-1", anti_affinity_groups={"db": ["g1"]}) == Guest(
        name="g1", memory_mib=2048, vcpus=3, host="hv-1", anti_affinity_group="db", movable=True,
        unmovable_reason=None, unmovable_policy=None, cpu={"xml": "<cpu/>", "arch": "x86_64", "virttype": "kvm"})


def test_a_guest_without_a_vcpu_count_counts_one():
    assert capacity.guest_from_facts(guest_facts(vcpus=None), "hv-1").vcpus == 1


def test_the_stop_allowed_list_decides_each_guests_policy():
    assert capacity.guest_from_facts(guest_facts(), "hv-1", stop_allowed_guests=["g1"]).unmovable_policy == "shutdown"
    assert capacity.guest_from_facts(guest_facts(), "hv-1", stop_allowed_guests=["g2"]).unmovable_policy == "fail"
    assert capacity.guest_from_facts(guest_facts(), "hv-1", stop_allowed_guests=[]).unmovable_policy == "fail"
    assert capacity.guest_from_facts(guest_facts(), "hv-1").unmovable_policy is None


def test_an_unmovable_guest_carries_its_reason():
    guest = capacity.guest_from_facts(guest_facts(), "hv-1", unmovable_guests=["g1"])
    assert (guest.movable, guest.unmovable_reason) == (False, "declared unmovable")
    assert not capacity.guest_from_facts(guest_facts(local_disks=["vda"]), "hv-1").movable
    assert capacity.guest_from_facts(guest_facts(local_disks=["vda"]), "hv-1", copy_storage=True).movable


def test_a_host_from_its_facts():
    assert capacity.host_from_facts("hv-1", host_facts(total=8192.0, free=6000.0, cpus=4.0), 1, "c1") == HostCapacity(
        name="hv-1", memory_total_mib=8192, cpus=4, memory_free_mib=6000, in_maintenance=True, cpu="hv-1",
        cluster="c1")
    host = capacity.host_from_facts("hv-2", {"memory_total_mib": 4096, "cpus": 2})
    assert (host.memory_free_mib, host.in_maintenance, host.cluster) == (None, False, None)
    assert capacity.host_from_facts("hv-2", host_facts(free=0)).memory_free_mib == 0


def test_only_running_guests_count():
    facts = host_facts(guest_facts("on"), guest_facts("off", active=False), guest_facts("unknown", active=None))
    assert [g["name"] for g in capacity.running_guests(facts)] == ["on"]
    assert capacity.running_guests({"guests": None}) == []
    assert capacity.running_guests({}) == []


@pytest.mark.parametrize("guests", ["g1", {"name": "g1"}, [guest_facts(), "g2"]])
def test_guests_that_are_not_a_list_of_dicts_are_refused(guests):
    with pytest.raises(ValueError, match="must be a list of guest dicts"):
        capacity.running_guests({"guests": guests})


def test_a_cluster_from_the_facts_of_its_hosts():
    facts = {"hv-2": host_facts(guest_facts("b"), guest_facts("off", active=False)),
             "hv-1": host_facts(guest_facts("a", max_memory_mib=4096)),
             "hv-0": None, "hv-3": {}}
    hosts, guests = capacity.cluster_from_facts(facts, marked=["hv-2"], unmovable_guests=["a"], cluster="c1",
                                                anti_affinity_groups={"grp": ["b"]}, stop_allowed_guests=["a"])
    assert [(h.name, h.in_maintenance, h.cluster) for h in hosts] == [("hv-1", False, "c1"), ("hv-2", True, "c1")]
    assert [(g.name, g.host, g.memory_mib, g.movable, g.unmovable_policy, g.anti_affinity_group) for g in guests] == [
        ("a", "hv-1", 4096, False, "shutdown", None), ("b", "hv-2", 1024, True, "fail", "grp")]


def test_the_members_given_decide_which_hosts_and_in_what_order():
    facts = {"hv-1": host_facts(guest_facts("a")), "hv-2": host_facts(guest_facts("b")), "hv-9": host_facts()}
    hosts, guests = capacity.cluster_from_facts(facts, members=["hv-2", "hv-1", "hv-5"])
    assert [h.name for h in hosts] == ["hv-2", "hv-1"] and [g.name for g in guests] == ["b", "a"]


def test_copy_storage_makes_guests_with_local_disks_movable_in_a_cluster():
    facts = {"hv-1": host_facts(guest_facts("a", local_disks=["vda"]))}
    assert not capacity.cluster_from_facts(facts)[1][0].movable
    assert capacity.cluster_from_facts(facts, copy_storage=True)[1][0].movable


def test_facts_that_are_not_a_dict_are_refused_naming_the_host():
    with pytest.raises(ValueError, match="the facts of host hv-1 must be the hypervisor result"):
        capacity.cluster_from_facts({"hv-1": ["not", "facts"]})


def test_cluster_plan_inputs_from_module_parameters():
    params = {"facts": {"hv-2": host_facts(guest_facts("b", local_disks=["vda"]), guest_facts("c")), "hv-1": host_facts()},
              "cluster": "c1", "marked": ["hv-1"], "unmovable_guests": ["c"], "anti_affinity_groups": {"g": ["b"]},
              "copy_storage": True, "policy": {"memory_reserve_mib": 0}}
    policy, hosts, guests = capacity.cluster_plan_inputs(params)
    assert policy == PlacementPolicy(memory_reserve_mib=0)
    assert [(h.name, h.in_maintenance, h.cluster) for h in hosts] == [("hv-1", True, "c1"), ("hv-2", False, "c1")]
    assert [(g.name, g.movable, g.anti_affinity_group) for g in guests] == [("b", True, "g"), ("c", False, None)]
