"""Cluster homogeneity: table, odd hosts, reasons; CPU logic on recorded real CPUs."""
import copy
import os

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils.homogeneity import (
    WHY, FeatureSetCpuOracle, Finding, HomogeneityError, HomogeneityReport, HostInput, compare_cluster, cpu_summary,
    hosts_to_query, majority, version_key)

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


# --- exact behaviour of the helpers, the report and each check (issue 17: mutation survivors) ---

def test_hosts_to_query_are_the_queryable_hosts_without_facts():
    hosts = [{"name": "k1", "hypervisor": "kvm", "uri": "qemu+tcp://k1/system"},
             {"name": "k2", "uri": "qemu+tcp://k2/system"},  # undeclared: read as kvm
             {"name": "k3", "hypervisor": "kvm", "facts": {"arch": "x86_64"}},  # facts given: no uri needed
             {"name": "hv", "hypervisor": "hyperv"},  # compared by declaration only
             {"name": "x1", "hypervisor": "xen", "uri": "xen+ssh://x1/"}]
    assert [h["name"] for h in hosts_to_query(hosts)] == ["k1", "k2", "x1"]
    assert hosts_to_query(hosts)[0] is hosts[0]


@pytest.mark.parametrize("host, message", [
    ({"name": "k1", "hypervisor": "kvm"},
     "host k1 (hypervisor kvm) has no uri and no facts: set its virtfleet_libvirt_uri"),
    ({"name": "k2", "uri": ""},
     "host k2 (hypervisor undeclared) has no uri and no facts: set its virtfleet_libvirt_uri"),
])
def test_a_host_to_query_without_uri_is_refused_by_name(host, message):
    with pytest.raises(HomogeneityError) as raised:
        hosts_to_query([{"name": "ok", "uri": "qemu:///system"}, host])
    assert str(raised.value) == message


def test_hosts_listed_twice_are_refused_each_named_once():
    hosts = [{"name": n, "hypervisor": "hyperv"} for n in ("b", "a", "b", "a", "b", "c")]
    with pytest.raises(HomogeneityError) as raised:
        hosts_to_query(hosts)
    assert str(raised.value) == ("hosts lists 'a', 'b' more than once: give every host of the cluster once, "
                                 "by its inventory name")
    assert hosts_to_query([{"name": "a", "hypervisor": "hyperv"}, {"name": "b", "hypervisor": "hyperv"}]) == []


def test_dict_input_with_hypervisor_storage_and_error_is_read_whole():
    hosts = [{"name": "h1", "hypervisor": "kvm", "storage": {"name": "nfs-a"}, "facts": None,
              "error": "connection refused"},
             {"name": "h2", "hypervisor": "kvm", "storage": {"path": "/srv"}, "facts": facts()}]
    report = compare_cluster(hosts, storage_must_match=False)
    assert report.table["hypervisor_declared"] == {"h1": "kvm", "h2": "kvm"}
    assert report.table["storage"] == {"h1": "nfs-a:?", "h2": "?:/srv"}
    assert [f.attribute for f in report.findings] == ["facts"]
    assert report.findings[0].message == (
        "no facts from h1: h1: connection refused - breaks live migration because " + WHY["facts"])


def test_storage_row_without_check_and_storage_pool_row():
    pools = {"h1": {"shared_storage": {"pools": ["nfs-a", "nfs-b"]}}, "h2": {"shared_storage": {"pools": []}},
             "h3": {"shared_storage": None}}
    hosts = cluster(**pools)
    hosts[2].storage = None
    report = compare_cluster(hosts, storage_must_match=False)
    assert report.table["storage"] == {"h1": "nfs-a:/srv/shared/lab-a", "h2": "nfs-a:/srv/shared/lab-a",
                                       "h3": "none declared"}
    assert report.table["storage_pool"] == {"h1": "nfs-a, nfs-b", "h2": "no pool at path", "h3": "-"}
    assert "storage" not in errors_by_attribute(report)
    assert "storage_pool" not in compare_cluster(cluster(h1={"shared_storage": {"pools": []}})).table


def test_kvm_row_and_a_mismatch_without_kvm_error_has_no_parenthesis():
    report = compare_cluster(cluster(h2={"kvm_usable": False, "hypervisor": "qemu", "kvm_error": None}))
    assert report.table["kvm"] == {"h1": "yes", "h2": "no", "h3": "yes"}
    assert errors_by_attribute(report)["hypervisor_reported"].values == {"h2": "declared kvm, libvirt reports qemu"}
    # The KVM error is only worth saying for a host declared kvm.
    hosts = cluster(h2={"hypervisor": "xen", "kvm_error": "no /dev/kvm"})
    hosts[1].declared_hypervisor = "qemu"
    assert errors_by_attribute(compare_cluster(hosts))["hypervisor_reported"].values == {
        "h2": "declared qemu, libvirt reports xen"}


def test_declared_xen_is_not_matched_by_a_kvm_report():
    hosts = cluster()
    hosts[0].declared_hypervisor = "xen"
    assert errors_by_attribute(compare_cluster(hosts))["hypervisor_reported"].hosts == ["h1"]


def test_identical_hosts_have_no_finding_at_all():
    report = compare_cluster(cluster())
    assert report.findings == []
    assert report.table["machine_types"] == {h: "4 (4 common)" for h in ("h1", "h2", "h3")}
    assert report.table["kvm"] == {h: "yes" for h in ("h1", "h2", "h3")}


def test_majority_of_nothing_and_of_one_value():
    assert majority({}) == (None, [])
    assert majority({"a": "x", "b": "x"}) == ("x", [])


def test_version_key_keeps_exactly_the_allowed_parts():
    assert version_key("1.2.3", "exact") == "1.2.3"
    assert version_key("9", "exact") == "9.0.0"
    assert version_key("", "exact") == "0.0.0"
    assert version_key("9", "patch") == "9.0.x"
    with pytest.raises(ValueError) as raised:
        version_key("1", "huge")
    assert str(raised.value) == "version skew must be one of exact, patch, minor, major, not 'huge'"


def test_version_finding_names_reference_and_skew_exactly():
    report = compare_cluster(cluster(h2={"libvirt_version": "10.1.0"}))
    finding = errors_by_attribute(report)["libvirt_version"]
    assert finding.reference == "9.x.x"
    assert finding.message == ("libvirt_version differs on h2=10.1.0 (the others have 9.x.x): allowed skew: minor "
                               "(versions must agree on 9.x.x) - breaks live migration because " + WHY["libvirt_version"])
    tie = errors_by_attribute(compare_cluster(cluster(2, h2={"libvirt_version": None})))["libvirt_version"]
    assert tie.values == {"h1": "9.0.0", "h2": "?"}
    assert tie.detail == "allowed skew: minor (versions must agree on one series)"


def test_qemu_versions_are_only_compared_between_qemu_drivers():
    report = compare_cluster(cluster(h1={"driver": "Xen", "hypervisor_version": "4.17"},
                                     h2={"hypervisor_version": None}, h3={"hypervisor_version": None}))
    assert report.table["qemu_version"] == {"h2": "?", "h3": "?"}


def test_host_uuid_unknown_on_several_hosts_is_no_duplicate():
    report = compare_cluster(cluster(h1={"host_uuid": None}, h2={"host_uuid": None}))
    assert report.table["host_uuid"] == {"h1": "?", "h2": "?", "h3": "uuid-3"}
    assert "host_uuid" not in errors_by_attribute(report)
    finding = errors_by_attribute(compare_cluster(cluster(h1={"host_uuid": None}, h2={"host_uuid": "uuid-3"})))["host_uuid"]
    assert finding.hosts == ["h2", "h3"]
    assert finding.message == ("host_uuid differs on h2=uuid-3, h3=uuid-3 (no majority): hosts share a UUID"
                               " - breaks live migration because " + WHY["host_uuid"])


def test_machine_type_messages_and_the_five_type_cut():
    report = compare_cluster(cluster(h3={"machine_types": ["virt"]}))
    finding = errors_by_attribute(report)["machine_types"]
    assert finding.detail == "no machine type is available on every host"
    assert finding.values == {"h1": "4 types", "h2": "4 types", "h3": "1 types"}
    base = facts()["machine_types"]
    five = base + ["m1", "m2", "m3", "m4", "m5"]
    six = five + ["m6"]
    report = compare_cluster(cluster(h1={"machine_types": five}, h2={"machine_types": six}))
    (warning,) = report.warnings
    assert warning.values == {"h1": "lacks m6", "h3": "lacks m1, m2, m3, m4, m5 ..."}
    assert warning.detail == ("guests started with a machine type only some hosts have cannot move to the others; "
                              "common: 4 types")
    report = compare_cluster(cluster(h1={"machine_types": five}, h2={"machine_types": five}))
    assert report.warnings[0].values == {"h3": "lacks m1, m2, m3, m4, m5"}


def test_every_host_lacking_some_machine_type_is_no_warning():
    # Each host has one the other lacks: no host stands out, the common types are what counts.
    report = compare_cluster(cluster(2, h1={"machine_types": ["pc", "a"]}, h2={"machine_types": ["pc", "b"]}))
    assert report.findings == [] and report.common_machine_types == ["pc"]


def cpu_xml(model=None, vendor=None, features=(), disabled=()):
    parts = ["<cpu>"]
    if model:
        parts.append("<model>%s</model>" % model)
    if vendor:
        parts.append("<vendor>%s</vendor>" % vendor)
    parts += ["<feature name='%s'/>" % f for f in features]
    parts += ["<feature policy='disable' name='%s'/>" % f for f in disabled]
    return "".join(parts + ["</cpu>"])


def test_cpu_summary_splits_required_and_disabled_features():
    assert cpu_summary(cpu_xml("Haswell", "Intel", ["vmx", "aes"], ["hle"])) == {
        "model": "Haswell", "vendor": "Intel", "features": ["aes", "vmx"], "disabled_features": ["hle"]}
    forbid = "<cpu><model> </model><feature policy='forbid' name='x'/><feature policy='require' name='y'/></cpu>"
    assert cpu_summary(forbid) == {"model": "", "vendor": None, "features": ["y"], "disabled_features": ["x"]}
    assert cpu_summary("<cpu/>") == {"model": None, "vendor": None, "features": [], "disabled_features": []}


def test_feature_set_baseline_is_the_exact_common_cpu():
    oracle = FeatureSetCpuOracle()
    assert oracle.baseline([cpu_xml("Haswell", "Intel", ["vmx", "aes", "sse"]),
                            cpu_xml("Haswell", "Intel", ["aes", "vmx"])]) == (
        '<cpu mode="custom" match="exact"><model fallback="forbid">Haswell</model><vendor>Intel</vendor>'
        '<feature policy="require" name="aes" /><feature policy="require" name="vmx" /></cpu>')
    assert oracle.baseline([cpu_xml("Haswell", None, ["aes"]), cpu_xml("Skylake", "Intel", ["aes"])]) == (
        '<cpu mode="custom" match="exact"><vendor>Intel</vendor><feature policy="require" name="aes" /></cpu>')
    assert oracle.baseline([]) == '<cpu mode="custom" match="exact" />'
    with pytest.raises(ValueError) as raised:
        oracle.baseline([cpu_xml(vendor="Intel"), cpu_xml(vendor="AMD")])
    assert str(raised.value) == "CPU vendors do not match: AMD, Intel"


def test_feature_set_compare_gives_each_refusal_exactly():
    oracle = FeatureSetCpuOracle({"h": cpu_xml("Haswell", "Intel", ["aes", "vmx"])})
    assert oracle.compare("other", cpu_xml("Haswell")) is None
    assert oracle.compare("h", cpu_xml("Skylake", "Intel")) == (
        "model Skylake differs from the host's Haswell (fallback comparison knows no model hierarchy)")
    assert oracle.compare("h", cpu_xml("Haswell", "AMD")) == "host CPU vendor Intel does not match required CPU vendor AMD"
    assert oracle.compare("h", cpu_xml(None, None, ["avx", "aes", "sse"])) == (
        "host CPU does not provide required features: avx, sse")
    assert oracle.compare("h", cpu_xml(None, "Intel", ["aes"])) is None


class VendorRefusingOracle:
    """Stands in for libvirt refusing a baseline across vendors: only a vendor-free one works."""

    def __init__(self, refuse_always=False):
        self.refuse_always = refuse_always
        self.calls = []

    def baseline(self, xmls, arch, virttype):
        self.calls.append(("baseline", xmls, arch, virttype))
        if self.refuse_always or any("<vendor>" in x for x in xmls):
            raise ValueError("vendors differ")
        return "<cpu><model>qemu64</model><feature name='sse2'/></cpu>"

    def compare(self, host, xml, arch, virttype):
        self.calls.append(("compare", host))
        return "never asked"


def mixed_vendor_cluster():
    return cluster(h1={"arch": "aarch64"}, h3={"cpu": copy.deepcopy(EPYC)})


def test_mixed_vendors_get_a_vendor_neutral_baseline_and_no_compare():
    oracle = VendorRefusingOracle()
    report = compare_cluster(mixed_vendor_cluster(), cpu_oracle=oracle)
    (first, second) = oracle.calls
    assert first[2:] == ("x86_64", "kvm") and second[2:] == ("x86_64", "kvm")
    assert all(isinstance(x, str) and "<vendor>" not in x and "<model>" in x for x in second[1])
    assert report.baseline_cpu == {"model": "qemu64", "vendor": None, "features": ["sse2"], "disabled_features": [],
                                   "xml": "<cpu><model>qemu64</model><feature name='sse2'/></cpu>",
                                   "virttype": "kvm", "arch": "x86_64", "vendor_neutral": True}
    assert report.table["cpu_baseline"] == {h: "runs qemu64" for h in ("h1", "h2", "h3")}
    assert "cpu_baseline" not in errors_by_attribute(report)


def test_no_baseline_even_without_vendor_is_one_finding_with_the_models():
    report = compare_cluster(mixed_vendor_cluster(), cpu_oracle=VendorRefusingOracle(refuse_always=True))
    finding = errors_by_attribute(report)["cpu_baseline"]
    assert finding.hosts == ["h1", "h2", "h3"] and finding.detail == "vendors differ"
    assert finding.values == {"h1": "Skylake-Server", "h2": "Skylake-Server", "h3": "EPYC"}
    assert report.table["cpu_baseline"] == {h: "none" for h in ("h1", "h2", "h3")}
    assert report.baseline_cpu is None


def test_no_baseline_for_one_vendor_names_the_models_and_none():
    oracle = RefusingOracle(baseline_error="no common model")
    report = compare_cluster(cluster(h3={"cpu": copy.deepcopy(HASWELL)}), cpu_oracle=oracle)
    finding = errors_by_attribute(report)["cpu_baseline"]
    assert finding.values == {"h1": "Skylake-Server", "h2": "Skylake-Server", "h3": "Haswell-noTSX"}
    assert report.table["cpu_baseline"] == {h: "none" for h in ("h1", "h2", "h3")}


def test_baseline_arch_is_the_majority_not_the_first_host():
    oracle = RefusingOracle()
    compare_cluster(cluster(h1={"arch": "aarch64"}), cpu_oracle=oracle)
    assert oracle.calls[0] == ("baseline", 3, "x86_64", "kvm")
    assert oracle.calls[1:] == [("compare", "h1"), ("compare", "h2"), ("compare", "h3")]


def test_a_refused_host_is_named_with_the_verdicts():
    report = compare_cluster(cluster(), cpu_oracle=RefusingOracle(refuse_host="h2"))
    finding = errors_by_attribute(report)["cpu_baseline"]
    assert finding.values == {"h1": "ok", "h2": "Host CPU does not provide required features: avx", "h3": "ok"}
    assert finding.detail == "h2: Host CPU does not provide required features: avx"
    assert report.table["cpu_baseline"] == {"h1": "runs IvyBridge", "h2": "cannot run IvyBridge", "h3": "runs IvyBridge"}
    assert report.baseline_cpu["arch"] == "x86_64" and report.baseline_cpu["virttype"] == "kvm"
    assert report.baseline_cpu["xml"].startswith("<cpu mode='custom'")


class ModelFreeOracle(RefusingOracle):
    def baseline(self, xmls, arch, virttype):
        return "<cpu><feature name='sse2'/></cpu>"


def test_a_baseline_without_model_is_called_baseline():
    report = compare_cluster(cluster(), cpu_oracle=ModelFreeOracle(refuse_host="h1"))
    assert report.table["cpu_baseline"] == {"h1": "cannot run baseline", "h2": "runs baseline", "h3": "runs baseline"}


def test_hosts_without_cpu_facts_are_left_out_of_the_cpu_checks():
    no_vendor = dict(copy.deepcopy(SKYLAKE), vendor=None, model=None)
    report = compare_cluster(cluster(h1={"cpu": None}, h2={"cpu": {"model": "x"}}, h3={"cpu": no_vendor}))
    assert report.table["cpu_vendor"] == {"h3": "unknown"}
    assert report.table["cpu_host_model"] == {"h3": "?"}


def test_default_oracle_compares_against_each_host_cpu():
    # A baseline with a model only some hosts have is refused by the default oracle; with no
    # host CPUs known it would give no verdict at all.
    class ForcedBaseline(FeatureSetCpuOracle):
        def baseline(self, cpu_xmls, arch=None, virttype=None):
            return cpu_xml("Skylake-Server", "Intel")

    hosts = cluster(h3={"cpu": copy.deepcopy(HASWELL)})
    report = compare_cluster(hosts, cpu_oracle=ForcedBaseline({h.name: h.facts["cpu"]["xml"] for h in hosts}))
    assert errors_by_attribute(report)["cpu_baseline"].hosts == ["h3"]


def test_finding_and_report_dicts_carry_every_field():
    report = compare_cluster(cluster(h3={"arch": "ppc64le", "machine_types": ["pc"]}))
    data = report.to_dict()
    assert set(data) == {"ok", "hosts", "table", "table_lines", "errors", "advisories", "odd_hosts", "baseline_cpu",
                         "common_machine_types"}
    assert data["hosts"] == ["h1", "h2", "h3"] and data["table"] is report.table
    assert data["table_lines"] == report.format_table()
    assert data["errors"] == [{
        "attribute": "arch", "severity": "error", "hosts": ["h3"], "reference": "x86_64",
        "values": {"h1": "x86_64", "h2": "x86_64", "h3": "ppc64le"}, "why": WHY["arch"], "detail": "",
        "message": "arch differs on h3=ppc64le (the others have x86_64) - breaks live migration because " + WHY["arch"]}]
    (advisory,) = data["advisories"]
    assert advisory["attribute"] == "machine_types" and advisory["severity"] == "warning"
    assert advisory["message"] == (
        "machine_types differs on h3=lacks pc-i440fx-7.2, pc-q35-7.2, q35 (no majority): guests started with a machine "
        "type only some hosts have cannot move to the others; common: 1 types - " + WHY["machine_types"])
    assert data["odd_hosts"] == {"h3": ["arch"]}
    assert data["baseline_cpu"] is report.baseline_cpu and data["common_machine_types"] == ["pc"]


def table_report(table, findings=(), hosts=("a", "b")):
    report = HomogeneityReport(hosts=list(hosts), table=table)
    report.findings = [Finding(attr, severity, list(on), None, {}, "why") for attr, severity, on in findings]
    return report


def test_table_lines_exactly():
    report = table_report({"a_long_attribute": {"a": "1", "b": "1"}, "x": {"a": "10", "b": "2"},
                           "y": {"a": "3"}},
                          [("x", "warning", "b"), ("x", "error", "b"), ("y", "error", "a"), ("y", "warning", "a")])
    # An error mark wins over a warning on the same cell, whichever came first.
    assert report.format_table() == ["a_long_attribute  = 1",
                                     "attribute         a   b",
                                     "x                 10  !2",
                                     "y                 !3  -"]


def test_table_with_every_value_equal_has_no_header_and_wide_values_set_their_column():
    assert table_report({"x": {"a": "1", "b": "1"}}).format_table() == ["x          = 1"]
    report = table_report({"x": {"a": "a-very-long-value", "b": "1"}, "y": {"a": "2", "b": "2"}})
    assert report.format_table() == ["y          = 2",
                                     "attribute  a                  b",
                                     "x          a-very-long-value  1"]
    assert table_report({}).format_table() == ["attribute  a  b"]
    warned = table_report({"x": {"a": "1", "b": "1"}}, [("x", "warning", "a")])
    assert warned.format_table() == ["attribute  a   b", "x          ~1  1"]


def test_undeclared_hosts_are_queried_as_kvm_and_named_undeclared():
    hosts = [HostInput("h1", None, SHARED, None, "refused"), HostInput("h2", None, SHARED, facts(hypervisor=None))]
    hosts[1].facts.pop("hypervisor")
    report = compare_cluster(hosts)
    assert report.table["hypervisor_declared"] == {"h1": "undeclared", "h2": "undeclared"}
    assert report.table["hypervisor_reported"] == {"h2": "?"}
    found = errors_by_attribute(report)
    assert found["facts"].hosts == ["h1"]
    assert found["hypervisor_reported"].message == (
        "hypervisor not as declared on h2 (declared undeclared, libvirt reports ?) - breaks live migration because "
        + WHY["hypervisor_reported"])


def test_host_names_given_twice_are_refused():
    with pytest.raises(ValueError) as raised:
        compare_cluster(cluster(1) + cluster(1))
    assert str(raised.value) == "duplicate host names in the cluster"


class RecordingOracle(RefusingOracle):
    def compare(self, host, xml, arch, virttype):
        self.calls.append(("compare", host, arch, virttype))


def test_the_baseline_is_checked_for_the_same_arch_and_domain_type():
    oracle = RecordingOracle()
    compare_cluster(cluster(2, h1={"kvm_usable": False, "hypervisor": "qemu"}), cpu_oracle=oracle)
    assert oracle.calls[1:] == [("compare", "h1", "x86_64", "qemu"), ("compare", "h2", "x86_64", "qemu")]


def test_without_an_arch_majority_the_cpu_then_the_first_host_give_it():
    oracle = RecordingOracle()
    tie = cluster(2, h1={"arch": "x86_64"}, h2={"arch": "aarch64"})
    compare_cluster(tie, cpu_oracle=oracle)
    assert oracle.calls[0][2] == "x86_64"  # the first host's facts
    tie[0].facts["cpu"]["arch"] = "ppc64le"
    compare_cluster(tie, cpu_oracle=oracle)
    assert oracle.calls[-3][2] == "ppc64le"  # the first CPU's own arch, when it has one
