"""virtfleet.cluster.topology side by side with ansible.builtin.constructed (issue 14).

The same constructed options run through our plugin over a topology, and through Ansible's
`constructed` over the equivalent static YAML inventory (written out by hand below), both
in-process through InventoryManager. Groups, host variables as a play reads them (rendered by
Ansible's Templar) and whether each is trusted as a template must be the same.
Cases after ansible-core's test/integration/targets/inventory_constructed, plus the points of
the issue: trust, magic variables, cache fidelity, loud failures, host ranges, flow style.
"""
import configparser
import os
import subprocess
import sys

import pytest
import yaml

from ansible import constants as C
from ansible import context
from ansible.errors import AnsibleError
from ansible.inventory.data import InventoryData
from ansible.inventory.manager import InventoryManager
from ansible.module_utils.common.collections import ImmutableDict
from ansible.parsing.dataloader import DataLoader
from ansible.parsing.vault import VaultSecret, VaultSecretsContext
from ansible.plugins.loader import inventory_loader
from ansible.template import Templar, is_trusted_as_template, trust_as_template

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
BIN = os.path.dirname(sys.executable)
inventory_loader.add_directory(os.path.join(REPO, "plugins", "inventory"))  # as `topology`, see test_topology.py

# `labels` and `services` stand for ansible-core's test's `tags` and `roles` (reserved names in a play).
TREE_VARS = {"site": "lab", "labels": {"env": "prod", "status": ""}, "services": ["db", "web", "", None],
             "greeting": "{{ 'hel' ~ 'lo' }}"}  # a template written in the inventory is rendered in both

TOPOLOGY = {
    "plugin": "virtfleet.cluster.topology",
    "vars": TREE_VARS,
    "regions": [{"name": "eu", "zones": [{"name": "eu-1", "pods": [{"name": "p1", "clusters": [
        {"name": "c1", "hypervisor": "kvm", "storage": {"name": "nfs1", "type": "shared", "path": "/srv/nfs1"},
         "vars": {"rack": "r1", "os": ""},
         "hosts": [{"name": "hv-1.example.com", "address": "192.0.2.1"},
                   {"name": "hv-2", "address": "192.0.2.2", "vars": {"rack": "r2", "os": "linux"}}]},
        {"name": "c2", "hypervisor": "hyperv", "max_unavailable": 2,
         "storage": {"name": "csv", "type": "local", "path": "D:\\vms"},
         "hosts": [{"name": "hv-3", "address": "198.51.100.3", "libvirt_uri": "hyperv://198.51.100.3/"}]},
    ]}]}]}],
}

# The same hosts, groups and variables as a static YAML inventory.
C1 = {**TREE_VARS, "rack": "r1", "os": "", "virtfleet_region": "eu", "virtfleet_zone": "eu-1", "virtfleet_pod": "p1",
      "virtfleet_cluster": "c1", "virtfleet_hypervisor": "kvm", "virtfleet_max_unavailable": 1,
      "virtfleet_storage": {"name": "nfs1", "type": "shared", "path": "/srv/nfs1"},
      "virtfleet_cluster_hosts": ["hv-1.example.com", "hv-2"]}
C2 = {**TREE_VARS, "virtfleet_region": "eu", "virtfleet_zone": "eu-1", "virtfleet_pod": "p1",
      "virtfleet_cluster": "c2", "virtfleet_hypervisor": "hyperv", "virtfleet_max_unavailable": 2,
      "virtfleet_storage": {"name": "csv", "type": "local", "path": "D:\\vms"},
      "virtfleet_cluster_hosts": ["hv-3"]}
STATIC = {"all": {"children": {
    "region_eu": {"children": {"zone_eu_1": {"children": {"pod_p1": {"children": {
        "cluster_c1": {"hosts": {
            "hv-1.example.com": {**C1, "ansible_host": "192.0.2.1",
                                 "virtfleet_libvirt_uri": "qemu+ssh://root@192.0.2.1/system"},
            "hv-2": {**C1, "rack": "r2", "os": "linux", "ansible_host": "192.0.2.2",
                     "virtfleet_libvirt_uri": "qemu+ssh://root@192.0.2.2/system"}}},
        "cluster_c2": {"hosts": {"hv-3": {**C2, "ansible_host": "198.51.100.3",
                                          "virtfleet_libvirt_uri": "hyperv://198.51.100.3/"}}},
    }}}}}},
    "hypervisor_kvm": {"hosts": {"hv-1.example.com": None, "hv-2": None}},
    "hypervisor_hyperv": {"hosts": {"hv-3": None}},
}}}

COMPOSE_ORDER = "compose entries see the variables from before compose, groups see compose"
# name -> constructed options; each runs through both plugins and must give the same inventory.
CASES = {
    "tree only": {},
    "magic variables": {
        "compose": {"me": "inventory_hostname", "short": "inventory_hostname_short", "seen": "group_names"},
        "groups": {"in_c1": "'cluster_c1' in group_names", "named_hv2": "inventory_hostname == 'hv-2'"},
        "keyed_groups": [{"key": "group_names", "prefix": "member"}, {"key": "inventory_hostname_short", "prefix": "short"}],
    },
    "keyed_groups see the groups from before they ran": {
        "groups": {"shared": "virtfleet_storage.type == 'shared'"},
        "keyed_groups": [{"key": "virtfleet_cluster", "prefix": "c"}, {"key": "group_names", "prefix": "seen"}],
    },
    COMPOSE_ORDER: {
        "compose": {"first": "'one'", "second": "first | default('unset')",
                    "admin": "'administrator' if virtfleet_hypervisor == 'hyperv' else 'root'"},
        "groups": {"windows": "admin == 'administrator'"},
        "keyed_groups": [{"key": "admin", "prefix": "user"}],
    },
    "keyed groups from a dict, a list and a string, with default_value": {
        "keyed_groups": [{"key": "labels", "prefix": "tag", "default_value": "running"},
                         {"key": "services", "default_value": "storage", "prefix": "host"},
                         {"key": "os", "default_value": "fedora", "prefix": "host"}],
    },
    "trailing_separator false": {"keyed_groups": [{"key": "labels", "prefix": "tag", "trailing_separator": False}]},
    "separator, parent_group, no leading separator": {
        "leading_separator": False,
        "keyed_groups": [{"key": "rack | default('none')"}, {"key": "labels", "separator": ""},
                         {"key": "virtfleet_storage.name", "prefix": "storage", "parent_group": "storage_{{ virtfleet_storage.type }}"}],
    },
    "not strict: undefined variables are skipped": {
        "compose": {"broken": "no_such_variable + 1"},
        "groups": {"never": "no_such_variable > 1"},
        "keyed_groups": [{"key": "no_such_variable", "prefix": "x"}],
    },
    "compose results from outside data are not trusted": {
        "compose": {"injected": "lookup('env', 'VIRTFLEET_TEST_INJECTED')", "joined": "site ~ lookup('env', 'VIRTFLEET_TEST_INJECTED')"},
        "keyed_groups": [{"key": "injected", "prefix": "inj"}],
    },
    "use_extra_vars": {"use_extra_vars": True, "compose": {"from_extra": "extra_setting ~ '-' ~ inventory_hostname"}},
}
INJECTION_AND_MAGIC = {**CASES["magic variables"], "compose": {
    **CASES["magic variables"]["compose"], **CASES["compose results from outside data are not trusted"]["compose"]}}
STRICT_CASES = {
    "compose": {"compose": {"broken": "no_such_variable + 1"}},
    "groups": {"groups": {"never": "no_such_variable > 1"}},
    "keyed_groups": {"keyed_groups": [{"key": "no_such_variable"}]},
}


@pytest.fixture(autouse=True)
def ansible_settings(monkeypatch):
    monkeypatch.setenv("VIRTFLEET_TEST_INJECTED", "{{ 6 * 7 }}")
    monkeypatch.setattr(context, "CLIARGS", ImmutableDict(extra_vars=("extra_setting=from-cli",)))
    monkeypatch.setattr(C, "INVENTORY_ANY_UNPARSED_IS_FAILED", True)  # a failure raises instead of warning


def inventory(monkeypatch, enabled, sources, loader=None):
    monkeypatch.setattr(C, "INVENTORY_ENABLED", enabled)
    return InventoryManager(loader or DataLoader(), sources=[str(source) for source in sources], cache=True)


def ours(tmp_path, monkeypatch, options, document=None, name="topology.yml", loader=None):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**(document or TOPOLOGY), **options}, sort_keys=False))
    return inventory(monkeypatch, ["topology"], [path], loader)


def constructed(tmp_path, monkeypatch, options):
    static, config = tmp_path / "static.yml", tmp_path / "constructed.yml"
    static.write_text(yaml.safe_dump(STATIC, sort_keys=False))
    config.write_text(yaml.safe_dump({"plugin": "constructed", **options}, sort_keys=False))
    return inventory(monkeypatch, ["yaml", "constructed"], [static, config])


def rendered(value, variables, loader):
    """A variable as a play reads it (trusted templates rendered) and whether it is trusted."""
    value = Templar(loader=loader, variables=variables).template(value)
    return value, isinstance(value, str) and is_trusted_as_template(value)


def view(manager):
    """Groups (hosts, child groups) and every host's variables as a play sees them."""
    groups = {name: (sorted(h.name for h in group.hosts), sorted(g.name for g in group.child_groups))
              for name, group in manager.groups.items()}
    hosts = {}
    for host in manager.get_hosts():
        variables = host.get_vars()
        hosts[host.name] = {key: rendered(value, variables, manager._loader) for key, value in variables.items()
                            if key not in ("inventory_file", "inventory_dir")}  # the source file differs
    return {"groups": groups, "hosts": hosts}


@pytest.mark.parametrize("options", CASES.values(), ids=list(CASES))
def test_same_inventory_as_constructed(tmp_path, monkeypatch, options):
    theirs = view(constructed(tmp_path, monkeypatch, options))
    mine = view(ours(tmp_path, monkeypatch, options))
    assert mine["groups"] == theirs["groups"]
    assert mine["hosts"] == theirs["hosts"]


def test_the_comparison_sees_what_the_issue_is_about(tmp_path, monkeypatch):
    """The cases above would pass vacuously if these were not what constructed gives."""
    hosts = view(constructed(tmp_path, monkeypatch, INJECTION_AND_MAGIC))["hosts"]
    hv1 = hosts["hv-1.example.com"]
    assert hv1["me"] == ("hv-1.example.com", False) and hv1["short"] == ("hv-1", False)
    assert hv1["seen"][0] == ["cluster_c1", "hypervisor_kvm", "pod_p1", "region_eu", "zone_eu_1"]
    assert hv1["injected"] == ("{{ 6 * 7 }}", False) and hv1["joined"] == ("lab{{ 6 * 7 }}", False)
    assert hv1["greeting"] == ("hello", False)  # a trusted template from the file, rendered
    compose_case = view(constructed(tmp_path, monkeypatch, CASES[COMPOSE_ORDER]))
    assert compose_case["hosts"]["hv-3"]["second"] == ("unset", False)
    assert compose_case["groups"]["windows"][0] == ["hv-3"]
    groups = view(constructed(tmp_path, monkeypatch, CASES["keyed_groups see the groups from before they ran"]))["groups"]
    assert "seen_c_c1" not in groups and "seen_shared" not in groups and "seen_cluster_c1" in groups


@pytest.mark.parametrize("options", STRICT_CASES.values(), ids=list(STRICT_CASES))
def test_strict_fails_like_constructed(tmp_path, monkeypatch, options):
    for build in (constructed, ours):
        with pytest.raises(AnsibleError, match="Completely failed to parse"):
            build(tmp_path, monkeypatch, {**options, "strict": True})


# -- cache: a hit gives exactly what a miss gives ---------------------------------------------------

VAULT_PASSWORD = b"topology-test-password"
SECRET = "hunter2-in-the-clear"


@pytest.fixture
def vault(monkeypatch):
    """A loader that can decrypt, and the vault context a CLI would set up."""
    secrets = [("default", VaultSecret(VAULT_PASSWORD))]
    monkeypatch.setattr(VaultSecretsContext, "_current", VaultSecretsContext(secrets))
    loader = DataLoader()
    loader.set_vault_secrets(secrets)
    return loader


def vaulted(text):
    from ansible.parsing.vault import VaultLib
    return VaultLib([("default", VaultSecret(VAULT_PASSWORD))]).encrypt(text).decode()


def cache_text(cache_dir):
    return "".join(path.read_text() for path in cache_dir.iterdir()) if cache_dir.exists() else ""


def test_cache_hit_keeps_vaulted_values_and_integer_keys(tmp_path, monkeypatch, vault, json_cache):
    text = yaml.safe_dump({**TOPOLOGY, "vars": {**TREE_VARS, "by_number": {1: "one", 2: "two"}}}, sort_keys=False)
    text = text.replace("vars:\n", "vars:\n  secret: !vault |\n%s\n" % "\n".join(
        "    " + line for line in vaulted(SECRET).splitlines()), 1)
    path = tmp_path / "topology.yml"
    path.write_text(text)
    options = CASES["magic variables"]
    path.write_text(text + yaml.safe_dump(options))
    miss = view(inventory(monkeypatch, ["topology"], [path], vault))
    hit = view(inventory(monkeypatch, ["topology"], [path], vault))
    assert miss["hosts"]["hv-2"]["secret"] == (SECRET, False)
    assert miss["hosts"]["hv-2"]["by_number"][0] == {1: "one", 2: "two"}
    assert hit == miss
    assert SECRET not in cache_text(json_cache) and "by_number" not in cache_text(json_cache)


def test_cache_hit_keeps_trust_and_constructed_results(tmp_path, monkeypatch, json_cache):
    miss = ours(tmp_path, monkeypatch, INJECTION_AND_MAGIC)
    assert "greeting" in cache_text(json_cache), "a plain topology is cached"
    hit = ours(tmp_path, monkeypatch, INJECTION_AND_MAGIC)
    assert view(hit) == view(miss)
    assert view(hit)["hosts"]["hv-2"]["greeting"] == ("hello", False)
    assert view(hit)["hosts"]["hv-2"]["injected"] == ("{{ 6 * 7 }}", False)


# -- smaller points -----------------------------------------------------------------------------------

def test_flow_style_topology_is_recognised(tmp_path, monkeypatch):
    path = tmp_path / "site.yml"  # not named topology.yml: recognised by its plugin key
    path.write_text(yaml.safe_dump(TOPOLOGY, default_flow_style=True))
    assert path.read_text().startswith("{")
    manager = inventory(monkeypatch, ["topology"], [path])
    assert sorted(h.name for h in manager.get_hosts()) == ["hv-1.example.com", "hv-2", "hv-3"]


def test_host_range_is_refused_clearly(tmp_path, monkeypatch):
    document = yaml.safe_load(yaml.safe_dump(TOPOLOGY))
    document["regions"][0]["zones"][0]["pods"][0]["clusters"][0]["hosts"][0]["name"] = "web[01:03]"
    path = tmp_path / "topology.yml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(AnsibleError) as caught:
        inventory_loader.get("topology").parse(InventoryData(), DataLoader(), str(path))
    message = str(caught.value)
    assert "'web[01:03]'" in message and "host range" in message and "does not expand ranges" in message
    assert "cluster c1 / host web[01:03]" in message


def test_messages_name_types_in_plain_words(tmp_path, monkeypatch):
    document = yaml.safe_load(yaml.safe_dump(TOPOLOGY))
    document["regions"][0]["zones"][0]["pods"][0]["clusters"][0]["max_unavailable"] = 0
    path = tmp_path / "topology.yml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(AnsibleError) as caught:
        inventory_loader.get("topology").parse(InventoryData(), DataLoader(), str(path))
    assert "got an integer (0)" in str(caught.value) and "Tagged" not in str(caught.value)


# -- the repository's ansible.cfg, and Ansible's defaults: end to end ---------------------------------

def run(tool, *args, config=os.path.join(REPO, "ansible.cfg"), cwd=REPO):
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env["ANSIBLE_CONFIG"] = config
    result = subprocess.run([os.path.join(BIN, tool), *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    return result.returncode, " ".join((result.stdout + result.stderr).split())  # Ansible wraps long lines


def repository_plugin_list():
    """enable_plugins of the repository's ansible.cfg, as names this process can load."""
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "ansible.cfg"))
    names = [name.strip() for name in config["inventory"]["enable_plugins"].split(",")]
    assert config["inventory"].getboolean("any_unparsed_is_failed") and config["inventory"].getboolean("unparsed_is_failed")
    return [name.rsplit(".", 1)[-1] for name in names]


@pytest.mark.parametrize("content", ["", "# nothing yet\n", "plugin: virtfleet.cluster.topology\nregions: []\n"],
                         ids=["empty", "comment only", "no regions"])
def test_broken_topology_fails_under_the_repository_settings(tmp_path, monkeypatch, content):
    assert "ini" not in repository_plugin_list()
    path = tmp_path / "site" / "topology.yml"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(AnsibleError, match="Completely failed to parse inventory source"):
        inventory(monkeypatch, repository_plugin_list(), [path.parent])
    plugin = inventory_loader.get("topology")
    assert plugin.verify_file(str(path))
    with pytest.raises(AnsibleError, match=r"is empty|empty 'regions' list"):
        plugin.parse(InventoryData(), DataLoader(), str(path))


def test_empty_topology_stops_ansible_playbook(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "topology.yml").write_text("")
    playbook = tmp_path / "play.yml"
    playbook.write_text("- hosts: all\n  gather_facts: false\n  tasks: [{ansible.builtin.debug: {msg: ran}}]\n")
    code, output = run("ansible-playbook", "-i", str(site), str(playbook))
    assert code != 0, output
    assert "ran" not in output and "no hosts matched" not in output
    assert "topology file %s is empty" % (site / "topology.yml") in output


def test_plugin_names_under_ansibles_default_plugin_list(tmp_path):
    """As the README says: the fully qualified name works everywhere (through `auto`), the short
    name only where the plugin is enabled by name, as in the repository's ansible.cfg."""
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\ncollections_path = %s\n" % os.path.join(REPO, ".collections"))
    for plugin, default_works in (("virtfleet.cluster.topology", True), ("topology", False)):
        path = tmp_path / ("%s.yml" % plugin.replace(".", "_"))
        path.write_text(yaml.safe_dump({**TOPOLOGY, "plugin": plugin}))
        code, output = run("ansible-inventory", "-i", str(path), "--graph", config=str(config), cwd=str(tmp_path))
        assert ("hv-2" in output) is default_works, output
    # Both names under the repository's ansible.cfg: test_topology.py::test_ansible_inventory_list_with_fqcn_and_short_name


def test_constructed_results_are_not_templated_by_ansible_playbook(tmp_path):
    path = tmp_path / "topology.yml"
    path.write_text(yaml.safe_dump({**TOPOLOGY, "compose": {"injected": "lookup('env', 'VIRTFLEET_TEST_INJECTED')"}}))
    playbook = tmp_path / "play.yml"
    playbook.write_text("- hosts: hv-2\n  gather_facts: false\n  tasks: [{ansible.builtin.debug: {var: injected}}]\n")
    code, output = run("ansible-playbook", "-i", str(path), str(playbook))
    assert code == 0, output
    assert "injected: '{{ 6 * 7 }}'" in output and "42" not in output


def test_trust_helpers_are_what_the_comparison_relies_on():
    assert is_trusted_as_template(trust_as_template("{{ x }}")) and not is_trusted_as_template("{{ x }}")
