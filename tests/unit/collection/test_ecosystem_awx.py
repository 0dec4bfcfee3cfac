"""AWX configuration as code (playbooks/awx_configure.yml, playbooks/vars/awx.yml), no AWX needed.

The playbook's own expressions (surveys, workflow nodes) are templated with Ansible's templar
and checked against what AWX accepts and against the role's argument specification, so a
survey question can never feed the role a variable it does not know or a value of the wrong
kind. Running the playbook needs a real AWX (docs/awx.md).
"""
import os
import subprocess
import sys

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
VENV_BIN = os.path.dirname(sys.executable)
PLAYBOOK = os.path.join(REPO, "playbooks", "awx_configure.yml")
AWX_VARS = os.path.join(REPO, "playbooks", "vars", "awx.yml")
ROLE_SPEC = os.path.join(REPO, "roles", "rolling_maintenance", "meta", "argument_specs.yml")

# Survey question types AWX accepts, and the role option types each can feed.
AWX_TYPES_FOR_ROLE_TYPE = {
    "bool": {"multiplechoice"},   # the answer is the string "true"/"false"; the role reads it with | bool
    "list": {"multiselect"},      # AWX passes the selection as a list of strings
    "int": {"integer"},
    "float": {"float", "integer"},
    "str": {"text", "textarea", "password", "multiplechoice"},
}
CLUSTERS = ["kvm-prod", "lab.a b"]  # a name the topology plugin must sanitize for its group


def trusted(item):
    """Mark strings as templates, as Ansible does for what it loads from playbooks and vars files."""
    if isinstance(item, str):
        return trust_as_template(item)
    if isinstance(item, list):
        return [trusted(i) for i in item]
    if isinstance(item, dict):
        return {k: trusted(v) for k, v in item.items()}
    return item


def render(value, **overrides):
    """Template a value of the playbook the way Ansible does, with vars/awx.yml loaded as
    vars_files are (templates trusted, `!unsafe` values left alone)."""
    variables = DataLoader().load_from_file(AWX_VARS, trusted_as_template=True)
    variables.update(overrides)
    return Templar(loader=DataLoader(), variables=variables).template(trusted(value))


def task_args(module):
    play = yaml.safe_load(open(PLAYBOOK))[0]
    found = [t for t in play["tasks"] if module in t]
    assert found, "no %s task in %s" % (module, PLAYBOOK)
    return found


def role_options():
    return yaml.safe_load(open(ROLE_SPEC))["argument_specs"]["main"]["options"]


def check_awx_survey(survey):
    """What AWX's survey_spec validation refuses (awx/api/views: survey spec checks)."""
    assert survey["name"] and "description" in survey
    variables = [q["variable"] for q in survey["spec"]]
    assert len(variables) == len(set(variables)), "duplicate survey variables"
    for question in survey["spec"]:
        assert question["type"] in {"text", "textarea", "password", "integer", "float", "multiplechoice",
                                    "multiselect"}, question
        assert question["question_name"] and isinstance(question["required"], bool), question
        if question["type"] in ("multiplechoice", "multiselect"):
            assert isinstance(question["choices"], list) and question["choices"], question
            if question["type"] == "multiplechoice" and question.get("default") not in (None, ""):
                assert question["default"] in question["choices"], question
        if question["type"] == "integer" and "default" in question:
            assert isinstance(question["default"], int)
            assert question.get("min", question["default"]) <= question["default"] <= question.get("max", question["default"])


def test_playbook_passes_syntax_check_with_awx_collection_installed():
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"))
    result = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "--syntax-check", PLAYBOOK],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rolling_maintenance_survey_feeds_only_role_options_of_matching_type():
    survey = render(task_args("awx.awx.job_template")[0]["awx.awx.job_template"]["survey_spec"],
                    awx_clusters=CLUSTERS)
    check_awx_survey(survey)
    options = role_options()
    for question in survey["spec"]:
        option = options.get(question["variable"])
        assert option, "survey variable %s is no option of the role" % question["variable"]
        assert question["type"] in AWX_TYPES_FOR_ROLE_TYPE[option["type"]], (question["variable"], option["type"])
        if option["type"] == "bool":
            assert set(question["choices"]) == {"true", "false"}
        if question["type"] == "multiselect" and "clusters" in question["variable"]:
            assert question["choices"] == CLUSTERS
        if "choices" in option and question["type"] != "multiselect":
            assert set(question["choices"]) <= set(map(str, option["choices"]))
    # The safe answer is the default: a job launched without reading the survey changes nothing.
    dry_run = next(q for q in survey["spec"] if q["variable"] == "rolling_maintenance_dry_run")
    assert dry_run["default"] == "true" and dry_run["required"]


def test_evacuate_survey_asks_the_variable_the_playbook_requires():
    survey = render(task_args("awx.awx.job_template")[1]["awx.awx.job_template"]["survey_spec"])
    check_awx_survey(survey)
    assert [q["variable"] for q in survey["spec"]] == ["evacuate_host"]
    assert '"{{ evacuate_host }}"' in open(os.path.join(REPO, "playbooks", "evacuate_host.yml")).read()


def test_workflow_runs_one_node_per_cluster_in_parallel_limited_to_its_cluster():
    workflow = task_args("awx.awx.workflow_job_template")[0]["awx.awx.workflow_job_template"]
    nodes = render(workflow["workflow_nodes"], awx_clusters=CLUSTERS)
    assert [n["extra_data"] for n in nodes] == [{"rolling_maintenance_clusters": [c]} for c in CLUSTERS]
    # Group names as the topology plugin makes them (to_safe_group_name with force=True).
    assert [n["limit"] for n in nodes] == ["cluster_kvm_prod", "cluster_lab_a_b"]
    assert len({n["identifier"] for n in nodes}) == len(CLUSTERS)
    # Parallel: no node is another's child.
    assert all(not any(n["related"].values()) for n in nodes)
    templates = render({"names": "{{ awx_job_template_names }}"})["names"]
    assert {n["unified_job_template"]["name"] for n in nodes} == {templates["rolling_maintenance"]}
    job_template = next(t["awx.awx.job_template"] for t in task_args("awx.awx.job_template")
                        if t["awx.awx.job_template"]["playbook"] == "playbooks/rolling_maintenance.yml")
    # Without these AWX queues the nodes one after another or drops their limit.
    assert job_template["allow_simultaneous"] is True and job_template["ask_limit_on_launch"] is True
    # A worker per maintained host (the preflight refuses fewer forks; AWX's default is 5).
    assert int(render({"forks": job_template["forks"]})["forks"]) >= 20
    # A slice's inventory holds its own hosts only: it would not see the rest of its clusters.
    assert job_template["job_slice_count"] == 1
    survey = render(workflow["survey_spec"], awx_clusters=CLUSTERS)
    check_awx_survey(survey)
    assert "rolling_maintenance_clusters" not in [q["variable"] for q in survey["spec"]]


@pytest.mark.parametrize("playbook", ["rolling_maintenance.yml", "evacuate_host.yml", "assert_homogeneity.yml",
                                      "health_watch.yml", "recover_host.yml", "record_guests.yml"])
def test_job_templates_name_playbooks_of_the_project(playbook):
    named = [t["awx.awx.job_template"]["playbook"] for t in task_args("awx.awx.job_template")]
    assert "playbooks/" + playbook in named
    assert os.path.isfile(os.path.join(REPO, "playbooks", playbook))


class _ApiReached(Exception):
    """Raised instead of the first HTTP request: the module accepted its arguments."""


OMIT = "__virtfleet_test_omit__"


@pytest.mark.parametrize("index", range(len([t for t in yaml.safe_load(open(PLAYBOOK))[0]["tasks"]
                                             if any(k.startswith("awx.awx.") for k in t)])))
def test_awx_modules_accept_the_arguments_the_playbook_gives_them(index, monkeypatch):
    """Each awx.awx task's arguments, templated, pass the module's own argument validation.

    The module runs in-process up to its first request to AWX, which is intercepted: wrong
    option names, types or choices fail here as they would against a real AWX.
    """
    import importlib
    import io
    import contextlib
    import json
    from ansible.module_utils import basic
    from ansible_collections.awx.awx.plugins.module_utils import controller_api

    play = yaml.safe_load(open(PLAYBOOK))[0]
    task = [t for t in play["tasks"] if any(k.startswith("awx.awx.") for k in t)][index]
    module_name = next(k for k in task if k.startswith("awx.awx."))
    args = dict(play["module_defaults"]["group/awx.awx.controller"], **task[module_name])
    rendered = render(args, awx_clusters=CLUSTERS, omit=OMIT, awx_project_scm_url="https://git.invalid/vf.git",
                      awx_execution_environment_image="registry.invalid/virtfleet-ee:0.1.0",
                      awx_machine_credential="hypervisors")
    rendered = {k: v for k, v in rendered.items() if v != OMIT}
    if "rolling_maintenance_run_id" in rendered.get("extra_vars", {}):  # reaches AWX as the template, for AWX's job to fill in
        assert rendered["extra_vars"]["rolling_maintenance_run_id"] == "awx-{{ awx_job_id }}"
    if rendered.get("playbook") == "playbooks/health_watch.yml":  # rates over the schedule's interval
        assert rendered["extra_vars"] == {"health_watch_interval": 300}
    # An address that resolves; the request to it is intercepted before any connection.
    rendered.update(controller_host="https://127.0.0.1:9", controller_oauthtoken="token")

    def intercept(self, method, endpoint, *a, **kw):
        raise _ApiReached("%s %s" % (method, endpoint))
    monkeypatch.setattr(controller_api.ControllerAPIModule, "make_request", intercept)
    module = importlib.import_module("ansible_collections.awx.awx.plugins.modules." + module_name.split(".")[-1])
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": rendered}).encode())
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises((_ApiReached, SystemExit)) as outcome:
        module.main()
    assert outcome.type is _ApiReached, "%s refused its arguments: %s" % (module_name, out.getvalue())


def test_health_watch_and_record_guests_are_scheduled_every_few_minutes():
    schedules = {task["awx.awx.schedule"]["unified_job_template"]: task["awx.awx.schedule"] for task in task_args("awx.awx.schedule")}
    assert set(schedules) == {"{{ awx_job_template_names.health_watch }}", "{{ awx_job_template_names.record_guests }}"}
    rendered = render(schedules["{{ awx_job_template_names.health_watch }}"], awx_clusters=CLUSTERS)
    assert rendered["unified_job_template"] == "virtfleet - health watch"
    assert rendered["rrule"].endswith("RRULE:FREQ=MINUTELY;INTERVAL=5") and rendered["enabled"] in (True, "True")
