# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Inventory layout of a topology: its groups and every host's variables.

``topology`` says what a valid topology is and builds its model; this module turns the model
into what an inventory needs (groups with their parents, per-cluster and per-host variables),
in plain data that an inventory cache can keep. Pure Python, like ``topology``: the inventory
plugin, the lab and the unit tests share it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional

from ansible_collections.virtfleet.cluster.plugins.module_utils.topology import (
    GROUP_PREFIXES,
    HYPERVISOR_GROUP_PREFIX,
    Topology,
    TopologyError,
    describe_place,
    parse_topology,
)


@dataclass(slots=True)
class ClusterLayout:
    """One cluster as the inventory sees it.

    ``variables`` are shared by all its hosts (inherited free vars + the ``virtfleet_*`` of the
    cluster); ``hosts`` are ``(host name, variables of that host only)``. A host's complete
    variables are ``{**variables, **host_variables}`` (see :func:`host_variables`).
    """

    group: str
    hypervisor_group: str
    variables: dict
    hosts: list


@dataclass(slots=True)
class InventoryLayout:
    """What an inventory needs, in the order to create it.

    ``groups``: ``(group, parent group or None)``, parents before children.
    ``clusters``: one :class:`ClusterLayout` per cluster, in topology order.
    """

    groups: list
    clusters: list

    def hosts(self) -> Iterator[tuple[str, str, str, dict]]:
        """``(host, cluster group, hypervisor group, complete host variables)`` for every host."""
        for cluster in self.clusters:
            for name, own in cluster.hosts:
                yield name, cluster.group, cluster.hypervisor_group, {**cluster.variables, **own}

    def to_data(self) -> dict:
        """Plain lists and dicts (JSON-friendly), e.g. for an inventory cache."""
        return {"groups": [list(pair) for pair in self.groups],
                "clusters": [[c.group, c.hypervisor_group, c.variables, [list(h) for h in c.hosts]]
                             for c in self.clusters]}

    @classmethod
    def from_data(cls, data: Mapping) -> "InventoryLayout":
        return cls(groups=[tuple(pair) for pair in data["groups"]],
                   clusters=[ClusterLayout(group, hypervisor_group, variables, [tuple(h) for h in hosts])
                             for group, hypervisor_group, variables, hosts in data["clusters"]])


def json_problem(value: Any, where: str = "") -> Optional[str]:
    """What in ``value`` a JSON cache would not give back unchanged, or None if nothing.

    Only plain JSON types pass: mappings with string keys, lists, strings, numbers, booleans and
    null (and their subclasses, such as the YAML loader's tagged types). A mapping with integer
    keys would come back with string keys, a vault-encrypted value as its ciphertext, a date as
    a string; ``where`` names the place (``clusters[0].variables.secret``) for the message.
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return "%s has the key %r, which is not a string" % (where or "the data", key)
            problem = json_problem(item, "%s.%s" % (where, key) if where else key)
            if problem:
                return problem
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = json_problem(item, "%s[%d]" % (where, index))
            if problem:
                return problem
        return None
    kind = "a vault-encrypted value" if type(value).__name__ == "EncryptedString" else "a %s" % type(value).__name__.lstrip("_")
    return "%s is %s" % (where or "the data", kind)


def _identity(name: str) -> str:
    return name


def group_name(kind: str, name: str, sanitize: Callable[[str], str] = _identity) -> str:
    return sanitize(GROUP_PREFIXES[kind] + name)


def build_layout(topology: Topology, sanitize: Callable[[str], str] = _identity,
                 trust: Callable[[Any], Any] = _identity) -> InventoryLayout:
    """Derive groups and host variables.

    ``sanitize`` turns a candidate group name into a valid one (the plugin passes Ansible's).
    ``trust`` marks each variable value the layout derives (names, address, URI, storage) as
    coming from the file, like the file's own strings (the plugin passes Ansible's
    trust_as_template, so they read as they would in a static YAML inventory).
    Two different topology names that end up as the same group are refused, naming both places,
    so two parts of the tree never merge silently.
    """
    claimed: dict[str, tuple] = {}  # group -> where the name came from

    def claim(kind: str, where: tuple) -> str:
        group = group_name(kind, where[-1][1], sanitize)
        previous = claimed.setdefault(group, where)
        if previous is not where:  # equal names were refused by parse_topology: these differ
            raise TopologyError(where, "%s names %r (at %s) and %r (at %s) both become the Ansible group %r" % (
                kind, previous[-1][1], describe_place(previous), where[-1][1], describe_place(where), group),
                "%s names must stay unique after characters invalid in group names are replaced by _; "
                "rename one of them" % kind)
        return group

    groups: list = []
    clusters: list = []
    hypervisor_groups: dict[str, str] = {}
    for region in topology.regions:
        region_group = claim("region", region.where)
        groups.append((region_group, None))
        for zone in region.zones:
            zone_group = claim("zone", zone.where)
            groups.append((zone_group, region_group))
            for pod in zone.pods:
                pod_group = claim("pod", pod.where)
                groups.append((pod_group, zone_group))
                for cluster in pod.clusters:
                    cluster_group = claim("cluster", cluster.where)
                    groups.append((cluster_group, pod_group))
                    hypervisor_group = hypervisor_groups.get(cluster.hypervisor)
                    if hypervisor_group is None:
                        hypervisor_group = sanitize(HYPERVISOR_GROUP_PREFIX + cluster.hypervisor)
                        hypervisor_groups[cluster.hypervisor] = hypervisor_group
                        groups.append((hypervisor_group, None))
                    variables = dict(cluster.vars)
                    variables.update(
                        virtfleet_region=trust(region.name),
                        virtfleet_zone=trust(zone.name),
                        virtfleet_pod=trust(pod.name),
                        virtfleet_cluster=trust(cluster.name),
                        virtfleet_hypervisor=trust(cluster.hypervisor),
                        virtfleet_storage={key: trust(value) for key, value in cluster.storage.items()},
                        virtfleet_max_unavailable=cluster.max_unavailable,
                        # The whole membership, so that a run whose inventory holds only part of
                        # the cluster (an AWX job slice) can tell and refuse.
                        virtfleet_cluster_hosts=[trust(host.name) for host in cluster.hosts],
                    )
                    hosts = []
                    for host in cluster.hosts:
                        own = dict(host.vars) if host.vars else {}
                        own["ansible_host"] = trust(host.address)
                        own["virtfleet_libvirt_uri"] = None if host.libvirt_uri is None else trust(host.libvirt_uri)
                        hosts.append((host.name, own))
                    clusters.append(ClusterLayout(cluster_group, hypervisor_group, variables, hosts))
    return InventoryLayout(groups=groups, clusters=clusters)


def topology_layout(document: Any, sanitize: Callable[[str], str] = _identity) -> InventoryLayout:
    """Parse, validate and lay out a topology document in one call."""
    return build_layout(parse_topology(document), sanitize)
