"""The action plugins that write the run's report on the controller, run by ansible-playbook:
maintenance_report records in-process without touching the task's host, and maintenance_state
records its ``report`` events only once the change is made on the host."""
import json
import os
import subprocess
import sys

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
VENV_BIN = os.path.dirname(sys.executable)


def _play(tmp_path):
    report = str(tmp_path / "report")
    shared, unshared = tmp_path / "shared", tmp_path / "unshared"
    shared.mkdir()
    unshared.mkdir()
    inventory = {"all": {"hosts": {
        # TEST-NET-1: nothing answers there; a task that tried to connect would fail unreachable.
        "far": {"ansible_host": "192.0.2.1", "ansible_connection": "ssh", "ansible_ssh_timeout": 2},
        "here": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    event = {"type": "host_start", "host": "{{ inventory_hostname }}"}
    plays = [
        {"name": "report from an unreachable host", "hosts": "far", "gather_facts": False, "tasks": [
            {"name": "record", "virtfleet.cluster.maintenance_report": {"directory": report, "run_id": "run-1", "event": event}}]},
        {"name": "state changes with their events", "hosts": "here", "gather_facts": False, "tasks": [
            {"name": "identity", "virtfleet.cluster.maintenance_state": {"path": str(shared), "cluster": "c", "state": "init"}},
            {"name": "mark, recorded", "register": "marked", "virtfleet.cluster.maintenance_state": {
                "path": str(shared), "cluster": "c", "state": "mark", "host": "here", "run_id": "operator",
                "report": {"directory": report, "run_id": "run-1", "events": [event, dict(event, type="phase", phase="x")]}}},
            {"name": "refused (no identity there), not recorded", "ignore_errors": True, "register": "refused",
             "virtfleet.cluster.maintenance_state": {
                 "path": str(unshared), "cluster": "c", "state": "mark", "host": "here", "run_id": "operator",
                 "report": {"directory": report, "events": [dict(event, type="host_done")]}}},
            {"name": "show", "ansible.builtin.debug": {
                "msg": "RESULTS {{ {'recorded': marked.recorded, 'refused': refused.failed, 'mark': marked.mark.phase} | to_json }}"}}]},
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"),
                           str(tmp_path / "play.yml")], cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
                          check=False)
    return proc, report


def test_events_are_recorded_on_the_controller_and_only_for_a_change_made(tmp_path):
    proc, report = _play(tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "unreachable=0" in output.split("PLAY RECAP")[1].split("\n")[1], output[-2000:]  # "far" never connected
    line = next(text for text in output.splitlines() if "RESULTS" in text)
    assert json.loads(line.split("RESULTS ", 1)[1].rstrip("\"'")) == {"recorded": 2, "refused": True, "mark": "marked"}
    events = [json.loads(text) for text in open(os.path.join(report, "events.jsonl"))]
    assert [(e["type"], e["host"], e["run_id"]) for e in events] == [
        ("host_start", "far", "run-1"), ("host_start", "here", "run-1"), ("phase", "here", "run-1")]
    # The events of one change share the moment it began (before the change, so before whatever it let start).
    assert events[1]["ts"] == events[2]["ts"] >= events[0]["ts"]
