"""Run on a hypervisor host without a uri, a libvirt module reaches that host's own libvirt
(qemu:///system, as community.libvirt does): `ansible all -m virtfleet.cluster.hypervisor_facts`
no longer fails with "missing required arguments: uri". No system libvirtd needed: the gatherer
is replaced and records what it was asked."""
from ansible_collections.virtfleet.cluster.plugins.module_utils import ansible_module
from ansible_collections.virtfleet.cluster.plugins.module_utils import libvirt_connection
from ansible_collections.virtfleet.cluster.plugins.module_utils import libvirt_facts
from ansible_collections.virtfleet.cluster.plugins.modules import guest_start, host_empty, hypervisor_facts

from module_main import run_module_main


def test_hypervisor_facts_without_arguments_reads_the_local_system_libvirt(monkeypatch):
    asked = []

    def gather(uri, shared_storage_path=None, username=None, password=None, conn=None, include_guests=True):
        asked.append((uri, shared_storage_path, username, password, include_guests))
        return {"uri": uri, "driver": "QEMU"}

    monkeypatch.setattr(libvirt_facts, "gather_hypervisor_facts", gather)
    monkeypatch.setattr(ansible_module, "_libvirt_import_error", lambda: None)
    code, result = run_module_main(hypervisor_facts, {})
    assert code == 0 and not result.get("failed"), result
    assert asked == [("qemu:///system", None, None, None, True)]
    assert result["hypervisor"]["uri"] == "qemu:///system"
    assert result["ansible_facts"]["virtfleet_hypervisor_facts"]["driver"] == "QEMU"


def test_credentials_reach_the_opener_and_the_password_is_never_shown(monkeypatch):
    opened = []

    def open_connection(uri, username=None, password=None, readonly=False, timeout=60):
        opened.append((uri, username, password))
        raise libvirt_connection.LibvirtHostError("cannot connect to %s: authentication failed (password %s)"
                                                  % (uri, password))

    monkeypatch.setattr(libvirt_connection, "open_connection", open_connection)
    monkeypatch.setattr(ansible_module, "_libvirt_import_error", lambda: None)
    args = {"username": "admin", "password": "Sup3rSecret", "host": "hv-1",
            "peers": [{"name": "hv-2", "uri": "qemu+tcp://admin:PeerSecret@hv-2/system"}]}
    code, result = run_module_main(host_empty, args)
    assert code == 1 and result["failed"]
    assert opened == [("qemu:///system", "admin", "Sup3rSecret")]
    assert result["msg"].startswith("cannot tell whether hv-1 is safe to reboot, so not going on: cannot connect to qemu:///system")
    assert "Sup3rSecret" not in str(result)

    opened.clear()
    code, result = run_module_main(guest_start, {"username": "admin", "password": "Sup3rSecret", "guests": ["db"]})
    assert code == 1 and opened == [("qemu:///system", "admin", "Sup3rSecret")]
    assert result["msg"].startswith("cannot start db on localhost: cannot connect to qemu:///system")
    assert "Sup3rSecret" not in str(result)
