"""Quality gates of the collection: ansible-doc, ansible-lint (production profile), ansible-test sanity.

Each fails on any finding and prints the findings. ansible-lint and ansible-test sanity take a
minute or two each (more on the first run of a machine, when ansible-test makes its pinned
virtual environments from PyPI): marked slow. ansible-lint's exceptions are configuration
with reasons (.ansible-lint); ansible-test sanity needs none, and a test keeps it so.
"""
import glob
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
VENV_BIN = os.path.dirname(sys.executable)
COLLECTION = "virtfleet.cluster"


def run(command, timeout, **env_changes):
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
               ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1", NO_COLOR="1")
    env.update(env_changes)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def plugin_names(kind):
    return sorted("%s.%s" % (COLLECTION, os.path.basename(path)[:-3])
                  for path in glob.glob(os.path.join(REPO, "plugins", kind, "*.py"))
                  if not path.endswith("__init__.py"))


def documented_roles():
    return sorted("%s.%s" % (COLLECTION, path.split(os.sep)[-3])
                  for path in glob.glob(os.path.join(REPO, "roles", "*", "meta", "argument_specs.yml")))


DOC_TYPES = [("module", plugin_names("modules")), ("inventory", plugin_names("inventory")),
             ("role", documented_roles())]


@pytest.mark.parametrize("plugin_type,names", DOC_TYPES, ids=[kind for kind, _names in DOC_TYPES])
def test_ansible_doc_renders_every_plugin(plugin_type, names):
    assert names, "no %s found" % plugin_type
    # Text, as an operator reads it: every name rendered, nothing warned about.
    text = run(["ansible-doc", "-t", plugin_type, *names], timeout=180)
    assert text.returncode == 0, text.stderr
    assert not re.search(r"\[(WARNING|ERROR)\]|^(WARNING|ERROR)", text.stderr, re.M), text.stderr
    for name in names:
        assert name in text.stdout, "%s not rendered" % name
    # JSON: the documentation is complete enough for docs sites and AWX (description, options,
    # examples and return values for modules).
    dumped = json.loads(run(["ansible-doc", "-t", plugin_type, "--json", *names], timeout=180).stdout)
    for name in names:
        # Roles document their entry points (meta/argument_specs.yml), plugins a "doc" block.
        doc = dumped[name]["entry_points"]["main"] if plugin_type == "role" else dumped[name]["doc"]
        assert doc.get("short_description") and doc.get("description"), name
        if plugin_type == "module":
            assert dumped[name].get("examples") and dumped[name].get("return") is not None, name
    # Every action plugin is the module of the same name run on the controller.
    for action in plugin_names("action"):
        assert action in plugin_names("modules"), "action plugin %s has no module documentation" % action


def test_every_plugin_is_covered_by_the_doc_test():
    """A new plugin type (filter, lookup, callback ...) must be added to DOC_TYPES."""
    # doc_fragments render inside the modules' documentation (test_doc_fragments_are_all_used).
    known = {"modules", "inventory", "action", "module_utils", "doc_fragments"}
    kinds = {os.path.basename(d) for d in glob.glob(os.path.join(REPO, "plugins", "*")) if os.path.isdir(d)}
    assert kinds <= known, "plugin directories without a doc test: %s" % (kinds - known)


@pytest.mark.slow
def test_ansible_lint_production_profile_has_no_findings():
    result = run(["ansible-lint", "--nocolor", "-f", "pep8"], timeout=900)
    findings = [line for line in result.stdout.splitlines() if re.match(r"^\S+:\d+", line)]
    assert result.returncode == 0 and not findings, "\n".join(findings) or result.stdout + result.stderr[-3000:]
    assert "production" in open(os.path.join(REPO, ".ansible-lint")).read()


@pytest.mark.slow
def test_ansible_test_sanity_has_no_findings():
    result = run([os.path.join(REPO, "scripts", "sanity")], timeout=1500)
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith(("ERROR:", "FATAL:"))]
    assert result.returncode == 0, "\n".join(errors) or output[-5000:]
    assert 'Running sanity test "validate-modules"' in output and 'Running sanity test "pylint"' in output


def test_sanity_needs_no_ignore_file():
    """The collection passes ansible-test sanity without exceptions: an ignore file would let a
    finding through silently, so adding one is a decision this test makes visible."""
    assert glob.glob(os.path.join(REPO, "tests", "sanity", "ignore-*.txt")) == []
