# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Topology model: parse and validate a topology document.

A topology document describes regions > zones > pods > clusters > hosts as lists of named
mappings (see the DOCUMENTATION of the ``virtfleet.cluster.topology`` inventory plugin).
This module is pure Python on purpose (no Ansible imports), so the inventory plugin, the lab
and the unit tests share one definition of what a valid topology is.

Every problem is raised as :class:`TopologyError`, which says where in the tree it is, what is
wrong and how to fix it. The groups and host variables an inventory derives from the model are
in ``topology_layout``.
"""
from __future__ import annotations

import datetime
import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

PLUGIN_NAMES = ("topology", "virtfleet.cluster.topology")

# The tree levels, top down: (kind, key of the list holding this kind in its parent).
LEVELS = (("region", "regions"), ("zone", "zones"), ("pod", "pods"), ("cluster", "clusters"), ("host", "hosts"))
GROUP_PREFIXES = {"region": "region_", "zone": "zone_", "pod": "pod_", "cluster": "cluster_"}
HYPERVISOR_GROUP_PREFIX = "hypervisor_"

STORAGE_TYPES = ("shared", "local")
DEFAULT_MAX_UNAVAILABLE = 1

# Hypervisors libvirt reaches over SSH with a well-known URI; the others (hyperv, vsphere, ...)
# get no URI unless the host declares one, since their libvirt drivers need site-specific paths.
LIBVIRT_URI_SCHEMES = {"kvm": "qemu+ssh", "qemu": "qemu+ssh", "xen": "xen+ssh"}

HYPERVISOR_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")

# Variables the topology derives; setting them in `vars:` would be silently overwritten,
# so it is refused with a pointer to the key that sets them.
DERIVED_VARIABLES = {
    "ansible_host": "set `address:` on the host",
    "virtfleet_region": "it is the name of the region",
    "virtfleet_zone": "it is the name of the zone",
    "virtfleet_pod": "it is the name of the pod",
    "virtfleet_cluster": "it is the name of the cluster",
    "virtfleet_hypervisor": "set `hypervisor:` on the cluster",
    "virtfleet_storage": "set `storage:` on the cluster",
    "virtfleet_libvirt_uri": "set `libvirt_uri:` on the host",
    "virtfleet_max_unavailable": "set `max_unavailable:` on the cluster",
    "virtfleet_cluster_hosts": "it lists the cluster's `hosts:`",
}

_TOP_KEYS = ("plugin", "vars", "regions")
_KEYS = {
    "region": ("name", "vars", "zones"),
    "zone": ("name", "vars", "pods"),
    "pod": ("name", "vars", "clusters"),
    "cluster": ("name", "vars", "hypervisor", "storage", "max_unavailable", "hosts"),
    "host": ("name", "vars", "address", "libvirt_uri"),
}
_STORAGE_KEYS = ("name", "type", "path")


class TopologyError(ValueError):
    """A topology document is invalid.

    ``where`` is the place in the tree as ``((kind, name), ...)``, ``problem`` says what is
    wrong and ``fix`` what to do about it. ``source`` (the file) is filled in by the caller
    that knows it.
    """

    def __init__(self, where: tuple = (), problem: str = "", fix: str = "", source: str | None = None):
        self.where = tuple(where)
        self.problem = problem
        self.fix = fix
        self.source = source
        super().__init__(problem)

    @property
    def place(self) -> str:
        return describe_place(self.where)

    def __str__(self) -> str:
        head = "invalid topology"
        if self.source:
            head += " in %s" % self.source
        head += " at %s" % (self.place or "top level")
        text = "%s: %s" % (head, self.problem)
        if self.fix:
            text += ". Fix: %s" % self.fix
        return text


def describe_place(where) -> str:
    """``(("region", "eu"), ("zone", "eu-1"))`` -> ``region eu / zone eu-1``."""
    return " / ".join("%s %s" % (kind, name) for kind, name in where)


@dataclass(slots=True)
class Host:
    name: str
    address: str
    libvirt_uri: str | None
    vars: dict  # free variables set on the host itself
    where: tuple


@dataclass(slots=True)
class Cluster:
    name: str
    hypervisor: str
    storage: dict  # {name, type, path}
    max_unavailable: int
    vars: dict  # free variables inherited down to (and including) the cluster
    hosts: list
    where: tuple


@dataclass(slots=True)
class Pod:
    name: str
    clusters: list
    where: tuple


@dataclass(slots=True)
class Zone:
    name: str
    pods: list
    where: tuple


@dataclass(slots=True)
class Region:
    name: str
    zones: list
    where: tuple


@dataclass(slots=True)
class Topology:
    regions: list = field(default_factory=list)

    def clusters(self) -> Iterator[tuple[Region, Zone, Pod, Cluster]]:
        for region in self.regions:
            for zone in region.zones:
                for pod in zone.pods:
                    for cluster in pod.clusters:
                        yield region, zone, pod, cluster

    def hosts(self) -> Iterator[tuple[Cluster, Host]]:
        for _region, _zone, _pod, cluster in self.clusters():
            for host in cluster.hosts:
                yield cluster, host


def default_libvirt_uri(hypervisor: str, address: str) -> str | None:
    """URI the controller uses for a host that declares none (None: the hypervisor has no default)."""
    scheme = LIBVIRT_URI_SCHEMES.get(hypervisor)
    if scheme is None:
        return None
    if ":" in address and not address.startswith("["):  # IPv6 literal
        address = "[%s]" % address
    return "%s://root@%s/system" % (scheme, address)


# --------------------------------------------------------------------------------------------
# Parsing and validation
# --------------------------------------------------------------------------------------------

def _type_name(value: Any) -> str:
    """Plain words for what a value is: the YAML loader's own classes (``_AnsibleTaggedInt``...)
    mean nothing to the person fixing the file."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean (%s)" % value
    if isinstance(value, str):
        return "a string (%r)" % str(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, int):
        return "an integer (%d)" % value
    if isinstance(value, float):
        return "a number (%s)" % float(value)
    if isinstance(value, datetime.datetime):
        return "a date and time (%s)" % value.isoformat()
    if isinstance(value, datetime.date):
        return "a date (%s)" % value.isoformat()
    if isinstance(value, (set, frozenset)):
        return "a set"
    if isinstance(value, bytes):
        return "binary data"
    if type(value).__name__ == "EncryptedString":
        return "a vault-encrypted value"
    return "a value of type %s" % type(value).__name__.lstrip("_")


def _check_keys(node: Mapping, known: tuple, where: tuple, what: str) -> None:
    for key in node:
        if key in known:
            continue
        if not isinstance(key, str):
            raise TopologyError(where, "key %r of the %s is not a string" % (key, what),
                                "use one of: %s" % ", ".join(known))
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = "did you mean %r? " % close[0] if close else ""
        raise TopologyError(where, "unknown key %r in the %s" % (key, what),
                            "%sknown keys are: %s" % (hint, ", ".join(known)))


def _require_string(node: Mapping, key: str, where: tuple, what: str, example: str) -> str:
    if key not in node or node[key] is None:
        raise TopologyError(where, "the %s has no %r" % (what, key), "add `%s: %s`" % (key, example))
    value = node[key]
    if not isinstance(value, str) or not value.strip():
        raise TopologyError(where, "%r of the %s must be a non-empty string, got %s" % (key, what, _type_name(value)),
                            "write it as `%s: %s`" % (key, example))
    return str(value)


def _children(node: Mapping, key: str, kind: str, where: tuple, what: str) -> list:
    """The list under ``key`` (e.g. a region's ``zones``), which must be a non-empty list of mappings."""
    items = node.get(key)
    if items is None:
        raise TopologyError(where, "the %s has no %s" % (what, key),
                            "add `%s:` with at least one %s (`- name: ...`), or remove the %s" % (key, kind, what))
    if not isinstance(items, list):
        raise TopologyError(where, "%r of the %s must be a list of %ss, got %s" % (key, what, kind, _type_name(items)),
                            "write each %s as a list item: `%s:` then `  - name: ...`" % (kind, key))
    if not items:
        raise TopologyError(where, "the %s has an empty %r list" % (what, key),
                            "add at least one %s, or remove the %s" % (kind, what))
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise TopologyError(where, "item %d of %r must be a mapping describing a %s, got %s"
                                % (index + 1, key, kind, _type_name(item)),
                                "write it as `- name: <%s name>` followed by its keys" % kind)
    return items


def _unique(where: tuple, seen: dict) -> tuple:
    """Refuse a second region/zone/pod/cluster of the same name (checked before its children,
    so a copied subtree is reported as such rather than as its first duplicate host)."""
    kind, name = where[-1]
    first = seen.setdefault(kind, {}).setdefault(name, where)
    if first is not where:
        raise TopologyError(where, "%s name %r is used twice: at %s and at %s"
                            % (kind, name, describe_place(first), describe_place(where)),
                            "%s names must be unique across the whole topology (each becomes the group %s%s); "
                            "rename one of them" % (kind, GROUP_PREFIXES[kind], name))
    return where


def _name_of(node: Mapping, kind: str, parent: tuple, index: int, key: str) -> str:
    name = node.get("name")
    if not isinstance(name, str) or not name.strip():
        where = parent + ((kind, "#%d" % (index + 1)),)
        got = "no name" if name is None else "name %s" % _type_name(name)
        raise TopologyError(where, "%s number %d in %r has %s" % (kind, index + 1, key, got),
                            "give it a non-empty string name: `- name: <%s name>`" % kind)
    return str(name)


def _vars(node: Mapping, where: tuple, what: str) -> dict:
    value = node.get("vars")
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TopologyError(where, "'vars' of the %s must be a mapping of variable names to values, got %s"
                            % (what, _type_name(value)), "write it as `vars: {name: value, ...}`")
    for name in value:
        if not isinstance(name, str) or not name:
            raise TopologyError(where, "variable name %r in 'vars' of the %s is not a string" % (name, what),
                                "use variable names made of letters, digits and _")
        if name in DERIVED_VARIABLES:
            raise TopologyError(where, "variable %r in 'vars' of the %s is set by the topology itself" % (name, what),
                                "remove it from vars; %s" % DERIVED_VARIABLES[name])
    return dict(value)


def _storage(node: Mapping, where: tuple) -> dict:
    storage = node.get("storage")
    if storage is None:
        raise TopologyError(where, "the cluster has no primary 'storage'",
                            "add `storage: {name: <pool>, type: shared|local, path: <path or URI>}`")
    if not isinstance(storage, Mapping):
        raise TopologyError(where, "'storage' of the cluster must be a mapping, got %s" % _type_name(storage),
                            "write it as `storage: {name: <pool>, type: shared|local, path: <path or URI>}`")
    storage_name = storage.get("name")
    swhere = where + (("storage", storage_name if isinstance(storage_name, str) else "(unnamed)"),)
    _check_keys(storage, _STORAGE_KEYS, swhere, "storage")
    name = _require_string(storage, "name", swhere, "storage", "<pool name>")
    kind = _require_string(storage, "type", swhere, "storage", "shared")
    if kind not in STORAGE_TYPES:
        raise TopologyError(swhere, "storage type %r is not one of %s" % (kind, "|".join(STORAGE_TYPES)),
                            "use `type: shared` (all hosts see it, live migration keeps disks in place) "
                            "or `type: local` (disks are copied on migration)")
    path = _require_string(storage, "path", swhere, "storage", "/var/lib/libvirt/images or nfs://server/export")
    return {"name": name, "type": kind, "path": path}


def _max_unavailable(node: Mapping, where: tuple) -> int:
    value = node.get("max_unavailable", DEFAULT_MAX_UNAVAILABLE)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TopologyError(where, "'max_unavailable' must be a positive integer (hosts of the cluster in "
                            "maintenance at once), got %s" % _type_name(value),
                            "write e.g. `max_unavailable: 1` or leave it out for the default %d"
                            % DEFAULT_MAX_UNAVAILABLE)
    return int(value)


def _hypervisor(node: Mapping, where: tuple) -> str:
    hypervisor = _require_string(node, "hypervisor", where, "cluster", "kvm")
    if not HYPERVISOR_PATTERN.match(hypervisor):
        raise TopologyError(where, "hypervisor %r is not a lowercase word" % hypervisor,
                            "write it like `hypervisor: %s` (kvm, qemu, xen, hyperv, vsphere, ...)"
                            % (re.sub(r"[^a-z0-9_-]", "", hypervisor.lower()) or "kvm"))
    return hypervisor


def _host(node: Mapping, hypervisor: str, where: tuple) -> Host:
    _check_keys(node, _KEYS["host"], where, "host")
    address = _require_string(node, "address", where, "host", "192.0.2.10")
    uri = node.get("libvirt_uri")
    if uri is None:
        uri = default_libvirt_uri(hypervisor, address)
    elif not isinstance(uri, str) or "://" not in uri:
        raise TopologyError(where, "'libvirt_uri' must be a libvirt connection URI string, got %s" % _type_name(uri),
                            "write e.g. `libvirt_uri: qemu+ssh://root@%s/system`, or leave it out for the default"
                            % address)
    return Host(name=where[-1][1], address=address, libvirt_uri=None if uri is None else str(uri),
                vars=_vars(node, where, "host"), where=where)


def check_top_level_keys(document: Mapping, plugin_options=()) -> None:
    """Refuse unknown top-level keys; ``plugin_options`` are the inventory plugin's own options."""
    _check_keys(document, _TOP_KEYS + tuple(k for k in plugin_options if k not in _TOP_KEYS), (), "topology file")


def parse_topology(document: Any) -> Topology:
    """Validate a topology document (as loaded from YAML) and return its model.

    Names of each kind (region, zone, pod, cluster) must be unique across the whole topology
    because each becomes one flat Ansible group; hosts must be unique too.
    Variables are resolved here: each cluster's ``vars`` hold everything inherited from the top
    level down to the cluster (nearest wins); each host keeps its own ``vars``.
    """
    if not isinstance(document, Mapping):
        raise TopologyError((), "the document must be a mapping, got %s" % _type_name(document),
                            "start the file with `plugin: virtfleet.cluster.topology` followed by `regions:`")
    top_vars = _vars(document, (), "topology")
    host_places: dict[str, tuple] = {}
    seen: dict[str, dict] = {}
    regions = []
    for r_index, r_node in enumerate(_children(document, "regions", "region", (), "topology")):
        r_where = _unique((("region", _name_of(r_node, "region", (), r_index, "regions")),), seen)
        _check_keys(r_node, _KEYS["region"], r_where, "region")
        r_vars = {**top_vars, **_vars(r_node, r_where, "region")}
        zones = []
        for z_index, z_node in enumerate(_children(r_node, "zones", "zone", r_where, "region")):
            z_where = _unique(r_where + (("zone", _name_of(z_node, "zone", r_where, z_index, "zones")),), seen)
            _check_keys(z_node, _KEYS["zone"], z_where, "zone")
            z_vars = {**r_vars, **_vars(z_node, z_where, "zone")}
            pods = []
            for p_index, p_node in enumerate(_children(z_node, "pods", "pod", z_where, "zone")):
                p_where = _unique(z_where + (("pod", _name_of(p_node, "pod", z_where, p_index, "pods")),), seen)
                _check_keys(p_node, _KEYS["pod"], p_where, "pod")
                p_vars = {**z_vars, **_vars(p_node, p_where, "pod")}
                clusters = []
                for c_index, c_node in enumerate(_children(p_node, "clusters", "cluster", p_where, "pod")):
                    c_name = _name_of(c_node, "cluster", p_where, c_index, "clusters")
                    c_where = _unique(p_where + (("cluster", c_name),), seen)
                    clusters.append(_cluster(c_node, c_where, p_vars, host_places))
                pods.append(Pod(name=p_where[-1][1], clusters=clusters, where=p_where))
            zones.append(Zone(name=z_where[-1][1], pods=pods, where=z_where))
        regions.append(Region(name=r_where[-1][1], zones=zones, where=r_where))
    return Topology(regions=regions)


def _cluster(node: Mapping, where: tuple, inherited_vars: dict, host_places: dict) -> Cluster:
    _check_keys(node, _KEYS["cluster"], where, "cluster")
    hypervisor = _hypervisor(node, where)
    storage = _storage(node, where)
    max_unavailable = _max_unavailable(node, where)
    cluster_vars = {**inherited_vars, **_vars(node, where, "cluster")}
    hosts = []
    host_nodes = node.get("hosts")
    if host_nodes is None or (isinstance(host_nodes, list) and not host_nodes):
        raise TopologyError(where, "the cluster has no hosts",
                            "add `hosts:` with at least one `- {name: <host>, address: <address>}`, "
                            "or remove the cluster")
    for h_index, h_node in enumerate(_children(node, "hosts", "host", where, "cluster")):
        h_where = where + (("host", _name_of(h_node, "host", where, h_index, "hosts")),)
        name = h_where[-1][1]
        if "[" in name or "]" in name:
            # A YAML inventory expands `web[01:03]` into three hosts; here every host has its own
            # address and libvirt URI, so a range could only give them all the same one.
            raise TopologyError(h_where, "host name %r contains '[' or ']', which Ansible reads as a host range "
                                "(like web[01:03]); the topology does not expand ranges" % name,
                                "list each host as its own entry with its own address, e.g. "
                                "`- {name: web01, address: 192.0.2.1}`")
        if name in host_places:
            raise TopologyError(h_where, "host %r is listed twice: at %s and at %s"
                                % (name, describe_place(host_places[name]), describe_place(h_where)),
                                "a host belongs to exactly one cluster; remove one of the two entries or rename it")
        host_places[name] = h_where
        hosts.append(_host(h_node, hypervisor, h_where))
    return Cluster(name=where[-1][1], hypervisor=hypervisor, storage=storage, max_unavailable=max_unavailable,
                   vars=cluster_vars, hosts=hosts, where=where)
