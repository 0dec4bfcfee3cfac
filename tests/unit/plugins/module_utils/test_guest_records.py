"""guest_records: each guest's definition in the cluster's shared state with the host it last
ran on; written only when something changed, never in check mode, never without the storage."""
import os

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils.guest_records import (
    GuestRecords, definition_summary)
from ansible_collections.virtfleet.cluster.plugins.module_utils.state_store import SharedStateError, StateError, state_dir

XML = """<domain type='kvm'><name>%s</name><uuid>%s</uuid><memory unit='%s'>%d</memory><vcpu>%d</vcpu></domain>"""


def xml(name="db", memory=131072, unit="KiB", vcpus=2, uuid="6f1c1bde-0000-4000-8000-000000000001"):
    return XML % (name, uuid, unit, memory, vcpus)


@pytest.fixture
def records(tmp_path):
    return GuestRecords(state_dir(str(tmp_path)), "c1")


def test_the_summary_reads_name_uuid_memory_and_vcpus():
    assert definition_summary(xml()) == {"name": "db", "uuid": "6f1c1bde-0000-4000-8000-000000000001",
                                         "memory_mib": 128, "vcpus": 2}
    assert definition_summary(xml(memory=2, unit="GiB"))["memory_mib"] == 2048


@pytest.mark.parametrize("text, message", [("<domain", "not valid XML"), ("<network><name>n</name></network>",
                                                                          "must be a libvirt <domain>")])
def test_what_is_not_a_definition_is_refused(text, message):
    with pytest.raises(StateError, match=message):
        definition_summary(text)


def test_records_are_written_once_and_rewritten_when_the_guest_moves(records):
    assert records.update("h1", [xml("db"), xml("web")], seen=100.0) == {"written": ["db", "web"], "unchanged": []}
    assert records.update("h1", [xml("db")], seen=200.0) == {"written": [], "unchanged": ["db"]}
    assert records.read_all()["db"]["seen"] == 100.0  # an unchanged record is not rewritten
    assert records.update("h2", [xml("db")], seen=300.0) == {"written": ["db"], "unchanged": []}
    assert [r["name"] for r in records.last_on("h1")] == ["web"]
    moved = records.last_on("h2")[0]
    assert (moved["host"], moved["xml"], moved["memory_mib"], moved["seen_iso"]) == ("h2", xml("db"), 128,
                                                                                     "1970-01-01T00:05:00Z")


def test_a_changed_definition_is_rewritten(records):
    records.update("h1", [xml("db")])
    assert records.update("h1", [xml("db", vcpus=4)])["written"] == ["db"]
    assert records.read_all()["db"]["vcpus"] == 4


def test_check_mode_writes_nothing(tmp_path):
    dry = GuestRecords(state_dir(str(tmp_path)), "c1", check_mode=True)
    assert dry.update("h1", [xml("db")])["written"] == ["db"]
    assert not os.path.exists(state_dir(str(tmp_path)))


def test_no_record_without_the_shared_storage(tmp_path):
    missing = GuestRecords(state_dir(str(tmp_path / "not-mounted")), "c1")
    with pytest.raises(SharedStateError, match="does not exist"):
        missing.update("h1", [xml("db")])


def test_a_guest_name_cannot_escape_the_records_directory(records):
    with pytest.raises(StateError, match="invalid guest name"):
        records.update("h1", [xml("../lock")])
