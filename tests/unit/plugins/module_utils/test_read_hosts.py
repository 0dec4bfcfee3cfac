"""libvirt_facts.read_hosts: the one reader of several hosts (the drain's cluster view and
cluster_homogeneity), several at once, each failure kept to its host."""
import threading

from ansible_collections.virtfleet.cluster.plugins.module_utils import drain
from ansible_collections.virtfleet.cluster.plugins.module_utils import libvirt_facts


class FakeConnection:
    def __init__(self):
        self.closed = False

    def close(self):
        self.closed = True


def facts_of(uri, _shared=None, conn=None):
    if "broken" in uri:
        raise RuntimeError("cannot read %s" % uri)
    return {"memory_total_mib": 4096, "memory_free_mib": 4096, "cpus": 4, "guests": []}


def test_hosts_are_read_at_once_and_each_failure_stays_with_its_host(monkeypatch):
    monkeypatch.setattr(libvirt_facts, "gather_hypervisor_facts", facts_of)
    opened, all_waiting = {}, threading.Barrier(3, timeout=10)

    def connect(uri):
        all_waiting.wait()  # only passes when three opens run at the same time
        if "down" in uri:
            raise OSError("connection refused")
        opened[uri] = FakeConnection()
        return opened[uri]

    readings = libvirt_facts.read_hosts([("c", "test:///c-down", None), ("a", "test:///a", None),
                                         ("b", "test:///b-broken", None)], connect)
    assert list(readings) == ["c", "a", "b"]
    assert readings["a"].error is None and readings["a"].facts["cpus"] == 4
    assert readings["a"].connection is opened["test:///a"] and not opened["test:///a"].closed
    assert readings["c"].error == "connection refused" and readings["c"].connection is None
    assert readings["b"].error == "cannot read test:///b-broken" and readings["b"].connection is None
    assert opened["test:///b-broken"].closed


def test_at_most_max_parallel_hosts_are_read_at_once(monkeypatch):
    monkeypatch.setattr(libvirt_facts, "gather_hypervisor_facts", facts_of)
    lock, running, peak = threading.Lock(), [0], [0]

    def connect(_uri):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        threading.Event().wait(0.05)
        with lock:
            running[0] -= 1
        return FakeConnection()

    readings = libvirt_facts.read_hosts([("h%d" % i, "test:///h%d" % i, None) for i in range(6)], connect, max_parallel=2)
    assert len(readings) == 6 and peak[0] == 2


def test_a_drain_whose_source_cannot_be_read_closes_what_it_opened(monkeypatch):
    monkeypatch.setattr(libvirt_facts, "gather_hypervisor_facts", facts_of)
    opened = []

    def connect(uri):
        opened.append(FakeConnection())
        return opened[-1]

    hosts = [drain.ClusterHost("hv-1", "test:///hv-1-broken"), drain.ClusterHost("hv-2", "test:///hv-2"),
             drain.ClusterHost("hv-3", "test:///hv-3")]
    try:
        drain.gather_cluster("hv-1", hosts, drain.DrainOptions(cpu_check=False), connect)
    except drain.DrainError as exc:
        assert exc.message == "cannot read host hv-1 to drain it: cannot read test:///hv-1-broken"
    else:
        raise AssertionError("the drain of an unreadable source was not refused")
    assert len(opened) == 3 and all(conn.closed for conn in opened)


def test_a_drain_leaves_out_a_peer_that_cannot_be_read(monkeypatch):
    monkeypatch.setattr(libvirt_facts, "gather_hypervisor_facts", facts_of)
    hosts = [drain.ClusterHost("hv-1", "test:///hv-1"), drain.ClusterHost("hv-2", "test:///hv-2-broken")]
    view = drain.gather_cluster("hv-1", hosts, drain.DrainOptions(cpu_check=False), lambda _uri: FakeConnection())
    assert view.unreachable == {"hv-2": "cannot read test:///hv-2-broken"}
    assert [c.name for c in view.capacities] == ["hv-1"] and list(view.connections) == ["hv-1"]
    view.close()


def test_cluster_homogeneity_returns_the_facts_it_read_and_names_each_host_that_did_not_answer(tmp_path):
    """The rolling maintenance's preflight reads every host once, through this comparison: the
    facts of the hosts that answered, and for the others why (libvirt's test driver: a node that
    answers, and a node file that does not exist)."""
    from ansible_collections.virtfleet.cluster.plugins.modules import cluster_homogeneity
    params = {"hosts": [{"name": "hv-1", "uri": "test:///default", "hypervisor": None, "storage": None, "facts": None},
                        {"name": "hv-2", "uri": "test://%s/absent.xml" % tmp_path, "hypervisor": None, "storage": None,
                         "facts": None}],
              "username": None, "password": None, "version_skew": {"libvirt": "minor", "qemu": "minor"},
              "cpu_comparison": "features", "storage_must_match": True, "fail_on_mismatch": False, "return_facts": True}
    result = cluster_homogeneity.compare(params, False)
    assert list(result["host_facts"]) == ["hv-1"] and result["host_facts"]["hv-1"]["guests"]
    assert list(result["unanswered"]) == ["hv-2"] and "absent.xml" in result["unanswered"]["hv-2"]
    assert [e["hosts"] for e in result["errors"] if e["attribute"] == "facts"] == [["hv-2"]]
