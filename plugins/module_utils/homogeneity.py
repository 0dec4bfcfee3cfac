# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure comparison of per-host facts into a per-cluster attribute x host table.

Live migration only works between hosts that agree on a handful of things; this module finds
the host(s) that disagree and says why each difference breaks live migration. The reference
value of an attribute is the one most hosts have; on a tie every host is named.

Inputs are the facts `libvirt_facts.gather_hypervisor_facts` returns (or None for a
hypervisor the collection cannot query, e.g. hyperv or vsphere: those hosts are compared by
their declared type only). CPU baselines go through an injectable oracle:
`libvirt_facts.LibvirtCpuOracle` asks libvirt (`baselineHypervisorCPU` /
`compareHypervisorCPU`); `FeatureSetCpuOracle` here is a pure fallback that compares model
names and feature sets.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError

# Hypervisors whose hosts we read through libvirt; others are compared by declared type only.
QUERYABLE_HYPERVISORS = ("kvm", "qemu", "xen", "lxc")
SKEW_LEVELS = ("exact", "patch", "minor", "major")
DEFAULT_VERSION_SKEW = {"libvirt": "minor", "qemu": "minor"}

WHY = {
    "facts": "without the host's facts nothing proves guests can move to or from it",
    "hypervisor_declared": "live migration only works between hosts of the same hypervisor type",
    "hypervisor_reported": ("the topology declares a hypervisor libvirt does not provide there: "
                            "guests defined for one cannot run on the other (a KVM guest needs /dev/kvm)"),
    "arch": "a running guest cannot change CPU architecture",
    "kvm": ("KVM (hardware) and TCG (emulated) guests are different domain types: a KVM guest "
            "cannot start on a host without usable KVM, so it cannot migrate there"),
    "cpu_vendor": ("the guest sees the CPU vendor (CPUID); it cannot change under a running guest, "
                   "and libvirt refuses a baseline across vendors"),
    "cpu_host_model": ("guests with a host-model or host-passthrough CPU only migrate to hosts that "
                       "offer at least the same CPU features; use the baseline model for guests that "
                       "must move freely"),
    "cpu_baseline": "no CPU model runs on every host: a guest using it could not migrate everywhere",
    "libvirt_version": ("libvirt releases further apart than the allowed skew are not guaranteed to "
                        "migrate both ways (new XML or migration parameters the older side rejects)"),
    "qemu_version": ("QEMU only guarantees migration for machine types both sides know; versions "
                     "further apart than the allowed skew break migration to the older host"),
    "machine_types": "a guest's machine type must exist on the destination host",
    "storage": ("live migration without copying disks needs the guests' disks on storage every "
                "host mounts at the same path"),
    "host_uuid": ("libvirt refuses to migrate between hosts with the same host UUID ('Attempt to "
                  "migrate guest to the same host'); set host_uuid_source = \"machine-id\" or host_uuid"),
}


class HomogeneityError(VirtfleetError):
    """The hosts given cannot be compared, or the cluster is not homogeneous (``result`` then
    holds the report)."""


@dataclass
class HostInput:
    """One host of a cluster: topology's declaration plus gathered facts (None if not queried)."""

    name: str
    declared_hypervisor: Optional[str] = None
    storage: Optional[Mapping] = None
    facts: Optional[Mapping] = None
    error: Optional[str] = None  # why facts could not be gathered


@dataclass
class Finding:
    attribute: str
    severity: str  # error | warning
    hosts: List[str]  # the odd hosts
    reference: Optional[str]
    values: Dict[str, str]
    why: str
    detail: str = ""
    summary: str = ""  # replaces the "<attribute> differs on ..." opening when set

    @property
    def message(self) -> str:
        odd = ", ".join("%s=%s" % (h, self.values.get(h, "?")) for h in self.hosts)
        ref = ("the others have %s" % self.reference) if self.reference is not None else "no majority"
        text = self.summary or "%s differs on %s (%s)" % (self.attribute, odd, ref)
        if self.detail:
            text += ": " + self.detail
        return "%s - breaks live migration because %s" % (text, self.why) if self.severity == "error" \
            else "%s - %s" % (text, self.why)

    def to_dict(self) -> dict:
        return {"attribute": self.attribute, "severity": self.severity, "hosts": self.hosts,
                "reference": self.reference, "values": self.values, "why": self.why,
                "detail": self.detail, "message": self.message}


@dataclass
class HomogeneityReport:
    hosts: List[str]
    table: Dict[str, Dict[str, str]] = field(default_factory=dict)
    findings: List[Finding] = field(default_factory=list)
    baseline_cpu: Optional[dict] = None
    common_machine_types: List[str] = field(default_factory=list)

    @property
    def errors(self) -> List[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> List[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def odd_hosts(self) -> Dict[str, List[str]]:
        """host -> attributes (errors only) on which it is odd."""
        result: Dict[str, List[str]] = {}
        for finding in self.errors:
            for host in finding.hosts:
                result.setdefault(host, []).append(finding.attribute)
        return result

    def format_table(self, collapse_equal: bool = True) -> List[str]:
        """The table as aligned text lines, odd values marked with '!' (errors) or '~' (warnings).

        With `collapse_equal`, an attribute on which every host agrees takes one line
        (`= value`), so the columns only carry what differs.
        """
        marks: Dict[Tuple[str, str], str] = {}
        for finding in self.findings:
            for host in finding.hosts:
                if marks.get((finding.attribute, host)) != "!":
                    marks[(finding.attribute, host)] = "!" if finding.severity == "error" else "~"
        header = ["attribute"] + self.hosts
        rows, same = [header], []
        for attribute, values in self.table.items():
            distinct = set(values.values())
            if collapse_equal and len(distinct) == 1 and len(values) == len(self.hosts) \
                    and not any((attribute, h) in marks for h in self.hosts):
                same.append((attribute, distinct.pop()))
                continue
            rows.append([attribute] + ["%s%s" % (marks.get((attribute, h), ""), values.get(h, "-"))
                                       for h in self.hosts])
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        width = max([widths[0]] + [len(a) for a, _v in same])
        lines = ["%s  = %s" % (a.ljust(width), v) for a, v in same]
        if len(rows) > 1 or not same:
            widths[0] = width
            lines += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
        return lines

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "hosts": self.hosts,
            "table": self.table,
            "table_lines": self.format_table(),
            "errors": [f.to_dict() for f in self.errors],
            # Not "warnings": Ansible treats that result key as its own warning list.
            "advisories": [f.to_dict() for f in self.warnings],
            "odd_hosts": self.odd_hosts,
            "baseline_cpu": self.baseline_cpu,
            "common_machine_types": self.common_machine_types,
        }


# --- helpers ------------------------------------------------------------------------------------

def majority(values: Mapping[str, str]) -> Tuple[Optional[str], List[str]]:
    """(reference value, odd hosts). The reference is the value most hosts share; when several
    values tie for most, there is no reference and every host is odd."""
    counts = Counter(values.values())
    if len(counts) <= 1:
        return (next(iter(counts)) if counts else None), []
    ranked = counts.most_common()
    if ranked[0][1] == ranked[1][1]:
        return None, sorted(values)
    reference = ranked[0][0]
    return reference, sorted(h for h, v in values.items() if v != reference)


def _version_tuple(text: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text or "")[:3]) + (0, 0, 0)


def version_key(version: str, skew: str) -> str:
    """The part of `version` that must be equal under the allowed `skew`."""
    if skew not in SKEW_LEVELS:
        raise ValueError("version skew must be one of %s, not %r" % (", ".join(SKEW_LEVELS), skew))
    parts = _version_tuple(version)
    keep = {"exact": 3, "patch": 2, "minor": 1, "major": 0}[skew]
    return ".".join(str(p) for p in parts[:keep]) + (".x" * (3 - keep)) if keep else "any"


def _strip_vendor(cpu_xml: str) -> str:
    root = ET.fromstring(cpu_xml)
    for vendor in root.findall("vendor"):
        root.remove(vendor)
    return ET.tostring(root, encoding="unicode")


def cpu_summary(cpu_xml: str) -> dict:
    """Model, vendor and required / disabled features of a `<cpu>` document."""
    root = ET.fromstring(cpu_xml)
    model = root.find("model")
    vendor = root.find("vendor")
    required, disabled = [], []
    for feature in root.findall("feature"):
        (disabled if feature.get("policy") in ("disable", "forbid") else required).append(feature.get("name"))
    return {"model": model.text.strip() if model is not None and model.text else None,
            "vendor": vendor.text.strip() if vendor is not None and vendor.text else None,
            "features": sorted(required), "disabled_features": sorted(disabled)}


class FeatureSetCpuOracle:
    """Pure fallback for CPU baseline/compare: same vendor required; the baseline keeps the
    model only when every host has the same one, and the features every host has.

    It knows nothing of libvirt's model hierarchy (that Skylake-Server includes Haswell's
    features, say), so it is stricter than libvirt: use it in unit tests or when no daemon
    can compute a baseline.
    """

    def __init__(self, host_cpus: Optional[Mapping[str, str]] = None):
        self.host_cpus = dict(host_cpus or {})

    def baseline(self, cpu_xmls: Sequence[str], arch=None, virttype=None) -> str:
        cpus = [cpu_summary(x) for x in cpu_xmls]
        vendors = {c["vendor"] for c in cpus if c["vendor"]}
        if len(vendors) > 1:
            raise ValueError("CPU vendors do not match: %s" % ", ".join(sorted(vendors)))
        models = {c["model"] for c in cpus}
        features = set.intersection(*(set(c["features"]) for c in cpus)) if cpus else set()
        model = models.pop() if len(models) == 1 else None
        cpu = ET.Element("cpu", {"mode": "custom", "match": "exact"})
        if model:
            ET.SubElement(cpu, "model", {"fallback": "forbid"}).text = model
        if vendors:
            ET.SubElement(cpu, "vendor").text = vendors.pop()
        for name in sorted(features):
            ET.SubElement(cpu, "feature", {"policy": "require", "name": name})
        return ET.tostring(cpu, encoding="unicode")

    def compare(self, host: str, cpu_xml: str, arch=None, virttype=None) -> Optional[str]:
        if host not in self.host_cpus:
            return None  # nothing known to compare against: no verdict
        want, have = cpu_summary(cpu_xml), cpu_summary(self.host_cpus[host])
        if want["vendor"] and have["vendor"] and want["vendor"] != have["vendor"]:
            return "host CPU vendor %s does not match required CPU vendor %s" % (have["vendor"], want["vendor"])
        if want["model"] and want["model"] != have["model"]:
            return "model %s differs from the host's %s (fallback comparison knows no model hierarchy)" % (
                want["model"], have["model"])
        missing = sorted(set(want["features"]) - set(have["features"]))
        if missing:
            return "host CPU does not provide required features: %s" % ", ".join(missing)
        return None


# --- the comparison --------------------------------------------------------------------------

def hosts_to_query(hosts: Sequence[Mapping]) -> List[Mapping]:
    """The hosts (module ``hosts`` entries) whose facts must be read from libvirt: not given
    facts and of a hypervisor the collection queries. Refuses a host listed twice, or one to
    query without a URI."""
    names = [host["name"] for host in hosts]
    duplicates = sorted(set(name for name in names if names.count(name) > 1))
    if duplicates:
        raise HomogeneityError("hosts lists %s more than once: give every host of the cluster once, "
                               "by its inventory name" % ", ".join(repr(name) for name in duplicates))
    to_query = []
    for host in hosts:
        declared = host.get("hypervisor")
        if host.get("facts") is None and (declared or "kvm") in QUERYABLE_HYPERVISORS:
            if not host.get("uri"):
                raise HomogeneityError("host %s (hypervisor %s) has no uri and no facts: set its "
                                       "virtfleet_libvirt_uri" % (host["name"], declared or "undeclared"))
            to_query.append(host)
    return to_query


def _as_input(host) -> HostInput:
    if isinstance(host, HostInput):
        return host
    return HostInput(name=host["name"], declared_hypervisor=host.get("declared_hypervisor") or host.get("hypervisor"),
                     storage=host.get("storage"), facts=host.get("facts"), error=host.get("error"))


def _storage_label(storage: Optional[Mapping]) -> str:
    if not storage:
        return "none declared"
    return "%s:%s" % (storage.get("name", "?"), storage.get("path", "?"))


class _Builder:
    def __init__(self, hosts: Sequence[str]):
        self.report = HomogeneityReport(hosts=list(hosts))

    def row(self, attribute: str, values: Mapping[str, str]):
        self.report.table[attribute] = {h: str(v) for h, v in values.items()}

    def majority_check(self, attribute: str, values: Mapping[str, str], severity="error", detail=""):
        self.row(attribute, values)
        reference, odd = majority(values)
        if odd:
            self.report.findings.append(Finding(attribute, severity, odd, reference,
                                                {h: str(v) for h, v in values.items()}, WHY[attribute], detail))
        return reference, odd

    def finding(self, attribute, hosts, values, reference=None, severity="error", detail="", summary=""):
        self.report.findings.append(Finding(attribute, severity, sorted(hosts), reference,
                                            {h: str(v) for h, v in values.items()}, WHY[attribute], detail,
                                            summary))


def compare_cluster(hosts: Sequence, cpu_oracle=None, version_skew: Optional[Mapping[str, str]] = None,
                    storage_must_match: bool = True) -> HomogeneityReport:
    """Compares the hosts of one cluster. See the module docstring.

    hosts: HostInput objects or dicts {name, declared_hypervisor, storage, facts, error}.
    cpu_oracle: object with baseline(cpu_xmls, arch, virttype) -> cpu xml (raises ValueError
      when there is none) and compare(host, cpu_xml, arch, virttype) -> None | reason.
      Default: FeatureSetCpuOracle over the hosts' host-model CPUs.
    version_skew: {"libvirt": level, "qemu": level}, level one of exact|patch|minor|major =
      the finest version component allowed to differ ("minor": same major version).
    """
    inputs = [_as_input(h) for h in hosts]
    names = [h.name for h in inputs]
    if len(set(names)) != len(names):
        raise ValueError("duplicate host names in the cluster")
    skew = dict(DEFAULT_VERSION_SKEW, **(version_skew or {}))
    for level in skew.values():
        version_key("0", level)  # validates
    b = _Builder(names)

    declared = {h.name: (h.declared_hypervisor or "undeclared") for h in inputs}
    b.majority_check("hypervisor_declared", declared)

    queried = [h for h in inputs if (h.declared_hypervisor or "kvm") in QUERYABLE_HYPERVISORS]
    failed = [h for h in queried if h.facts is None]
    if failed:
        b.finding("facts", [h.name for h in failed], {h.name: "not gathered" for h in failed},
                  summary="no facts from %s" % ", ".join(h.name for h in failed),
                  detail="; ".join("%s: %s" % (h.name, h.error or "not gathered") for h in failed))
    facts = {h.name: h.facts for h in queried if h.facts is not None}

    if facts:
        reported = {n: f.get("hypervisor", "?") for n, f in facts.items()}
        b.row("hypervisor_reported", reported)
        mismatched = [n for n in facts if not _declared_matches(declared[n], reported[n])]
        if mismatched:
            values = {n: "declared %s, libvirt reports %s%s" % (
                declared[n], reported[n],
                (" (%s)" % facts[n]["kvm_error"]) if facts[n].get("kvm_error") and declared[n] == "kvm" else "")
                for n in mismatched}
            # Not a majority question: each such host contradicts its own declaration.
            b.finding("hypervisor_reported", mismatched, values,
                      summary="hypervisor not as declared on " + ", ".join(
                          "%s (%s)" % (n, values[n]) for n in sorted(mismatched)))

        b.majority_check("arch", {n: f.get("arch") for n, f in facts.items()})
        b.majority_check("kvm", {n: ("yes" if f.get("kvm_usable") else "no") for n, f in facts.items()})
        _check_versions(b, facts, skew)
        _check_machine_types(b, facts)
        _check_host_uuid(b, facts)
        _check_cpu(b, facts, cpu_oracle)

    if storage_must_match:
        b.majority_check("storage", {h.name: _storage_label(h.storage) for h in inputs})
    else:
        b.row("storage", {h.name: _storage_label(h.storage) for h in inputs})
    # Only worth a row when some host has a pool at the path: then the others stand out.
    if any(f.get("shared_storage") and f["shared_storage"]["pools"] for f in facts.values()):
        b.row("storage_pool", {n: (", ".join(f["shared_storage"]["pools"]) or "no pool at path")
                               if f.get("shared_storage") else "-" for n, f in facts.items()})
    return b.report


def _declared_matches(declared: str, reported: str) -> bool:
    if declared == reported:
        return True
    # A host declared "qemu" (TCG guests) may well have KVM too: TCG guests still run there.
    return declared == "qemu" and reported == "kvm"


def _check_versions(b: _Builder, facts, skew):
    libvirt_versions = {n: f.get("libvirt_version") or "?" for n, f in facts.items()}
    qemu_versions = {n: f.get("hypervisor_version") or "?" for n, f in facts.items()
                     if f.get("driver") == "QEMU"}
    for attribute, versions, level in (("libvirt_version", libvirt_versions, skew["libvirt"]),
                                       ("qemu_version", qemu_versions, skew["qemu"])):
        if not versions:
            continue
        b.row(attribute, versions)
        keys = {n: version_key(v, level) for n, v in versions.items()}
        reference, odd = majority(keys)
        if odd:
            b.finding(attribute, odd, versions, reference,
                      detail="allowed skew: %s (versions must agree on %s)" % (level, reference or "one series"))


def _check_machine_types(b: _Builder, facts):
    sets = {n: set(f.get("machine_types") or []) for n, f in facts.items()}
    common = set.intersection(*sets.values()) if sets else set()
    b.report.common_machine_types = sorted(common)
    b.row("machine_types", {n: "%d (%d common)" % (len(s), len(common)) for n, s in sets.items()})
    if not common:
        # The odd hosts are those without which a common machine type would exist.
        odd = []
        for name in sets:
            others = [s for m, s in sets.items() if m != name]
            if others and set.intersection(*others):
                odd.append(name)
        odd = odd if odd and len(odd) < len(sets) else list(sets)
        b.finding("machine_types", odd, {n: "%d types" % len(sets[n]) for n in sets},
                  detail="no machine type is available on every host")
        return
    union = set.union(*sets.values())
    lacking = {n: sorted(union - s) for n, s in sets.items() if union - s}
    if lacking and len(lacking) < len(sets):
        b.finding("machine_types", list(lacking), {n: "lacks %s" % ", ".join(m[:5]) + (" ..." if len(m) > 5 else "")
                                                   for n, m in lacking.items()},
                  severity="warning",
                  detail="guests started with a machine type only some hosts have cannot move to the others; "
                         "common: %d types" % len(common))


def _check_host_uuid(b: _Builder, facts):
    uuids = {n: f.get("host_uuid") or "?" for n, f in facts.items()}
    b.row("host_uuid", uuids)
    counts = Counter(u for u in uuids.values() if u != "?")
    duplicated = [n for n, u in uuids.items() if counts.get(u, 0) > 1]
    if duplicated:
        b.finding("host_uuid", duplicated, uuids, detail="hosts share a UUID")


def _check_cpu(b: _Builder, facts, cpu_oracle):
    cpus = {n: f["cpu"] for n, f in facts.items() if f.get("cpu") and f["cpu"].get("xml")}
    if not cpus:
        return
    vendors = {n: c.get("vendor") or "unknown" for n, c in cpus.items()}
    _ref, vendor_odd = b.majority_check("cpu_vendor", vendors)
    b.majority_check("cpu_host_model", {n: c.get("model") or "?" for n, c in cpus.items()}, severity="warning")

    oracle = cpu_oracle or FeatureSetCpuOracle({n: c["xml"] for n, c in cpus.items()})
    arch = majority({n: facts[n].get("arch") for n in cpus})[0] or next(iter(cpus.values())).get("arch")
    arch = arch or next(iter(facts.values())).get("arch")
    virttype = "kvm" if all(facts[n].get("kvm_usable") for n in cpus) else "qemu"
    order = sorted(cpus)
    xmls = [cpus[n]["xml"] for n in order]
    vendor_neutral = False
    try:
        baseline_xml = oracle.baseline(xmls, arch, virttype)
    except ValueError as exc:
        if not vendor_odd:
            b.finding("cpu_baseline", order, {n: cpus[n].get("model") for n in order}, detail=str(exc))
            b.row("cpu_baseline", {n: "none" for n in order})
            return
        # Mixed vendors: libvirt refuses; a vendor-neutral baseline still tells the operator
        # what the hosts have in common (the vendor finding already fails the check).
        try:
            baseline_xml = oracle.baseline([_strip_vendor(x) for x in xmls], arch, virttype)
            vendor_neutral = True
        except ValueError as exc2:
            b.finding("cpu_baseline", order, {n: cpus[n].get("model") for n in order}, detail=str(exc2))
            b.row("cpu_baseline", {n: "none" for n in order})
            return
    summary = cpu_summary(baseline_xml)
    b.report.baseline_cpu = dict(summary, xml=baseline_xml, virttype=virttype, arch=arch,
                                 vendor_neutral=vendor_neutral)
    verdicts = {}
    for name in order:
        refusal = None if vendor_neutral else oracle.compare(name, baseline_xml, arch, virttype)
        verdicts[name] = refusal
    b.row("cpu_baseline", {n: ("runs %s" % (summary["model"] or "baseline")) if verdicts[n] is None
                           else "cannot run %s" % (summary["model"] or "baseline") for n in order})
    refused = [n for n in order if verdicts[n] is not None]
    if refused:
        b.finding("cpu_baseline", refused, {n: verdicts[n] or "ok" for n in order},
                  detail="; ".join("%s: %s" % (n, verdicts[n]) for n in refused))
