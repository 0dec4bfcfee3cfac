"""guest_records module: records the running guests of a libvirt daemon (libvirt's own test
driver, test:///default, which runs one guest "test") and answers queries."""
import pytest

pytest.importorskip("libvirt")

from ansible_collections.virtfleet.cluster.plugins.modules import guest_records  # noqa: E402


def params(tmp_path, **overrides):
    base = {"uri": "test:///default", "username": None, "password": None, "path": str(tmp_path), "cluster": "c1",
            "state": "refresh", "host": "h1", "last_host": None}
    base.update(overrides)
    return base


def test_running_guests_are_recorded_and_found_by_their_last_host(tmp_path):
    result = guest_records.work(params(tmp_path), False)
    assert result["changed"] and result["written"] == ["test"] and result["msg"] == "h1: 1 guest record(s) written, 0 unchanged"
    again = guest_records.work(params(tmp_path), False)
    assert not again["changed"] and again["unchanged"] == ["test"]
    found = guest_records.work(params(tmp_path, state="query", last_host="h1"), False)
    assert [(r["name"], r["host"]) for r in found["records"]] == [("test", "h1")]
    assert "<name>test</name>" in found["records"][0]["xml"]
    assert guest_records.work(params(tmp_path, state="query", last_host="h2"), False)["records"] == []


def test_check_mode_writes_no_record(tmp_path):
    result = guest_records.work(params(tmp_path), True)
    assert result["written"] == ["test"] and result["msg"] == "h1: 1 guest record(s) to write, 0 unchanged"
    assert guest_records.work(params(tmp_path, state="query"), False)["records"] == []


def test_refresh_needs_the_host_name(tmp_path):
    with pytest.raises(guest_records.StateError, match="needs host"):
        guest_records.work(params(tmp_path, host=None), False)
