"""hypervisor facts and cluster homogeneity against the real lab (tests/lab/conftest.py `lab`).

Also runs libvirt's real CPU baseline on the recorded CPUs of tests/unit/data/cpu through a lab
daemon, and the homogeneity playbook on the heterogeneous lab (inventories/lab-hetero: one host
whose daemon cannot use KVM), which this module brings up beside the default lab when it is not
running yet and takes down again afterwards.
"""
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import libvirt_connection
from ansible_collections.virtfleet.cluster.plugins.module_utils import homogeneity as hg
from ansible_collections.virtfleet.cluster.plugins.module_utils import libvirt_facts as lf

pytestmark = pytest.mark.lab

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CPU_DATA = os.path.join(REPO, "tests", "unit", "data", "cpu")
HETERO_INVENTORY = os.path.join(REPO, "inventories", "lab-hetero")
HETERO_URIS = ["qemu+tcp://127.0.4.%d/session" % n for n in (11, 12, 13)]


def host_info(lab, host, key):
    info = lab.hosts[host]
    if isinstance(info, dict):
        return info.get(key)
    return getattr(info, key, None)


def host_uri(lab, host):
    return host_info(lab, host, "libvirt_uri") or host_info(lab, host, "uri")


def ansible_env():
    # JSON results keep each message on one line (the YAML format wraps long strings).
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def run_playbook(inventory, *extra):
    return subprocess.run(["ansible-playbook", "-i", inventory, os.path.join(REPO, "playbooks", "assert_homogeneity.yml")]
                          + list(extra), cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=600, check=False)


def read_cpu(name):
    with open(os.path.join(CPU_DATA, name)) as handle:
        return handle.read()


def test_facts_list_every_guest_of_each_lab_host(lab):
    for cluster in sorted(lab.clusters):
        for host in sorted(lab.clusters[cluster]):
            # Other lab tests may move guests meanwhile (or add their own, unknown to this
            # session's `lab`): retry until facts and the lab agree on the lab's guests.
            for _attempt in range(5):
                facts = lf.gather_hypervisor_facts(host_uri(lab, host))
                placement = lab.placement() if hasattr(lab, "placement") else {g: lab.where(g) for g in lab.guests}
                running = sorted(g["name"] for g in facts["guests"] if g["active"] and g["name"] in lab.guests)
                expected = sorted(g for g, where in placement.items() if where == host)
                if running == expected:
                    break
                time.sleep(1)
            assert running == expected, (host, facts["guests"])
            assert facts["driver"] == "QEMU" and facts["arch"] == "x86_64"
            assert facts["host_uuid"] and facts["libvirt_version"].startswith("9.")
            assert facts["memory_total_mib"] > 0 and facts["cpus"] >= 1
            assert facts["running_guest_count"] == sum(1 for g in facts["guests"] if g["active"])
            for guest in facts["guests"]:
                assert guest["state"] in libvirt_connection.GUEST_STATES.values()
                assert guest["memory_mib"] > 0 and guest["vcpus"] >= 1
                assert guest["persistent"] in (True, False)
            assert facts["cpu"]["xml"].startswith("<cpu")
            assert facts["machine_types"], "no machine types for %s" % host


def test_host_uuids_of_the_lab_are_distinct(lab):
    uuids = {h: lf.gather_hypervisor_facts(host_uri(lab, h), include_guests=False)["host_uuid"]
             for c in lab.clusters for h in lab.clusters[c]}
    assert len(set(uuids.values())) == len(uuids), uuids


def test_lab_clusters_are_homogeneous_with_libvirt_baseline(lab):
    for cluster, members in sorted(lab.clusters.items()):
        connections = {h: libvirt_connection.open_connection(host_uri(lab, h)) for h in members}
        try:
            inputs = [hg.HostInput(h, "kvm", {"name": "s", "path": "/same"},
                                   lf.gather_hypervisor_facts(host_uri(lab, h), conn=connections[h]))
                      for h in sorted(members)]
            report = hg.compare_cluster(inputs, cpu_oracle=lf.LibvirtCpuOracle(connections))
        finally:
            for conn in connections.values():
                conn.close()
        assert report.ok, [f.message for f in report.findings]
        assert report.baseline_cpu and report.baseline_cpu["model"], report.baseline_cpu
        assert set(report.table["cpu_baseline"].values()) == {"runs %s" % report.baseline_cpu["model"]}
        assert report.common_machine_types


def test_assert_homogeneity_playbook_passes_on_the_lab(lab):
    result = run_playbook(lab.inventory)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    for cluster in lab.clusters:
        assert "cluster %s: OK" % cluster in result.stdout


def test_assert_homogeneity_playbook_names_host_and_attribute_on_a_declared_difference(lab, tmp_path):
    # The same real hosts, but the inventory says one of them is a Xen host: the check must
    # name that host, the attribute and why it breaks live migration.
    cluster = sorted(lab.clusters)[0]
    odd = sorted(lab.clusters[cluster])[-1]
    host_vars = tmp_path / "host_vars"
    host_vars.mkdir()
    (host_vars / ("%s.yml" % odd)).write_text("virtfleet_hypervisor: xen\n")
    inventory_copy = tmp_path / "inventory"
    inventory_copy.mkdir()
    for name in os.listdir(lab.inventory):
        os.symlink(os.path.join(os.path.abspath(lab.inventory), name), inventory_copy / name)
    os.symlink(host_vars, inventory_copy / "host_vars")
    result = run_playbook(str(inventory_copy), "-e", "virtfleet_target=%s" % ",".join(sorted(lab.clusters[cluster])))
    assert result.returncode != 0
    assert "cluster %s: NOT HOMOGENEOUS" % cluster in result.stdout
    assert "hypervisor_declared differs on %s=xen" % odd in result.stdout
    assert "live migration only works between hosts of the same hypervisor type" in result.stdout


def test_recorded_cpus_real_libvirt_baseline(lab):
    """libvirt's own baseline on recorded real CPUs (Intel Skylake-Server, AMD EPYC, Haswell)."""
    some_host = sorted(lab.hosts)[0]
    conn = libvirt_connection.open_connection(host_uri(lab, some_host))
    try:
        oracle = lf.LibvirtCpuOracle({some_host: conn})
        skylake = read_cpu("x86_64-cpuid-Xeon-Gold-6148-host.xml")
        epyc = read_cpu("x86_64-cpuid-EPYC-7601-32-Core-host.xml")
        haswell = read_cpu("x86_64-cpuid-Xeon-E5-2650-v3-host.xml")

        # Different vendors: libvirt itself refuses a common CPU...
        with pytest.raises(ValueError, match="vendors do not match"):
            oracle.baseline([skylake, epyc], "x86_64", "qemu")

        # ... and compare_cluster reports the vendor as the breaking attribute, plus the
        # vendor-neutral common model libvirt computes.
        class BaselineOnly:
            baseline = staticmethod(oracle.baseline)

            @staticmethod
            def compare(host, xml, arch, virttype):
                return None  # the recorded CPUs are not this lab host's: no per-host check

        # baselineHypervisorCPU only returns what the asking daemon's hypervisor can provide: under
        # KVM this lab's own (virtual) CPU would clip the result, so these foreign CPUs are
        # compared as TCG hosts, where QEMU can emulate every model.
        def host(name, cpu_xml):
            summary = hg.cpu_summary(cpu_xml)
            facts = {"driver": "QEMU", "hypervisor": "qemu", "kvm_usable": False, "arch": "x86_64",
                     "libvirt_version": "9.0.0", "hypervisor_version": "7.2.0", "host_uuid": name,
                     "machine_types": ["pc-q35-7.2"], "cpu": dict(summary, xml=cpu_xml)}
            return hg.HostInput(name, "qemu", {"name": "s", "path": "/s"}, facts)

        mixed = hg.compare_cluster([host("intel1", skylake), host("intel2", skylake), host("amd", epyc)],
                                   cpu_oracle=BaselineOnly())
        assert [(f.attribute, f.hosts) for f in mixed.errors] == [("cpu_vendor", ["amd"])]
        assert mixed.table["cpu_host_model"] == {"intel1": "Skylake-Server", "intel2": "Skylake-Server", "amd": "EPYC"}
        assert mixed.baseline_cpu["vendor_neutral"] is True
        assert mixed.baseline_cpu["vendor"] is None
        # libvirt's vendor-less answer depends on the order of the CPUs (kvm64 with Skylake
        # first, IvyBridge with EPYC first): informative only, the vendor finding decides.
        assert mixed.baseline_cpu["model"] in ("kvm64", "IvyBridge")
        assert "vmx" not in mixed.baseline_cpu["features"] and "npt" not in mixed.baseline_cpu["features"]

        # Same vendor, two generations: a real common model with libvirt's model hierarchy.
        intel = hg.compare_cluster([host("sky", skylake), host("has", haswell)], cpu_oracle=BaselineOnly())
        assert intel.ok, [f.message for f in intel.findings]
        assert intel.baseline_cpu["model"] == "IvyBridge"
        assert intel.baseline_cpu["vendor"] == "Intel"
    finally:
        conn.close()


def _reachable(uri):
    try:
        libvirt_connection.open_connection(uri, readonly=True).close()
        return True
    except libvirt_connection.LibvirtHostError:
        return False


@pytest.fixture(scope="module")
def hetero_lab(lab):
    """The heterogeneous lab, up beside the default one (brought up here if needed)."""
    started = False
    if not all(_reachable(uri) for uri in HETERO_URIS):
        topology = os.path.join(HETERO_INVENTORY, "topology.yml")
        up = subprocess.run(["ansible-playbook", os.path.join(REPO, "playbooks", "lab_up.yml"),
                             "-e", "lab_topology=%s" % topology], cwd=REPO, env=ansible_env(),
                            capture_output=True, text=True, timeout=900, check=False)
        assert up.returncode == 0, "lab-hetero did not come up:\n" + up.stdout[-4000:] + up.stderr[-2000:]
        started = True
    yield HETERO_INVENTORY
    if started and os.environ.get("VIRTFLEET_LAB_KEEP") != "1":
        subprocess.run(["ansible-playbook", os.path.join(REPO, "playbooks", "lab_down.yml"),
                        "-e", "lab_topology=%s" % os.path.join(HETERO_INVENTORY, "topology.yml")],
                       cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=600, check=False)


def test_assert_homogeneity_fails_clearly_on_a_host_without_kvm(hetero_lab):
    result = run_playbook(hetero_lab)
    assert result.returncode != 0
    out = result.stdout
    assert "cluster het-a: NOT HOMOGENEOUS" in out
    # hv-a3's daemon has no /dev/kvm: it is the odd host, for KVM and for the declared type.
    assert "kvm differs on hv-a3=no (the others have yes)" in out
    assert "hypervisor not as declared on hv-a3 (declared kvm, libvirt reports qemu" in out
    assert "a KVM guest cannot start on a host without usable KVM" in out
