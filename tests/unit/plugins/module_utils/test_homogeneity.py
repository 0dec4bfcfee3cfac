"""Cluster homogeneity: table, odd hosts, reasons; CPU logic on recorded real CPUs."""
import copy
import os

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils.homogeneity import (
    FeatureSetCpuOracle, HostInput, compare_cluster, cpu_summary, majority, version_key)

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "data", "cpu")
SHARED = {"name": "nfs-a", "type": "shared", "path": "/srv/shared/lab-a"}


def read(name):
    with open(os.path.join(DATA, name)) as handle:
        return handle.read()


def cpu_from_host_xml(xml):
    summary = cpu_summary(xml)
    return dict(summary, xml=xml)


SKYLAKE = cpu_from_host_xml(read("x86_64-cpuid-Xeon-Gold-6148-host.xml"))
EPYC = cpu_from_host_xml(read("x86_64-cpuid-EPYC-7601-32-Core-host.xml"))
HASWELL = cpu_from_host_xml(read("x86_64-cpuid-Xeon-E5-2650-v3-host.xml"))


def facts(**overrides):
    base = {
        "driver": "QEMU", "hypervisor": "kvm", "kvm_usable": True, "kvm_error": None,
        "arch": "x86_64", "libvirt_version": "9.0.0", "hypervisor_version": "7.2.22",
        "host_uuid": None, "machine_types": ["pc", "pc-i440fx-7.2", "pc-q35-7.2", "q35"],
        "cpu": copy.deepcopy(SKYLAKE),
    }
    base.update(overrides)
    return base


def cluster(n=3, **per_host):
    """n identical KVM hosts h1..hn; per_host={"h2": {"arch": "aarch64"}} overrides facts."""
    hosts = []
    for i in range(1, n + 1):
        name = "h%d" % i
        overrides = dict({"host_uuid": "uuid-%d" % i}, **per_host.get(name, {}))
        hosts.append(HostInput(name, "kvm", dict(SHARED), facts(**overrides)))
    return hosts


def errors_by_attribute(report):
    return {f.attribute: f for f in report.errors}


def test_identical_hosts_pass_with_table_and_baseline():
    report = compare_cluster(cluster())
    assert report.ok, [f.message for f in report.findings]
    assert report.hosts == ["h1", "h2", "h3"]
    assert report.table["arch"] == {"h1": "x86_64", "h2": "x86_64", "h3": "x86_64"}
    assert report.table["storage"]["h2"] == "nfs-a:/srv/shared/lab-a"
    assert report.baseline_cpu["model"] == "Skylake-Server"
    assert report.common_machine_types == ["pc", "pc-i440fx-7.2", "pc-q35-7.2", "q35"]
    lines = report.format_table()
    assert "arch                 = x86_64" in lines
    # Only the host UUIDs differ: they alone get per-host columns.
    assert lines[-2].split() == ["attribute", "h1", "h2", "h3"]
    assert lines[-1].split() == ["host_uuid", "uuid-1", "uuid-2", "uuid-3"]
    assert not any("!" in line for line in lines)
    full = report.format_table(collapse_equal=False)
    assert full[0].split() == ["attribute", "h1", "h2", "h3"] and len(full) == len(report.table) + 1


def test_odd_arch_names_the_host_and_why():
    report = compare_cluster(cluster(h3={"arch": "aarch64"}))
    finding = errors_by_attribute(report)["arch"]
    assert finding.hosts == ["h3"] and finding.reference == "x86_64"
    assert finding.message.startswith("arch differs on h3=aarch64 (the others have x86_64)")
    assert "cannot change CPU architecture" in finding.message
    assert report.odd_hosts["h3"] == ["arch"]
    assert any(line.startswith("arch") and "!aarch64" in line for line in report.format_table())


def test_tie_names_every_host():
    assert majority({"a": "x", "b": "y"}) == (None, ["a", "b"])
    assert majority({"a": "x", "b": "y", "c": "x"}) == ("x", ["b"])
    report = compare_cluster(cluster(2, h2={"arch": "aarch64"}))
    assert errors_by_attribute(report)["arch"].hosts == ["h1", "h2"]
    assert "no majority" in errors_by_attribute(report)["arch"].message


def test_kvm_on_some_hosts_only_fails_and_declared_kvm_without_kvm_fails():
    no_kvm = {"kvm_usable": False, "hypervisor": "qemu", "kvm_error": "Permission denied on /dev/kvm"}
    report = compare_cluster(cluster(h2=no_kvm))
    found = errors_by_attribute(report)
    assert found["kvm"].hosts == ["h2"]
    assert found["hypervisor_reported"].hosts == ["h2"]
    assert found["hypervisor_reported"].message.startswith(
        "hypervisor not as declared on h2 (declared kvm, libvirt reports qemu (Permission denied on /dev/kvm))")


def test_declared_qemu_on_kvm_capable_host_is_fine():
    hosts = cluster()
    for h in hosts:
        h.declared_hypervisor = "qemu"
    assert compare_cluster(hosts).ok


def test_mixed_declared_hypervisors_fail():
    hosts = cluster()
    hosts[0].declared_hypervisor = "xen"
    assert errors_by_attribute(compare_cluster(hosts))["hypervisor_declared"].hosts == ["h1"]


def test_declared_only_types_are_compared_by_declaration():
    hosts = [HostInput("hv1", "hyperv", SHARED), HostInput("hv2", "hyperv", SHARED),
             HostInput("hv3", "vsphere", SHARED)]
    report = compare_cluster(hosts)
    assert list(report.table) == ["hypervisor_declared", "storage"]
    assert errors_by_attribute(report)["hypervisor_declared"].hosts == ["hv3"]
    hosts[2].declared_hypervisor = "hyperv"
    assert compare_cluster(hosts).ok


def test_missing_facts_of_a_queryable_host_fail_with_the_error():
    hosts = cluster()
    hosts[1].facts = None
    hosts[1].error = "cannot connect to qemu+tcp://127.0.1.12/session: Connection refused"
    finding = errors_by_attribute(compare_cluster(hosts))["facts"]
    assert finding.hosts == ["h2"]
    assert finding.message.startswith("no facts from h2: h2: cannot connect to qemu+tcp://127.0.1.12/session")


@pytest.mark.parametrize("level, versions, odd", [
    ("minor", ["9.0.0", "9.5.0", "9.0.0"], []),
    ("minor", ["9.0.0", "10.0.0", "9.0.0"], ["h2"]),
    ("patch", ["9.0.0", "9.0.3", "9.0.0"], []),
    ("patch", ["9.0.0", "9.1.0", "9.0.0"], ["h2"]),
    ("exact", ["9.0.0", "9.0.1", "9.0.0"], ["h2"]),
    ("major", ["8.0.0", "10.0.0", "9.0.0"], []),
])
def test_libvirt_version_skew(level, versions, odd):
    hosts = cluster(**{"h%d" % (i + 1): {"libvirt_version": v} for i, v in enumerate(versions)})
    report = compare_cluster(hosts, version_skew={"libvirt": level})
    found = errors_by_attribute(report)
    assert (found["libvirt_version"].hosts if "libvirt_version" in found else []) == odd


def test_qemu_version_skew_default_is_same_major():
    report = compare_cluster(cluster(h1={"hypervisor_version": "6.2.0"}))
    finding = errors_by_attribute(report)["qemu_version"]
    assert finding.hosts == ["h1"]
    assert "allowed skew: minor" in finding.message


def test_version_key():
    assert version_key("9.0.0", "minor") == "9.x.x"
    assert version_key("7.2.22", "patch") == "7.2.x"
    assert version_key("7.2.22", "major") == "any"
    with pytest.raises(ValueError):
        version_key("1", "huge")


def test_no_common_machine_type_fails_and_names_the_odd_host():
    report = compare_cluster(cluster(h3={"machine_types": ["virt", "virt-7.2"]}))
    finding = errors_by_attribute(report)["machine_types"]
    assert finding.hosts == ["h3"]
    assert report.common_machine_types == []


def test_machine_types_only_some_hosts_have_are_a_warning():
    newer = facts()["machine_types"] + ["pc-q35-8.0"]
    report = compare_cluster(cluster(h1={"machine_types": newer}, h2={"machine_types": newer}))
    assert report.ok
    (warning,) = [f for f in report.warnings if f.attribute == "machine_types"]
    assert warning.hosts == ["h3"] and "pc-q35-8.0" in warning.values["h3"]


def test_different_primary_storage_fails():
    hosts = cluster()
    hosts[0].storage = {"name": "local", "type": "local", "path": "/var/lib/libvirt/images"}
    finding = errors_by_attribute(compare_cluster(hosts))["storage"]
    assert finding.hosts == ["h1"] and finding.reference == "nfs-a:/srv/shared/lab-a"


def test_duplicate_host_uuid_fails():
    report = compare_cluster(cluster(h2={"host_uuid": "uuid-1"}))
    finding = errors_by_attribute(report)["host_uuid"]
    assert finding.hosts == ["h1", "h2"]
    assert "host_uuid_source" in finding.why


# --- CPU, on recorded real CPUs ---------------------------------------------------------------

def test_skylake_and_epyc_share_no_host_model_and_no_vendor():
    report = compare_cluster(cluster(h3={"cpu": copy.deepcopy(EPYC)}))
    found = errors_by_attribute(report)
    assert found["cpu_vendor"].hosts == ["h3"] and found["cpu_vendor"].reference == "Intel"
    (host_model,) = [f for f in report.warnings if f.attribute == "cpu_host_model"]
    assert host_model.values == {"h1": "Skylake-Server", "h2": "Skylake-Server", "h3": "EPYC"}
    # Vendor-neutral common ground is still reported for the operator.
    baseline = report.baseline_cpu
    assert baseline["vendor_neutral"] is True and baseline["vendor"] is None
    assert {"monitor", "xsaves", "invtsc"} <= set(baseline["features"])
    assert "vmx" not in baseline["features"] and "npt" not in baseline["features"]


def test_same_vendor_different_generations_fallback_keeps_common_features():
    report = compare_cluster(cluster(h3={"cpu": copy.deepcopy(HASWELL)}))
    assert "cpu_vendor" not in errors_by_attribute(report)
    baseline = report.baseline_cpu
    assert baseline["vendor"] == "Intel" and baseline["vendor_neutral"] is False
    # The fallback knows no model hierarchy: no model, only features all three have.
    assert baseline["model"] is None
    assert "vmx" in baseline["features"] and "f16c" not in baseline["features"]
    assert report.ok


class RefusingOracle:
    """Stands in for libvirt: a fixed baseline, and one host that cannot run it."""

    def __init__(self, refuse_host=None, baseline_error=None):
        self.refuse_host = refuse_host
        self.baseline_error = baseline_error
        self.calls = []

    def baseline(self, xmls, arch, virttype):
        self.calls.append(("baseline", len(xmls), arch, virttype))
        if self.baseline_error:
            raise ValueError(self.baseline_error)
        return "<cpu mode='custom' match='exact'><model>IvyBridge</model><vendor>Intel</vendor></cpu>"

    def compare(self, host, xml, arch, virttype):
        self.calls.append(("compare", host))
        return "Host CPU does not provide required features: avx" if host == self.refuse_host else None


def test_oracle_baseline_is_reported_and_checked_on_every_host():
    oracle = RefusingOracle()
    report = compare_cluster(cluster(h3={"cpu": copy.deepcopy(HASWELL)}), cpu_oracle=oracle)
    assert report.ok
    assert report.baseline_cpu["model"] == "IvyBridge"
    assert report.table["cpu_baseline"] == {h: "runs IvyBridge" for h in ("h1", "h2", "h3")}
    assert oracle.calls[0] == ("baseline", 3, "x86_64", "kvm")
    assert [c for c in oracle.calls if c[0] == "compare"] == [("compare", "h1"), ("compare", "h2"), ("compare", "h3")]


def test_host_that_cannot_run_the_baseline_fails():
    report = compare_cluster(cluster(), cpu_oracle=RefusingOracle(refuse_host="h2"))
    finding = errors_by_attribute(report)["cpu_baseline"]
    assert finding.hosts == ["h2"] and "avx" in finding.message


def test_no_baseline_at_all_fails():
    report = compare_cluster(cluster(), cpu_oracle=RefusingOracle(baseline_error="no common model"))
    finding = errors_by_attribute(report)["cpu_baseline"]
    assert finding.hosts == ["h1", "h2", "h3"] and "no common model" in finding.message


def test_baseline_uses_tcg_when_any_host_lacks_kvm():
    oracle = RefusingOracle()
    compare_cluster(cluster(h1={"kvm_usable": False, "hypervisor": "qemu"}), cpu_oracle=oracle)
    assert oracle.calls[0][3] == "qemu"


def test_feature_set_oracle_compare():
    oracle = FeatureSetCpuOracle({"sky": SKYLAKE["xml"], "epyc": EPYC["xml"], "has": HASWELL["xml"]})
    assert oracle.compare("sky", SKYLAKE["xml"]) is None
    assert "vendor AMD does not match" in oracle.compare("epyc", SKYLAKE["xml"])
    common = oracle.baseline([SKYLAKE["xml"], HASWELL["xml"]])
    assert oracle.compare("sky", common) is None and oracle.compare("has", common) is None
    with pytest.raises(ValueError, match="vendors do not match"):
        oracle.baseline([SKYLAKE["xml"], EPYC["xml"]])


def test_report_to_dict_carries_messages():
    data = compare_cluster(cluster(h3={"arch": "ppc64le"})).to_dict()
    assert data["ok"] is False
    assert data["errors"][0]["attribute"] == "arch"
    assert "h3=ppc64le" in data["errors"][0]["message"]
    assert "arch                 x86_64  x86_64  !ppc64le" in data["table_lines"]


def test_dict_inputs_are_accepted():
    hosts = [{"name": h.name, "declared_hypervisor": "kvm", "storage": SHARED, "facts": h.facts}
             for h in cluster()]
    assert compare_cluster(hosts).ok


# --- the module, through Ansible (precomputed facts / declared-only hosts: no daemon) ------------

def run_module(args):
    import json
    import subprocess
    import sys
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(repo, "ansible.cfg"), ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               ANSIBLE_NOCOLOR="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(["ansible", "localhost", "-m", "virtfleet.cluster.cluster_homogeneity",
                           "-a", json.dumps(args)], cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=False)
    # Ad-hoc output: "localhost | FAILED! => {json}".
    header, body = proc.stdout.split("=> ", 1)
    return dict(json.loads(body), failed="FAILED!" in header)


def test_module_fails_naming_host_attribute_and_reason():
    hosts = [{"name": h.name, "hypervisor": "kvm", "storage": SHARED, "facts": h.facts}
             for h in cluster(h2={"arch": "aarch64"})]
    result = run_module({"hosts": hosts})
    assert result["failed"] is True
    assert result["msg"].startswith("cluster is not homogeneous for live migration: arch differs on h2=aarch64")
    assert "cannot change CPU architecture" in result["msg"]
    assert result["odd_hosts"] == {"h2": ["arch"]}
    assert result["baseline_cpu"]["model"] == "Skylake-Server"


def test_module_refuses_a_host_listed_twice():
    hosts = [{"name": "hv1", "hypervisor": "hyperv", "storage": SHARED},
             {"name": "hv1", "hypervisor": "hyperv", "storage": SHARED}]
    result = run_module({"hosts": hosts})
    assert result["failed"] is True
    assert result["msg"].startswith("hosts lists 'hv1' more than once")


def test_module_report_only_and_declared_only_hosts():
    hosts = [{"name": "hv1", "hypervisor": "hyperv", "storage": SHARED},
             {"name": "hv2", "hypervisor": "vsphere", "storage": SHARED}]
    result = run_module({"hosts": hosts, "fail_on_mismatch": False})
    assert result["failed"] is False
    assert result["ok"] is False
    assert list(result["table"]) == ["hypervisor_declared", "storage"]
    assert result["errors"][0]["hosts"] == ["hv1", "hv2"]  # a tie: both named


def test_single_host_without_machine_types_fails_without_crashing():
    report = compare_cluster(cluster(1, h1={"machine_types": []}))
    assert errors_by_attribute(report)["machine_types"].hosts == ["h1"]


def test_two_disjoint_machine_type_sets_name_both_hosts():
    report = compare_cluster(cluster(2, h1={"machine_types": ["a"]}, h2={"machine_types": ["b"]}))
    assert errors_by_attribute(report)["machine_types"].hosts == ["h1", "h2"]
