"""The action group of meta/runtime.yml and the one connection spec: every module of the group
accepts every connection option (module_defaults of the group would break one that doesn't),
and the doc fragment documents the spec as it is."""
import importlib
import os

import yaml

from ansible_collections.virtfleet.cluster.plugins.doc_fragments.libvirt_connection import ModuleDocFragment
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
    CONNECTION_ARGUMENT_SPEC, CREDENTIALS_ARGUMENT_SPEC)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))


def runtime():
    with open(os.path.join(REPO, "meta", "runtime.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def module(name):
    return importlib.import_module("ansible_collections.virtfleet.cluster.plugins.modules.%s" % name)


def argument_spec(name):
    """The spec a member validates with: its module's, or its action plugin's when the module file
    holds only documentation (host_reboot)."""
    spec = getattr(module(name), "ARGUMENT_SPEC", None)
    if spec is None:
        spec = importlib.import_module("ansible_collections.virtfleet.cluster.plugins.action.%s" % name).ARGUMENT_SPEC
    return spec


def test_every_module_of_the_libvirt_group_takes_the_connection_spec():
    members = runtime()["action_groups"]["libvirt"]
    assert members, "the libvirt action group is empty"
    for name in members:
        spec = argument_spec(name)
        for option, definition in CONNECTION_ARGUMENT_SPEC.items():
            assert spec.get(option) == definition, "%s: option %s is not the connection spec's" % (name, option)


def test_every_module_of_the_libvirt_group_says_so_in_its_documentation():
    for name in runtime()["action_groups"]["libvirt"]:
        documentation = yaml.safe_load(module(name).DOCUMENTATION)
        fragments = documentation.get("extends_documentation_fragment", [])
        assert "virtfleet.cluster.libvirt_connection" in fragments, name
        assert "virtfleet.cluster.attributes.actiongroup_libvirt" in fragments, name


def test_the_doc_fragment_documents_the_connection_spec_as_it_is():
    for text, spec in ((ModuleDocFragment.DOCUMENTATION, CONNECTION_ARGUMENT_SPEC),
                       (ModuleDocFragment.CREDENTIALS, CREDENTIALS_ARGUMENT_SPEC)):
        options = yaml.safe_load(text)["options"]
        assert sorted(options) == sorted(spec)
        for name, definition in spec.items():
            assert options[name]["type"] == definition["type"]
            assert options[name].get("default") == definition.get("default")
            assert not options[name].get("required") and not definition.get("required")
    assert CONNECTION_ARGUMENT_SPEC["uri"]["default"] == "qemu:///system"
    assert CONNECTION_ARGUMENT_SPEC["password"]["no_log"] is True


def test_a_play_sets_the_connection_once_for_the_group(tmp_path):
    """module_defaults of group/virtfleet.cluster.libvirt reach the modules of the group
    (libvirt's in-process test driver: no daemon)."""
    import json
    import subprocess
    import sys
    playbook = tmp_path / "play.yml"
    playbook.write_text("""
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/virtfleet.cluster.libvirt:
      uri: test:///default
  tasks:
    - virtfleet.cluster.hypervisor_facts:
        gather_guests: false
      register: facts
    - virtfleet.cluster.host_empty:
        host: test-host
      register: empty
      ignore_errors: true
    - ansible.builtin.debug:
        msg: "RESULT {{ {'driver': facts.hypervisor.driver, 'empty_msg': empty.msg} | to_json }}"
""")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local",
                           "-e", "ansible_python_interpreter=%s" % sys.executable, str(playbook)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shown = json.loads(proc.stdout.split('"msg": "RESULT ', 1)[1].split('"\n', 1)[0].replace('\\"', '"'))
    assert shown["driver"] == "TEST"
    # The test driver's default guest runs: host_empty asked the same daemon and refused.
    assert "test" in shown["empty_msg"] and "test-host" in shown["empty_msg"]


def test_doc_fragments_are_all_used():
    """Every documentation fragment of the collection is extended by some module, so the module
    doc test (test_lint_sanity.test_ansible_doc_renders_every_plugin) renders all of them."""
    import glob
    used = set()
    for path in glob.glob(os.path.join(REPO, "plugins", "modules", "*.py")):
        documentation = yaml.safe_load(module(os.path.basename(path)[:-3]).DOCUMENTATION)
        used.update(documentation.get("extends_documentation_fragment", []))
    for path in glob.glob(os.path.join(REPO, "plugins", "doc_fragments", "*.py")):
        name = os.path.basename(path)[:-3]
        fragment = importlib.import_module("ansible_collections.virtfleet.cluster.plugins.doc_fragments.%s" % name)
        for attribute in vars(fragment.ModuleDocFragment):
            if attribute.isupper():
                slug = "virtfleet.cluster.%s" % name + ("" if attribute == "DOCUMENTATION" else ".%s" % attribute.lower())
                assert slug in used, "doc fragment %s is used by no module" % slug
