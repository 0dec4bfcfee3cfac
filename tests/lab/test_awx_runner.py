"""The rolling maintenance under ansible-runner, the engine AWX runs its jobs with.

One short job as AWX would launch it from the job template of playbooks/awx_configure.yml: a
private data directory with the extra variables AWX writes (the template's extra_vars, the
survey answers in the shapes AWX gives them, AWX's own awx_* variables), the job's limit from a
workflow node (one cluster), the project as working directory. A dry run: it proves the survey
reaches the role and that runner records the job (events, rc, status) without changing the lab.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.dirname(sys.executable)
LAB_HOOKS = os.path.join(REPO, "roles", "rolling_maintenance", "examples", "lab_hooks.yml")
AWX_VARS = os.path.join(REPO, "playbooks", "vars", "awx.yml")
JOB_ID = 4242  # AWX's job id: runner's ident and awx_job_id

pytestmark = [pytest.mark.lab, pytest.mark.slow]


class _VarsLoader(yaml.SafeLoader):
    """Reads playbooks/vars/awx.yml; `!unsafe` marks values Ansible must not template, which
    is what reaches AWX: the plain string."""


_VarsLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def awx_extra_vars(cluster: str) -> dict:
    """Extra variables as AWX composes them for a job of the rolling maintenance template."""
    awx = yaml.load(open(AWX_VARS), Loader=_VarsLoader)
    # Job template extra_vars: the site's hooks (here the lab's) and the run id naming the job.
    extra = dict(yaml.safe_load(open(LAB_HOOKS)), **awx["awx_rolling_maintenance_extra_vars"])
    # Survey answers: multiplechoice as the chosen string, integer as a number, multiselect as a
    # list. The cluster comes from the workflow node's extra_data (a list too).
    extra.update({
        "rolling_maintenance_dry_run": "true",
        "rolling_maintenance_force": "true",  # plan every host, patched by an earlier test or not
        "rolling_maintenance_max_parallel_migrations": 1,
        "rolling_maintenance_downtime_budget_ms": 1234,
        "rolling_maintenance_move_back": "false",
        "rolling_maintenance_window": "",
        "rolling_maintenance_clusters": [cluster],
    })
    questions = {q["variable"] for q in awx["awx_rolling_maintenance_survey"]["spec"]}
    assert set(extra) - set(yaml.safe_load(open(LAB_HOOKS))) - {"rolling_maintenance_run_id"} <= questions
    # Variables AWX adds to every job.
    extra.update({"awx_job_id": JOB_ID, "tower_job_id": JOB_ID, "awx_job_launch_type": "workflow",
                  "awx_job_template_name": awx["awx_job_template_names"]["rolling_maintenance"],
                  "awx_user_name": "admin"})
    return extra


def assert_dry_run_job(artifacts, returncode, output, others):
    """Checks an ansible-runner job of the rolling maintenance dry run, as AWX would read it:
    successful, no host outside its limit (``others``) ran a task, and the template's run id
    (awx-{{ awx_job_id }}) and the survey's dry run reached the role. Returns the job's events
    in their order."""
    assert returncode == 0, output[-6000:]
    assert (artifacts / "rc").read_text().strip() == "0"
    assert (artifacts / "status").read_text().strip() == "successful"
    events = [json.load(open(path)) for path in sorted(glob.glob(str(artifacts / "job_events" / "*.json")),
                                                       key=lambda p: int(os.path.basename(p).split("-")[0]))]
    task_hosts = {e["event_data"].get("host") for e in events if e.get("event", "").startswith("runner_on_")}
    assert not task_hosts & set(others), "hosts outside the job's limit ran tasks: %s" % (task_hosts & set(others))
    shown = [e for e in events if e.get("event") == "runner_on_ok"
             and e["event_data"].get("task", "").startswith("Dry run - show the plan")]
    assert shown, "no dry run plan in the job events"
    assert "Dry run awx-%d - nothing was changed" % JOB_ID in json.dumps(shown[0]["event_data"]["res"])
    return events


def test_dry_run_of_one_cluster_under_ansible_runner_with_survey_answers(lab, tmp_path):
    cluster = sorted(lab.clusters)[0]
    others = [h for h in lab.hosts if lab.hosts[h].cluster != cluster]
    before = lab.placement()
    private = tmp_path / "private"
    (private / "env").mkdir(parents=True)
    (private / "env" / "extravars").write_text(json.dumps(awx_extra_vars(cluster)))
    reports = tmp_path / "reports"
    (private / "env" / "envvars").write_text(json.dumps({
        "VIRTFLEET_REPORTS_DIR": str(reports), "ANSIBLE_FORCE_COLOR": "0"}))

    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    env.pop("ANSIBLE_CONFIG", None)  # as in AWX: the project's ansible.cfg, found in the working directory
    group = "cluster_" + "".join(c if c.isalnum() or c == "_" else "_" for c in cluster)
    result = subprocess.run(
        [os.path.join(VENV_BIN, "ansible-runner"), "run", str(private), "--ident", str(JOB_ID),
         "--project-dir", REPO, "-p", "playbooks/rolling_maintenance.yml",
         "--inventory", os.path.abspath(lab.inventory), "--limit", group],
        env=env, capture_output=True, text=True, timeout=900, check=False)
    output = result.stdout + result.stderr

    events = assert_dry_run_job(private / "artifacts" / str(JOB_ID), result.returncode, output, others)
    kinds = [e.get("event") for e in events]
    assert kinds[0] == "playbook_on_start" and "playbook_on_stats" in kinds

    report = json.load(open(reports / ("awx-%d" % JOB_ID) / "report.json"))
    assert report["run"]["dry_run"] and report["run"]["status"] == "dry_run"
    assert report["run"]["options"]["downtime_budget_ms"] == 1234  # an integer survey answer
    assert set(report["plan"]["drain_plans"]) == set(lab.clusters[cluster])
    assert sorted(h for wave in report["plan"]["waves"] for h in wave) == sorted(lab.clusters[cluster])
    assert lab.placement() == before
