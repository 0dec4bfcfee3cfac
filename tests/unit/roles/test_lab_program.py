"""The lab program without a lab: it finds the collection it belongs to, reads topologies with the
collection's model, and takes its shell programs from the role's files (no root, no libvirt daemon)."""
import json
import os
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
LAB_PROGRAM = os.path.join(REPO, "roles", "lab", "files", "virtfleet_lab.py")
ROLE_FILES = os.path.dirname(LAB_PROGRAM)


def run_isolated(code, **env):
    """Python code in a fresh interpreter started from / with no PYTHONPATH, as the role starts the lab."""
    return subprocess.run([sys.executable, "-c", code], cwd="/", env={"PATH": os.environ["PATH"], **env},
                          capture_output=True, text=True, timeout=60, check=False)


LOAD_PROGRAM = ("import importlib.util, json, sys\n"
                "spec = importlib.util.spec_from_file_location('virtfleet_lab', %r)\n"
                "lab = importlib.util.module_from_spec(spec)\n"
                "spec.loader.exec_module(lab)\n" % LAB_PROGRAM)


def test_the_lab_reads_topologies_through_the_collections_model():
    code = LOAD_PROGRAM + (
        "print(json.dumps({'topology_module': lab.topology_layout.__module__,\n"
        "                  'opener_module': lab.open_connection.__module__,\n"
        "                  'lab': lab.load_lab(%r)}))\n" % os.path.join(REPO, "inventories", "lab", "topology.yml"))
    result = run_isolated(code)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["topology_module"] == "ansible_collections.virtfleet.cluster.plugins.module_utils.topology_layout"
    assert found["opener_module"] == "ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection"
    assert found["lab"]["hosts"] and found["lab"]["guests"]


def test_an_invalid_lab_topology_is_refused_with_the_models_message(tmp_path):
    topology = tmp_path / "topology.yml"
    topology.write_text("plugin: virtfleet.cluster.topology\nvars: {lab_name: t}\nregions:\n  - name: r\n    zonez: []\n")
    result = subprocess.run([sys.executable, LAB_PROGRAM, "status", "--json", "--topology", str(topology)], cwd="/",
                            env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    message = json.loads(result.stdout)["msg"]
    assert "unknown key 'zonez' in the region" in message and "did you mean 'zones'?" in message
    assert str(topology) in message


def test_the_shell_programs_are_files_of_the_role():
    code = LOAD_PROGRAM + "print(json.dumps({'init': lab.guest_init(), 'tool': lab._role_file('lab-host')}))\n"
    result = run_isolated(code)
    assert result.returncode == 0, result.stderr
    programs = json.loads(result.stdout)
    with open(os.path.join(ROLE_FILES, "guest-init")) as handle:
        # The kernel runs /init directly: the guest has only busybox to interpret it.
        assert programs["init"] == "#!/bin/busybox sh\n" + handle.read()
    with open(os.path.join(ROLE_FILES, "lab-host")) as handle:
        assert programs["tool"] == handle.read() and programs["tool"].startswith("#!/bin/sh\n")
    assert "virtfleet-heartbeat $guest $boot $seq" in programs["init"]


def test_a_reboot_hold_keeps_the_host_down_until_the_file_is_removed(tmp_path):
    (tmp_path / "control").mkdir()
    hold = tmp_path / "control" / "reboot-hold"
    hold.write_text("")
    code = LOAD_PROGRAM + (
        "import threading, os, time\n"
        "threading.Timer(0.6, os.unlink, [%r]).start()\n"
        "print(json.dumps({'held': lab.wait_while_reboot_held({'dir': %r}, poll=0.05),\n"
        "                  'free': lab.wait_while_reboot_held({'dir': %r}, poll=0.05)}))\n" % (str(hold), str(tmp_path), str(tmp_path)))
    result = run_isolated(code)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert 0.6 <= found["held"] < 5 and found["free"] < 0.05
