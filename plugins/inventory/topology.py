# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: topology
short_description: Inventory of virtualization clusters from a region/zone/pod/cluster/host topology file
version_added: 0.1.0
description:
  - Reads a YAML file that describes regions, zones, pods, clusters and hosts, and turns it into
    nested groups C(region_<region>) > C(zone_<zone>) > C(pod_<pod>) > C(cluster_<cluster>) > hosts,
    plus one C(hypervisor_<type>) group per hypervisor type.
  - Every level is a list of named mappings (C(- name=...)). Names of one kind (regions, zones,
    pods, clusters) must be unique across the whole file because each becomes one flat Ansible
    group; a host may appear only once.
  - Group names are made valid the Ansible way (characters invalid in a variable name become C(_)),
    always, whatever C(TRANSFORM_INVALID_GROUP_CHARS) says, so group names are stable. Two topology
    names that end up as the same group (for example C(eu-1) and C(eu_1)) are an error.
  - Every host gets C(ansible_host), C(virtfleet_region), C(virtfleet_zone), C(virtfleet_pod),
    C(virtfleet_cluster) (topology names, not sanitized), C(virtfleet_hypervisor),
    C(virtfleet_storage) (C({name, type, path})), C(virtfleet_libvirt_uri),
    C(virtfleet_max_unavailable) and C(virtfleet_cluster_hosts) (the names of every host of its
    cluster), plus the free variables of its level and every level above it
    (C(vars), nearest level wins). They are set as host variables, so they take precedence over
    C(group_vars/) files; override them with C(host_vars/) files or extra vars.
  - Bad input is refused with an error that names the file, the place in the tree
    (for example C(region eu / zone eu-1 / pod p1 / cluster c1 / host hv-3)) and what to fix.
  - The file name must end in C(.yml) or C(.yaml) and the file must have a top-level C(plugin) key naming
    this plugin (block or flow style). Give it the fully qualified name C(virtfleet.cluster.topology), the only
    name by which Ansible's C(auto) plugin (in the default plugin list) finds the plugin. The short name C(topology) works only
    where C(virtfleet.cluster.topology) itself is in C(enable_plugins), as in the collection's C(ansible.cfg).
  - A file named C(topology.yml) or C(topology.yaml) is taken by this plugin even when it does not name it
    (for example when it is empty), so a broken topology is reported as such rather than read by another
    plugin; with C(any_unparsed_is_failed) (set in the collection's C(ansible.cfg)) it stops the run.
  - C(compose), C(groups), C(keyed_groups), C(strict), C(use_extra_vars) and C(leading_separator) work as in
    C(ansible.builtin.constructed). They run after the whole tree is in place, host by host, on the host's
    variables with its magic variables (C(inventory_hostname), C(inventory_hostname_short), C(group_names)), and
    C(groups) and C(keyed_groups) see the groups from before either ran. Results of C(compose) are not
    trusted as templates (a value a lookup returns stays literal). Unlike C(constructed), facts from the
    fact cache are not used and there is no C(use_vars_plugins).
  - Host names are not expanded as ranges; a host name with C([) or C(]) (such as C(web[01:03])) is refused,
    since every host has its own address.
  - With caching on, the validated inventory is stored with a checksum of the file and reused while
    the file is unchanged. Because the cache options can live in the file itself, only caching
    enabled in C(ansible.cfg) or the environment lets a cache hit skip reading the YAML.
    A topology holding what JSON cannot carry unchanged (vault-encrypted values, mappings with
    non-string keys, dates) is not cached at all, so a cache hit gives exactly what reading the
    file gives and the cache never holds a secret.
author:
  - virtfleet maintainers (@virtfleet)
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: Marks the file as a topology for this plugin.
    required: true
    type: str
    choices: [topology, virtfleet.cluster.topology]
  vars:
    description: Free variables for every host of the topology (the outermost level of inheritance).
    type: dict
  regions:
    description:
      - The tree. Each level may set C(vars), inherited downward; the nearest level wins.
      - Unknown keys are refused (with the closest known key suggested).
    type: list
    elements: dict
    suboptions:
      name:
        description: Region name; group C(region_<name>).
        type: str
        required: true
      vars:
        description: Free variables for the hosts of this region.
        type: dict
      zones:
        description: Zones of the region, each with C(name), optional C(vars) and C(pods).
        type: list
        elements: dict
        required: true
        suboptions:
          name:
            description: Zone name; group C(zone_<name>).
            type: str
            required: true
          vars:
            description: Free variables for the hosts of this zone.
            type: dict
          pods:
            description: Pods of the zone, each with C(name), optional C(vars) and C(clusters).
            type: list
            elements: dict
            required: true
            suboptions:
              name:
                description: Pod name; group C(pod_<name>).
                type: str
                required: true
              vars:
                description: Free variables for the hosts of this pod.
                type: dict
              clusters:
                description: Clusters of the pod.
                type: list
                elements: dict
                required: true
                suboptions:
                  name:
                    description: Cluster name; group C(cluster_<name>).
                    type: str
                    required: true
                  hypervisor:
                    description:
                      - Hypervisor type, a lowercase word such as C(kvm), C(qemu), C(xen), C(hyperv), C(vsphere).
                      - Hosts also join group C(hypervisor_<type>).
                    type: str
                    required: true
                  storage:
                    description: The cluster's primary storage, set on every host as C(virtfleet_storage).
                    type: dict
                    required: true
                    suboptions:
                      name:
                        description: Storage (pool) name.
                        type: str
                        required: true
                      type:
                        description: C(shared) (every host of the cluster sees it) or C(local) (per host).
                        type: str
                        required: true
                        choices: [shared, local]
                      path:
                        description: Path or URI of the storage.
                        type: str
                        required: true
                  max_unavailable:
                    description: How many hosts of the cluster may be in maintenance at once (positive integer).
                    type: int
                    default: 1
                  vars:
                    description: Free variables for the hosts of this cluster.
                    type: dict
                  hosts:
                    description: Hosts of the cluster; at least one.
                    type: list
                    elements: dict
                    required: true
                    suboptions:
                      name:
                        description: Inventory host name, unique across the topology.
                        type: str
                        required: true
                      address:
                        description: Address Ansible and libvirt use to reach the host (C(ansible_host)).
                        type: str
                        required: true
                      libvirt_uri:
                        description:
                          - URI the controller uses to reach the host's libvirt (C(virtfleet_libvirt_uri)).
                          - Default for C(kvm) and C(qemu) is C(qemu+ssh://root@<address>/system), for C(xen)
                            C(xen+ssh://root@<address>/system); other hypervisors have none (null) unless set.
                        type: str
                      vars:
                        description: Free variables of this host.
                        type: dict
"""

EXAMPLES = r"""
# inventories/example/topology.yml
plugin: virtfleet.cluster.topology
vars:
  ansible_user: root
regions:
  - name: eu
    zones:
      - name: eu-1
        pods:
          - name: p1
            clusters:
              - name: kvm-a
                hypervisor: kvm
                storage: {name: nfs-a, type: shared, path: "nfs://192.0.2.5/export/kvm-a"}
                max_unavailable: 1
                hosts:
                  - {name: hv-a1, address: 192.0.2.11}
                  - {name: hv-a2, address: 192.0.2.12}
              - name: hyperv-b
                hypervisor: hyperv
                storage: {name: csv-b, type: shared, path: 'C:\ClusterStorage\Volume1'}
                vars:
                  ansible_connection: winrm
                hosts:
                  - {name: hv-b1, address: 192.0.2.21}

# A lab host whose libvirt is reached some other way than the default.
#               hosts:
#                 - name: lab-a1
#                   address: 127.0.1.11
#                   libvirt_uri: qemu+tcp://127.0.1.11/session
#                   vars: {ansible_port: 2222}

# Constructable options work as in ansible.builtin.constructed:
# compose:
#   ansible_user: "'administrator' if virtfleet_hypervisor == 'hyperv' else 'root'"
# groups:
#   shared_storage: virtfleet_storage.type == 'shared'
# keyed_groups:
#   - key: virtfleet_storage.name
#     prefix: storage
"""

import hashlib
import inspect
import os
from collections.abc import Mapping
from typing import Any, Optional

import yaml

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.inventory.group import to_safe_group_name
from ansible.inventory.helpers import get_group_vars
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.vars import combine_vars

try:
    from ansible.template import trust_as_template
except ImportError:  # ansible-core < 2.19 has no template trust: every inventory string is a template.
    def trust_as_template(value):
        return value

from ansible_collections.virtfleet.cluster.plugins.module_utils.topology import (
    PLUGIN_NAMES,
    TopologyError,
    check_top_level_keys,
    parse_topology,
)
from ansible_collections.virtfleet.cluster.plugins.module_utils.topology_layout import InventoryLayout, build_layout, json_problem

# Keys of the file that are the topology itself rather than plugin options.
_TOPOLOGY_KEYS = ("regions", "vars")
# A file of this name is a topology even when it does not say so (empty, or broken before its
# `plugin:` line): this plugin takes it and says what is wrong, instead of leaving it to a
# plugin that would read it as an empty inventory.
_TOPOLOGY_FILE_NAMES = ("topology.yml", "topology.yaml")
_CACHE_FORMAT = 3  # 3: virtfleet_cluster_hosts
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _safe_group_name(name: str) -> str:
    # Forced and silent: the tree's group names must not depend on TRANSFORM_INVALID_GROUP_CHARS,
    # and collisions after replacement are reported as errors instead of warnings.
    return to_safe_group_name(name, force=True, silent=True)


def declared_plugin(stream) -> Optional[str]:
    """The top-level `plugin` value of the first YAML document in ``stream``, or None.

    Reads YAML events, not the document, and stops at the key: a large topology is not loaded
    just to see whose it is. Block and flow style (`{plugin: ..., regions: [...]}`) alike.
    """
    depth = 0
    key_next = True  # at depth 1, whether the next complete node is a key
    key = None
    try:
        for event in yaml.parse(stream, Loader=_YAML_LOADER):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if depth == 0 and not isinstance(event, yaml.MappingStartEvent):
                    return None
                depth += 1
                continue
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
                if depth == 0:
                    return None  # end of the top-level mapping
            elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
                if depth == 0:
                    return None  # a scalar document
                if depth == 1:
                    value = event.value if isinstance(event, yaml.ScalarEvent) else None
                    if not key_next and key == "plugin":
                        return value
                    key = value if key_next else None
            else:
                continue
            if depth == 1:
                key_next = not key_next
    except yaml.YAMLError:
        return None
    return None


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    """Thin glue between Ansible's inventory and module_utils.topology."""

    NAME = "virtfleet.cluster.topology"

    # Not trusted_by_default: everything this plugin sets would then be trusted as a template,
    # compose results made from outside data too (a lookup returning `{{ ... }}` would be rendered).
    # The file's own strings are trusted by the loader and the values derived from them by
    # build_layout, as in a static YAML inventory; the inventory cache keeps that mark.

    _sanitize_group_name = staticmethod(_safe_group_name)

    def verify_file(self, path: str) -> bool:
        if not super().verify_file(path) or not path.endswith((".yml", ".yaml")):
            return False
        if os.path.basename(path) in _TOPOLOGY_FILE_NAMES:
            return True
        try:
            with open(path, "rb") as handle:
                return declared_plugin(handle) in PLUGIN_NAMES
        except OSError:
            return False

    def parse(self, inventory, loader, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        fingerprint = self._fingerprint(path)

        # Cache options set in ansible.cfg or the environment are known before reading the file,
        # so a hit can skip the YAML entirely.
        self.set_options(direct={"plugin": self.NAME}, var_options=self._vars)
        entry = self._cache_lookup(path, fingerprint, cache)
        if entry is not None:
            self.set_options(direct=entry["options"], var_options=self._vars)
            self._populate(InventoryLayout.from_data(entry["layout"]))
            return

        document = self._load_document(path)
        options = {key: value for key, value in document.items() if key not in _TOPOLOGY_KEYS}
        try:
            self.set_options(direct=options, var_options=self._vars)
        except AnsibleError as error:
            raise AnsibleParserError("invalid plugin option in topology file %s: %s" % (path, to_native(error)))
        entry = self._cache_lookup(path, fingerprint, cache)
        if entry is not None:
            layout = InventoryLayout.from_data(entry["layout"])
        else:
            layout = self._layout(path, document)
            if self.get_option("cache"):
                self._cache_store(path, {"format": _CACHE_FORMAT, "fingerprint": fingerprint,
                                         "options": options, "layout": layout.to_data()})
        self._populate(layout)

    # -- reading --------------------------------------------------------------------------------

    @staticmethod
    def _fingerprint(path: str) -> str:
        try:
            with open(path, "rb") as handle:
                return hashlib.sha256(handle.read()).hexdigest()
        except OSError as error:
            raise AnsibleParserError(
                "cannot read topology file %s: %s. Fix: check that the file exists and is readable"
                % (path, error.strerror or error)
            )

    def _load_document(self, path: str) -> Mapping:
        # ansible-core 2.19 marks file contents as trusted templates only on request; 2.17 has no such argument.
        if "trusted_as_template" in inspect.signature(self.loader.load_from_file).parameters:
            load_options = {"cache": "none", "trusted_as_template": True, "unsafe": True}
        else:
            load_options = {"cache": False, "unsafe": True}
        try:
            document = self.loader.load_from_file(path, **load_options)
        except AnsibleError as error:
            reason = to_native(getattr(error, "message", error)).rstrip(".")
            # ansible-core 2.19 keeps the position in error.obj (an Origin); 2.17 puts it in the message.
            line, column = getattr(error.obj, "line_num", None), getattr(error.obj, "col_num", None)
            if line is not None:
                reason += " (line %s, column %s)" % (line, column)
            raise AnsibleParserError("cannot load topology file %s: %s. Fix: make it valid YAML "
                                     "(check indentation and quoting there)" % (path, reason))
        if not document:
            raise AnsibleParserError("topology file %s is empty. Fix: start it with `plugin: %s` and `regions:`"
                                     % (path, self.NAME))
        if not isinstance(document, Mapping):
            raise AnsibleParserError("topology file %s must hold a mapping at the top, not %s. "
                                     "Fix: start it with `plugin: %s` and `regions:`"
                                     % (path, type(document).__name__, self.NAME))
        if document.get("plugin") not in PLUGIN_NAMES:
            raise AnsibleParserError("%s is not a topology file: 'plugin' is %r, expected %s"
                                     % (path, document.get("plugin"), " or ".join(PLUGIN_NAMES)))
        return document

    def _layout(self, path: str, document: Mapping) -> InventoryLayout:
        try:
            check_top_level_keys(document, self._options)
            return build_layout(parse_topology(document), self._sanitize_group_name, trust_as_template)
        except TopologyError as error:
            error.source = path
            raise AnsibleParserError(str(error))

    def _cache_lookup(self, path: str, fingerprint: str, cache: bool) -> Optional[Mapping[str, Any]]:
        if not (cache and self.get_option("cache")):
            return None
        self.load_cache_plugin()
        try:
            entry = self._cache[self.get_cache_key(path)]
        except KeyError:
            return None
        if not isinstance(entry, Mapping) or entry.get("format") != _CACHE_FORMAT:
            return None  # written by another version of this plugin
        if entry.get("fingerprint") != fingerprint:
            return None  # written for another version of the file
        return entry

    def _cache_store(self, path: str, entry: Mapping[str, Any]) -> None:
        # A hit must give exactly what a miss gives: what JSON would change (integer keys become
        # strings, a vaulted value its ciphertext) keeps the whole entry out of the cache.
        problem = json_problem(entry)
        if problem:
            self.display.vvv("topology %s is not cached: %s" % (path, problem))
            return
        # Populating the cache even when `cache` (the argument) is False is what makes
        # meta: refresh_inventory refresh it. InventoryManager then calls update_cache_if_changed().
        self.load_cache_plugin()
        self._cache[self.get_cache_key(path)] = entry

    # -- populating -----------------------------------------------------------------------------

    def _populate(self, layout: InventoryLayout) -> None:
        inventory = self.inventory
        for group, parent in layout.groups:
            inventory.add_group(group)
            if parent is not None:
                inventory.add_child(parent, group)

        set_variable = inventory.set_variable
        add_host = inventory.add_host
        add_child = inventory.add_child
        for cluster in layout.clusters:
            shared = cluster.variables
            for name, own in cluster.hosts:
                add_host(name, group=cluster.group)
                add_child(cluster.hypervisor_group, name)
                # Set once each: a host's own value replaces the cluster's (nearest wins), and
                # setting a dict twice would let hash_behaviour=merge merge them.
                for key, value in shared.items():
                    if key not in own:
                        set_variable(name, key, value)
                for key, value in own.items():
                    set_variable(name, key, value)
        self._construct(layout)

    def _construct(self, layout: InventoryLayout) -> None:
        """compose, groups and keyed_groups as ansible.builtin.constructed applies them.

        Once the whole tree is in place, host by host, with constructed's inputs: the host's
        group and host variables with its magic variables (inventory_hostname, group_names...),
        read again after compose; groups and keyed_groups see the groups from before either ran.
        """
        compose = self.get_option("compose")
        groups = self.get_option("groups")
        keyed_groups = self.get_option("keyed_groups")
        if not (compose or groups or keyed_groups):
            return
        strict = self.get_option("strict")
        for cluster in layout.clusters:
            for name, _own in cluster.hosts:
                host = self.inventory.get_host(name)
                self._set_composite_vars(compose, self._template_variables(host), name, strict=strict)
                variables = self._template_variables(host)
                self._add_host_to_composed_groups(groups, variables, name, strict=strict, fetch_hostvars=False)
                self._add_host_to_keyed_groups(keyed_groups, variables, name, strict=strict, fetch_hostvars=False)

    @staticmethod
    def _template_variables(host) -> dict:
        # constructed's get_all_host_vars() with use_vars_plugins off and without the fact cache.
        return combine_vars(get_group_vars(host.get_groups()), host.get_vars())
