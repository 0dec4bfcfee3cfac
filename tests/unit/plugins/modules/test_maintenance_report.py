"""The maintenance_report module run in-process: record, render, and how it fails."""
import json
import os

from module_main import run_module_main

from ansible_collections.virtfleet.cluster.plugins.module_utils import run_events
from ansible_collections.virtfleet.cluster.plugins.modules import maintenance_report


def test_records_events_then_renders_the_report_also_in_check_mode(tmp_path):
    directory = str(tmp_path / "run-1")
    code, result = run_module_main(maintenance_report, {
        "directory": directory, "run_id": "run-1", "event": {"type": "run_start", "clusters": {"a": ["a1"]}},
        "events": [{"type": "run_end", "status": "ok"}]})
    assert code == 0 and result["changed"] and result["recorded"] == 2
    assert [e["run_id"] for e in run_events.load_events(directory)] == ["run-1", "run-1"]
    code, result = run_module_main(maintenance_report, {"directory": directory, "state": "render"}, check_mode=True)
    assert code == 0 and result["run"]["status"] == "ok" and result["run"]["run_id"] == "run-1"
    assert result["clusters"] == {"a": {"status": "planned", "max_unavailable": None, "max_in_maintenance": 0}}
    assert set(result["files"]) == {"report_json", "report_html", "report_md", "timeline_svg"}
    assert json.load(open(result["files"]["report_json"]))["run"]["run_id"] == "run-1"


def test_an_event_without_a_type_records_nothing(tmp_path):
    code, result = run_module_main(maintenance_report, {
        "directory": str(tmp_path), "events": [{"type": "run_start"}, {"cluster": "a"}]})
    assert code == 1 and result["msg"] == "every event needs a type: {'cluster': 'a'}"
    assert not os.path.exists(tmp_path / run_events.EVENTS_FILE)


def test_a_directory_that_cannot_be_written_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, result = run_module_main(maintenance_report, {"directory": str(blocker / "run-1"), "event": {"type": "run_start"}})
    assert code == 1 and result["msg"].startswith("cannot write the report in %s: " % (blocker / "run-1"))


def test_rendering_without_jinja2_says_which_library_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(maintenance_report, "JINJA2_IMPORT_ERROR", "ModuleNotFoundError: No module named 'jinja2'")
    code, result = run_module_main(maintenance_report, {"directory": str(tmp_path), "state": "render"})
    assert code == 1 and "Failed to import the required Python library (Jinja2)" in result["msg"]
    code, result = run_module_main(maintenance_report, {"directory": str(tmp_path), "event": {"type": "run_start"}})
    assert code == 0 and result["recorded"] == 1  # recording needs no Jinja2


def test_the_verb_is_state_not_action(tmp_path):
    code, result = run_module_main(maintenance_report, {"directory": str(tmp_path), "action": "render"})
    assert code == 1 and "Unsupported parameters" in result["msg"] and "action" in result["msg"]
