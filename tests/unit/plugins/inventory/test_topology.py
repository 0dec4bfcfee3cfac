"""The inventory plugin virtfleet.cluster.topology through Ansible's own machinery.

In-process: the plugin is loaded by Ansible's inventory plugin loader (so its DOCUMENTATION
defines its options) and parses into a real InventoryData with a real DataLoader.
End to end: a few `ansible-inventory` runs with the repository's ansible.cfg.
"""
import json
import os
import subprocess
import sys

import pytest
import yaml

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import inventory_loader

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
EXAMPLE = os.path.join(REPO, "inventories", "example", "topology.yml")
ANSIBLE_INVENTORY = os.path.join(os.path.dirname(sys.executable), "ansible-inventory")

# Loads plugins/inventory/topology.py under the short name `topology` without installing
# Ansible's collection finder into this pytest process (the module_utils import resolves
# through conftest.py's sys.path entry).
inventory_loader.add_directory(os.path.join(REPO, "plugins", "inventory"))


def small_topology(**top):
    document = {
        "plugin": "virtfleet.cluster.topology",
        "vars": {"site": "lab"},
        "regions": [{"name": "eu", "zones": [{"name": "eu-1", "pods": [{"name": "p1", "clusters": [
            {"name": "c1", "hypervisor": "kvm", "max_unavailable": 2,
             "storage": {"name": "nfs1", "type": "shared", "path": "/srv/nfs1"},
             "vars": {"rack": "r1"},
             "hosts": [{"name": "hv-1", "address": "192.0.2.1"},
                       {"name": "hv-2", "address": "192.0.2.2", "vars": {"rack": "r2"}}]},
            {"name": "c2", "hypervisor": "hyperv",
             "storage": {"name": "csv", "type": "local", "path": "D:\\vms"},
             "hosts": [{"name": "hv-3", "address": "198.51.100.3"}]},
        ]}]}]}],
    }
    document.update(top)
    return document


@pytest.fixture
def write(tmp_path):
    def write(document, name="topology.yml"):
        path = tmp_path / name
        path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
        return str(path)
    return write


def load_plugin():
    plugin = inventory_loader.get("topology")
    assert plugin is not None
    return plugin


def parse(path, cache=True, plugin=None):
    """Parse as InventoryManager does: parse, flush the plugin's cache, reconcile."""
    inventory = InventoryData()
    plugin = plugin or load_plugin()
    plugin.parse(inventory, DataLoader(), path, cache=cache)
    if getattr(plugin, "_cache", None):
        plugin.update_cache_if_changed()
    inventory.reconcile_inventory()  # links the top groups to `all`
    return inventory


def parse_error(path):
    with pytest.raises(AnsibleParserError) as caught:
        parse(path)
    return str(caught.value)


def children(inventory, group):
    return sorted(g.name for g in inventory.groups[group].child_groups)


def members(inventory, group):
    return sorted(h.name for h in inventory.groups[group].hosts)


# -- verify_file ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, accepted", [
    ("a.yml", "plugin: virtfleet.cluster.topology\nregions: []\n", True),
    ("a.yaml", "# comment\nplugin: topology  # short name\n", True),
    ("a.yml", "plugin: 'virtfleet.cluster.topology'\n", True),
    ("a.json", "plugin: virtfleet.cluster.topology\n", False),
    ("a.yml", "plugin: constructed\n", False),
    ("a.yml", "all:\n  vars:\n    plugin: topology\n", False),
    ("a.yml", "plugin: virtfleet.cluster.topologyx\n", False),
    ("a.yml", "{plugin: virtfleet.cluster.topology, regions: []}\n", True),  # flow style
    ("a.yml", "---\n# site\n\"plugin\" : topology\n", True),
    ("a.yml", "vars: {plugin: topology}\nregions: []\nplugin: virtfleet.cluster.topology\n", True),
    ("a.yml", "vars: {plugin: topology}\n", False),
    ("a.yml", "- plugin: topology\n", False),
    ("a.yml", "", False),
    ("topology.yml", "", True),  # taken by name, so that an empty topology is reported
    ("topology.yaml", "plugin: [broken\n", True),
    ("topology.json", "", False),
])
def test_verify_file(write, name, text, accepted):
    assert load_plugin().verify_file(write(text, name)) is accepted


def test_verify_file_refuses_missing_file(tmp_path):
    assert load_plugin().verify_file(str(tmp_path / "missing.yml")) is False


# -- groups and variables ---------------------------------------------------------------------

def test_example_inventory_tree():
    inventory = parse(EXAMPLE)
    assert children(inventory, "all") == ["hypervisor_hyperv", "hypervisor_kvm", "hypervisor_vsphere",
                                          "region_eu", "ungrouped"]
    assert children(inventory, "region_eu") == ["zone_eu_west_1"]
    assert children(inventory, "zone_eu_west_1") == ["pod_p1"]
    assert children(inventory, "pod_p1") == ["cluster_hyperv_prod", "cluster_kvm_prod", "cluster_vsphere_prod"]
    assert members(inventory, "cluster_kvm_prod") == ["kvm-01", "kvm-02", "kvm-03"]
    assert members(inventory, "hypervisor_hyperv") == ["hyperv-01", "hyperv-02"]
    assert members(inventory, "hypervisor_vsphere") == ["esxi-01", "esxi-02"]
    assert len(inventory.hosts) == 7


def test_host_variables_and_inheritance(write):
    inventory = parse(write(small_topology()))
    hv1 = inventory.hosts["hv-1"].vars
    assert {k: v for k, v in hv1.items() if k not in ("inventory_file", "inventory_dir")} == {
        "ansible_host": "192.0.2.1",
        "virtfleet_region": "eu", "virtfleet_zone": "eu-1", "virtfleet_pod": "p1", "virtfleet_cluster": "c1",
        "virtfleet_hypervisor": "kvm",
        "virtfleet_storage": {"name": "nfs1", "type": "shared", "path": "/srv/nfs1"},
        "virtfleet_libvirt_uri": "qemu+ssh://root@192.0.2.1/system",
        "virtfleet_max_unavailable": 2,
        "virtfleet_cluster_hosts": ["hv-1", "hv-2"],
        "site": "lab", "rack": "r1",
    }
    assert inventory.hosts["hv-2"].vars["rack"] == "r2"
    hv3 = inventory.hosts["hv-3"].vars
    assert hv3["virtfleet_libvirt_uri"] is None and hv3["virtfleet_max_unavailable"] == 1
    assert "rack" not in hv3  # cluster c2 sets none


# -- Constructable ----------------------------------------------------------------------------

def test_constructable_options(write):
    document = small_topology(
        compose={"virtfleet_admin": "'administrator' if virtfleet_hypervisor == 'hyperv' else 'root'"},
        groups={"shared_storage": "virtfleet_storage.type == 'shared'"},
        keyed_groups=[{"key": "rack", "prefix": "rack", "default_value": "none"},
                      {"key": "virtfleet_storage.name", "prefix": "storage"}],
    )
    inventory = parse(write(document))
    assert inventory.hosts["hv-1"].vars["virtfleet_admin"] == "root"
    assert inventory.hosts["hv-3"].vars["virtfleet_admin"] == "administrator"
    assert members(inventory, "shared_storage") == ["hv-1", "hv-2"]
    assert members(inventory, "rack_r1") == ["hv-1"] and members(inventory, "rack_r2") == ["hv-2"]
    assert members(inventory, "storage_csv") == ["hv-3"]


def test_constructable_strict(write):
    document = small_topology(compose={"broken": "no_such_variable + 1"})
    assert "broken" not in parse(write(document)).hosts["hv-1"].vars  # not strict: skipped
    document["strict"] = True
    with pytest.raises(AnsibleError, match="Could not set broken for host hv-1"):
        parse(write(document))


# -- caching ----------------------------------------------------------------------------------

def forbid_reading_yaml(monkeypatch):
    def fail(self, path):
        raise AssertionError("the YAML was read although the cache should have answered")
    monkeypatch.setattr(type(load_plugin()), "_load_document", fail)


def test_cache_hit_skips_reading_the_file(write, json_cache, monkeypatch):
    path = write(small_topology(groups={"shared_storage": "virtfleet_storage.type == 'shared'"}))
    first = parse(path)
    assert list(json_cache.iterdir()), "nothing was written to the cache"
    forbid_reading_yaml(monkeypatch)
    second = parse(path)
    assert sorted(second.groups) == sorted(first.groups)
    assert second.hosts["hv-2"].vars["rack"] == "r2"
    assert members(second, "shared_storage") == ["hv-1", "hv-2"]  # options come back with the entry


def test_cache_is_ignored_when_the_file_changed(write, json_cache):
    path = write(small_topology())
    parse(path)
    document = small_topology()
    document["vars"]["site"] = "changed"
    write(document)
    assert parse(path).hosts["hv-1"].vars["site"] == "changed"


def test_refresh_rereads_and_updates_the_cache(write, json_cache, monkeypatch):
    path = write(small_topology())
    parse(path)
    document = small_topology()
    document["vars"]["site"] = "refreshed"
    write(document)
    assert parse(path, cache=False).hosts["hv-1"].vars["site"] == "refreshed"  # meta: refresh_inventory
    forbid_reading_yaml(monkeypatch)
    assert parse(path).hosts["hv-1"].vars["site"] == "refreshed"


def test_cache_option_in_the_file_saves_validation(write, tmp_path, monkeypatch):
    path = write(small_topology(cache=True, cache_plugin="jsonfile", cache_connection=str(tmp_path / "c")))
    parse(path)
    assert list((tmp_path / "c").iterdir())
    import ansible_collections.virtfleet.cluster.plugins.module_utils.topology as model

    def fail(document):
        raise AssertionError("validated again although the cache holds this file")
    monkeypatch.setattr(model, "parse_topology", fail)
    plugin_module = sys.modules[type(load_plugin()).__module__]
    monkeypatch.setattr(plugin_module, "parse_topology", fail)
    assert parse(path).hosts["hv-1"].vars["rack"] == "r1"


def test_no_cache_by_default(write, monkeypatch):
    path = write(small_topology())
    parse(path)
    calls = []
    original = type(load_plugin())._load_document
    monkeypatch.setattr(type(load_plugin()), "_load_document",
                        lambda self, p: calls.append(p) or original(self, p))
    parse(path)
    assert calls == [path]


# -- errors through the plugin ----------------------------------------------------------------

def test_topology_error_names_file_place_and_fix(write):
    document = small_topology()
    document["regions"][0]["zones"][0]["pods"][0]["clusters"][0]["hosts"][1]["adress"] = "x"
    path = write(document)
    message = parse_error(path)
    assert path in message
    assert "region eu / zone eu-1 / pod p1 / cluster c1 / host hv-2" in message
    assert "did you mean 'address'?" in message


def test_unknown_top_level_key(write):
    message = parse_error(write(small_topology(regoins=[])))
    assert "unknown key 'regoins'" in message and "did you mean 'regions'?" in message
    assert "top level" in message


def test_host_in_two_clusters(write):
    document = small_topology()
    clusters = document["regions"][0]["zones"][0]["pods"][0]["clusters"]
    clusters[1]["hosts"].append({"name": "hv-1", "address": "192.0.2.9"})
    message = parse_error(write(document))
    assert "host 'hv-1' is listed twice" in message
    assert "cluster c1 / host hv-1" in message and "cluster c2 / host hv-1" in message


def test_sanitized_group_collision_uses_ansible_sanitizer(write):
    document = small_topology()
    clusters = document["regions"][0]["zones"][0]["pods"][0]["clusters"]
    clusters[0]["name"], clusters[1]["name"] = "db.1", "db-1"
    message = parse_error(write(document))
    assert "'db.1'" in message and "'db-1'" in message and "cluster_db_1" in message


def test_invalid_yaml_names_the_file(write):
    path = write("plugin: virtfleet.cluster.topology\nregions:\n  - name: eu\n   zones: [\n")
    message = parse_error(path)
    assert path in message and "cannot load topology file" in message and "valid YAML" in message
    assert "line 4" in message


def test_unreadable_file(tmp_path):
    path = str(tmp_path / "missing.yml")
    message = parse_error(path)
    assert "cannot read topology file %s" % path in message


def test_empty_and_non_mapping_files(write):
    assert "is empty" in parse_error(write("# nothing\n"))
    assert "must hold a mapping" in parse_error(write("- plugin: topology\n"))
    assert "is not a topology file" in parse_error(write("plugin: constructed\n"))


def test_invalid_plugin_option_names_the_file(write):
    path = write(small_topology(cache_timeout="soon"))
    message = parse_error(path)
    assert "invalid plugin option in topology file %s" % path in message and "cache_timeout" in message


# -- end to end: ansible-inventory ------------------------------------------------------------

def ansible_inventory(*args):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"))
    return subprocess.run([ANSIBLE_INVENTORY, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_ansible_inventory_graph_of_the_example():
    result = ansible_inventory("-i", EXAMPLE, "--graph")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    expected_chain = ["  |--@region_eu:", "  |  |--@zone_eu_west_1:", "  |  |  |--@pod_p1:",
                      "  |  |  |  |--@cluster_kvm_prod:", "  |  |  |  |  |--kvm-01"]
    start = lines.index(expected_chain[0])
    assert lines[start:start + 5] == expected_chain
    assert "  |--@hypervisor_kvm:" in lines


def test_ansible_inventory_list_with_fqcn_and_short_name(write):
    for plugin_name in ("virtfleet.cluster.topology", "topology"):
        result = ansible_inventory("-i", write(small_topology(plugin=plugin_name)), "--list")
        assert result.returncode == 0, result.stderr
        listing = json.loads(result.stdout)
        assert listing["_meta"]["hostvars"]["hv-2"]["virtfleet_cluster"] == "c1"
        assert listing["cluster_c1"]["hosts"] == ["hv-1", "hv-2"]


def test_ansible_inventory_reports_errors_without_traceback(write):
    document = small_topology()
    del document["regions"][0]["zones"][0]["pods"][0]["clusters"][0]["hypervisor"]
    path = write(document)
    result = subprocess.run(
        [ANSIBLE_INVENTORY, "-i", path, "--list"], cwd=REPO, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_INVENTORY_UNPARSED_FAILED="1",
                 ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="1"), check=False)
    assert result.returncode != 0
    output = " ".join(result.stderr.split())  # Ansible wraps long messages
    assert "Traceback" not in output
    assert "region eu / zone eu-1 / pod p1 / cluster c1" in output
    assert "has no 'hypervisor'" in output and "add `hypervisor: kvm`" in output
