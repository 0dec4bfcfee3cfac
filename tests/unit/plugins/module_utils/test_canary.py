"""canary: the owned canary's name, XML and shape, which peer starts it, when a named guest may
serve, and that every reader of a host's guests leaves a canary out (libvirt's test driver)."""
import xml.etree.ElementTree as ET

import libvirt
import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import canary
from ansible_collections.virtfleet.cluster.plugins.module_utils import drain
from ansible_collections.virtfleet.cluster.plugins.module_utils import host_empty
from ansible_collections.virtfleet.cluster.plugins.module_utils import libvirt_facts
from ansible_collections.virtfleet.cluster.plugins.modules import guest_records

QEMU64 = ("<cpu mode='custom' match='exact' check='full'><model fallback='forbid'>qemu64</model>"
          "<feature policy='disable' name='svm'/></cpu>")


def guest(name, domain_type="qemu", machine="pc-i440fx-7.2", cpu_xml=QEMU64, cpu_mode="custom", active=True, **extra):
    return dict({"name": name, "domain_type": domain_type, "arch": "x86_64", "machine": machine, "cpu_xml": cpu_xml,
                 "cpu_mode": cpu_mode, "active": active, "state": "running" if active else "shut off", "movable": True,
                 "local_disks": False}, **extra)


# --------------------------------------------------------------------------- name and XML
def test_the_name_says_which_host_the_canary_proves_and_stays_a_valid_domain_name():
    assert canary.canary_name("hv-a1") == "virtfleet-canary-hv-a1"
    assert canary.canary_name("rack 3/hv:1") == "virtfleet-canary-rack-3-hv-1"


def test_the_xml_is_firmware_only_shaped_like_the_cluster_and_marked_as_ours():
    shape = canary.cluster_shape([guest("a"), guest("b")])
    xml = canary.canary_domain_xml("virtfleet-canary-hv-1", shape, 32, proves="hv-1", run_id="r-1")
    facts = libvirt_facts.parse_domain(xml)
    assert facts["owned_canary"] is True
    assert (facts["domain_type"], facts["arch"], facts["machine"]) == ("qemu", "x86_64", "pc-i440fx-7.2")
    assert facts["cpu_model"] == "qemu64" and "svm" in facts["cpu_xml"]
    assert facts["memory_mib"] == 32 and facts["vcpus"] == 1
    assert facts["disks"] == [] and facts["movable"] and not facts["local_disks"]
    root = ET.fromstring(xml)
    assert root.find("devices/interface") is None and root.find("devices/disk") is None
    assert [root.findtext(e) for e in ("on_poweroff", "on_reboot", "on_crash")] == ["destroy"] * 3
    mark = root.find("metadata/{%s}canary" % canary.CANARY_NAMESPACE)
    assert mark.get("host") == "hv-1" and mark.get("run") == "r-1"
    assert "virtfleet:canary" in xml  # readable in virsh dumpxml


def test_a_customer_guest_with_a_canary_like_name_is_no_canary():
    xml = "<domain type='kvm'><name>virtfleet-canary-hv-1</name><memory>65536</memory></domain>"
    assert libvirt_facts.parse_domain(xml)["owned_canary"] is False
    ours = canary.canary_domain_xml("my-guest", canary.GuestShape("kvm"))
    assert libvirt_facts.parse_domain(ours)["owned_canary"] is False  # our metadata, but not our name


def test_the_shape_is_the_most_common_among_running_guests_then_the_hosts_own():
    guests = [guest("a", machine="pc-q35-7.2"), guest("b"), guest("c"), guest("off", domain_type="kvm", active=False)]
    assert canary.cluster_shape(guests).machine == "pc-i440fx-7.2"
    host_model = canary.cluster_shape([guest("h", domain_type="kvm", cpu_xml=None, cpu_mode="host-model")])
    assert (host_model.domain_type, host_model.cpu_mode, host_model.cpu_xml) == ("kvm", "host-model", None)
    assert "<cpu mode=\"host-model\" />" in canary.canary_domain_xml("virtfleet-canary-x", host_model)
    assert canary.cluster_shape([], {"kvm_usable": True, "arch": "x86_64"}) == canary.GuestShape("kvm", "x86_64")
    assert canary.cluster_shape([guest("off", active=False)], {"kvm_usable": False}).domain_type == "qemu"


# --------------------------------------------------------------------------- where it starts
def test_marked_peers_are_passed_over_with_whose_mark_and_why():
    marks = {"hv-3": {"owner": {"run_id": "operator"}, "phase": "manual", "reason": "fan replacement"}}
    in_service, passed_over = canary.peers_in_service("hv-1", ["hv-1", "hv-2", "hv-3"], marks)
    assert in_service == ["hv-2"]
    assert passed_over == ["hv-3: marked in maintenance (run operator, phase manual: fan replacement)"]


def test_peers_are_tried_most_free_memory_first():
    facts = {"hv-2": {"memory_free_mib": 900}, "hv-3": {"memory_free_mib": 4000}, "hv-4": {"memory_free_mib": 4000},
             "hv-6": {}}
    peers, passed_over = canary.rank_peers(facts, {"hv-5": "connection refused"})
    assert peers == ["hv-3", "hv-4", "hv-2", "hv-6"]  # ties by name; unknown free memory last
    assert passed_over == ["hv-5: its libvirt did not answer (connection refused)"]
    assert canary.rank_peers({}, {"hv-5": "down"})[0] == []


def test_a_named_guest_serves_only_where_the_drain_would_move_it_too():
    facts = {"hv-2": {"guests": [guest("db", movable=False, migration_blockers=["hostdev"]), guest("web")]},
             "hv-3": {"guests": []}}
    assert canary.named_guest_source("web", facts, {})[0] == "hv-2"
    peer, passed_over = canary.named_guest_source("db", facts, {}, unmovable=["db"])
    assert peer is None
    assert passed_over == ["hv-2: db (cannot live-migrate: hostdev; in rolling_maintenance_unmovable_guests), web (not db)",
                           "hv-3: runs no guest"]
    assert canary.named_guest_source("web", facts, {}, stop_allowed=["web"])[0] is None


def test_a_failed_migration_is_recorded_with_where_the_canary_is():
    class Failed:
        message, running_on, where = "stalled", "hv-2", "hv-2"
    record = canary.migration_record("virtfleet-canary-hv-1", "hv-2", "hv-1", 1.0, 2.0, error=Failed())
    assert record["status"] == "failed" and record["destination"] == "hv-2" and record["message"] == "stalled"
    assert record["purpose"] == "canary" and record["type"] == "migration"
    ok = canary.migration_record("c", "hv-2", "hv-1", 1.0, 2.0, outcome={"downtime_ms": 30, "total_time_ms": 480})
    assert (ok["status"], ok["destination"], ok["downtime_ms"], ok["time_ms"]) == ("ok", "hv-1", 30, 480)


# --------------------------------------------------------------------------- no reader counts it
@pytest.fixture
def running_canary():
    """An owned canary running on libvirt's test driver (test:///default, one state per process)."""
    conn = libvirt.open("test:///default")
    xml = canary.canary_domain_xml(canary.canary_name("hv-1"), canary.GuestShape("test"), 32, "hv-1")
    dom = conn.createXML(xml, 0)
    yield conn
    if dom.isActive():
        dom.destroy()
    conn.close()


def test_every_reader_of_a_hosts_guests_leaves_the_canary_out(running_canary):
    conn = running_canary
    facts = libvirt_facts.gather_hypervisor_facts("test:///default", conn=conn)
    assert facts["canaries"] == ["virtfleet-canary-hv-1"]
    assert "virtfleet-canary-hv-1" not in [g["name"] for g in facts["guests"]]
    assert facts["running_guest_count"] == 1 and facts["memory_allocated_mib"] == facts["guests"][0]["memory_mib"]  # "test" only
    assert [g["name"] for g in host_empty.active_guests(conn)] == ["test"]
    assert drain.running_guest_names(conn) == ["test"]
    assert not any("virtfleet-canary" in definition for definition in guest_records.running_definitions(conn))
    assert canary.domain_is_canary(conn.lookupByName("virtfleet-canary-hv-1"))
    assert not canary.domain_is_canary(conn.lookupByName("test"))
