"""Rolling-maintenance wave planning."""
import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.virtfleet.cluster.plugins.module_utils.waves import (
    Wave, assert_waves_valid, plan_waves, wave_violations)

LAB = [("a1", "lab-a"), ("a2", "lab-a"), ("a3", "lab-a"), ("b1", "lab-b"), ("b2", "lab-b"), ("b3", "lab-b")]


def test_clusters_go_in_parallel_one_host_each():
    waves = plan_waves(LAB)
    assert [w.hosts for w in waves] == [["a1", "b1"], ["a2", "b2"], ["a3", "b3"]]
    assert waves[0].index == 1
    assert waves[0].to_dict() == {"index": 1, "hosts": ["a1", "b1"],
                                  "by_cluster": {"lab-a": ["a1"], "lab-b": ["b1"]}}


def test_uneven_clusters_never_exceed_the_limit():
    pairs = [("a%d" % i, "big") for i in range(5)] + [("s1", "small")]
    waves = plan_waves(pairs, max_unavailable=2)
    assert [w.by_cluster for w in waves] == [
        {"big": ["a0", "a1"], "small": ["s1"]}, {"big": ["a2", "a3"]}, {"big": ["a4"]}]
    cluster_of = dict(pairs)
    assert wave_violations(waves, cluster_of, 2) == []


def test_per_cluster_limits():
    waves = plan_waves(LAB, max_unavailable={"lab-a": 2})
    assert [w.by_cluster for w in waves] == [
        {"lab-a": ["a1", "a2"], "lab-b": ["b1"]}, {"lab-a": ["a3"], "lab-b": ["b2"]}, {"lab-b": ["b3"]}]


def test_skip_leaves_hosts_out_and_empty_clusters_out():
    waves = plan_waves(LAB, skip=["a1", "b1", "b2", "b3"])
    assert [w.by_cluster for w in waves] == [{"lab-a": ["a2"]}, {"lab-a": ["a3"]}]
    assert plan_waves(LAB, skip=[h for h, _c in LAB]) == []


def test_fewest_guests_first_keeps_given_order_on_ties():
    counts = {"a1": 5, "a2": 0, "a3": 0, "b1": 1, "b2": 3, "b3": 2}
    waves = plan_waves(LAB, order="fewest_guests", guest_counts=counts)
    assert [w.hosts for w in waves] == [["a2", "b1"], ["a3", "b3"], ["a1", "b2"]]
    most = plan_waves(LAB, order="most_guests", guest_counts=counts)
    assert most[0].hosts == ["a1", "b2"]


def test_order_by_key_function_and_name():
    waves = plan_waves({"x2": "c", "x1": "c"}, order="name")
    assert [w.hosts for w in waves] == [["x1"], ["x2"]]
    waves = plan_waves({"x1": "c", "x2": "c"}, order=lambda h: -int(h[1:]))
    assert [w.hosts for w in waves] == [["x2"], ["x1"]]


def test_bad_inputs():
    with pytest.raises(ValueError, match="needs guest_counts"):
        plan_waves(LAB, order="fewest_guests")
    with pytest.raises(ValueError, match="lacks hosts: a2"):
        plan_waves(LAB, order="fewest_guests", guest_counts={h: 0 for h, _c in LAB if h != "a2"})
    with pytest.raises(ValueError, match=">= 1"):
        plan_waves(LAB, max_unavailable=0)
    with pytest.raises(ValueError, match="listed twice"):
        plan_waves([("a1", "x"), ("a1", "y")])
    with pytest.raises(ValueError, match="order must be one of"):
        plan_waves(LAB, order="random")


def test_violations_are_reported():
    cluster_of = dict(LAB)
    problems = wave_violations([["a1", "a2", "b1"], ["a1"], ["zz"]], cluster_of, 1)
    assert problems == [
        "wave 1 takes 2 hosts of cluster lab-a (a1, a2) at once; max_unavailable is 1",
        "host a1 is in wave 1 and wave 2",
        "host zz (wave 3) has no cluster",
    ]
    with pytest.raises(ValueError, match="invalid maintenance waves"):
        assert_waves_valid([Wave(1, {"lab-a": ["a1", "a2"]})], cluster_of)


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=5),
       limit=st.integers(min_value=1, max_value=3), skip_every=st.integers(min_value=2, max_value=5))
def test_every_host_exactly_once_and_within_limits(sizes, limit, skip_every):
    pairs = [("c%d-h%d" % (c, h), "c%d" % c) for c, size in enumerate(sizes) for h in range(size)]
    skip = {host for i, (host, _c) in enumerate(pairs) if i % skip_every == 0}
    waves = plan_waves(pairs, max_unavailable=limit, skip=skip)
    planned = [h for w in waves for h in w.hosts]
    assert sorted(planned) == sorted(h for h, _c in pairs if h not in skip)
    assert wave_violations(waves, dict(pairs), limit) == []
    # Clusters run in parallel: the number of waves is set by the largest cluster alone.
    remaining = [sum(1 for h, c in pairs if c == "c%d" % i and h not in skip) for i in range(len(sizes))]
    assert len(waves) == max([-(-n // limit) for n in remaining] + [0])


@pytest.mark.parametrize("order", ["given", "name", "fewest_guests", "most_guests"])
def test_first_hosts_lead_their_cluster_whatever_the_order(order):
    counts = {"a1": 0, "a2": 1, "a3": 9, "b1": 0, "b2": 5, "b3": 2}
    waves = plan_waves(LAB, order=order, guest_counts=counts, first=["a3", "b3"])
    assert waves[0].by_cluster == {"lab-a": ["a3"], "lab-b": ["b3"]}
    assert sorted(h for w in waves for h in w.hosts) == sorted(h for h, _c in LAB)


def test_first_hosts_beyond_the_limit_fill_the_first_waves():
    waves = plan_waves(LAB, max_unavailable={"lab-a": 2}, order="name", first=["a3", "a2", "b2"])
    assert [w.by_cluster for w in waves] == [
        {"lab-a": ["a2", "a3"], "lab-b": ["b2"]}, {"lab-a": ["a1"], "lab-b": ["b1"]}, {"lab-b": ["b3"]}]


# --- exact limits of the wave check (issue 17: survivors of `make mutation`) --------------------

CLUSTER_OF = {"a1": "lab-a", "a2": "lab-a", "b1": "lab-b", "b2": "lab-b", "b3": "lab-b"}


def test_the_default_limit_is_one_host_per_cluster_and_wave():
    assert wave_violations([["a1", "a2"]], CLUSTER_OF) == [
        "wave 1 takes 2 hosts of cluster lab-a (a1, a2) at once; max_unavailable is 1"]
    assert wave_violations([["a1", "b1"]], CLUSTER_OF) == []


def test_the_limits_given_are_the_ones_checked():
    assert_waves_valid([["a1", "a2"]], CLUSTER_OF, max_unavailable=2)
    with pytest.raises(ValueError) as caught:
        assert_waves_valid([["a1", "a2", "b1", "b2", "b3"]], CLUSTER_OF, max_unavailable={"lab-a": 2, "lab-b": 2})
    assert str(caught.value) == ("invalid maintenance waves: wave 1 takes 3 hosts of cluster lab-b (b1, b2, b3) at once;"
                                 " max_unavailable is 2")


def test_a_host_without_a_cluster_does_not_hide_the_check_of_the_others():
    assert wave_violations([["x9", "b1", "b2"]], CLUSTER_OF) == [
        "host x9 (wave 1) has no cluster", "wave 1 takes 2 hosts of cluster lab-b (b1, b2) at once; max_unavailable is 1"]


@pytest.mark.parametrize("limit", ["2", 0, True, 1.5])
def test_a_limit_that_is_not_an_integer_of_at_least_one_is_refused(limit):
    with pytest.raises(ValueError) as caught:
        wave_violations([["a1"]], CLUSTER_OF, max_unavailable={"lab-a": limit})
    assert str(caught.value) == "max_unavailable of cluster 'lab-a' must be an integer >= 1, not %r" % (limit,)
