"""libvirt facts: XML parsers on recorded documents, URI redaction, error hints.

The one test that talks to libvirt uses its built-in, in-process test driver (`test:///default`):
no daemon, no network.
"""
import os
import socket
import time

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import libvirt_connection
from ansible_collections.virtfleet.cluster.plugins.module_utils import libvirt_facts as lf

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "data", "cpu")


def read(name):
    with open(os.path.join(DATA, name)) as handle:
        return handle.read()


CAPABILITIES = """<capabilities>
  <host>
    <uuid>11111111-2222-3333-4444-555555555555</uuid>
    <cpu><arch>x86_64</arch><model>Skylake-Client-IBRS</model><vendor>Intel</vendor>
      <feature name='vmx'/><feature name='ss'/></cpu>
  </host>
  <guest><os_type>hvm</os_type>
    <arch name='i686'><machine>pc-i440fx-7.2</machine><domain type='qemu'/></arch></guest>
  <guest><os_type>hvm</os_type>
    <arch name='x86_64'>
      <machine maxCpus='255'>pc-i440fx-7.2</machine>
      <machine canonical='pc-q35-7.2' maxCpus='288'>q35</machine>
      <domain type='qemu'/>
      <domain type='kvm'><machine>pc-kvm-only</machine></domain>
    </arch></guest>
</capabilities>"""

DOMAIN = """<domain type='kvm'>
  <name>web1</name><uuid>aaaaaaaa-0000-0000-0000-000000000001</uuid>
  <memory unit='GiB'>4</memory><currentMemory unit='KiB'>2097152</currentMemory>
  <vcpu placement='static' current='2'>4</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>Haswell-noTSX</model></cpu>
  <devices>
    <disk type='file' device='disk'><source file='/srv/shared/web1.qcow2'/><target dev='vda'/></disk>
    <disk type='file' device='disk'><source file='/var/lib/libvirt/images/scratch.img'/><target dev='vdb'/></disk>
    <disk type='network' device='disk'><source protocol='rbd' name='pool/web1-data'/><target dev='vdc'/></disk>
    <disk type='file' device='cdrom'><target dev='sda'/><readonly/></disk>
  </devices>
</domain>"""


def test_parse_capabilities_takes_host_arch_machines_per_domain_type():
    caps = lf.parse_capabilities(CAPABILITIES)
    assert caps["host_uuid"] == "11111111-2222-3333-4444-555555555555"
    assert caps["arch"] == "x86_64"
    assert caps["host_cpu"] == {"model": "Skylake-Client-IBRS", "vendor": "Intel", "features": ["ss", "vmx"]}
    assert caps["machine_types"] == {"qemu": ["pc-i440fx-7.2", "q35"],
                                     "kvm": ["pc-i440fx-7.2", "pc-kvm-only", "q35"]}


def test_parse_recorded_domain_capabilities_host_model():
    # Recorded from a real AMD EPYC-Rome host (libvirt tests/domaincapsdata, see README).
    domcaps = lf.parse_domain_capabilities(read("qemu_7.2.0.x86_64.domcaps.xml"))
    assert domcaps["virttype"] == "kvm"
    assert domcaps["arch"] == "x86_64"
    assert domcaps["machine"] == "pc-i440fx-7.2"
    host_model = domcaps["host_model"]
    assert host_model["model"] == "EPYC-Rome"
    assert host_model["vendor"] == "AMD"
    assert len(host_model["features"]) == 24 and "virt-ssbd" in host_model["features"]
    assert "EPYC-Rome" in domcaps["usable_models"] and "Skylake-Server" not in domcaps["usable_models"]
    # The generated <cpu> is guest-style (libvirt's baseline API rejects <arch> in it).
    assert host_model["xml"].startswith('<cpu mode="custom" match="exact"><model fallback="forbid">EPYC-Rome</model>')
    assert "<arch>" not in host_model["xml"]


def test_parse_domain_disks_and_sharing():
    guest = lf.parse_domain(DOMAIN, shared_storage_path="/srv/shared/")
    assert (guest["name"], guest["domain_type"], guest["memory_mib"], guest["max_memory_mib"], guest["vcpus"]) == \
        ("web1", "kvm", 2048, 4096, 2)
    assert (guest["cpu_mode"], guest["cpu_model"]) == ("custom", "Haswell-noTSX")
    assert guest["cpu_xml"] == "<cpu mode=\"custom\" match=\"exact\"><model fallback=\"forbid\">Haswell-noTSX</model></cpu>"
    assert (guest["arch"], guest["machine"]) == ("x86_64", "pc-q35-7.2")
    assert [(d["target"], d["path"], d["shared"]) for d in guest["disks"]] == [
        ("vda", "/srv/shared/web1.qcow2", True),
        ("vdb", "/var/lib/libvirt/images/scratch.img", False),
        ("vdc", "rbd:pool/web1-data", True),
    ]
    assert guest["local_disks"] is True
    assert guest["movable"] is True
    assert guest["migration_notes"] == ["local disks need block migration: /var/lib/libvirt/images/scratch.img"]


def test_parse_domain_without_shared_path_marks_file_disks_unknown():
    guest = lf.parse_domain(DOMAIN)
    assert [d["shared"] for d in guest["disks"]] == [None, None, True]
    assert guest["local_disks"] is False


def test_shared_path_prefix_is_a_directory_boundary():
    xml = DOMAIN.replace("/srv/shared/web1.qcow2", "/srv/shared-not/web1.qcow2")
    assert lf.parse_domain(xml, "/srv/shared")["disks"][0]["shared"] is False


def test_host_model_guest_has_no_cpu_xml_to_compare():
    xml = DOMAIN.replace("<cpu mode='custom' match='exact'><model fallback='forbid'>Haswell-noTSX</model></cpu>",
                         "<cpu mode='host-model'/>")
    guest = lf.parse_domain(xml)
    assert (guest["cpu_mode"], guest["cpu_xml"]) == ("host-model", None)


def test_hostdev_makes_a_guest_unmovable():
    xml = DOMAIN.replace("</devices>", "<hostdev mode='subsystem' type='pci'/></devices>")
    guest = lf.parse_domain(xml)
    assert guest["movable"] is False
    assert guest["migration_blockers"] == ["host device passthrough (1 hostdev)"]


@pytest.mark.parametrize("uri, shown", [
    ("qemu+ssh://root:hunter2@hv1/system", "qemu+ssh://root:********@hv1/system"),
    ("qemu+tcp://127.0.1.11/session", "qemu+tcp://127.0.1.11/session"),
    ("qemu+ssh://root@hv1/system?keyfile=/k&no_verify=1", "qemu+ssh://root@hv1/system?keyfile=********&no_verify=1"),
    ("esx://u:p@vc/?password=x&transport=https", "esx://u:********@vc/?password=********&transport=https"),
])
def test_redact_uri(uri, shown):
    assert libvirt_connection.redact_uri(uri) == shown


def test_version_string():
    assert lf.version_string(9000000) == "9.0.0"
    assert lf.version_string(7002022) == "7.2.22"


@pytest.mark.parametrize("message, hint", [
    ("unable to connect to server at '127.0.1.11:16509': Connection refused", "is libvirtd running"),
    ("Failed to connect socket to '/run/libvirt/libvirt-sock': No such file or directory", "no libvirt daemon socket"),
    ("authentication failed: Failed to start SASL negotiation", "authentication failed"),
    ("Cannot recv data: Host key verification failed.", "add the host key to known_hosts"),
])
def test_error_hints(message, hint):
    assert hint in libvirt_connection.connection_hint(message, "qemu+tcp://h/system")


def test_connection_error_names_uri_without_password():
    with pytest.raises(libvirt_connection.LibvirtHostError) as err:
        lf.gather_hypervisor_facts("qemu+tcp://admin:s3cret@127.0.0.1:1/session")
    text = str(err.value)
    assert text.startswith("cannot connect to qemu+tcp://admin:********@127.0.0.1:1/session")
    assert "s3cret" not in text
    assert "is libvirtd running" in text


def test_open_gives_up_on_a_daemon_that_never_answers():
    """A listener that accepts TCP connections and never speaks is what a frozen libvirtd looks
    like to a client: the real libvirt client would wait for ever; open_connection stops after
    its timeout with an error that names the URI and what to check."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    uri = "qemu+tcp://admin:s3cret@127.0.0.1:%d/session" % silent.getsockname()[1]
    began = time.monotonic()
    try:
        with pytest.raises(libvirt_connection.LibvirtHostError) as err:
            libvirt_connection.open_connection(uri, timeout=2)
    finally:
        silent.close()
    took = time.monotonic() - began
    text = str(err.value)
    assert text.startswith("cannot connect to qemu+tcp://admin:********@127.0.0.1:")
    assert "no answer within 2 s" in text and "frozen" in text and "s3cret" not in text
    assert 1.9 < took < 10, took


def test_connections_run_keepalive_on_the_event_loop():
    conn = libvirt_connection.open_connection("test:///default")  # in-process: no keepalive, still opens
    try:
        assert conn.getHostname()
    finally:
        conn.close()
    (loop,) = libvirt_connection._event_loop
    assert loop.is_alive() and loop.daemon
    libvirt_connection.ensure_event_loop()  # registered once per process, never twice
    assert libvirt_connection._event_loop == [loop]


def test_gather_from_libvirt_test_driver():
    facts = lf.gather_hypervisor_facts("test:///default", shared_storage_path="/guest")
    assert facts["driver"] == "TEST"
    assert facts["hypervisor"] == "test"
    assert facts["kvm_usable"] is False
    assert facts["memory_total_mib"] > 0 and facts["cpus"] > 0
    (guest,) = facts["guests"]
    assert guest["name"] == "test"
    assert (guest["state"], guest["active"], guest["persistent"]) == ("running", True, True)
    assert guest["disks"][0]["shared"] is True
    assert facts["running_guest_count"] == 1
    assert facts["memory_allocated_mib"] == guest["memory_mib"]
    assert facts["storage_pools"][0]["name"] == "default-pool"


def test_uri_password():
    assert libvirt_connection.uri_password("qemu+ssh://root:hunter2@hv1/system") == "hunter2"
    assert libvirt_connection.uri_password("qemu+ssh://root@hv1/system") is None
    assert libvirt_connection.uri_password("qemu:///system") is None


# --- the module, through Ansible (libvirt's in-process test driver, no daemon) -------------------

def run_adhoc(module, args):
    import json
    import subprocess
    import sys
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(repo, "ansible.cfg"), ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               ANSIBLE_NOCOLOR="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(["ansible", "localhost", "-m", module, "-a", json.dumps(args), "-v"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=False)
    # Ad-hoc output: "localhost | SUCCESS => {json}".
    result = json.loads(proc.stdout.split("=> ", 1)[1])
    return proc, result


def test_hypervisor_facts_module_returns_facts_and_ansible_facts():
    proc, result = run_adhoc("virtfleet.cluster.hypervisor_facts", {"uri": "test:///default"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result["changed"] is False
    assert [g["name"] for g in result["hypervisor"]["guests"]] == ["test"]
    assert result["ansible_facts"]["virtfleet_hypervisor_facts"]["driver"] == "TEST"


def test_hypervisor_facts_module_never_shows_the_uri_password():
    proc, result = run_adhoc("virtfleet.cluster.hypervisor_facts",
                             {"uri": "qemu+tcp://admin:Sup3rSecret@127.0.0.1:1/session"})
    assert proc.returncode != 0 and "localhost | FAILED!" in proc.stdout
    assert result["msg"].startswith("cannot connect to qemu+tcp://admin:********@127.0.0.1:1/session")
    assert "Sup3rSecret" not in proc.stdout
