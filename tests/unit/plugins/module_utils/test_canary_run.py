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
