"""guest_start: guests a drain was allowed to stop run again once their host is back (issue 10,
case 14). On libvirt's own test driver (test:///default: the real API, an in-memory hypervisor):
the lab's guests ignore an ACPI shutdown, so the lab cannot stop one cleanly on demand."""
import pytest

libvirt = pytest.importorskip("libvirt")

from ansible_collections.virtfleet.cluster.plugins.modules import guest_start  # noqa: E402

DOMAIN_XML = """<domain type='test'><name>%s</name><memory>65536</memory><vcpu>1</vcpu>
<os><type>hvm</type></os></domain>"""


@pytest.fixture
def conn():
    connection = libvirt.open("test:///default")
    names = ["stopped-db", "running-web"]
    for name in names:
        try:
            connection.lookupByName(name).undefine()
        except libvirt.libvirtError:
            pass
        connection.defineXML(DOMAIN_XML % name)
    connection.lookupByName("running-web").create()
    yield connection
    for name in names:
        dom = connection.lookupByName(name)
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    connection.close()


def _run(conn, guests, check_mode=False):
    class Keep:  # the module closes its connection; the fixture's must stay open
        def __getattr__(self, name):
            return getattr(conn, name)

        def close(self):
            pass
    return guest_start.run({"uri": "test:///default", "host": "hv-1", "guests": guests}, check_mode,
                           connect=lambda uri: Keep())


def test_a_stopped_guest_is_started_and_a_running_one_left_alone(conn):
    failed, result = _run(conn, ["stopped-db", "running-web"])
    assert not failed and result["changed"]
    assert result["started"] == ["stopped-db"] and result["already_running"] == ["running-web"]
    assert conn.lookupByName("stopped-db").isActive()
    assert result["msg"] == "started stopped-db on hv-1; already running: running-web"


def test_check_mode_starts_nothing(conn):
    failed, result = _run(conn, ["stopped-db"], check_mode=True)
    assert not failed and result["started"] == ["stopped-db"]
    assert not conn.lookupByName("stopped-db").isActive()
    assert result["msg"].startswith("would start stopped-db")


def test_a_guest_that_cannot_be_started_is_named_after_trying_the_others(conn):
    failed, result = _run(conn, ["gone-guest", "stopped-db"])
    assert failed and result["started"] == ["stopped-db"]
    assert [p["guest"] for p in result["not_started"]] == ["gone-guest"]
    assert "NOT started on hv-1: gone-guest" in result["msg"] and "virsh start" in result["msg"]
