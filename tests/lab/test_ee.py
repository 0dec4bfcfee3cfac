"""The execution environment image (scripts/ee-build) running jobs against the lab, as AWX would.

Runs only when VIRTFLEET_EE_IMAGE names a built image (`make ee-test` builds it and sets it):
building takes longer than CI's budget for `make test`. Inside the image, with the host's
network, as the image's own user (1000, as AWX runs it) and through the image's entrypoint:

* the pinned tools and the collection are the image's own (libvirt-python, virsh, ssh);
* `ansible-playbook playbooks/assert_homogeneity.yml` on the lab passes;
* the rolling maintenance dry run of one cluster runs under ansible-runner in AWX's layout
  (/runner private data directory, the project at /runner/project, the survey's extra
  variables of tests/lab/test_awx_runner.py) and changes nothing.

The project is a copy of the repository's files without `.collections/`, as AWX's project sync
has it, and the collections path is the one AWX gives a job
(requirements_collections, ~/.ansible/collections, /usr/share/ansible/collections), so the
collection that runs is the image's. The lab's SSH key is given to the job's user as AWX gives a
machine credential: a copy it can read (at the path the lab inventory names).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from test_awx_runner import JOB_ID, assert_dry_run_job, awx_extra_vars

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = os.environ.get("VIRTFLEET_EE_IMAGE", "")
CONTAINERS_CONF = os.path.join(REPO, "podman", "containers.conf")
IMAGE_USER = 1000  # USER of ansible-builder's final stage
# What AWX puts in ANSIBLE_COLLECTIONS_PATH(S) for a job whose project does not add a path of its own.
AWX_COLLECTIONS_PATH = "/runner/requirements_collections:~/.ansible/collections:/usr/share/ansible/collections"

pytestmark = [pytest.mark.lab, pytest.mark.slow,
              pytest.mark.skipif(not IMAGE, reason="VIRTFLEET_EE_IMAGE names no image: run `make ee-test`")]


def _owned_by_image_user(path: str) -> None:
    for root, dirs, files in os.walk(path):
        for name in [root] + [os.path.join(root, n) for n in dirs + files]:
            os.lchown(name, IMAGE_USER, IMAGE_USER)


@pytest.fixture()
def runner_dir(lab, tmp_path):
    """A private data directory as AWX prepares it: the project (no .collections/), env/, artifacts."""
    private = tmp_path / "runner"
    listed = subprocess.run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for relative in filter(None, listed):
        source = os.path.join(REPO, relative)
        if os.path.isfile(source) and not relative.startswith(".collections/"):
            target = private / "project" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
    assert not (private / "project" / ".collections").exists()
    (private / "env").mkdir()
    (private / "artifacts").mkdir()
    key = tmp_path / "machine_credential"
    shutil.copy(lab.ssh_key, key)
    os.chmod(key, 0o600)
    _owned_by_image_user(str(tmp_path))
    return private


def in_image(lab, private, *command: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Runs a command in the image as AWX would run a job: host network, the image's user and
    entrypoint, /runner from the host, the project as working directory."""
    key = os.path.join(os.path.dirname(private), "machine_credential")
    podman = ["podman", "run", "--rm", "--network", "host",
              "-v", "%s:/runner" % private, "-v", "%s:%s:ro" % (key, lab.ssh_key),
              "-w", "/runner/project",
              "-e", "ANSIBLE_COLLECTIONS_PATH=" + AWX_COLLECTIONS_PATH, "-e", "ANSIBLE_FORCE_COLOR=0",
              IMAGE, *command]
    env = dict(os.environ, CONTAINERS_CONF=CONTAINERS_CONF)
    env.pop("ANSIBLE_CONFIG", None)
    return subprocess.run(podman, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_image_runs_its_own_pinned_tools_libvirt_and_collection(lab, runner_dir):
    host = lab.hosts[sorted(lab.hosts)[0]]
    script = "; ".join([
        "id -u", "ansible --version | head -1", "ansible-runner --version",
        "python3.11 -c 'import libvirt; print(\"libvirt-python\", libvirt.getVersion())'",
        "ansible-galaxy collection list virtfleet.cluster",
        "virsh -c %s list --all --name" % host.libvirt_uri,
        "ssh -i %s -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "
        "%s@%s echo ssh-ok" % (lab.ssh_key, host.user, host.address),
    ])
    result = in_image(lab, runner_dir, "bash", "-ec", script, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    lines = result.stdout.splitlines()
    assert lines[0] == str(IMAGE_USER)
    assert "core 2.19.14" in output and "2.4.3" in output
    assert "libvirt-python" in output
    assert "/usr/share/ansible/collections/ansible_collections" in output and "virtfleet.cluster" in output
    guests = [g for g, home in lab.guests.items() if home == host.name]
    assert set(guests) <= set(lines), "virsh in the image did not list %s's guests" % host.name
    assert "ssh-ok" in lines


def test_homogeneity_check_passes_in_image(lab, runner_dir):
    result = in_image(lab, runner_dir, "ansible-playbook", "-i", "inventories/lab", "playbooks/assert_homogeneity.yml")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "failed=0" in output and "unreachable=0" in output
    for host in lab.hosts:
        assert host in output


def test_dry_run_of_one_cluster_in_image_under_ansible_runner(lab, runner_dir):
    cluster = sorted(lab.clusters)[0]
    others = [h for h in lab.hosts if lab.hosts[h].cluster != cluster]
    before = lab.placement()
    (runner_dir / "env" / "extravars").write_text(json.dumps(awx_extra_vars(cluster)))
    (runner_dir / "env" / "envvars").write_text(json.dumps({"VIRTFLEET_REPORTS_DIR": "/runner/reports"}))
    _owned_by_image_user(str(runner_dir / "env"))
    group = "cluster_" + "".join(c if c.isalnum() or c == "_" else "_" for c in cluster)
    result = in_image(lab, runner_dir, "ansible-runner", "run", "/runner", "--ident", str(JOB_ID),
                      "-p", "playbooks/rolling_maintenance.yml", "--inventory", "/runner/project/inventories/lab",
                      "--limit", group)
    output = result.stdout + result.stderr

    assert_dry_run_job(runner_dir / "artifacts" / str(JOB_ID), result.returncode, output, others)

    report = json.load(open(runner_dir / "reports" / ("awx-%d" % JOB_ID) / "report.json"))
    assert report["run"]["dry_run"] and report["run"]["status"] == "dry_run"
    assert report["run"]["options"]["downtime_budget_ms"] == 1234
    assert set(report["plan"]["drain_plans"]) == set(lab.clusters[cluster])
    assert sorted(h for wave in report["plan"]["waves"] for h in wave) == sorted(lab.clusters[cluster])
    assert lab.placement() == before
