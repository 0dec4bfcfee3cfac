"""The execution environment definition (execution-environment.yml) and bindep.txt profiles.

Building the image needs a container engine, which the project's machines lack; instead the
build context is generated with `ansible-builder create` (scripts/ee-context) and the two
steps of the image build that decide its content are replayed here without a container: the
galaxy stage's `ansible-galaxy collection install -r requirements.yml` and the builder stage's
introspection (ansible-builder's own introspect.py) that combines the user's and the installed
collections' Python and system requirements. bindep then evaluates the combined system list
the way the builder's `assemble` script does (default profile at run time, compile profile in
the builder), for the platform of the EE's base image.
"""
import os
import re
import subprocess
import sys

import pytest
import yaml
from bindep.depends import Depends

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
VENV_BIN = os.path.dirname(sys.executable)
RPM_PLATFORM = ["platform:rpm", "platform:redhat", "platform:centos"]
DPKG_PLATFORM = ["platform:dpkg", "platform:debian"]


def lab_only_packages(bindep_text):
    """Packages whose bindep line names the `lab` profile."""
    return {line.split()[0] for line in bindep_text.splitlines()
            if re.match(r"^[a-z0-9]", line) and re.search(r"\[[^]]*\blab\b[^]]*\]", line)}


def packages(bindep_text, profile, platform):
    """What bindep selects for a profile on a platform (as `bindep -l newline [-b PROFILE]`)."""
    return {rule[0] for rule in Depends(bindep_text).active_rules([profile] + platform)}


@pytest.fixture(scope="module")
def ee_context(tmp_path_factory):
    context = tmp_path_factory.mktemp("ee") / "context"
    result = subprocess.run([os.path.join(REPO, "scripts", "ee-context"), str(context)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return context


def test_containerfile_installs_pinned_ansible_python311_and_the_collection(ee_context):
    containerfile = (ee_context / "Containerfile").read_text()
    assert 'ARG ANSIBLE_INSTALL_REFS="ansible-core==2.19.14 ansible-runner==2.4.3"' in containerfile
    assert 'ARG PYCMD="/usr/bin/python3.11"' in containerfile
    assert "ansible-galaxy collection install" in containerfile
    assert "introspect.py introspect --user-pip=requirements.txt --user-bindep=bindep.txt" in containerfile
    # libvirt-devel is in CRB: enabled in the builder stage, before `assemble` installs it.
    builder = containerfile.split("FROM base AS builder", 1)[1].split("FROM base AS final", 1)[0]
    assert builder.index("config-manager --set-enabled crb") < builder.index("/output/scripts/assemble")
    assert (ee_context / "_build" / "collection" / "virtfleet-cluster.tar.gz").is_file()


def test_ee_python_requirements_are_the_runtime_ones_only(ee_context):
    pinned = (ee_context / "_build" / "requirements.txt").read_text()
    names = [line.split("==")[0] for line in pinned.splitlines() if line and not line.startswith("#")]
    assert names == ["libvirt-python"], "the EE must not carry requirements-dev.txt's test tools: %s" % names


def test_replayed_build_steps_select_runtime_libraries_and_never_lab_packages(ee_context, tmp_path):
    build = ee_context / "_build"
    # Galaxy stage: install the collection from the staged tarball, as the Containerfile does.
    collections = tmp_path / "collections"
    # As in a fresh image: no ansible.cfg of the repository (`make test` exports ANSIBLE_CONFIG,
    # whose collections_path already holds virtfleet.cluster, so galaxy would skip the install).
    clean_env = {key: value for key, value in os.environ.items()
                 if key not in ("ANSIBLE_CONFIG", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS")}
    result = subprocess.run([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "install", "--offline",
                             "-r", "requirements.yml", "--collections-path", str(collections)],
                            cwd=build, env=clean_env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    installed = collections / "ansible_collections" / "virtfleet" / "cluster"
    assert (installed / "meta" / "execution-environment.yml").is_file()
    # Builder stage: ansible-builder's introspection over the installed collections.
    combined_bindep, combined_pip = tmp_path / "bindep.txt", tmp_path / "requirements.txt"
    result = subprocess.run([sys.executable, str(build / "scripts" / "introspect.py"), "introspect",
                             "--user-pip=requirements.txt", "--user-bindep=bindep.txt",
                             "--write-bindep=%s" % combined_bindep, "--write-pip=%s" % combined_pip,
                             str(collections)], cwd=build, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "libvirt-python" in combined_pip.read_text()
    assert "pytest" not in combined_pip.read_text() and "molecule" not in combined_pip.read_text()

    system = combined_bindep.read_text()
    lab = lab_only_packages((build / "bindep.txt").read_text())
    assert {"qemu-system-x86", "libvirt-daemon", "openssh-server"} <= lab
    run_time = packages(system, "default", RPM_PLATFORM)
    compile_time = packages(system, "compile", RPM_PLATFORM)
    assert {"libvirt-libs", "openssh-clients"} <= run_time
    assert {"libvirt-devel", "gcc", "pkgconf-pkg-config"} <= compile_time
    assert not (run_time | compile_time) & lab
    # The same holds for a Debian based EE.
    debian = packages(system, "default", DPKG_PLATFORM) | packages(system, "compile", DPKG_PLATFORM)
    assert "libvirt-clients" in debian and "libvirt-dev" in debian
    assert not debian & lab


def test_install_deps_still_installs_every_dpkg_line_lab_ones_included():
    """scripts/install-deps selects lines with grep, not bindep: the lab needs its packages."""
    script = open(os.path.join(REPO, "scripts", "install-deps")).read()
    pattern = re.search(r"grep -E '([^']+)' bindep.txt", script).group(1)
    text = open(os.path.join(REPO, "bindep.txt")).read()
    selected = {line.split()[0] for line in text.splitlines() if re.search(pattern, line)}
    dpkg_lines = {line.split()[0] for line in text.splitlines()
                  if re.match(r"^[a-z0-9]", line) and "platform:dpkg" in line}
    assert selected == dpkg_lines
    assert lab_only_packages(text) <= selected
    assert not selected & {"libvirt-devel", "libvirt-libs", "openssh-clients"}, "rpm names reached apt"


def test_collection_declares_its_ee_dependencies():
    meta = yaml.safe_load(open(os.path.join(REPO, "meta", "execution-environment.yml")))
    for kind, filename in meta["dependencies"].items():
        assert os.path.isfile(os.path.join(REPO, filename)), (kind, filename)
