"""Pure tests of the topology model (plugins/module_utils/topology.py): no Ansible involved."""
import copy
import datetime
import os
import re

import pytest
import yaml

from ansible_collections.virtfleet.cluster.plugins.module_utils.topology import (
    TopologyError,
    check_top_level_keys,
    default_libvirt_uri,
    parse_topology,
)
from ansible_collections.virtfleet.cluster.plugins.module_utils.topology_layout import (
    InventoryLayout,
    build_layout,
    json_problem,
    topology_layout,
)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
EXAMPLE = os.path.join(REPO, "inventories", "example", "topology.yml")


def sanitize(name):
    """Same rule as Ansible's to_safe_group_name(force=True), without importing Ansible."""
    return re.sub(r"^[\d\W]|[^\w]", "_", name)


def base_document():
    """eu / eu-1 / p1 with clusters c1 (kvm, hv-1..3) and c2 (xen, hv-4)."""
    return {
        "plugin": "virtfleet.cluster.topology",
        "vars": {"level": "top", "top_only": 1},
        "regions": [{
            "name": "eu",
            "vars": {"level": "region"},
            "zones": [{
                "name": "eu-1",
                "vars": {"level": "zone"},
                "pods": [{
                    "name": "p1",
                    "vars": {"level": "pod"},
                    "clusters": [
                        {
                            "name": "c1",
                            "hypervisor": "kvm",
                            "storage": {"name": "nfs1", "type": "shared", "path": "/srv/nfs1"},
                            "max_unavailable": 2,
                            "vars": {"level": "cluster"},
                            "hosts": [
                                {"name": "hv-1", "address": "192.0.2.1"},
                                {"name": "hv-2", "address": "192.0.2.2", "vars": {"level": "host"}},
                                {"name": "hv-3", "address": "192.0.2.3",
                                 "libvirt_uri": "qemu+tcp://127.0.1.3/session"},
                            ],
                        },
                        {
                            "name": "c2",
                            "hypervisor": "xen",
                            "storage": {"name": "disk", "type": "local", "path": "/var/lib/xen/images"},
                            "hosts": [{"name": "hv-4", "address": "2001:db8::4"}],
                        },
                    ],
                }],
            }],
        }],
    }


def host_vars(document, sanitize_fn=sanitize):
    return {name: variables for name, _c, _h, variables in topology_layout(document, sanitize_fn).hosts()}


def cluster_node(document, index=0):
    return document["regions"][0]["zones"][0]["pods"][0]["clusters"][index]


def error_of(document, sanitize_fn=sanitize):
    with pytest.raises(TopologyError) as caught:
        topology_layout(document, sanitize_fn)
    return caught.value


# -- model, groups, variables -------------------------------------------------------------------

def test_groups_form_the_tree_and_hypervisor_groups():
    layout = topology_layout(base_document(), sanitize)
    assert layout.groups == [
        ("region_eu", None),
        ("zone_eu_1", "region_eu"),
        ("pod_p1", "zone_eu_1"),
        ("cluster_c1", "pod_p1"),
        ("hypervisor_kvm", None),
        ("cluster_c2", "pod_p1"),
        ("hypervisor_xen", None),
    ]
    placed = {name: (group, hypervisor) for name, group, hypervisor, _v in layout.hosts()}
    assert placed == {"hv-1": ("cluster_c1", "hypervisor_kvm"), "hv-2": ("cluster_c1", "hypervisor_kvm"),
                      "hv-3": ("cluster_c1", "hypervisor_kvm"), "hv-4": ("cluster_c2", "hypervisor_xen")}


def test_every_host_gets_the_design_variables():
    variables = host_vars(base_document())
    assert variables["hv-1"] == {
        "ansible_host": "192.0.2.1",
        "virtfleet_region": "eu",
        "virtfleet_zone": "eu-1",  # topology name, not the sanitized group name
        "virtfleet_pod": "p1",
        "virtfleet_cluster": "c1",
        "virtfleet_hypervisor": "kvm",
        "virtfleet_storage": {"name": "nfs1", "type": "shared", "path": "/srv/nfs1"},
        "virtfleet_libvirt_uri": "qemu+ssh://root@192.0.2.1/system",
        "virtfleet_max_unavailable": 2,
        "virtfleet_cluster_hosts": ["hv-1", "hv-2", "hv-3"],
        "level": "cluster",
        "top_only": 1,
    }
    assert variables["hv-4"]["virtfleet_max_unavailable"] == 1  # the default
    assert variables["hv-4"]["virtfleet_storage"]["type"] == "local"


def test_variables_inherit_downward_nearest_wins():
    document = base_document()
    variables = host_vars(document)
    assert variables["hv-2"]["level"] == "host"
    assert variables["hv-1"]["level"] == "cluster"
    assert variables["hv-4"]["level"] == "pod"
    assert variables["hv-4"]["top_only"] == 1
    del document["regions"][0]["zones"][0]["pods"][0]["vars"]
    assert host_vars(document)["hv-4"]["level"] == "zone"
    del document["regions"][0]["zones"][0]["vars"]
    assert host_vars(document)["hv-4"]["level"] == "region"
    del document["regions"][0]["vars"]
    assert host_vars(document)["hv-4"]["level"] == "top"


def test_nearest_dict_replaces_rather_than_merges():
    document = base_document()
    document["vars"]["settings"] = {"a": 1, "b": 2}
    cluster_node(document)["vars"]["settings"] = {"a": 9}
    variables = host_vars(document)
    assert variables["hv-1"]["settings"] == {"a": 9}
    assert variables["hv-4"]["settings"] == {"a": 1, "b": 2}


@pytest.mark.parametrize("hypervisor, address, expected", [
    ("kvm", "192.0.2.1", "qemu+ssh://root@192.0.2.1/system"),
    ("qemu", "hv.example.org", "qemu+ssh://root@hv.example.org/system"),
    ("xen", "192.0.2.1", "xen+ssh://root@192.0.2.1/system"),
    ("xen", "2001:db8::4", "xen+ssh://root@[2001:db8::4]/system"),
    ("hyperv", "192.0.2.1", None),
    ("vsphere", "192.0.2.1", None),
])
def test_default_libvirt_uri(hypervisor, address, expected):
    assert default_libvirt_uri(hypervisor, address) == expected


def test_explicit_libvirt_uri_wins_and_hyperv_has_none():
    document = base_document()
    cluster_node(document, 1)["hypervisor"] = "hyperv"
    variables = host_vars(document)
    assert variables["hv-3"]["virtfleet_libvirt_uri"] == "qemu+tcp://127.0.1.3/session"
    assert variables["hv-4"]["virtfleet_libvirt_uri"] is None


def test_layout_round_trips_through_plain_data():
    layout = topology_layout(base_document(), sanitize)
    data = yaml.safe_load(yaml.safe_dump(layout.to_data()))  # what a cache would hold
    again = InventoryLayout.from_data(data)
    assert again.groups == layout.groups
    assert list(again.hosts()) == list(layout.hosts())


def test_example_inventory_is_valid():
    with open(EXAMPLE) as handle:
        document = yaml.safe_load(handle)
    check_top_level_keys(document)
    model = parse_topology(document)
    clusters = {cluster.name: cluster for _r, _z, _p, cluster in model.clusters()}
    assert len(model.regions) == 1 and len(model.regions[0].zones) == 1
    assert len(model.regions[0].zones[0].pods) == 1
    assert {name: (c.hypervisor, len(c.hosts)) for name, c in clusters.items()} == {
        "kvm-prod": ("kvm", 3), "hyperv-prod": ("hyperv", 2), "vsphere-prod": ("vsphere", 2)}
    for cluster in clusters.values():
        assert cluster.storage["name"] and cluster.storage["type"] in ("shared", "local")
    for _cluster, host in model.hosts():
        assert host.address.startswith(("192.0.2.", "198.51.100."))


# -- errors: every one names the place and the fix ----------------------------------------------

def mutate(change):
    document = base_document()
    change(document)
    return document


def regions(d):
    return d["regions"]


def zones(d):
    return d["regions"][0]["zones"]


def pods(d):
    return d["regions"][0]["zones"][0]["pods"]


def clusters(d):
    return d["regions"][0]["zones"][0]["pods"][0]["clusters"]


def hosts(d, index=0):
    return clusters(d)[index]["hosts"]


C1 = "region eu / zone eu-1 / pod p1 / cluster c1"

ERROR_CASES = {
    "unknown host key": (
        lambda d: hosts(d)[2].update(adress="x"),
        C1 + " / host hv-3", ["unknown key 'adress'", "did you mean 'address'?"]),
    "unknown cluster key": (
        lambda d: clusters(d)[0].update(hypervisr="kvm"),
        C1, ["unknown key 'hypervisr'", "did you mean 'hypervisor'?"]),
    "unknown region key": (
        lambda d: regions(d)[0].update(zone=[]),
        "region eu", ["unknown key 'zone'", "did you mean 'zones'?"]),
    "unknown storage key": (
        lambda d: clusters(d)[0]["storage"].update(kind="shared"),
        C1 + " / storage nfs1", ["unknown key 'kind'", "known keys are: name, type, path"]),
    "missing hypervisor": (
        lambda d: clusters(d)[0].pop("hypervisor"),
        C1, ["has no 'hypervisor'", "add `hypervisor: kvm`"]),
    "hypervisor not a lowercase word": (
        lambda d: clusters(d)[0].update(hypervisor="Hyper-V"),
        C1, ["not a lowercase word", "hypervisor: hyper-v"]),
    "host twice in one cluster": (
        lambda d: hosts(d).append({"name": "hv-1", "address": "192.0.2.9"}),
        C1 + " / host hv-1", ["listed twice", "at %s / host hv-1 and at %s / host hv-1" % (C1, C1),
                              "remove one of the two"]),
    "host twice in two clusters": (
        lambda d: hosts(d, 1).append({"name": "hv-2", "address": "192.0.2.9"}),
        "cluster c2 / host hv-2",
        ["listed twice", C1 + " / host hv-2", "region eu / zone eu-1 / pod p1 / cluster c2 / host hv-2"]),
    "duplicate cluster": (
        lambda d: clusters(d).__setitem__(1, dict(copy.deepcopy(clusters(d)[1]), name="c1",
                                                  hosts=[{"name": "hv-9", "address": "192.0.2.9"}])),
        C1, ["cluster name 'c1' is used twice", "rename one"]),
    "duplicate pod across zones": (
        lambda d: zones(d).append(dict(copy.deepcopy(zones(d)[0]), name="eu-2",
                                       pods=[{"name": "p1", "clusters": [{
                                           "name": "c9", "hypervisor": "kvm",
                                           "storage": {"name": "s", "type": "local", "path": "/s"},
                                           "hosts": [{"name": "hv-9", "address": "192.0.2.9"}]}]}])),
        "region eu / zone eu-2 / pod p1", ["pod name 'p1' is used twice", "at region eu / zone eu-1 / pod p1"]),
    "duplicate zone": (
        lambda d: zones(d).append(copy.deepcopy(zones(d)[0])),
        "zone eu-1", ["zone name 'eu-1' is used twice"]),
    "duplicate region": (
        lambda d: regions(d).append(copy.deepcopy(regions(d)[0])),
        "region eu", ["used twice"]),
    "names colliding after sanitizing": (
        lambda d: clusters(d)[1].update(name="c-1") or clusters(d)[0].update(name="c_1"),
        "cluster c-1", ["'c_1'", "'c-1'", "both become the Ansible group 'cluster_c_1'", "rename one"]),
    "host range as a name": (
        lambda d: clusters(d)[0]["hosts"][0].update(name="web[01:03]"),
        C1 + " / host web[01:03]", ["host name 'web[01:03]'", "host range", "does not expand ranges",
                                    "each host as its own entry"]),
    "max_unavailable zero, type in plain words": (
        lambda d: clusters(d)[0].update(max_unavailable=0),
        C1, ["'max_unavailable' must be a positive integer", "got an integer (0)"]),
    "max_unavailable a date": (
        lambda d: clusters(d)[0].update(max_unavailable=datetime.date(2026, 1, 2)),
        C1, ["got a date (2026-01-02)"]),
    "cluster without hosts key": (
        lambda d: clusters(d)[0].pop("hosts"),
        C1, ["the cluster has no hosts", "add `hosts:`"]),
    "cluster with empty hosts": (
        lambda d: clusters(d)[0].update(hosts=[]),
        C1, ["the cluster has no hosts"]),
    "string where a list is expected": (
        lambda d: regions(d)[0].update(zones="eu-1"),
        "region eu", ["'zones' of the region must be a list of zones, got a string ('eu-1')", "- name: ..."]),
    "hosts as a mapping": (
        lambda d: clusters(d)[0].update(hosts={"hv-1": {"address": "x"}}),
        C1, ["'hosts' of the cluster must be a list of hosts, got a mapping"]),
    "list item not a mapping": (
        lambda d: clusters(d)[0].update(hosts=["hv-1"]),
        C1, ["item 1 of 'hosts' must be a mapping", "- name: <host name>"]),
    "max_unavailable zero": (
        lambda d: clusters(d)[0].update(max_unavailable=0),
        C1, ["'max_unavailable' must be a positive integer", "max_unavailable: 1"]),
    "max_unavailable string": (
        lambda d: clusters(d)[0].update(max_unavailable="2"),
        C1, ["positive integer", "a string ('2')"]),
    "max_unavailable bool": (
        lambda d: clusters(d)[0].update(max_unavailable=True),
        C1, ["positive integer", "a boolean"]),
    "storage type": (
        lambda d: clusters(d)[0]["storage"].update(type="nfs"),
        C1 + " / storage nfs1", ["storage type 'nfs' is not one of shared|local", "type: shared"]),
    "missing storage": (
        lambda d: clusters(d)[0].pop("storage"),
        C1, ["no primary 'storage'", "storage: {name:"]),
    "storage not a mapping": (
        lambda d: clusters(d)[0].update(storage="/srv/nfs"),
        C1, ["'storage' of the cluster must be a mapping"]),
    "missing address": (
        lambda d: hosts(d)[0].pop("address"),
        C1 + " / host hv-1", ["the host has no 'address'", "address: 192.0.2.10"]),
    "address not a string": (
        lambda d: hosts(d)[0].update(address=["192.0.2.1"]),
        C1 + " / host hv-1", ["'address' of the host must be a non-empty string, got a list"]),
    "libvirt_uri not a URI": (
        lambda d: hosts(d)[0].update(libvirt_uri="192.0.2.1"),
        C1 + " / host hv-1", ["'libvirt_uri' must be a libvirt connection URI", "qemu+ssh://root@192.0.2.1/system"]),
    "vars not a mapping": (
        lambda d: pods(d)[0].update(vars=["a"]),
        "pod p1", ["'vars' of the pod must be a mapping", "vars: {name: value"]),
    "derived variable in vars": (
        lambda d: clusters(d)[0]["vars"].update(virtfleet_max_unavailable=3),
        C1, ["'virtfleet_max_unavailable'", "set by the topology itself", "max_unavailable:"]),
    "ansible_host in vars": (
        lambda d: hosts(d)[0].update(vars={"ansible_host": "x"}),
        C1 + " / host hv-1", ["'ansible_host'", "set `address:` on the host"]),
    "unnamed host": (
        lambda d: hosts(d)[1].pop("name"),
        C1 + " / host #2", ["host number 2 in 'hosts' has no name"]),
    "name not a string": (
        lambda d: pods(d)[0].update(name=7),
        "zone eu-1 / pod #1", ["has name an integer (7)"]),
    "no regions": (
        lambda d: d.pop("regions"),
        "top level", ["the topology has no regions", "add `regions:`"]),
    "empty zones": (
        lambda d: regions(d)[0].update(zones=[]),
        "region eu", ["empty 'zones' list", "add at least one zone"]),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_name_the_place_the_problem_and_the_fix(case):
    change, place, fragments = ERROR_CASES[case]
    error = error_of(mutate(change))
    error.source = "inventories/x/topology.yml"
    message = str(error)
    assert message.startswith("invalid topology in inventories/x/topology.yml at ")
    assert place in message.split(": ", 1)[0], message
    assert error.fix, message
    assert "Fix: " in message
    for fragment in fragments:
        assert fragment in message, message


def test_error_keeps_the_structured_place():
    error = error_of(mutate(lambda d: hosts(d)[2].update(adress="x")))
    assert error.where == (("region", "eu"), ("zone", "eu-1"), ("pod", "p1"), ("cluster", "c1"), ("host", "hv-3"))
    assert error.place == C1 + " / host hv-3"


def test_document_must_be_a_mapping():
    with pytest.raises(TopologyError, match="document must be a mapping, got a list"):
        parse_topology(["plugin"])


def test_unknown_top_level_key_allows_plugin_options():
    document = base_document()
    document["compose"] = {}
    check_top_level_keys(document, plugin_options=("compose", "plugin"))
    document["region"] = []
    with pytest.raises(TopologyError, match=r"unknown key 'region'.*did you mean 'regions'\?"):
        check_top_level_keys(document, plugin_options=("compose", "plugin"))


def test_without_sanitizer_dashes_stay_and_distinct_names_do_not_collide():
    document = mutate(lambda d: clusters(d)[1].update(name="c-1") or clusters(d)[0].update(name="c_1"))
    layout = build_layout(parse_topology(document))
    assert ("cluster_c-1", "pod_p1") in layout.groups and ("cluster_c_1", "pod_p1") in layout.groups


class TaggedInt(int):
    """Stands for the YAML loader's _AnsibleTaggedInt: a subclass with an unhelpful name."""


def test_type_names_are_plain_words_for_loader_subclasses():
    document = mutate(lambda d: clusters(d)[0].update(max_unavailable=TaggedInt(-1)))
    with pytest.raises(TopologyError, match=r"got an integer \(-1\)"):
        parse_topology(document)


def test_layout_trust_marks_the_derived_values():
    marked = []

    def trust(value):
        marked.append(value)
        return value
    layout = build_layout(parse_topology(base_document()), sanitize, trust)
    variables = dict((name, v) for name, _c, _h, v in layout.hosts())["hv-1"]
    for key in ("virtfleet_region", "virtfleet_zone", "virtfleet_pod", "virtfleet_cluster", "virtfleet_hypervisor",
                "ansible_host", "virtfleet_libvirt_uri"):
        assert variables[key] in marked, key
    assert all(value in marked for value in variables["virtfleet_storage"].values())


class EncryptedString:
    """Stands for ansible.parsing.vault.EncryptedString (not a str: JSON would keep only its ciphertext)."""


@pytest.mark.parametrize("value, problem", [
    ({"a": [1, 2.5, True, None, "x", {"b": "c"}]}, None),
    ({"vars": {"by_number": {1: "one"}}}, "vars.by_number has the key 1, which is not a string"),
    ({"vars": {"secret": EncryptedString()}}, "vars.secret is a vault-encrypted value"),
    ({"vars": {"when": datetime.date(2026, 1, 2)}}, "vars.when is a date"),
    ({"layout": [["a", {"s": {1, 2}}]]}, "layout[0][1].s is a set"),
    ({"layout": [("a", "b")]}, "layout[0] is a tuple"),
])
def test_json_problem_names_what_a_json_cache_would_change(value, problem):
    assert json_problem(value) == problem


def test_layout_of_a_plain_topology_is_json_faithful():
    assert json_problem(topology_layout(base_document(), sanitize).to_data()) is None


# --- every refusal of the topology parser, word for word (issue 17: survivors of `make mutation`) ---

AT_C1 = "invalid topology at region eu / zone eu-1 / pod p1 / cluster c1"
REFUSALS = [
    ('unknown cluster key', lambda c: c.update({"hypervsior": "kvm"}),
     AT_C1 + ": unknown key 'hypervsior' in the cluster."
     " Fix: did you mean 'hypervisor'? known keys are: name, vars, hypervisor, storage, max_unavailable, hosts"),
    ('non-string key', lambda c: c.update({3: "x"}),
     AT_C1 + ': key 3 of the cluster is not a string.'
     ' Fix: use one of: name, vars, hypervisor, storage, max_unavailable, hosts'),
    ('unknown host key', lambda c: c["hosts"][0].update({"adress": "x"}),
     AT_C1 + " / host hv-1: unknown key 'adress' in the host."
     " Fix: did you mean 'address'? known keys are: name, vars, address, libvirt_uri"),
    ('unknown storage key', lambda c: c["storage"].update({"pth": "x"}),
     AT_C1 + " / storage nfs1: unknown key 'pth' in the storage."
     " Fix: did you mean 'path'? known keys are: name, type, path"),
    ('storage not a mapping', lambda c: c.update({"storage": "nfs1"}),
     AT_C1 + ": 'storage' of the cluster must be a mapping, got a string ('nfs1')."
     ' Fix: write it as `storage: {name: <pool>, type: shared|local, path: <path or URI>}`'),
    ('storage without name', lambda c: c["storage"].pop("name"),
     AT_C1 + " / storage (unnamed): the storage has no 'name'."
     ' Fix: add `name: <pool name>`'),
    ('storage without path', lambda c: c["storage"].pop("path"),
     AT_C1 + " / storage nfs1: the storage has no 'path'."
     ' Fix: add `path: /var/lib/libvirt/images or nfs://server/export`'),
    ('storage without type', lambda c: c["storage"].pop("type"),
     AT_C1 + " / storage nfs1: the storage has no 'type'."
     ' Fix: add `type: shared`'),
    ('unnamed storage path', lambda c: c["storage"].update({"name": 5, "path": None}),
     AT_C1 + " / storage (unnamed): 'name' of the storage must be a non-empty string, got an integer (5)."
     ' Fix: write it as `name: <pool name>`'),
    ('hypervisor empty', lambda c: c.update({"hypervisor": " "}),
     AT_C1 + ": 'hypervisor' of the cluster must be a non-empty string, got a string (' ')."
     ' Fix: write it as `hypervisor: kvm`'),
    ('uri not a string', lambda c: c["hosts"][0].update({"libvirt_uri": 5}),
     AT_C1 + " / host hv-1: 'libvirt_uri' must be a libvirt connection URI string, got an integer (5)."
     ' Fix: write e.g. `libvirt_uri: qemu+ssh://root@192.0.2.1/system`, or leave it out for the default'),
    ('cluster vars not mapping', lambda c: c.update({"vars": ["a"]}),
     AT_C1 + ": 'vars' of the cluster must be a mapping of variable names to values, got a list."
     ' Fix: write it as `vars: {name: value, ...}`'),
    ('host var name not string', lambda c: c["hosts"][0].update({"vars": {1: "x"}}),
     AT_C1 + " / host hv-1: variable name 1 in 'vars' of the host is not a string."
     ' Fix: use variable names made of letters, digits and _'),
    ('host var name empty', lambda c: c["hosts"][0].update({"vars": {"": "x"}}),
     AT_C1 + " / host hv-1: variable name '' in 'vars' of the host is not a string."
     ' Fix: use variable names made of letters, digits and _'),
    ('host vars not mapping', lambda c: c["hosts"][0].update({"vars": "x"}),
     AT_C1 + " / host hv-1: 'vars' of the host must be a mapping of variable names to values, got a string ('x')."
     ' Fix: write it as `vars: {name: value, ...}`'),
    ('hosts item not mapping', lambda c: c["hosts"].append("hv-9"),
     AT_C1 + ": item 4 of 'hosts' must be a mapping describing a host, got a string ('hv-9')."
     ' Fix: write it as `- name: <host name>` followed by its keys'),
]


@pytest.mark.parametrize("name, change, message", REFUSALS, ids=[case[0] for case in REFUSALS])
def test_each_refusal_says_where_what_and_how_to_fix_it(name, change, message):
    document = base_document()
    change(cluster_node(document))
    assert str(error_of(document)) == message


def parse_error(document):
    with pytest.raises(TopologyError) as caught:
        parse_topology(document)
    return caught.value


AT = "invalid topology at "
NAME_FIX = " Fix: give it a non-empty string name: `- name: <%s name>`"
VARS_FIX = " Fix: write it as `vars: {name: value, ...}`"
UPPER_REFUSALS = [
    ('document not a mapping', lambda d: ["plugin"],
     AT + "top level: the document must be a mapping, got a list."
     " Fix: start the file with `plugin: virtfleet.cluster.topology` followed by `regions:`"),
    ('top vars not a mapping', lambda d: d.update(vars=["a"]),
     AT + "top level: 'vars' of the topology must be a mapping of variable names to values, got a list." + VARS_FIX),
    ('regions item not a mapping', lambda d: regions(d).append("us"),
     AT + "top level: item 2 of 'regions' must be a mapping describing a region, got a string ('us')."
     " Fix: write it as `- name: <region name>` followed by its keys"),
    ('unnamed region', lambda d: regions(d)[0].__delitem__("name"),
     AT + "region #1: region number 1 in 'regions' has no name." + NAME_FIX % "region"),
    ('unknown region key without a close match', lambda d: regions(d)[0].update(colour="red"),
     AT + "region eu: unknown key 'colour' in the region. Fix: known keys are: name, vars, zones"),
    ('region vars not a mapping', lambda d: regions(d)[0].update(vars="x"),
     AT + "region eu: 'vars' of the region must be a mapping of variable names to values, got a string ('x')."
     + VARS_FIX),
    ('unnamed zone', lambda d: zones(d).append({"zone": "eu-2"}),
     AT + "region eu / zone #2: zone number 2 in 'zones' has no name." + NAME_FIX % "zone"),
    ('unknown zone key', lambda d: zones(d)[0].update(pod=[]),
     AT + "region eu / zone eu-1: unknown key 'pod' in the zone. Fix: did you mean 'pods'? known keys are: "
     "name, vars, pods"),
    ('zone vars not a mapping', lambda d: zones(d)[0].update(vars=1),
     AT + "region eu / zone eu-1: 'vars' of the zone must be a mapping of variable names to values, got an "
     "integer (1)." + VARS_FIX),
    ('zone without pods', lambda d: zones(d)[0].__delitem__("pods"),
     AT + "region eu / zone eu-1: the zone has no pods. Fix: add `pods:` with at least one pod (`- name: ...`), "
     "or remove the zone"),
    ('pods item not a mapping', lambda d: pods(d).append(None),
     AT + "region eu / zone eu-1: item 2 of 'pods' must be a mapping describing a pod, got nothing (null)."
     " Fix: write it as `- name: <pod name>` followed by its keys"),
    ('unnamed pod', lambda d: pods(d)[0].update(name=""),
     AT + "region eu / zone eu-1 / pod #1: pod number 1 in 'pods' has name a string ('')." + NAME_FIX % "pod"),
    ('unknown pod key', lambda d: pods(d)[0].update(cluster=[]),
     AT + "region eu / zone eu-1 / pod p1: unknown key 'cluster' in the pod. Fix: did you mean 'clusters'? "
     "known keys are: name, vars, clusters"),
    ('pod without clusters', lambda d: pods(d)[0].update(clusters=[]),
     AT + "region eu / zone eu-1 / pod p1: the pod has an empty 'clusters' list. Fix: add at least one cluster, "
     "or remove the pod"),
    ('clusters not a list', lambda d: pods(d)[0].update(clusters="c1"),
     AT + "region eu / zone eu-1 / pod p1: 'clusters' of the pod must be a list of clusters, got a string ('c1')."
     " Fix: write each cluster as a list item: `clusters:` then `  - name: ...`"),
    ('unnamed cluster', lambda d: clusters(d)[1].__delitem__("name"),
     AT + "region eu / zone eu-1 / pod p1 / cluster #2: cluster number 2 in 'clusters' has no name."
     + NAME_FIX % "cluster"),
    ('hypervisor with no letter', lambda d: clusters(d)[0].update(hypervisor="KVM 2!"),
     AT + "region eu / zone eu-1 / pod p1 / cluster c1: hypervisor 'KVM 2!' is not a lowercase word."
     " Fix: write it like `hypervisor: kvm2` (kvm, qemu, xen, hyperv, vsphere, ...)"),
    ('hypervisor of symbols', lambda d: clusters(d)[0].update(hypervisor="!!"),
     AT + "region eu / zone eu-1 / pod p1 / cluster c1: hypervisor '!!' is not a lowercase word."
     " Fix: write it like `hypervisor: kvm` (kvm, qemu, xen, hyperv, vsphere, ...)"),
]


@pytest.mark.parametrize("name, change, message", UPPER_REFUSALS, ids=[case[0] for case in UPPER_REFUSALS])
def test_each_refusal_above_the_cluster_says_where_what_and_how_to_fix_it(name, change, message):
    document = base_document()
    replaced = change(document)  # a change returns the document only when it replaces it whole
    assert str(parse_error(document if replaced is None else replaced)) == message


def test_top_level_refusal_names_the_topology_file():
    with pytest.raises(TopologyError) as caught:
        check_top_level_keys({"regions": [], "plugni": "x"})
    assert str(caught.value) == (AT + "top level: unknown key 'plugni' in the topology file. Fix: did you mean "
                                 "'plugin'? known keys are: plugin, vars, regions")


def test_names_are_unique_per_kind_only():
    document = base_document()
    zones(document)[0]["name"] = "eu"
    pods(document)[0]["name"] = "eu"
    clusters(document)[0]["name"] = "eu"
    model = parse_topology(document)
    (region,) = model.regions
    assert (region.name, region.zones[0].name, region.zones[0].pods[0].name) == ("eu", "eu", "eu")
    assert region.zones[0].where == (("region", "eu"), ("zone", "eu"))


def test_each_level_keeps_its_place_and_variables():
    model = parse_topology(base_document())
    cluster, host = next(model.hosts())
    assert host.where == (("region", "eu"), ("zone", "eu-1"), ("pod", "p1"), ("cluster", "c1"), ("host", "hv-1"))
    assert cluster.where == host.where[:4] and model.regions[0].zones[0].pods[0].where == host.where[:3]
    assert cluster.vars == {"level": "cluster", "top_only": 1}


def test_an_ipv6_literal_already_in_brackets_is_kept():
    assert default_libvirt_uri("kvm", "[2001:db8::4]") == "qemu+ssh://root@[2001:db8::4]/system"


def test_a_topology_error_without_problem_or_fix():
    error = TopologyError((("region", "eu"),), source="topology.yml")
    assert (error.problem, error.fix, error.source, error.args) == ("", "", "topology.yml", ("",))
    assert str(error) == "invalid topology in topology.yml at region eu: "


@pytest.mark.parametrize("name", ["web[01", "web01]"])
def test_a_host_name_with_either_range_bracket_is_refused(name):
    assert "contains '[' or ']'" in str(error_of(mutate(lambda d: hosts(d)[0].update(name=name))))


class _LoaderThing:
    pass


class _XmlNode:
    pass


@pytest.mark.parametrize("value, words", [
    (2.5, "a number (2.5)"),
    (datetime.datetime(2026, 1, 2, 3, 4), "a date and time (2026-01-02T03:04:00)"),
    (object.__new__(_LoaderThing), "a value of type LoaderThing"),
    (object.__new__(_XmlNode), "a value of type XmlNode"),  # only the leading underscores go
    (b"x", "binary data"),
    ({1}, "a set"),
])
def test_refusals_name_the_type_in_plain_words(value, words):
    message = str(error_of(mutate(lambda d: clusters(d)[0].update(max_unavailable=value))))
    assert message.endswith("got %s. Fix: write e.g. `max_unavailable: 1` or leave it out for the default 1" % words)


def test_a_vault_value_is_named_so_not_shown():
    # A class named like Ansible's vault value (the loader's own class is not imported here).
    vaulted = type("EncryptedString", (), {})()
    message = str(error_of(mutate(lambda d: hosts(d)[0].update(libvirt_uri=vaulted))))
    assert "got a vault-encrypted value." in message
