"""canary_run.prove_host on libvirt's test driver (test:///default: one state per process, shared
by every connection, so "host" and "peer" are one daemon here). The test driver cannot migrate:
the lab proves the migrations (tests/lab/test_rolling_maintenance.py); here the rest - leftovers
removed, the canary started on the peer and removed again after a failed migration, marked
peers never used, check mode touching nothing."""
import libvirt
import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import canary
from ansible_collections.virtfleet.cluster.plugins.module_utils.canary_run import CanaryRequest, prove_host
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError

URI = "test:///default"


@pytest.fixture
def conn():
    connection = libvirt.open(URI)
    yield connection
    for dom in connection.listAllDomains(0):
        if dom.name().startswith(canary.CANARY_PREFIX) and dom.isActive():
            dom.destroy()
    connection.close()


def canaries(connection):
    return sorted(d.name() for d in connection.listAllDomains(0) if canary.domain_is_canary(d))


def leave_a_crashed_runs_canary(connection):
    xml = canary.canary_domain_xml(canary.canary_name("hv-9"), canary.GuestShape("test"), 32, "hv-9", "crashed-run")
    connection.createXML(xml, 0)


def test_a_failed_migration_still_removes_the_canary_and_the_leftover_of_a_crashed_run(conn):
    leave_a_crashed_runs_canary(conn)
    started = []
    real_open = libvirt.open

    def connect(uri):
        opened = real_open(uri)
        started.append(canaries(opened))  # what each later connection (migration, cleanup) finds
        return opened

    with pytest.raises(VirtfleetError) as failed:
        prove_host(CanaryRequest(host="hv-1", uri=URI, peers={"hv-2": URI}, run_id="r-1"), connect=connect)
    result = failed.value.result
    assert result["reason"] == "migration-failed" and result["owned"] and result["peer"] == "hv-2"
    assert result["canary"] == "virtfleet-canary-hv-1"
    assert "virtfleet-canary-hv-9 on hv-2" in result["leftovers_removed"]
    assert ["virtfleet-canary-hv-1"] in started              # it was started for the migration...
    assert [m["status"] for m in result["migrations"]] == ["failed"]
    assert result["migrations"][0]["guest"] == "virtfleet-canary-hv-1" and result["migrations"][0]["purpose"] == "canary"
    assert canaries(conn) == []                              # ...and nothing is left of either


class RefusingConnection:
    """A peer's connection whose libvirt refuses to start any domain (no room, say): the one
    decision the test driver cannot produce on demand."""

    def __init__(self, connection):
        self._connection = connection

    def __getattr__(self, name):
        return getattr(self._connection, name)

    def createXML(self, _xml, _flags):  # noqa: N802 - libvirt's name
        raise libvirt.libvirtError("internal error: cannot allocate memory for the domain")


def connect_refusing_on(refusing):
    """connect(uri) for prove_host: URIs in ``refusing`` open the test driver behind a refusal."""
    def connect(uri):
        opened = libvirt.open(URI)
        return RefusingConnection(opened) if uri in refusing else opened
    return connect


def test_a_peer_that_refuses_the_canary_is_passed_over_for_the_next(conn):
    peers = {"hv-2": "test:///default?refuses", "hv-3": URI}  # equal free memory: hv-2 is tried first
    with pytest.raises(VirtfleetError) as failed:  # the test driver cannot migrate: it fails after the start
        prove_host(CanaryRequest(host="hv-1", uri=URI, peers=peers, run_id="r-1"),
                   connect=connect_refusing_on({"test:///default?refuses"}))
    result = failed.value.result
    assert result["reason"] == "migration-failed" and result["peer"] == "hv-3"
    assert result["passed_over"] == ["hv-2: the canary did not start there (internal error: cannot allocate memory "
                                     "for the domain)"]
    assert [m["source"] for m in result["migrations"]] == ["hv-3"]  # started there, tried onto hv-1
    assert canaries(conn) == []


def test_when_every_peer_refuses_the_canary_the_host_is_not_proven_and_each_is_named(conn):
    peers = {"hv-2": "test:///default?refuses", "hv-3": "test:///default?refuses-too"}
    with pytest.raises(VirtfleetError) as failed:
        prove_host(CanaryRequest(host="hv-1", uri=URI, peers=peers, run_id="r-1"),
                   connect=connect_refusing_on(set(peers.values())))
    result = failed.value.result
    assert result["reason"] == "canary-not-started" and result["peer"] is None and result["migrations"] == []
    assert failed.value.message.startswith("the canary virtfleet-canary-hv-1 did not start on any peer in service: "
                                           "hv-2: the canary did not start there (")
    assert "hv-3: the canary did not start there" in failed.value.message
    assert canaries(conn) == []


def test_marked_peers_never_serve_and_nothing_is_started_without_one(conn):
    marks = {"hv-2": {"owner": {"run_id": "operator"}, "phase": "manual", "reason": "disk swap"}}
    with pytest.raises(VirtfleetError) as failed:
        prove_host(CanaryRequest(host="hv-1", uri=URI, peers={"hv-2": URI}, marks=marks))
    assert failed.value.result["reason"] == "no-canary"
    assert failed.value.result["passed_over"] == ["hv-2: marked in maintenance (run operator, phase manual: disk swap)"]
    assert canaries(conn) == []


def test_a_named_guest_that_runs_nowhere_in_service_is_no_canary(conn):
    with pytest.raises(VirtfleetError) as failed:
        prove_host(CanaryRequest(host="hv-1", uri=URI, peers={"hv-2": URI}, guest="web-01"))
    assert failed.value.result["reason"] == "no-canary" and not failed.value.result["owned"]
    assert "hv-2: test (" in failed.value.result["passed_over"][0] and "not web-01" in failed.value.result["passed_over"][0]


def test_check_mode_names_the_canary_and_removes_starts_nothing(conn):
    leave_a_crashed_runs_canary(conn)
    result = prove_host(CanaryRequest(host="hv-1", uri=URI, peers={"hv-2": URI}), check_mode=True)
    assert result["changed"] and result["migrations"] == [] and result["peer"] == "hv-2"
    assert "would migrate canary virtfleet-canary-hv-1 from hv-2 onto hv-1 and back" == result["msg"]
    assert "virtfleet-canary-hv-9 on hv-2" in result["leftovers_removed"]
    assert canaries(conn) == ["virtfleet-canary-hv-9"]       # reported, left alone
